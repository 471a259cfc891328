"""Atlas roles and credentials through the Vault-shaped API and the admin, against the local Admin API server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from access.models import AuditEvent, DynamicRole, Lease, Resource
from access.models.leases import LeaseState
from access.services.leases import lease_issue
from tests.factories import AccessPolicyFactory, DynamicRoleFactory, UserFactory
from tests.helpers import audit_text, token_client
from tests.helpers import iso_time as parse

pytestmark = pytest.mark.usefixtures("fast_atlas")

ATLAS_ROLES = [
    {"roleName": "readWrite", "databaseName": "orders", "collectionName": "invoices"},
    {"roleName": "read", "databaseName": "reports"},
]
SCOPES = [{"name": "Cluster0", "type": "CLUSTER"}]


@pytest.fixture
def atlas_role(atlas_resource):
    return DynamicRoleFactory(resource=atlas_resource, name="orders", db="admin", roles=ATLAS_ROLES, scopes=SCOPES)


@pytest.fixture
def engineer_client(db, atlas_role):
    engineer = UserFactory(username="engineer")
    AccessPolicyFactory(
        user=engineer, account=None, role=atlas_role, approval_required=False, max_duration=timedelta(hours=4)
    )
    return token_client(engineer)


def test_an_atlas_role_is_written_with_roles_scopes_and_ttls_and_read_back(api_client, atlas_resource):
    body = {"roles": ATLAS_ROLES, "scopes": SCOPES, "default_ttl": "30m", "max_ttl": "2h"}
    created = api_client.post("/api/v1/mongodb/atlas-proj/roles/orders", body, format="json")
    assert created.status_code == 201, created.content

    role = DynamicRole.objects.get(resource=atlas_resource, name="orders")
    assert role.roles == ATLAS_ROLES and role.scopes == SCOPES and role.db == "admin"
    assert role.default_ttl == timedelta(minutes=30) and role.max_ttl == timedelta(hours=2)
    read = api_client.get("/api/v1/mongodb/atlas-proj/roles/orders").json()["data"]
    assert read["roles"] == ATLAS_ROLES and read["scopes"] == SCOPES
    assert read["default_ttl"] == 1800 and read["max_ttl"] == 7200
    assert api_client.get("/api/v1/mongodb/atlas-proj/roles").json()["data"]["keys"] == ["orders"]
    # Vault's JSON-string form works too.
    updated = api_client.post(
        "/api/v1/mongodb/atlas-proj/roles/orders", {"roles": json.dumps(ATLAS_ROLES[1:]), "scopes": "[]"}, format="json"
    )
    assert updated.status_code == 204, updated.content
    role.refresh_from_db()
    assert role.roles == ATLAS_ROLES[1:] and role.scopes == []
    assert AuditEvent.objects.filter(action="dynamicrole.create", target_name__contains="orders").exists()


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"roles": ["readWrite"]}, "roles", "needs roleName and databaseName"),
        ({"roles": [{"roleName": "read", "databaseName": "x", "db": "y"}]}, "roles", "unknown keys: db"),
        ({"roles": ATLAS_ROLES, "scopes": [{"name": "c", "type": "SERVERLESS"}]}, "scopes", "CLUSTER, DATA_LAKE"),
        ({"roles": ATLAS_ROLES, "db": "orders"}, "db", "always authenticate against admin"),
    ],
)
def test_bad_atlas_roles_are_validation_errors_naming_the_field(api_client, atlas_resource, body, field, words):
    response = api_client.post("/api/v1/mongodb/atlas-proj/roles/bad", body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == field or field in json.dumps(error["details"])
    assert words in json.dumps(error)
    assert not DynamicRole.objects.filter(name="bad").exists()


def test_creds_renew_revoke_through_the_api_for_an_atlas_role(engineer_client, atlas_role, atlas_api):
    issued = engineer_client.get("/api/v1/mongodb/atlas-proj/creds/orders")
    assert issued.status_code == 200, issued.content
    body = issued.json()
    assert body["lease_id"].startswith("mongodb/atlas-proj/creds/orders/")
    assert body["renewable"] is True and body["lease_duration"] == 3600
    data = body["data"]
    assert data["db"] == "admin" and len(data["password"]) == 32
    user = atlas_api.user(data["username"])
    assert user["password"] == data["password"] and user["scopes"] == SCOPES
    assert atlas_api.is_applied(), "the API answered before the cluster applied the user"

    renewed = engineer_client.put(
        "/api/v1/sys/leases/renew", {"lease_id": body["lease_id"], "increment": "2h"}, format="json"
    )
    assert renewed.status_code == 200, renewed.content
    delete_after = parse(atlas_api.user(data["username"])["deleteAfterDate"])
    assert abs(delete_after - (datetime.now(UTC) + timedelta(hours=2))) < timedelta(seconds=30)

    revoked = engineer_client.put("/api/v1/sys/leases/revoke", {"lease_id": body["lease_id"]}, format="json")
    assert revoked.status_code == 204, revoked.content
    assert atlas_api.user(data["username"]) is None
    again = engineer_client.put("/api/v1/sys/leases/revoke", {"lease_id": body["lease_id"]}, format="json")
    assert again.status_code == 204
    recorded = audit_text()
    assert data["password"] not in recorded and atlas_api.state.private_key not in recorded


def test_an_atlas_refusal_reaches_the_api_caller_in_words_without_secrets(engineer_client, atlas_resource, atlas_api):
    atlas_resource.atlas_private_key = "0b1e3c0d-1111-2222-3333-444455556666"
    atlas_resource.save()

    response = engineer_client.get("/api/v1/mongodb/atlas-proj/creds/orders")

    assert response.status_code == 503
    message = response.json()["error"]["message"]
    assert "Atlas refused creating database user" in message and "was not accepted" in message
    assert "HTTP 401" in message
    assert "0b1e3c0d-1111-2222-3333-444455556666" not in response.content.decode()
    assert atlas_api.state.private_key not in response.content.decode()


def test_an_atlas_renewal_it_refuses_is_503_with_atlas_words(engineer_client, atlas_api):
    body = engineer_client.get("/api/v1/mongodb/atlas-proj/creds/orders").json()
    atlas_api.fail_next("PATCH", "/databaseUsers/", status=400, error_code="INVALID_DELETE_AFTER_DATE")

    renewed = engineer_client.put("/api/v1/sys/leases/renew", {"lease_id": body["lease_id"]}, format="json")

    assert renewed.status_code == 503
    assert "INVALID_DELETE_AFTER_DATE" in renewed.json()["error"]["message"]


def test_lease_config_applies_to_atlas_projects(api_client, atlas_resource):
    response = api_client.post(
        "/api/v1/mongodb/atlas-proj/config/lease", {"ttl": "15m", "max_ttl": "3h"}, format="json"
    )
    assert response.status_code == 204, response.content
    atlas_resource.refresh_from_db()
    assert atlas_resource.default_ttl == timedelta(minutes=15) and atlas_resource.max_ttl == timedelta(hours=3)


# -- admin ---------------------------------------------------------------------------------------------------
def test_admin_creates_an_atlas_resource_and_never_shows_its_private_key(otp_admin_client, atlas_api, db):
    private_key = atlas_api.state.private_key
    response = otp_admin_client.post(
        "/admin/access/resource/add/",
        {
            "name": "atlas-admin",
            "kind": "atlas",
            "description": "",
            "auth_database": "admin",
            "tls": "on",
            "tls_verify": "on",
            "atlas_group_id": atlas_api.state.group_id,
            "atlas_public_key": atlas_api.state.public_key,
            "atlas_private_key": private_key,
            "atlas_base_url": atlas_api.base_url,
            "default_ttl": "1h",
            "max_ttl": "24h",
            "command_deny_list": "[]",
            "accounts-TOTAL_FORMS": "0",
            "accounts-INITIAL_FORMS": "0",
            "accounts-MIN_NUM_FORMS": "0",
            "accounts-MAX_NUM_FORMS": "1000",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    resource = Resource.objects.get(name="atlas-admin")
    assert resource.is_atlas and resource.atlas_private_key.reveal() == private_key

    page = otp_admin_client.get(f"/admin/access/resource/{resource.pk}/change/").content.decode()
    assert atlas_api.state.public_key in page
    assert private_key not in page
    recorded = audit_text()
    assert private_key not in recorded


def test_admin_atlas_role_form_validates_atlas_roles_and_scopes(otp_admin_client, atlas_resource):
    form = {
        "resource": atlas_resource.pk,
        "name": "admin-made",
        "description": "",
        "db": "admin",
        "roles": json.dumps([{"roleName": "read"}]),
        "scopes": json.dumps(SCOPES),
        "username_template": "v-{holder}-{role}-{random}",
        "password_length": "32",
    }
    refused = otp_admin_client.post("/admin/access/dynamicrole/add/", form)
    assert refused.status_code == 200
    assert "Atlas role 1 needs roleName and databaseName." in refused.content.decode()

    form["roles"] = json.dumps(ATLAS_ROLES)
    saved = otp_admin_client.post("/admin/access/dynamicrole/add/", form)
    assert saved.status_code == 302, saved.content.decode()[:3000]
    role = DynamicRole.objects.get(name="admin-made")
    assert role.roles == ATLAS_ROLES and role.scopes == SCOPES


def test_admin_lease_page_shows_the_atlas_error_but_no_secret(otp_admin_client, atlas_role, atlas_api, settings):
    settings.PAM_ATLAS_MAX_RETRIES = 1
    lease, password = lease_issue(role=atlas_role, holder=UserFactory())
    atlas_api.fail_next("DELETE", "/databaseUsers/", status=500, times=10)
    from access.services.leases import lease_revoke

    failed = lease_revoke(lease=lease, actor="test")
    assert failed.state == LeaseState.REVOKE_FAILED

    page = otp_admin_client.get(f"/admin/access/lease/{lease.pk}/change/").content.decode()
    assert "UNEXPECTED_ERROR" in page
    assert password not in page and atlas_api.state.private_key not in page
    listing = otp_admin_client.get("/admin/access/lease/").content.decode()
    assert password not in listing
    assert Lease.objects.get(pk=lease.pk).attempts == 1


# -- portal ----------------------------------------------------------------------------------------------------
def test_the_portal_issues_shows_once_renews_and_revokes_an_atlas_lease(atlas_role, atlas_api):
    from tests.helpers import verified_client

    engineer = UserFactory(username="paula")
    AccessPolicyFactory(
        user=engineer, account=None, role=atlas_role, approval_required=False, max_duration=timedelta(hours=4)
    )
    browser = verified_client(engineer)

    issued = browser.post(f"/roles/{atlas_role.pk}/use/", {"ttl": "1h"})
    assert issued.status_code == 302, issued.content.decode()[:2000]
    lease = Lease.objects.get(holder=engineer)
    assert atlas_api.is_applied() and atlas_api.user(lease.username) is not None

    page = browser.get(f"/leases/{lease.pk}/").content.decode()
    password = atlas_api.user(lease.username)["password"]
    assert password in page and lease.username in page
    second = browser.get(f"/leases/{lease.pk}/").content.decode()
    assert password not in second and "shown once" in second

    assert browser.post(f"/leases/{lease.pk}/renew/", {"increment": "2h"}).status_code == 302
    delete_after = parse(atlas_api.user(lease.username)["deleteAfterDate"])
    assert delete_after - datetime.now(UTC) > timedelta(minutes=90)

    assert browser.post(f"/leases/{lease.pk}/revoke/").status_code == 302
    assert Lease.objects.get(pk=lease.pk).state == LeaseState.REVOKED
    assert atlas_api.user(lease.username) is None


def test_the_portal_builds_a_connection_string_when_the_atlas_project_names_a_cluster_uri(atlas_role, atlas_api):
    from access.selectors.leases import lease_connection_string

    atlas_role.resource.uri = "mongodb+srv://cluster0.abcde.mongodb.net"
    atlas_role.resource.save()
    lease, password = lease_issue(role=atlas_role, holder=UserFactory())
    assert lease_connection_string(lease, password).startswith(
        f"mongodb+srv://{lease.username}:{password}@cluster0.abcde.mongodb.net/admin?authSource=admin"
    )
