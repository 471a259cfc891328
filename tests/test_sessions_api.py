"""The sessions API: open (secret once), list, read, end, command log; 400/403/404 as JSON."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from access.models import AuditEvent, Session
from access.models.sessions import SessionEndReason, SessionState
from access.services.gateway import session_commands_record
from access.services.sessions import session_open
from access.services.tokens import api_token_create
from tests.factories import AccessPolicyFactory, AccountFactory, GatewayFactory, UserFactory

pytestmark = pytest.mark.django_db


def _client_for(user) -> APIClient:
    _token, raw = api_token_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def policy():
    return AccessPolicyFactory(approval_required=False, max_duration=timedelta(hours=2))


@pytest.fixture
def owner_client(policy):
    return _client_for(policy.user)


def _open(client, account, **extra):
    return client.post("/api/v1/sessions", {"account": account.pk, "duration": "1h", **extra}, format="json")


def test_open_returns_the_secret_once_with_a_working_connection_string(owner_client, policy):
    gateway = GatewayFactory(public_host="gw.example.com", public_port=27100)
    policy.account.resource.gateway = gateway
    policy.account.resource.save()

    response = _open(owner_client, policy.account)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) >= {"session_id", "username", "secret", "expires_at", "connection_string", "mongosh"}
    secret = body["secret"]
    assert body["connection_string"] == (
        f"mongodb://{body['username']}:{secret}@gw.example.com:27100/?authSource=admin&directConnection=true"
    )
    assert body["mongosh"] == f"mongosh '{body['connection_string']}'"
    assert response["Cache-Control"] == "no-store"
    session = Session.objects.get(public_id=body["session_id"])
    assert session.user == policy.user

    for path in ("/api/v1/sessions", f"/api/v1/sessions/{body['session_id']}"):
        again = owner_client.get(path)
        assert again.status_code == 200
        assert secret not in again.content.decode()


def test_open_falls_back_to_the_configured_gateway_host(owner_client, policy, settings):
    settings.PAM_GATEWAY_HOST = "pam-gw.internal:27018"

    body = _open(owner_client, policy.account).json()

    assert "@pam-gw.internal:27018/?authSource=admin&directConnection=true" in body["connection_string"]


def test_open_without_access_is_403_json(owner_client):
    response = _open(owner_client, AccountFactory())

    assert response.status_code == 403
    assert response.json()["error"]["message"]
    assert not Session.objects.exists()


def test_open_with_a_bad_duration_is_400_naming_the_field(owner_client, policy):
    response = owner_client.post("/api/v1/sessions", {"account": policy.account.pk, "duration": "soon"}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "duration"


def test_open_of_an_mfa_account_with_a_token_is_403(owner_client, policy):
    policy.mfa_required = True
    policy.save()

    assert _open(owner_client, policy.account).status_code == 403


def test_another_users_session_is_404(owner_client, policy):
    stranger_session, _ = session_open(user=policy.user, account=policy.account, duration=timedelta(minutes=5))
    stranger = _client_for(UserFactory())

    for method, path in (
        ("get", f"/api/v1/sessions/{stranger_session.public_id}"),
        ("post", f"/api/v1/sessions/{stranger_session.public_id}/end"),
        ("get", f"/api/v1/sessions/{stranger_session.public_id}/commands"),
        ("get", f"/api/v1/sessions/{uuid.uuid4()}"),
    ):
        response = getattr(stranger, method)(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["message"] == "Not found."
    assert stranger.get("/api/v1/sessions").json()["results"] == []


def test_owner_ends_a_session_and_staff_sees_and_kills_all(owner_client, policy, api_client):
    mine = _open(owner_client, policy.account).json()
    other = _open(owner_client, policy.account).json()

    ended = owner_client.post(f"/api/v1/sessions/{mine['session_id']}/end")
    assert ended.status_code == 200
    assert (ended.json()["state"], ended.json()["end_reason"]) == ("ended", "ended_by_user")
    assert owner_client.post(f"/api/v1/sessions/{mine['session_id']}/end").status_code == 200  # idempotent

    listed = api_client.get("/api/v1/sessions").json()
    assert {row["session_id"] for row in listed["results"]} == {mine["session_id"], other["session_id"]}
    killed = api_client.post(f"/api/v1/sessions/{other['session_id']}/end/")
    assert killed.json()["end_reason"] == SessionEndReason.KILLED
    assert Session.objects.get(public_id=other["session_id"]).state == SessionState.ENDED
    assert AuditEvent.objects.filter(action="session.end").count() == 2


def test_commands_are_listed_redacted_and_paginated(owner_client, policy):
    body = _open(owner_client, policy.account).json()
    session = Session.objects.get(public_id=body["session_id"])
    session_commands_record(
        commands=[
            {"session_id": session.pk, "command": "find", "database": "app", "collection": f"c{i}", "n": i}
            for i in range(5)
        ]
    )

    page = owner_client.get(f"/api/v1/sessions/{body['session_id']}/commands?limit=2&offset=1").json()

    assert page["count"] == 5
    assert [row["collection"] for row in page["results"]] == ["c1", "c2"]
    assert set(page["results"][0]) >= {"at", "database", "command", "ok", "n", "latency_us", "summary"}


def test_the_secret_reaches_no_log_line(owner_client, policy, caplog):
    caplog.set_level("DEBUG")

    body = _open(owner_client, policy.account).json()
    owner_client.get(f"/api/v1/sessions/{body['session_id']}")
    owner_client.post(f"/api/v1/sessions/{body['session_id']}/end")

    assert body["secret"] not in caplog.text
    assert all(body["secret"] not in str(record.__dict__) for record in caplog.records)
