"""The Vault-shaped API over real HTTP handling (DRF test client, bearer tokens) and the real wire server."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

import pytest
from rest_framework.test import APIClient

from access.models import DynamicRole, Lease, Resource
from access.models.leases import LeaseState
from tests.factories import AccessPolicyFactory, DynamicRoleFactory, UserFactory, resource_on
from tests.helpers import audit_text as everything_recorded
from tests.helpers import token_client
from tests.mongo.logins import logs_in as login_works


@pytest.fixture
def resource(db, wire_server):
    return resource_on(wire_server, name="wire")


@pytest.fixture
def role(resource):
    return DynamicRoleFactory(resource=resource, name="reader", db="reports", roles=["read"])


@pytest.fixture
def engineer(db):
    return UserFactory(username="engineer")


@pytest.fixture
def engineer_client(engineer, role):
    AccessPolicyFactory(
        user=engineer, account=None, role=role, approval_required=False, max_duration=timedelta(hours=4)
    )
    return token_client(engineer)


# -- config/connection -------------------------------------------------------------------------------------
def test_connection_config_takes_credentials_out_of_a_vault_style_uri(api_client, wire_server):
    uri = f"mongodb://{wire_server.admin_user}:{quote(wire_server.admin_password)}@{wire_server.host_port}/admin?directConnection=true"
    response = api_client.post("/api/v1/mongodb/wire2/config/connection", {"uri": uri}, format="json")
    assert response.status_code == 201, response.content
    stored = Resource.objects.get(name="wire2")
    assert stored.uri == f"mongodb://{wire_server.host_port}/?directConnection=true"
    assert stored.admin_username == wire_server.admin_user and stored.auth_database == "admin"
    assert stored.admin_password.reveal() == wire_server.admin_password
    assert stored.tls is False

    shown = api_client.get("/api/v1/mongodb/wire2/config/connection")
    assert shown.status_code == 200
    assert shown.json()["data"]["uri"] == stored.uri and shown.json()["data"]["password_set"] is True
    assert wire_server.admin_password not in shown.content.decode()
    assert wire_server.admin_password not in everything_recorded()


def test_connection_config_that_does_not_verify_is_refused_and_nothing_is_stored(api_client, wire_server):
    uri = f"mongodb://{wire_server.admin_user}:wrong-password-Zz9@{wire_server.host_port}/admin?directConnection=true"
    response = api_client.post("/api/v1/mongodb/broken/config/connection", {"uri": uri}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "uri" and "verified" in error["message"]
    assert "wrong-password-Zz9" not in response.content.decode()
    assert not Resource.objects.filter(name="broken").exists()


def test_connection_config_needs_the_change_resource_permission(engineer_client, resource):
    assert engineer_client.get("/api/v1/mongodb/wire/config/connection").status_code == 403
    response = engineer_client.post("/api/v1/mongodb/wire/config/connection", {"uri": "mongodb://x:1"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["message"]


# -- config/lease ------------------------------------------------------------------------------------------
def test_lease_config_sets_and_shows_the_resource_ttls(api_client, resource):
    response = api_client.post("/api/v1/mongodb/wire/config/lease", {"ttl": "30m", "max_ttl": 7200}, format="json")
    assert response.status_code == 204, response.content
    assert api_client.get("/api/v1/mongodb/wire/config/lease").json()["data"] == {"ttl": 1800, "max_ttl": 7200}


def test_lease_config_with_ttl_above_max_is_a_validation_error_naming_the_field(api_client, resource):
    response = api_client.post("/api/v1/mongodb/wire/config/lease", {"ttl": "3h", "max_ttl": "2h"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "ttl"


# -- roles -------------------------------------------------------------------------------------------------
def test_roles_are_written_read_listed_and_deleted_like_vault(api_client, resource):
    body = {
        "db": "sales",
        "roles": '["readWrite", {"role": "read", "db": "reports"}]',
        "default_ttl": "1h",
        "max_ttl": "4h",
    }
    assert api_client.post("/api/v1/mongodb/wire/roles/sales-rw", body, format="json").status_code == 201
    shown = api_client.get("/api/v1/mongodb/wire/roles/sales-rw").json()["data"]
    assert shown["db"] == "sales"
    assert shown["roles"] == ["readWrite", {"role": "read", "db": "reports"}]
    assert (shown["default_ttl"], shown["max_ttl"]) == (3600, 14400)
    assert api_client.post("/api/v1/mongodb/wire/roles/sales-rw", {"roles": ["read"]}, format="json").status_code == 204
    assert DynamicRole.objects.get(name="sales-rw").roles == ["read"]
    assert api_client.get("/api/v1/mongodb/wire/roles").json()["data"]["keys"] == ["sales-rw"]
    assert api_client.delete("/api/v1/mongodb/wire/roles/sales-rw").status_code == 204
    missing = api_client.get("/api/v1/mongodb/wire/roles/sales-rw")
    assert missing.status_code == 404 and missing.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"db": "x", "roles": "[not json"}, "roles"),
        ({"db": "x", "roles": [{"role": "read"}]}, "roles"),
        ({"db": "x", "roles": ["read"], "default_ttl": "5h", "max_ttl": "1h"}, "default_ttl"),
        ({"db": "x", "roles": ["read"], "max_ttl": "soon"}, "max_ttl"),
    ],
)
def test_bad_roles_are_validation_errors_naming_the_field(api_client, resource, body, field):
    response = api_client.post("/api/v1/mongodb/wire/roles/bad", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == field
    assert not DynamicRole.objects.filter(name="bad").exists()


def test_a_role_with_leases_cannot_be_deleted(api_client, role, wire_server):
    assert api_client.get("/api/v1/mongodb/wire/creds/reader").status_code == 200
    response = api_client.delete("/api/v1/mongodb/wire/roles/reader")
    assert response.status_code == 409 and "leases" in response.json()["error"]["message"]


def test_engineers_see_only_their_roles_and_may_not_write_them(engineer_client, role, resource):
    DynamicRoleFactory(resource=resource, name="secret-role")
    assert engineer_client.get("/api/v1/mongodb/wire/roles").json()["data"]["keys"] == ["reader"]
    assert engineer_client.get("/api/v1/mongodb/wire/roles/secret-role").status_code == 404
    assert (
        engineer_client.post("/api/v1/mongodb/wire/roles/reader", {"roles": ["root"]}, format="json").status_code == 403
    )
    assert engineer_client.delete("/api/v1/mongodb/wire/roles/reader").status_code == 403


# -- creds and sys/leases ----------------------------------------------------------------------------------
def test_creds_renew_revoke_through_the_api(engineer_client, role, wire_server):
    issued = engineer_client.get("/api/v1/mongodb/wire/creds/reader")
    assert issued.status_code == 200, issued.content
    body = issued.json()
    assert body["lease_id"].startswith("mongodb/wire/creds/reader/")
    assert body["renewable"] is True and body["lease_duration"] == 3600
    data = body["data"]
    assert data["db"] == "reports" and len(data["password"]) == 32
    assert login_works(wire_server.host_port, "reports", data["username"], data["password"])
    assert Lease.objects.get(lease_id=body["lease_id"]).revealed_at is not None

    renewed = engineer_client.put(
        "/api/v1/sys/leases/renew", {"lease_id": body["lease_id"], "increment": 600}, format="json"
    )
    assert renewed.status_code == 200, renewed.content
    assert 595 <= renewed.json()["lease_duration"] <= 600

    looked_up = engineer_client.put("/api/v1/sys/leases/lookup", {"lease_id": body["lease_id"]}, format="json")
    assert looked_up.json()["data"]["state"] == "active"
    assert data["password"] not in looked_up.content.decode()

    revoked = engineer_client.put("/api/v1/sys/leases/revoke", {"lease_id": body["lease_id"]}, format="json")
    assert revoked.status_code == 204
    assert not login_works(wire_server.host_port, "reports", data["username"], data["password"])
    again = engineer_client.put("/api/v1/sys/leases/revoke", {"lease_id": body["lease_id"]}, format="json")
    assert again.status_code == 204
    not_renewable = engineer_client.put("/api/v1/sys/leases/renew", {"lease_id": body["lease_id"]}, format="json")
    assert not_renewable.status_code == 400 and "cannot be renewed" in not_renewable.json()["error"]["message"]
    assert data["password"] not in everything_recorded()


def test_creds_ttl_is_capped_by_the_policy(engineer, role):
    AccessPolicyFactory(
        user=engineer, account=None, role=role, approval_required=False, max_duration=timedelta(minutes=10)
    )
    client = token_client(engineer)
    body = client.post("/api/v1/mongodb/wire/creds/reader", {"ttl": "2h"}, format="json").json()
    assert body["lease_duration"] == 600
    lease = Lease.objects.get(lease_id=body["lease_id"])
    assert (lease.max_expires_at - lease.issued_at).total_seconds() == 600
    client.put("/api/v1/sys/leases/revoke", {"lease_id": body["lease_id"]}, format="json")


def test_creds_for_an_unknown_or_invisible_role_is_404_and_without_a_grant_403(db, role, resource):
    stranger = token_client(UserFactory(username="stranger"))
    assert stranger.get("/api/v1/mongodb/wire/creds/reader").status_code == 404
    assert stranger.get("/api/v1/mongodb/wire/creds/nope").status_code == 404
    assert stranger.get("/api/v1/mongodb/nowhere/creds/reader").status_code == 404
    waiting = UserFactory(username="waiting")
    AccessPolicyFactory(user=waiting, account=None, role=role, approval_required=True)
    response = token_client(waiting).get("/api/v1/mongodb/wire/creds/reader")
    assert response.status_code == 403
    assert "policy" in response.json()["error"]["message"]
    assert not Lease.objects.exists()


def test_another_users_lease_is_404_and_revoke_prefix_needs_the_permission(engineer_client, api_client, role):
    lease_id = api_client.get("/api/v1/mongodb/wire/creds/reader").json()["lease_id"]
    for path in ("/api/v1/sys/leases/renew", "/api/v1/sys/leases/revoke", "/api/v1/sys/leases/lookup"):
        response = engineer_client.put(path, {"lease_id": lease_id}, format="json")
        assert response.status_code == 404, path
    assert engineer_client.put("/api/v1/sys/leases/revoke", {"lease_id": "nope"}, format="json").status_code == 404
    assert engineer_client.put("/api/v1/sys/leases/revoke-prefix/mongodb/wire/").status_code == 403
    response = api_client.put("/api/v1/sys/leases/revoke-prefix/mongodb/wire/creds/reader/")
    assert response.status_code == 200 and response.json()["data"]["revoked"] == 1
    assert Lease.objects.get(lease_id=lease_id).state == LeaseState.REVOKED


def test_missing_fields_and_anonymous_calls_are_json_errors(api_client, db):
    response = api_client.put("/api/v1/sys/leases/renew", {}, format="json")
    assert response.status_code == 400 and response.json()["error"]["field"] == "lease_id"
    anonymous = APIClient().get("/api/v1/mongodb/wire/creds/reader")
    assert anonymous.status_code in (401, 403) and anonymous.json()["error"]["message"]


def test_revoke_prefix_keeps_its_trailing_slash(api_client, role, wire_server):
    other = resource_on(wire_server, name="wire2")
    DynamicRoleFactory(resource=other, name="reader", db="reports", roles=["read"])
    mine = api_client.get("/api/v1/mongodb/wire/creds/reader").json()["lease_id"]
    theirs = api_client.get("/api/v1/mongodb/wire2/creds/reader").json()["lease_id"]
    response = api_client.put("/api/v1/sys/leases/revoke-prefix/mongodb/wire/")
    assert response.json()["data"]["revoked"] == 1
    assert Lease.objects.get(lease_id=mine).state == LeaseState.REVOKED
    assert Lease.objects.get(lease_id=theirs).state == LeaseState.ACTIVE
    api_client.put("/api/v1/sys/leases/revoke", {"lease_id": theirs}, format="json")


def test_staff_who_may_only_view_a_lease_can_look_it_up_but_not_renew_or_revoke_it(engineer_client, role, wire_server):
    """The holder's lease, seen by staff holding `view_lease` alone: 403 on renew and revoke, and the lease and
    its database user stay as they were (the may-change rule is asked of the loaded row, without a query)."""
    from django.contrib.auth.models import Permission

    issued = engineer_client.get("/api/v1/mongodb/wire/creds/reader").json()
    viewer = UserFactory(username="auditor", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_lease"))
    auditor = token_client(viewer)
    lease_id = issued["lease_id"]
    assert auditor.put("/api/v1/sys/leases/lookup", {"lease_id": lease_id}, format="json").status_code == 200
    for path in ("/api/v1/sys/leases/renew", "/api/v1/sys/leases/revoke"):
        response = auditor.put(path, {"lease_id": lease_id}, format="json")
        assert response.status_code == 403, (path, response.content)
    assert Lease.objects.get(lease_id=lease_id).state == LeaseState.ACTIVE
    user, password = issued["data"]["username"], issued["data"]["password"]
    assert login_works(wire_server.host_port, "reports", user, password)
    assert engineer_client.put("/api/v1/sys/leases/revoke", {"lease_id": lease_id}, format="json").status_code == 204
    assert not login_works(wire_server.host_port, "reports", user, password)
