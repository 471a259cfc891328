"""The scoped-access API (what the CLI calls): envelopes and the databases the server holds inside them, asking,
deciding with narrowing, credentials once, a gateway session through the request's user; and the security team's
permission levels and policies with envelopes. Against the in-repo wire server, with real bearer tokens."""

from __future__ import annotations

import pymongo
import pytest

from access.models import AuditEvent, PermissionLevel
from access.models.leases import LeaseState
from access.otp import totp_device_create
from access.services.policies import access_policy_create
from tests.factories import UserFactory
from tests.helpers import database_on, scoped_envelope, token_client, totp_code
from tests.helpers import unique_name as _name

pytestmark = pytest.mark.wireserver


@pytest.fixture
def shop(wire_server):
    with database_on(wire_server.uri, orders=[{"_id": 1}], customers=[{"_id": 1}], audit_log=[{"_id": 1}]) as name:
        yield name


@pytest.fixture
def setup(db, wire_server, shop):
    world = scoped_envelope(
        wire_server,
        [shop],
        requester="alice",
        approver="bob",
        name="shop-readers",
        scope_collections=[f"{shop}.orders", f"{shop}.customers"],
    )
    alice, bob = token_client(world["requester"]), token_client(world["approver"])
    return {
        "resource": world["resource"],
        "alice": alice,
        "bob": bob,
        "policy": world["policy"],
        "approver": world["approver"],
    }


def test_envelopes_and_the_databases_inside_them_come_from_the_server_filtered_and_cached(setup, shop, wire_server):
    alice, policy = setup["alice"], setup["policy"]
    listed = alice.get("/api/v1/scoped/envelopes").json()["results"]
    assert [e["policy"]["id"] for e in listed] == [policy.pk]
    assert listed[0]["databases"] == [shop] and [lv["name"] for lv in listed[0]["levels"]] == ["read", "readWrite"]
    assert "find" in listed[0]["levels"][0]["actions"]

    choices = alice.get(f"/api/v1/scoped/envelopes/{policy.pk}/choices").json()
    assert choices["listed_from_server"] is True
    assert choices["databases"] == [{"name": shop, "whole_database": False, "collections": ["customers", "orders"]}]
    with pymongo.MongoClient(wire_server.uri) as admin:
        admin[shop].invoices.insert_one({"_id": 1})
        admin[shop].orders_archive.insert_one({"_id": 1})
    assert alice.get(f"/api/v1/scoped/envelopes/{policy.pk}/choices").json() == choices  # cached briefly
    access_policy_create(
        actor="test",
        name="wide",
        user=policy.user,
        scope_resource=setup["resource"],
        scope_databases=["shop_*"],
        scope_levels=["read"],
    )
    wide = next(e for e in alice.get("/api/v1/scoped/envelopes").json()["results"] if e["policy"]["name"] == "wide")
    fresh = alice.get(f"/api/v1/scoped/envelopes/{wide['policy']['id']}/choices?refresh=1").json()
    mine = next(d for d in fresh["databases"] if d["name"] == shop)
    assert mine["whole_database"] is True and "invoices" in mine["collections"]
    assert not any(d["name"] in ("admin", "local", "config") for d in fresh["databases"])

    stranger = token_client(UserFactory(username=_name("mallory")))
    assert stranger.get(f"/api/v1/scoped/envelopes/{policy.pk}/choices").status_code == 404


def test_ask_narrow_approve_and_get_the_credentials_once(setup, shop, wire_server):
    alice, bob, policy = setup["alice"], setup["bob"], setup["policy"]
    outside = alice.post(
        "/api/v1/scoped/requests",
        {"policy": policy.pk, "resources": [f"{shop}.audit_log"], "level": "read", "duration": "1h", "reason": "x"},
        format="json",
    )
    assert outside.status_code == 400 and outside.json()["error"]["field"] == "resources"
    asked = alice.post(
        "/api/v1/scoped/requests",
        {
            "policy": policy.pk,
            "resources": [f"{shop}.orders", {"db": shop, "collection": "customers"}],
            "level": "readWrite",
            "duration": "1h",
            "reason": "fix an order",
        },
        format="json",
    )
    assert asked.status_code == 201, asked.json()
    body = asked.json()
    assert body["state"] == "pending" and body["grant"] is None
    assert body["requested"]["resources"] == [
        {"db": shop, "collection": "orders"},
        {"db": shop, "collection": "customers"},
    ]
    queue = bob.get("/api/v1/scoped/requests?queue=1").json()["results"]
    assert [r["id"] for r in queue] == [body["id"]]
    assert alice.post(f"/api/v1/scoped/requests/{body['id']}/approve", {}, format="json").status_code == 403

    device = totp_device_create(user=setup["approver"])
    no_code = bob.post(f"/api/v1/scoped/requests/{body['id']}/approve", {}, format="json")
    assert no_code.status_code == 403 and no_code.json()["error"]["field"] == "otp"  # a fresh second factor
    wider = bob.post(
        f"/api/v1/scoped/requests/{body['id']}/approve", {"duration": "2h", "otp": totp_code(device)}, format="json"
    )
    assert wider.status_code == 400 and wider.json()["error"]["field"] == "duration"
    approved = bob.post(
        f"/api/v1/scoped/requests/{body['id']}/approve",
        {
            "resources": [f"{shop}.orders"],
            "level": "read",
            "comment": "read is enough",
            "otp": totp_code(device, steps_ahead=1),  # the code just used is not taken twice
        },
        format="json",
    ).json()
    assert approved["state"] == "approved" and approved["narrowed"] is True
    assert approved["granted"]["level"] == "read" and approved["grant"]["state"] == LeaseState.ACTIVE

    creds = alice.post(f"/api/v1/scoped/requests/{body['id']}/credentials")
    assert creds.status_code == 200 and creds["X-One-Time-Secret"] == "1"
    data = creds.json()
    assert data["auth_database"] == "admin" and data["scope"]["level"] == "read"
    with pymongo.MongoClient(data["connection_string"], serverSelectionTimeoutMS=3000) as client:
        assert client[shop].orders.count_documents({}) == 1
        with pytest.raises(pymongo.errors.OperationFailure):
            client[shop].customers.find_one()
    again = alice.post(f"/api/v1/scoped/requests/{body['id']}/credentials")
    assert again.status_code == 409 and "already shown" in again.json()["error"]["message"]
    assert bob.post(f"/api/v1/scoped/requests/{body['id']}/credentials").status_code == 404

    opened = alice.post(f"/api/v1/scoped/requests/{body['id']}/session", {"duration": "10m"}, format="json")
    assert opened.status_code == 201 and opened.json()["databases"] == [shop]

    cancelled = alice.post(f"/api/v1/scoped/requests/{body['id']}/cancel").json()
    assert cancelled["state"] == "cancelled"
    assert AuditEvent.objects.filter(action="scoped.grant").count() == 1


def test_permission_levels_and_envelope_policies_through_the_api(setup, api_client):
    refused = api_client.post(
        "/api/v1/permission-levels/", {"name": "auditor", "actions": ["find", "peekAtEverything"]}, format="json"
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["field"] == "actions" and "peekAtEverything" in refused.json()["error"]["message"]
    made = api_client.post(
        "/api/v1/permission-levels/", {"name": "auditor", "actions": ["find", "collStats"]}, format="json"
    )
    assert made.status_code == 201 and PermissionLevel.objects.filter(name="auditor").exists()

    alice = setup["policy"].user
    unknown = api_client.post(
        "/api/v1/policies/",
        {
            "name": "bad",
            "user": alice.username,
            "scope_resource": setup["resource"].name,
            "scope_databases": ["shop"],
            "scope_levels": ["read", "superuser"],
        },
        format="json",
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "scope_levels"
    created = api_client.post(
        "/api/v1/policies/",
        {
            "name": "auditors",
            "user": alice.username,
            "scope_resource": setup["resource"].name,
            "scope_databases": ["shop", "reports_*"],
            "scope_levels": ["auditor"],
            "max_duration": "2h",
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json()["scope_levels"] == ["auditor"] and created.json()["account"] is None
    event = AuditEvent.objects.get(action="accesspolicy.create", target_id=str(created.json()["id"]))
    assert event.data["changed"]["scope_databases"] == ["shop", "reports_*"]
    in_use = api_client.delete("/api/v1/permission-levels/auditor/")
    assert in_use.status_code == 400 and "auditors" in in_use.json()["error"]["message"]
    nobody = token_client(UserFactory(username=_name("eve")))
    assert nobody.get("/api/v1/policies/").status_code == 403


def test_a_scoped_grant_under_an_mfa_policy_needs_the_requesters_code_and_a_denial_the_approvers(setup, shop):
    alice, bob, policy = setup["alice"], setup["bob"], setup["policy"]
    policy.mfa_required, policy.approval_required = True, False
    policy.save(update_fields=["mfa_required", "approval_required"])
    asked = alice.post(
        "/api/v1/scoped/requests",
        {"policy": policy.pk, "resources": [f"{shop}.orders"], "level": "read", "duration": "1h", "reason": "x"},
        format="json",
    ).json()
    assert asked["grant"]["state"] == LeaseState.ACTIVE  # no approval needed: made at once
    url = f"/api/v1/scoped/requests/{asked['id']}"
    no_code = alice.post(f"{url}/credentials", {}, format="json")
    assert no_code.status_code == 403 and no_code.json()["error"]["field"] == "otp"
    opened = alice.post(f"{url}/session", {"duration": "5m"}, format="json")
    assert opened.status_code == 403 and opened.json()["error"]["field"] == "otp"
    device = totp_device_create(user=policy.user)
    creds = alice.post(f"{url}/credentials", {"otp": totp_code(device)}, format="json")
    assert creds.status_code == 200 and creds.json()["password"]
    opened = alice.post(f"{url}/session", {"duration": "5m", "otp": totp_code(device, steps_ahead=1)}, format="json")
    assert opened.status_code == 201, opened.json()

    policy.approval_required = True
    policy.save(update_fields=["approval_required"])
    pending = alice.post(
        "/api/v1/scoped/requests",
        {"policy": policy.pk, "resources": [f"{shop}.orders"], "level": "read", "duration": "1h", "reason": "y"},
        format="json",
    ).json()
    refused = bob.post(f"/api/v1/scoped/requests/{pending['id']}/deny", {"comment": "no"}, format="json")
    assert refused.status_code == 403 and refused.json()["error"]["field"] == "otp"
    code = totp_code(totp_device_create(user=setup["approver"]))
    denied = bob.post(f"/api/v1/scoped/requests/{pending['id']}/deny", {"otp": code}, format="json")
    assert denied.status_code == 200 and denied.json()["state"] == "denied"
