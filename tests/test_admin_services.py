"""The admin writes through the same services as the API: the same validation (the stricter rule where the two
differed), the same audit row, the same side effects (open gateway sessions end when their account goes)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import reverse

from access.models import AccessPolicy, Account, AuditAction, AuditEvent, DynamicRole, Gateway, Resource
from access.models.sessions import SessionEndReason, SessionState
from access.services.sessions import session_open
from tests.factories import (
    AccessPolicyFactory,
    AccountFactory,
    DynamicRoleFactory,
    GatewayFactory,
    ResourceFactory,
    SessionFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

ACCOUNT_PASSWORD = "Adm1n-Svc-Acct-Secret-3310"


def _account_form(account: Account, **changes) -> dict:
    form = {
        "resource": account.resource.pk,
        "name": account.name,
        "username": account.username,
        "password": "",
        "description": account.description,
        "rotation_period": "",
    }
    return {**form, **changes}


def _open_session(account: Account):
    policy = AccessPolicyFactory(account=account, approval_required=False)
    session, _secret = session_open(user=policy.user, account=account, duration=timedelta(hours=1))
    return session


# -- validation: the stricter rule wins ---------------------------------------------------------------------
def test_an_account_without_a_password_is_refused_in_the_admin_as_in_the_api(otp_admin_client, api_client):
    resource = ResourceFactory()
    form = {"resource": resource.pk, "name": "nopass", "username": "nopass", "password": "", "rotation_period": ""}

    page = otp_admin_client.post(reverse("admin:access_account_add"), form)

    assert page.status_code == 200
    assert "An account needs the database user&#x27;s password." in page.content.decode()
    api = api_client.post(
        "/api/v1/accounts", {"resource": resource.name, "name": "nopass", "username": "nopass"}, format="json"
    )
    assert api.status_code == 400 and api.json()["error"]["field"] == "password"
    assert not Account.objects.filter(name="nopass").exists()
    assert not AuditEvent.objects.filter(action=AuditAction.ACCOUNT_CREATE).exists()


def test_an_atlas_role_outside_admin_is_refused_in_the_admin_as_in_the_api(otp_admin_client, api_client):
    atlas = ResourceFactory(kind="atlas", uri="", atlas_group_id="5f0000000000000000000001")
    roles = [{"roleName": "read", "databaseName": "reports"}]
    form = {
        "resource": atlas.pk,
        "name": "reports",
        "db": "reports",
        "roles": json.dumps(roles),
        "scopes": "[]",
        "username_template": "v-{holder}-{role}-{random}",
        "password_length": "32",
    }

    page = otp_admin_client.post(reverse("admin:access_dynamicrole_add"), form)

    assert page.status_code == 200 and "Atlas users always authenticate against admin" in page.content.decode()
    api = api_client.post(
        f"/api/v1/mongodb/{atlas.name}/roles/reports", {"roles": roles, "db": "reports"}, format="json"
    )
    assert api.status_code == 400 and api.json()["error"]["field"] == "db"
    assert not DynamicRole.objects.filter(name="reports").exists()


def test_a_mongodb_role_takes_no_atlas_scopes_in_the_admin(otp_admin_client):
    resource = ResourceFactory()
    form = {
        "resource": resource.pk,
        "name": "scoped",
        "db": "app",
        "roles": '["read"]',
        "scopes": json.dumps([{"name": "Cluster0", "type": "CLUSTER"}]),
        "username_template": "v-{holder}-{role}-{random}",
        "password_length": "32",
    }

    page = otp_admin_client.post(reverse("admin:access_dynamicrole_add"), form)

    assert page.status_code == 200 and "a MongoDB role has none" in page.content.decode()
    assert not DynamicRole.objects.filter(name="scoped").exists()


def test_a_role_keeps_its_resource_and_name_as_the_api_path_does(otp_admin_client):
    role = DynamicRoleFactory(name="reader", db="app", roles=["read"])
    resource_id, other = role.resource_id, ResourceFactory()
    url = reverse("admin:access_dynamicrole_change", args=[role.pk])
    form = {
        "resource": other.pk,
        "name": "renamed",
        "db": "app",
        "roles": '["read", "readWrite"]',
        "scopes": "[]",
        "username_template": role.username_template,
        "password_length": "32",
        # what the page carries for fields with a callable default (the browser posts it back)
        "initial-roles": '["read"]',
        "initial-scopes": "[]",
    }

    response = otp_admin_client.post(url, form)

    assert response.status_code == 302, response.content.decode()[:2000]
    role.refresh_from_db()
    assert (role.resource_id, role.name, role.roles) == (resource_id, "reader", ["read", "readWrite"])
    event = AuditEvent.objects.get(action=AuditAction.DYNAMICROLE_UPDATE)
    assert event.actor_name == "sec-admin" and event.data == {"changed": {"roles": ["read", "readWrite"]}}


# -- the same audit row from both doors ------------------------------------------------------------------------
def test_a_resource_change_is_audited_alike_from_the_admin_and_the_api(otp_admin_client, api_client):
    by_admin, by_api = ResourceFactory(), ResourceFactory()
    form = {
        "name": by_admin.name,
        "kind": "mongodb",
        "uri": by_admin.uri,
        "auth_database": "admin",
        "tls_verify": "on",
        "admin_username": by_admin.admin_username,
        "admin_password": "New-Root-Pw-Adm-7781",
        "atlas_base_url": "https://cloud.mongodb.com",
        "description": "moved to rack 4",
        "default_ttl": "1h",
        "max_ttl": "24h",
        "accounts-TOTAL_FORMS": "0",
        "accounts-INITIAL_FORMS": "0",
    }

    response = otp_admin_client.post(reverse("admin:access_resource_change", args=[by_admin.pk]), form)
    assert response.status_code == 302, response.content.decode()[:2000]
    api = api_client.patch(
        f"/api/v1/resources/{by_api.name}",
        {"description": "moved to rack 4", "admin_password": "New-Root-Pw-Api-7782"},
        format="json",
    )
    assert api.status_code == 200, api.content

    rows = {row.target_id: row for row in AuditEvent.objects.filter(action=AuditAction.RESOURCE_UPDATE)}
    expected = {"changed": {"description": "moved to rack 4"}, "write_only_changed": ["admin_password"]}
    assert rows[str(by_admin.pk)].data == rows[str(by_api.pk)].data == expected
    assert Resource.objects.get(pk=by_admin.pk).admin_password.reveal() == "New-Root-Pw-Adm-7781"


def test_an_account_made_in_the_admin_is_audited_like_one_made_through_the_api(otp_admin_client):
    resource = ResourceFactory()
    form = {
        "resource": resource.pk,
        "name": "reports",
        "username": "reports_ro",
        "password": ACCOUNT_PASSWORD,
        "rotation_period": "",
    }

    response = otp_admin_client.post(reverse("admin:access_account_add"), form)

    assert response.status_code == 302, response.content.decode()[:2000]
    account = Account.objects.get(name="reports")
    assert account.password.reveal() == ACCOUNT_PASSWORD
    event = AuditEvent.objects.get(action=AuditAction.ACCOUNT_CREATE)
    assert event.target_id == str(account.pk) and event.data["write_only_changed"] == ["password"]
    assert event.data["changed"]["username"] == "reports_ro" and ACCOUNT_PASSWORD not in json.dumps(event.data)


# -- side effects ----------------------------------------------------------------------------------------------
def test_deleting_an_account_in_the_admin_ends_its_open_sessions(otp_admin_client, staff_user):
    account = AccountFactory(password=ACCOUNT_PASSWORD)
    session = _open_session(account)

    response = otp_admin_client.post(reverse("admin:access_account_delete", args=[account.pk]), {"post": "yes"})

    assert response.status_code == 302
    session.refresh_from_db()
    assert session.state == SessionState.ENDED and session.end_reason == SessionEndReason.ACCOUNT_REVOKED
    assert AuditEvent.objects.filter(
        action=AuditAction.SESSION_END, actor=staff_user, target_id=str(session.pk)
    ).exists()
    assert AuditEvent.objects.filter(action=AuditAction.ACCOUNT_DELETE, actor=staff_user).count() == 1
    assert not Account.objects.filter(pk=account.pk).exists()


def test_bulk_deleting_resources_in_the_admin_ends_their_sessions_one_audit_row_each(otp_admin_client, staff_user):
    first, second = AccountFactory(), AccountFactory()
    sessions = [_open_session(first), _open_session(second)]

    response = otp_admin_client.post(
        reverse("admin:access_resource_changelist"),
        {"action": "delete_selected", "_selected_action": [first.resource.pk, second.resource.pk], "post": "yes"},
    )

    assert response.status_code == 302
    for session in sessions:
        session.refresh_from_db()
        assert session.end_reason == SessionEndReason.ACCOUNT_REVOKED
    deleted = AuditEvent.objects.filter(action=AuditAction.RESOURCE_DELETE, actor=staff_user)
    assert sorted(deleted.values_list("target_name", flat=True)) == sorted([first.resource.name, second.resource.name])


def test_pointing_an_account_at_another_user_ends_its_sessions_but_a_description_does_not(otp_admin_client):
    account = AccountFactory(password=ACCOUNT_PASSWORD)
    session = _open_session(account)
    url = reverse("admin:access_account_change", args=[account.pk])

    assert otp_admin_client.post(url, _account_form(account, description="for reports")).status_code == 302
    session.refresh_from_db()
    assert session.state == SessionState.OPEN

    assert otp_admin_client.post(url, _account_form(account, username="someone_else")).status_code == 302
    session.refresh_from_db()
    assert session.state == SessionState.ENDED and session.end_reason == SessionEndReason.ACCOUNT_REVOKED
    assert Account.objects.get(pk=account.pk).password.reveal() == ACCOUNT_PASSWORD


def test_pointing_a_resource_at_another_deployment_through_the_api_ends_its_sessions(api_client):
    account = AccountFactory()
    session = _open_session(account)

    api = api_client.patch(
        f"/api/v1/resources/{account.resource.name}", {"uri": "mongodb://db9.example.com:27017"}, format="json"
    )

    assert api.status_code == 200, api.content
    session.refresh_from_db()
    assert session.end_reason == SessionEndReason.ACCOUNT_REVOKED


def test_policies_are_created_changed_and_deleted_through_the_policy_services(otp_admin_client, staff_user):
    engineer, account = UserFactory(), AccountFactory()
    form = {"name": "reports", "user": engineer.pk, "account": account.pk, "max_duration": "2h", "is_enabled": "on"}

    created = otp_admin_client.post(reverse("admin:access_accesspolicy_add"), form)
    assert created.status_code == 302, created.content.decode()[:2000]
    policy = AccessPolicy.objects.get(name="reports")
    event = AuditEvent.objects.get(action=AuditAction.ACCESSPOLICY_CREATE)
    assert event.actor == staff_user and event.target_id == str(policy.pk)
    assert event.data["changed"]["user"] == engineer.pk and event.data["changed"]["max_duration"] == "P0DT02H00M00S"

    both = otp_admin_client.post(
        reverse("admin:access_accesspolicy_change", args=[policy.pk]), {**form, "role": DynamicRoleFactory().pk}
    )
    assert both.status_code == 200 and "Choose either an account" in both.content.decode()
    changed = otp_admin_client.post(
        reverse("admin:access_accesspolicy_change", args=[policy.pk]), {**form, "approval_required": "on"}
    )
    assert changed.status_code == 302
    update = AuditEvent.objects.get(action=AuditAction.ACCESSPOLICY_UPDATE)
    assert update.data == {"changed": {"approval_required": True}, "write_only_changed": []}

    deleted = otp_admin_client.post(reverse("admin:access_accesspolicy_delete", args=[policy.pk]), {"post": "yes"})
    assert deleted.status_code == 302 and not AccessPolicy.objects.filter(pk=policy.pk).exists()
    gone = AuditEvent.objects.get(action=AuditAction.ACCESSPOLICY_DELETE)
    assert gone.target_name == "reports" and gone.data["user"] == engineer.pk


def test_deleting_a_gateway_in_the_admin_ends_its_open_sessions(otp_admin_client):
    gateway = GatewayFactory()
    session = SessionFactory(gateway=gateway)

    response = otp_admin_client.post(reverse("admin:access_gateway_delete", args=[gateway.pk]), {"post": "yes"})

    assert response.status_code == 302 and not Gateway.objects.filter(pk=gateway.pk).exists()
    session.refresh_from_db()
    assert session.end_reason == SessionEndReason.GATEWAY_STOPPED
    assert AuditEvent.objects.filter(action=AuditAction.GATEWAY_DELETE, target_name=gateway.name).exists()
