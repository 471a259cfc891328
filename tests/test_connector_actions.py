"""Connector actions with rollback, on real servers: the service, the API and the admin buttons.

Each test logs in as the affected user with pymongo to observe what a user would: a refused login, a cut
connection, a role that works or not. Generated passwords are searched for in records, audit rows and pages.
"""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from pymongo.errors import OperationFailure

from access.models import Account, AuditEvent, ConnectorAction
from access.models.actions import ActionKind, ActionState
from access.services.actions import action_rollback, action_run
from connectors.mongodb import LOCK_RESTRICTIONS, MongoDBConnector
from tests.factories import AccountFactory, ResourceFactory
from tests.helpers import assert_connection_cut as _assert_cut
from tests.helpers import audit_text as _everything_recorded
from tests.helpers import unique_name as _name
from tests.helpers import unique_password as _password
from tests.mongo.logins import logs_in as _logs_in
from tests.mongo.logins import user_client as _user_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def app_user(wire_server):
    """A user in `app` with `read` on app: (name, password)."""
    name, password = _name(), _password()
    wire_server.create_user(name, password, [{"role": "read", "db": "app"}], db="app")
    return name, password


@pytest.fixture
def account_user(wire_server, wire_resource):
    """A user in admin with readWrite on app, stored as an Account of the resource: (account, password)."""
    name, password = _name("acct"), _password()
    wire_server.create_user(name, password, [{"role": "readWrite", "db": "app"}], db="admin")
    return AccountFactory(resource=wire_resource, username=name, password=password), password


# -- rotate ---------------------------------------------------------------------------------------------
@pytest.mark.wireserver
def test_rotate_stores_the_new_password_in_the_account_and_cuts_the_live_connection(
    wire_server, wire_resource, account_user, staff_user
):
    account, old_password = account_user
    with _user_client(wire_server.host_port, "admin", account.username, old_password) as live:
        live.app.command("ping")
        action = action_run(
            resource=wire_resource,
            kind=ActionKind.ROTATE_PASSWORD,
            db="admin",
            username=account.username,
            params={},
            actor=staff_user,
        )
        assert action.state == ActionState.SUCCEEDED, action.error
        _assert_cut(live)
    account.refresh_from_db()
    new_password = account.password.reveal()
    assert new_password != old_password and len(new_password) == 32
    assert not _logs_in(wire_server.host_port, "admin", account.username, old_password)
    assert _logs_in(wire_server.host_port, "admin", account.username, new_password)
    assert action.account == account and action.result["password_stored"] is True
    assert action.result["connections_ended"] >= 1
    assert account.last_rotated_at is not None
    assert not action.can_roll_back
    with pytest.raises(ValidationError):
        action_rollback(action=action, actor=staff_user)
    recorded = _everything_recorded()
    assert new_password not in recorded and old_password not in recorded
    assert AuditEvent.objects.filter(action="account.rotate_password", target_id=str(account.pk)).exists()


@pytest.mark.ferretdb
def test_rotate_on_ferretdb_changes_the_password(ferret_resource, ferretdb_server, staff_user):
    name, old_password = _name(), _password()
    with MongoDBConnector(ferret_resource) as connector:
        connector.create_user(db="admin", username=name, password=old_password, roles=[])
    account = AccountFactory(resource=ferret_resource, username=name, password=old_password)
    action = action_run(
        resource=ferret_resource, kind=ActionKind.ROTATE_PASSWORD, db="admin", username=name, actor=staff_user
    )
    assert action.state == ActionState.SUCCEEDED, action.error
    account.refresh_from_db()
    host = f"127.0.0.1:{ferretdb_server.port}"
    assert not _logs_in(host, "admin", name, old_password)
    assert _logs_in(host, "admin", name, account.password.reveal())
    assert account.password.reveal() not in _everything_recorded()
    with MongoDBConnector(ferret_resource) as connector:
        connector.drop_user(db="admin", username=name)


@pytest.mark.wireserver
def test_rotating_a_user_without_an_account_says_the_password_was_not_stored(wire_resource, app_user, staff_user):
    name, _ = app_user
    action = action_run(
        resource=wire_resource, kind=ActionKind.ROTATE_PASSWORD, db="app", username=name, actor=staff_user
    )
    assert action.state == ActionState.SUCCEEDED
    assert action.result["password_stored"] is False and action.account is None


@pytest.mark.wireserver
def test_the_resource_admin_account_cannot_be_rotated_locked_or_dropped_here(wire_resource, staff_user):
    for kind in (ActionKind.ROTATE_PASSWORD, ActionKind.LOCK_USER, ActionKind.DROP_USER):
        with pytest.raises(ValidationError):
            action_run(
                resource=wire_resource, kind=kind, db="admin", username=wire_resource.admin_username, actor=staff_user
            )
    assert not ConnectorAction.objects.exists()


# -- grant / revoke -------------------------------------------------------------------------------------
@pytest.mark.wireserver
def test_grant_then_rollback_revokes_only_what_was_added(wire_server, wire_resource, app_user, staff_user):
    name, password = app_user
    action = action_run(
        resource=wire_resource,
        kind=ActionKind.GRANT_ROLE,
        db="app",
        username=name,
        params={"roles": ["readWrite", "read"]},
        actor=staff_user,
    )
    assert action.state == ActionState.SUCCEEDED, action.error
    assert action.before_image["roles"] == [{"role": "read", "db": "app"}]
    with _user_client(wire_server.host_port, "app", name, password) as user:
        user.app.things.insert_one({"by": name})
        rolled = action_rollback(action=action, actor=staff_user)
        assert rolled.state == ActionState.ROLLED_BACK and rolled.rolled_back_by == staff_user.username
        assert rolled.result["rollback"] == {"revoked": [{"role": "readWrite", "db": "app"}]}
        with pytest.raises(OperationFailure):
            user.app.things.insert_one({"by": name})
        assert user.app.things.count_documents({}) >= 1  # `read`, held before, was kept
    assert not rolled.can_roll_back
    actions = list(
        AuditEvent.objects.filter(target_type="access.connectoraction", target_id=str(action.pk))
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions == [
        "connector_action.run",
        "connector_action.succeeded",
        "connector_action.rollback",
        "connector_action.rolled_back",
    ]


@pytest.mark.wireserver
def test_revoke_then_rollback_grants_the_role_back(wire_server, wire_resource, staff_user):
    name, password = _name(), _password()
    wire_server.create_user(name, password, [{"role": "readWrite", "db": "app"}], db="app")
    action = action_run(
        resource=wire_resource,
        kind=ActionKind.REVOKE_ROLE,
        db="app",
        username=name,
        params={"role": "readWrite"},
        actor=staff_user,
    )
    assert action.state == ActionState.SUCCEEDED
    assert action.result["roles"] == []
    with _user_client(wire_server.host_port, "app", name, password) as user:
        with pytest.raises(OperationFailure):
            user.app.things.insert_one({"x": 1})
        assert action_rollback(action=action, actor=staff_user).state == ActionState.ROLLED_BACK
        user.app.things.insert_one({"x": 1})


@pytest.mark.wireserver
def test_a_failing_action_is_recorded_failed_with_the_connector_message(wire_resource, staff_user):
    action = action_run(
        resource=wire_resource,
        kind=ActionKind.GRANT_ROLE,
        db="app",
        username="nobody-here",
        params={"role": "read"},
        actor=staff_user,
    )
    assert action.state == ActionState.FAILED
    assert "does not exist" in action.error and action.error.startswith("not found error")
    assert AuditEvent.objects.filter(action="connector_action.failed", target_id=str(action.pk)).exists()
    assert not action.can_roll_back


def test_an_unreachable_server_fails_the_action_in_words(db, staff_user):
    resource = ResourceFactory(uri="mongodb://127.0.0.1:1/?directConnection=true&serverSelectionTimeoutMS=500")
    action = action_run(resource=resource, kind=ActionKind.DROP_USER, db="app", username="x", actor=staff_user)
    assert action.state == ActionState.FAILED
    assert "unreachable" in action.error
    assert resource.admin_password.reveal() not in _everything_recorded()


def test_bad_requests_are_refused_before_anything_is_recorded(db, staff_user):
    resource = ResourceFactory()
    with pytest.raises(ValidationError):
        action_run(resource=resource, kind="format_disk", db="app", username="x", actor=staff_user)
    with pytest.raises(ValidationError):
        action_run(resource=resource, kind=ActionKind.GRANT_ROLE, db="app", username="x", params={}, actor=staff_user)
    with pytest.raises(ValidationError):
        action_run(
            resource=resource,
            kind=ActionKind.ROTATE_PASSWORD,
            db="app",
            username="x",
            params={"password": "mine"},
            actor=staff_user,
        )
    assert not ConnectorAction.objects.exists()


# -- create read-only user ----------------------------------------------------------------------------
@pytest.mark.wireserver
def test_create_read_only_user_stores_an_account_and_rollback_drops_both(wire_server, wire_resource, staff_user):
    name = _name("ro")
    action = action_run(
        resource=wire_resource,
        kind=ActionKind.CREATE_READ_ONLY_USER,
        db="reports",
        username=name,
        params={"account_name": f"{name}-acct"},
        actor=staff_user,
    )
    assert action.state == ActionState.SUCCEEDED, action.error
    account = Account.objects.get(resource=wire_resource, username=name)
    password = account.password.reveal()
    assert action.db == "admin" and action.params["database"] == "reports"
    with _user_client(wire_server.host_port, "admin", name, password) as user:
        user.reports.things.count_documents({})
        with pytest.raises(OperationFailure):
            user.reports.things.insert_one({"x": 1})
        with pytest.raises(OperationFailure):
            user.app.things.count_documents({})
    assert password not in _everything_recorded()

    rolled = action_rollback(action=action, actor=staff_user)
    assert rolled.state == ActionState.ROLLED_BACK, rolled.error
    assert not Account.objects.filter(pk=account.pk).exists()
    assert not _logs_in(wire_server.host_port, "admin", name, password)
    assert AuditEvent.objects.filter(action="account.delete", target_id=str(account.pk)).exists()


# -- drop -----------------------------------------------------------------------------------------------
@pytest.mark.wireserver
def test_drop_keeps_the_definition_without_credentials_and_cannot_be_rolled_back(
    wire_server, wire_resource, app_user, staff_user
):
    name, password = app_user
    with _user_client(wire_server.host_port, "app", name, password) as live:
        live.app.command("ping")
        action = action_run(
            resource=wire_resource, kind=ActionKind.DROP_USER, db="app", username=name, actor=staff_user
        )
        assert action.state == ActionState.SUCCEEDED
        _assert_cut(live)
    assert action.before_image["user"]["user"] == name
    assert action.before_image["user"]["roles"] == [{"role": "read", "db": "app"}]
    assert "credentials" not in json.dumps(action.before_image)
    assert action.result["dropped"] is True
    assert not _logs_in(wire_server.host_port, "app", name, password)
    assert not action.can_roll_back
    with pytest.raises(ValidationError):
        action_rollback(action=action, actor=staff_user)


# -- lock / unlock -----------------------------------------------------------------------------------------
@pytest.mark.wireserver
def test_lock_cuts_the_connection_and_refuses_logins_and_rollback_restores(
    wire_server, wire_resource, app_user, staff_user
):
    name, password = app_user
    with _user_client(wire_server.host_port, "app", name, password) as live:
        live.app.command("ping")
        action = action_run(
            resource=wire_resource, kind=ActionKind.LOCK_USER, db="app", username=name, actor=staff_user
        )
        assert action.state == ActionState.SUCCEEDED, action.error
        _assert_cut(live)
    assert action.before_image == {"authenticationRestrictions": []}
    assert not _logs_in(wire_server.host_port, "app", name, password)
    rolled = action_rollback(action=action, actor=staff_user)
    assert rolled.state == ActionState.ROLLED_BACK
    assert _logs_in(wire_server.host_port, "app", name, password)


@pytest.mark.wireserver
def test_unlock_restores_the_restrictions_the_last_lock_replaced(wire_server, wire_resource, staff_user):
    name, password = _name(), _password()
    previous = [{"clientSource": ["127.0.0.1/32"]}]
    wire_server.create_user(name, password, ["read"], db="app", restrictions=previous)
    lock = action_run(resource=wire_resource, kind=ActionKind.LOCK_USER, db="app", username=name, actor=staff_user)
    assert lock.before_image["authenticationRestrictions"] == previous
    unlock = action_run(resource=wire_resource, kind=ActionKind.UNLOCK_USER, db="app", username=name, actor=staff_user)
    assert unlock.state == ActionState.SUCCEEDED
    assert unlock.before_image["authenticationRestrictions"] == LOCK_RESTRICTIONS
    assert unlock.result["authenticationRestrictions"] == previous
    with MongoDBConnector(wire_resource) as connector:
        assert connector.get_user(db="app", username=name)["authenticationRestrictions"] == previous
    assert _logs_in(wire_server.host_port, "app", name, password)


# -- the API ------------------------------------------------------------------------------------------------
def _actions_url(resource, *rest) -> str:
    return "/".join([f"/api/v1/mongodb/{resource.name}/actions", *map(str, rest)])


@pytest.mark.wireserver
def test_api_runs_lists_reads_and_rolls_back_a_grant(api_client, wire_server, wire_resource, app_user):
    name, password = app_user
    response = api_client.post(
        _actions_url(wire_resource),
        {"kind": "grant_role", "db": "app", "username": name, "params": {"roles": ["readWrite"]}},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["state"] == "succeeded" and body["can_roll_back"] is True
    assert body["before_image"] == {"roles": [{"role": "read", "db": "app"}]}
    assert {"role": "readWrite", "db": "app"} in body["result"]["roles"]

    listed = api_client.get(_actions_url(wire_resource)).json()
    assert [item["id"] for item in listed["results"]] == [body["id"]]
    assert api_client.get(_actions_url(wire_resource, body["id"])).json()["username"] == name

    rolled = api_client.post(_actions_url(wire_resource, body["id"], "rollback"))
    assert rolled.status_code == 200, rolled.content
    assert rolled.json()["state"] == "rolled_back"
    with _user_client(wire_server.host_port, "app", name, password) as user, pytest.raises(OperationFailure):
        user.app.things.insert_one({"x": 1})


@pytest.mark.wireserver
def test_api_create_read_only_user_never_returns_the_password(api_client, wire_resource):
    name = _name("ro")
    response = api_client.post(
        _actions_url(wire_resource),
        {"kind": "create_read_only_user", "db": "reports", "username": name},
        format="json",
    )
    assert response.status_code == 201, response.content
    password = Account.objects.get(resource=wire_resource, username=name).password.reveal()
    assert password not in response.content.decode()
    assert password not in api_client.get(_actions_url(wire_resource)).content.decode()
    assert api_client.post(_actions_url(wire_resource, response.json()["id"], "rollback")).status_code == 200


@pytest.mark.wireserver
def test_api_reports_a_connector_failure_with_the_record(api_client, wire_resource):
    response = api_client.post(
        _actions_url(wire_resource),
        {"kind": "lock_user", "db": "app", "username": "nobody-at-all"},
        format="json",
    )
    assert response.status_code == 502
    body = response.json()
    assert "does not exist" in body["error"]["message"]
    assert body["action"]["state"] == "failed"


@pytest.mark.wireserver
def test_api_refuses_to_roll_back_a_drop(api_client, wire_resource, app_user):
    name, _ = app_user
    dropped = api_client.post(
        _actions_url(wire_resource), {"kind": "drop_user", "db": "app", "username": name}, format="json"
    )
    assert dropped.status_code == 201
    refused = api_client.post(_actions_url(wire_resource, dropped.json()["id"], "rollback"))
    assert refused.status_code == 400
    assert "cannot be rolled back" in refused.json()["error"]["message"]


def test_api_validates_input_and_hides_unknown_resources(api_client):
    resource = ResourceFactory()
    bad = api_client.post(_actions_url(resource), {"kind": "grant_role", "db": "app", "username": "x"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "params"
    unknown_kind = api_client.post(_actions_url(resource), {"kind": "nuke", "db": "a", "username": "x"}, format="json")
    assert unknown_kind.status_code == 400 and unknown_kind.json()["error"]["field"] == "kind"
    assert api_client.get("/api/v1/mongodb/no-such-resource/actions").status_code == 404
    assert api_client.get(_actions_url(resource, 999999)).status_code == 404
    assert not ConnectorAction.objects.exists()


def test_api_needs_staff_with_the_add_connectoraction_permission(db):
    from django.contrib.auth.models import Permission
    from rest_framework.test import APIClient

    from access.services.tokens import api_token_create
    from tests.factories import UserFactory

    resource = ResourceFactory()
    user = UserFactory(is_staff=True)
    _token, raw = api_token_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get(_actions_url(resource)).status_code == 403
    assert client.post(_actions_url(resource), {"kind": "drop_user", "db": "a", "username": "x"}).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="add_connectoraction"))
    user = type(user).objects.get(pk=user.pk)  # fresh permission cache
    assert client.get(_actions_url(resource)).status_code == 200
    user.is_staff = False
    user.save()
    assert client.get(_actions_url(resource)).status_code == 403
    assert APIClient().get(_actions_url(resource)).status_code in (401, 403)


# -- the admin --------------------------------------------------------------------------------------------
def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


@pytest.mark.wireserver
def test_admin_roll_back_button_undoes_a_lock(otp_admin_client, wire_server, wire_resource, app_user, staff_user):
    name, password = app_user
    action = action_run(resource=wire_resource, kind=ActionKind.LOCK_USER, db="app", username=name, actor=staff_user)
    page = otp_admin_client.get(f"/admin/access/connectoraction/{action.pk}/change/")
    assert page.status_code == 200
    assert b"Roll back" in page.content and b"csrfmiddlewaretoken" in page.content
    assert otp_admin_client.get(f"/admin/access/connectoraction/{action.pk}/rollback/").status_code == 403

    response = otp_admin_client.post(f"/admin/access/connectoraction/{action.pk}/rollback/", follow=True)
    assert any("Rolled back" in m for m in _messages(response))
    action.refresh_from_db()
    assert action.state == ActionState.ROLLED_BACK
    assert _logs_in(wire_server.host_port, "app", name, password)
    assert b"Roll back</button>" not in response.content  # nothing left to roll back

    listing = otp_admin_client.get("/admin/access/connectoraction/?state=rolled_back")
    assert listing.status_code == 200 and name.encode() in listing.content and b"Run an action" in listing.content


@pytest.mark.wireserver
def test_admin_roll_back_post_is_csrf_protected(client, otp_admin_client, wire_resource, app_user, staff_user):
    from django.test import Client

    name, _ = app_user
    action = action_run(resource=wire_resource, kind=ActionKind.LOCK_USER, db="app", username=name, actor=staff_user)
    strict = Client(enforce_csrf_checks=True)
    strict.cookies = otp_admin_client.cookies
    assert strict.post(f"/admin/access/connectoraction/{action.pk}/rollback/").status_code == 403
    action.refresh_from_db()
    assert action.state == ActionState.SUCCEEDED


@pytest.mark.wireserver
def test_admin_rotates_an_account_password_after_confirmation(otp_admin_client, wire_server, account_user):
    account, old_password = account_user
    form = {"action": "rotate_account_password", "_selected_action": [account.pk]}
    confirm = otp_admin_client.post("/admin/access/account/", form)
    assert confirm.status_code == 200 and b"cannot be rolled back" in confirm.content
    account.refresh_from_db()
    assert account.password.reveal() == old_password  # nothing happened yet

    done = otp_admin_client.post("/admin/access/account/", {**form, "confirmed": "yes"}, follow=True)
    assert any("Rotated the password" in m for m in _messages(done))
    account.refresh_from_db()
    new_password = account.password.reveal()
    assert new_password != old_password
    assert _logs_in(wire_server.host_port, "admin", account.username, new_password)
    pages = done.content + otp_admin_client.get(f"/admin/access/account/{account.pk}/change/").content
    action = ConnectorAction.objects.get(kind=ActionKind.ROTATE_PASSWORD)
    pages += otp_admin_client.get(f"/admin/access/connectoraction/{action.pk}/change/").content
    pages += otp_admin_client.get("/admin/access/auditevent/").content
    assert new_password.encode() not in pages and old_password.encode() not in pages


@pytest.mark.wireserver
def test_admin_locks_unlocks_and_drops_an_account_user(otp_admin_client, wire_server, account_user):
    account, password = account_user
    selected = {"_selected_action": [account.pk]}
    locked = otp_admin_client.post("/admin/access/account/", {"action": "lock_account_user", **selected}, follow=True)
    assert any(f"Locked {account.username}" in m for m in _messages(locked))
    assert not _logs_in(wire_server.host_port, "admin", account.username, password)

    unlocked = otp_admin_client.post(
        "/admin/access/account/", {"action": "unlock_account_user", **selected}, follow=True
    )
    assert any(f"Unlocked {account.username}" in m for m in _messages(unlocked))
    assert _logs_in(wire_server.host_port, "admin", account.username, password)

    form = {"action": "drop_account_user", **selected}
    assert b"Drop database users?" in otp_admin_client.post("/admin/access/account/", form).content
    dropped = otp_admin_client.post("/admin/access/account/", {**form, "confirmed": "yes"}, follow=True)
    assert any(f"Dropped {account.username}" in m for m in _messages(dropped))
    assert not _logs_in(wire_server.host_port, "admin", account.username, password)
    assert Account.objects.filter(pk=account.pk).exists()  # the record stays


@pytest.mark.wireserver
def test_admin_failure_message_is_in_words(otp_admin_client, wire_resource):
    account = AccountFactory(resource=wire_resource, username="not-on-the-server")
    response = otp_admin_client.post(
        "/admin/access/account/", {"action": "lock_account_user", "_selected_action": [account.pk]}, follow=True
    )
    assert any("failed" in m and "does not exist" in m for m in _messages(response))


@pytest.mark.wireserver
def test_admin_verify_connection_tells_success_and_failure(otp_admin_client, wire_resource):
    broken = ResourceFactory(
        uri=wire_resource.uri, admin_username=wire_resource.admin_username, admin_password="Wrong-Pass-Zz9-kk"
    )
    response = otp_admin_client.post(
        "/admin/access/resource/",
        {"action": "verify_resource_connection", "_selected_action": [wire_resource.pk, broken.pk]},
        follow=True,
    )
    texts = _messages(response)
    assert any(f"{wire_resource.name}: connected to MongoDB" in m for m in texts)
    assert any(f"{broken.name}: authentication problem" in m for m in texts)
    assert b"Wrong-Pass-Zz9-kk" not in response.content
    assert wire_resource.admin_password.reveal().encode() not in response.content
    assert AuditEvent.objects.filter(action="resource.verify_connection").count() == 2


@pytest.mark.wireserver
def test_admin_form_grants_a_role_and_creates_a_read_only_user(otp_admin_client, wire_server, wire_resource, app_user):
    name, password = app_user
    assert otp_admin_client.get("/admin/access/connectoraction/run/").status_code == 200
    granted = otp_admin_client.post(
        "/admin/access/connectoraction/run/",
        {"resource": wire_resource.pk, "kind": "grant_role", "db": "app", "username": name, "roles": "readWrite"},
        follow=True,
    )
    assert any("Done: Grant role to user" in m for m in _messages(granted))
    assert b"Roll back" in granted.content
    with _user_client(wire_server.host_port, "app", name, password) as user:
        user.app.things.insert_one({"x": 1})

    missing_roles = otp_admin_client.post(
        "/admin/access/connectoraction/run/",
        {"resource": wire_resource.pk, "kind": "revoke_role", "db": "app", "username": name},
    )
    assert missing_roles.status_code == 200 and b"Name at least one role" in missing_roles.content

    reader = _name("ro")
    created = otp_admin_client.post(
        "/admin/access/connectoraction/run/",
        {"resource": wire_resource.pk, "kind": "create_read_only_user", "db": "reports", "username": reader},
        follow=True,
    )
    assert any("Done: Create read-only user" in m for m in _messages(created))
    secret = Account.objects.get(resource=wire_resource, username=reader).password.reveal()
    assert _logs_in(wire_server.host_port, "admin", reader, secret)
    pages = created.content + otp_admin_client.get("/admin/access/connectoraction/").content
    assert secret.encode() not in pages and secret not in _everything_recorded()


@pytest.mark.wireserver
def test_a_rotation_that_fails_after_the_password_changed_still_stores_the_new_password(
    wire_server, wire_resource, account_user, staff_user, wire_faults_cleared
):
    account, old_password = account_user
    wire_faults_cleared.fail_command("killAllSessions", 8000, "injected kill failure")
    action = action_run(
        resource=wire_resource, kind=ActionKind.ROTATE_PASSWORD, db="admin", username=account.username, actor=staff_user
    )
    assert action.state == ActionState.FAILED and "injected kill failure" in action.error
    account.refresh_from_db()
    assert account.password.reveal() != old_password
    assert _logs_in(wire_server.host_port, "admin", account.username, account.password.reveal())
    assert account.password.reveal() not in _everything_recorded()


def test_admin_staff_without_the_permission_cannot_run_or_roll_back(client, db, staff_user):
    from django.contrib.auth.models import Permission
    from django_otp import DEVICE_ID_SESSION_KEY

    from access.otp import totp_device_create
    from tests.factories import UserFactory

    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(
        Permission.objects.get(codename="view_connectoraction"), Permission.objects.get(codename="view_account")
    )
    device = totp_device_create(user=viewer)
    client.force_login(viewer)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    resource = ResourceFactory()
    action = ConnectorAction.objects.create(
        resource=resource, kind=ActionKind.LOCK_USER, db="app", username="x", state=ActionState.SUCCEEDED
    )
    page = client.get(f"/admin/access/connectoraction/{action.pk}/change/")
    assert page.status_code == 200 and b"Roll back</button>" not in page.content
    assert client.post(f"/admin/access/connectoraction/{action.pk}/rollback/").status_code == 403
    assert client.get("/admin/access/connectoraction/run/").status_code == 403
    assert b"Run an action" not in client.get("/admin/access/connectoraction/").content
    action.refresh_from_db()
    assert action.state == ActionState.SUCCEEDED


@pytest.mark.wireserver
@pytest.mark.parametrize("kind", [ActionKind.LOCK_USER, ActionKind.DROP_USER])
def test_locking_or_dropping_an_account_user_ends_its_gateway_sessions(account_user, staff_user, kind):
    from access.models import Session
    from access.models.sessions import SessionEndReason, SessionState
    from tests.factories import SessionFactory

    account, _password = account_user
    session = SessionFactory(account=account)
    action = action_run(
        resource=account.resource,
        kind=kind,
        db=account.resource.auth_database,
        username=account.username,
        actor=staff_user,
    )
    assert action.state == ActionState.SUCCEEDED, action.error
    session = Session.objects.get(pk=session.pk)
    assert session.state == SessionState.ENDED
    assert session.end_reason == SessionEndReason.ACCOUNT_REVOKED
