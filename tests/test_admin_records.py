"""Records in the admin (leases, sessions, session commands, audit events, access requests, connector actions,
API tokens) are read-only: a page to read, no Save, no Delete, no bulk delete; the actions on them call services."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from access.models import (
    AccessRequest,
    ApiToken,
    AuditAction,
    AuditEvent,
    ConnectorAction,
    Lease,
    Session,
    SessionCommand,
)
from access.models.actions import ActionKind, ActionState
from access.models.sessions import SessionState
from access.services.audit import audit_record
from access.services.tokens import api_token_create
from tests.factories import AccessPolicyFactory, LeaseFactory, ResourceFactory, SessionFactory, UserFactory
from tests.helpers import verified_client

pytestmark = pytest.mark.django_db


def _records() -> dict[str, object]:
    session = SessionFactory()
    policy = AccessPolicyFactory(account=session.account)
    return {
        "lease": LeaseFactory(),
        "session": session,
        "sessioncommand": SessionCommand.objects.create(session=session, command="find", database="app"),
        "auditevent": audit_record(action=AuditAction.SCHEDULES_SETUP),
        "accessrequest": AccessRequest.objects.create(
            requester=policy.user, policy=policy, account=session.account, reason="look", duration=timedelta(hours=1)
        ),
        "connectoraction": ConnectorAction.objects.create(
            resource=ResourceFactory(), kind=ActionKind.LOCK_USER, username="app", state=ActionState.SUCCEEDED
        ),
        "apitoken": api_token_create(user=UserFactory())[0],
    }


def test_records_are_shown_but_cannot_be_added_changed_or_deleted(otp_admin_client):
    records = _records()
    for model, record in records.items():
        change_url = reverse(f"admin:access_{model}_change", args=[record.pk])
        page = otp_admin_client.get(change_url)
        assert page.status_code == 200, model
        html = page.content.decode()
        assert 'name="_save"' not in html and 'name="_continue"' not in html, f"{model} page offers Save"
        assert reverse(f"admin:access_{model}_delete", args=[record.pk]) not in html, f"{model} page offers Delete"

        assert otp_admin_client.post(change_url, {}).status_code == 403, model
        assert (
            otp_admin_client.post(
                reverse(f"admin:access_{model}_delete", args=[record.pk]), {"post": "yes"}
            ).status_code
            == 403
        ), model
        assert otp_admin_client.get(reverse(f"admin:access_{model}_add")).status_code == 403, model

        changelist = reverse(f"admin:access_{model}_changelist")
        assert 'value="delete_selected"' not in otp_admin_client.get(changelist).content.decode(), model
        bulk = otp_admin_client.post(
            changelist, {"action": "delete_selected", "_selected_action": [record.pk], "post": "yes"}
        )
        assert bulk.status_code in (200, 302), model
        assert type(record).objects.filter(pk=record.pk).exists(), f"{model} was deleted"


def test_a_lease_page_shows_what_was_recorded_and_never_the_password(otp_admin_client):
    lease = LeaseFactory(password="Lease-Page-Secret-8841", revealed_at=timezone.now())
    html = otp_admin_client.get(reverse("admin:access_lease_change", args=[lease.pk])).content.decode()
    assert lease.username in html and lease.lease_id in html
    assert "Lease-Page-Secret-8841" not in html and "gAAAA" not in html
    otp_admin_client.post(
        reverse("admin:access_lease_change", args=[lease.pk]), {"revealed_at_0": "", "state": "active"}
    )
    assert Lease.objects.get(pk=lease.pk).revealed_at == lease.revealed_at


def test_a_policy_last_use_is_shown_not_edited(otp_admin_client):
    used_at = timezone.now() - timedelta(days=3)
    policy = AccessPolicyFactory(last_used_at=used_at)
    url = reverse("admin:access_accesspolicy_change", args=[policy.pk])
    assert 'name="last_used_at' not in otp_admin_client.get(url).content.decode()
    response = otp_admin_client.post(
        url,
        {
            "name": "renamed",
            "user": policy.user.pk,
            "account": policy.account.pk,
            "max_duration": "1h",
            "approval_required": "on",
            "is_enabled": "on",
            "last_used_at_0": "2001-01-01",
            "last_used_at_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    policy.refresh_from_db()
    assert policy.name == "renamed" and policy.last_used_at == used_at


def test_a_gateway_heartbeat_is_shown_not_edited(otp_admin_client):
    from tests.factories import GatewayFactory

    beat = timezone.now() - timedelta(minutes=5)
    gateway = GatewayFactory(last_heartbeat=beat)
    url = reverse("admin:access_gateway_change", args=[gateway.pk])
    response = otp_admin_client.post(
        url,
        {
            "name": gateway.name,
            "public_host": "gw.example.com",
            "public_port": 27018,
            "description": "",
            "last_heartbeat_0": "2001-01-01",
            "last_heartbeat_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    gateway.refresh_from_db()
    assert gateway.public_host == "gw.example.com" and gateway.last_heartbeat == beat
    event = AuditEvent.objects.get(action=AuditAction.GATEWAY_UPDATE)
    assert event.data == {"changed": {"public_host": "gw.example.com"}, "write_only_changed": []}


def test_kill_needs_the_change_session_permission_even_though_the_page_is_read_only(staff_user):
    session = SessionFactory()
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_session", content_type__app_label="access"))
    browser = verified_client(viewer)
    page = browser.get(reverse("admin:access_session_change", args=[session.pk])).content.decode()
    assert session.username in page and "Kill session" not in page
    assert browser.post(reverse("admin:access_session_kill", args=[session.pk])).status_code == 403
    listing = browser.get(reverse("admin:access_session_changelist")).content.decode()
    assert 'value="kill_sessions"' not in listing
    assert Session.objects.get(pk=session.pk).state == SessionState.OPEN

    viewer.user_permissions.add(Permission.objects.get(codename="change_session", content_type__app_label="access"))
    assert browser.post(reverse("admin:access_session_kill", args=[session.pk])).status_code == 302
    assert Session.objects.get(pk=session.pk).state == SessionState.ENDED


def test_revoking_a_token_in_the_admin_stops_it_and_is_audited(otp_admin_client, staff_user):
    owner = UserFactory(is_staff=True, is_superuser=True)
    token, raw = api_token_create(user=owner)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/api/v1/resources").status_code == 200

    response = otp_admin_client.post(
        reverse("admin:access_apitoken_changelist"),
        {"action": "revoke_tokens", "_selected_action": [token.pk]},
        follow=True,
    )

    assert "Revoked 1 token; it stops working at its next call." in response.content.decode()
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    assert api.get("/api/v1/resources").status_code == 401
    event = AuditEvent.objects.get(action=AuditAction.API_TOKEN_REVOKE)
    assert event.actor == staff_user and event.target_id == str(token.pk) and raw not in str(event.data)
