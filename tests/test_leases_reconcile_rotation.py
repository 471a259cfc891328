"""The reconciler (orphaned tagged users) and root rotation, against a wire server of their own."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pymongo
import pytest
from django.core.management import CommandError, call_command

from access.models import AuditEvent, Lease, Resource
from access.models.leases import LeaseState
from access.services.leases import lease_issue, lease_revoke, system_tag
from access.services.reconcile import users_reconcile
from access.services.root_rotation import RootRotationError, resource_rotate_root
from connectors import connector_for
from tests.factories import DynamicRoleFactory, ResourceFactory, UserFactory, resource_on
from tests.helpers import audit_text
from tests.mongo.logins import logs_in
from tests.mongo.wireserver import WireServer


@pytest.fixture(scope="module")
def own_wire_server():
    """A wire server only these tests use: the reconciler sees every tagged user on it."""
    server = WireServer().start()
    yield server
    server.stop()


@pytest.fixture
def resource(db, own_wire_server):
    return resource_on(own_wire_server, name="own")


def tagged_user(resource: Resource, username: str, lease_id: str, system: str | None = None) -> None:
    with connector_for(resource) as connector:
        connector.create_user(
            db="app",
            username=username,
            password=secrets.token_urlsafe(16),
            roles=["read"],
            custom_data={"pam": {"lease_id": lease_id, "system": system or system_tag()}},
        )


def usernames(resource: Resource) -> set[str]:
    with connector_for(resource) as connector:
        return {user["user"] for user in connector.list_users(db="app")}


def can_login(host_port: str, username: str, password: str, db: str = "admin") -> bool:
    return logs_in(host_port, db, username, password)


# -- reconciler --------------------------------------------------------------------------------------------
def test_reconciler_drops_tagged_users_without_a_live_lease_and_audits_each(resource):
    role = DynamicRoleFactory(resource=resource, name="app", db="app", roles=["read"])
    live, _ = lease_issue(role=role, holder=UserFactory())
    ended, _ = lease_issue(role=role, holder=UserFactory())
    lease_revoke(lease=ended)
    tagged_user(resource, "orphan-no-lease", "mongodb/own/creds/app/gone")
    tagged_user(resource, ended.username, ended.lease_id)  # re-created by hand after its revocation
    tagged_user(resource, "someone-elses", "mongodb/own/creds/app/x", system="another-portal")
    with connector_for(resource) as connector:
        connector.create_user(db="app", username="untagged", password=secrets.token_urlsafe(16), roles=["read"])

    dry = users_reconcile(resource=resource, dry_run=True)
    assert {o.username for o in dry.found} == {"orphan-no-lease", ended.username}
    assert dry.dropped == [] and {"orphan-no-lease", ended.username} <= usernames(resource)
    assert not AuditEvent.objects.filter(action="reconcile.drop_user").exists()

    report = users_reconcile(resource=resource)
    assert {o.username for o in report.dropped} == {"orphan-no-lease", ended.username}
    remaining = usernames(resource)
    assert {live.username, "someone-elses", "untagged"} <= remaining
    assert not {"orphan-no-lease", ended.username} & remaining
    dropped = AuditEvent.objects.filter(action="reconcile.drop_user")
    assert sorted(e.data["username"] for e in dropped) == sorted(["orphan-no-lease", ended.username])
    lease_revoke(lease=live)
    with connector_for(resource) as connector:
        for name in ("someone-elses", "untagged"):
            connector.drop_user(db="app", username=name)


def test_reconcile_users_command_dry_run_lists_then_drops(resource, capsys):
    tagged_user(resource, "orphan-cmd", "mongodb/own/creds/app/cmd")
    call_command("reconcile_users", "--dry-run", "--resource", "own")
    out = capsys.readouterr().out
    assert "would drop: own app.orphan-cmd" in out and "orphan-cmd" in usernames(resource)
    call_command("reconcile_users", "--resource", "own")
    assert "dropped: own app.orphan-cmd" in capsys.readouterr().out
    assert "orphan-cmd" not in usernames(resource)


def test_reconcile_users_command_with_an_unknown_resource_fails(db):
    with pytest.raises(CommandError, match="No resource"):
        call_command("reconcile_users", "--resource", "nope")


# -- root rotation -----------------------------------------------------------------------------------------
@pytest.fixture
def rotating_resource(db, own_wire_server):
    username, password = f"root-{secrets.token_hex(4)}", secrets.token_urlsafe(20)
    with pymongo.MongoClient(own_wire_server.uri) as admin:
        admin.admin.command("createUser", username, pwd=password, roles=[{"role": "root", "db": "admin"}])
    resource = ResourceFactory(
        name=f"rot-{secrets.token_hex(3)}",
        uri=f"mongodb://{own_wire_server.host_port}/?directConnection=true",
        admin_username=username,
        admin_password=password,
    )
    return resource, password


def test_rotate_root_changes_verifies_and_stores_the_new_password(rotating_resource, own_wire_server):
    resource, old_password = rotating_resource
    call_command("rotate_root", resource.name)
    resource.refresh_from_db()
    new_password = resource.admin_password.reveal()
    assert new_password != old_password and len(new_password) == 32
    assert can_login(own_wire_server.host_port, resource.admin_username, new_password)
    assert not can_login(own_wire_server.host_port, resource.admin_username, old_password)
    assert resource.pending_admin_password.token == "" and resource.root_rotation_error == ""
    actions = list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))
    assert actions[-2:] == ["resource.rotate_root_started", "resource.rotate_root"]
    recorded = audit_text()
    assert new_password not in recorded and old_password not in recorded


class _LoginAlwaysFails:
    """The real connector, except that the check login after the change fails (as with a lagging secondary)."""

    def __init__(self, resource):
        self._real = connector_for(resource)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._real.close()

    def change_password(self, **kwargs):
        self._real.change_password(**kwargs)

    def can_login(self, **kwargs):
        return False


def test_rotate_root_that_cannot_verify_keeps_both_passwords_and_shows_the_problem(
    rotating_resource, own_wire_server, otp_admin_client
):
    resource, old_password = rotating_resource
    with pytest.raises(RootRotationError, match="login with it failed"):
        resource_rotate_root(resource=resource, actor="test", connector_factory=_LoginAlwaysFails)
    resource.refresh_from_db()
    assert resource.admin_password.reveal() == old_password
    pending = resource.pending_admin_password.reveal()
    assert pending and can_login(own_wire_server.host_port, resource.admin_username, pending)
    assert "login with it failed" in resource.root_rotation_error
    page = otp_admin_client.get(f"/admin/access/resource/{resource.pk}/change/").content.decode()
    assert "login with it failed" in page and "not verified" in page
    assert pending not in page and old_password not in page


def test_rotate_root_refused_by_the_server_keeps_the_old_password_only(db, own_wire_server):
    resource = ResourceFactory(
        name="rot-bad",
        uri=f"mongodb://{own_wire_server.host_port}/?directConnection=true",
        admin_username="nobody",
        admin_password="not-the-password-Qq1",
    )
    with pytest.raises(CommandError, match="kept the old password"):
        call_command("rotate_root", "rot-bad")
    resource.refresh_from_db()
    assert resource.admin_password.reveal() == "not-the-password-Qq1"
    assert resource.pending_admin_password.token == ""
    assert "authentication" in resource.root_rotation_error.lower()


# -- admin -------------------------------------------------------------------------------------------------
def test_admin_revoke_now_and_retry_revocation(resource, otp_admin_client, own_wire_server):
    role = DynamicRoleFactory(resource=resource, name="adm", db="app", roles=["read"])
    lease, password = lease_issue(role=role, holder=UserFactory())
    url = "/admin/access/lease/"
    response = otp_admin_client.post(url, {"action": "revoke_leases_now", "_selected_action": [lease.pk]}, follow=True)
    assert "1 lease revoked:" in response.content.decode()
    lease.refresh_from_db()
    assert lease.state == LeaseState.REVOKED

    failing, _ = lease_issue(role=role, holder=UserFactory())
    Lease.objects.filter(pk=failing.pk).update(
        state=LeaseState.REVOKE_FAILED, attempts=3, last_error="Unreachable error: connection refused"
    )
    listing = otp_admin_client.get(url + "?state__exact=revoke_failed").content.decode()
    assert "failed 3 times," in listing and "connection refused" in listing and failing.lease_id in listing
    response = otp_admin_client.post(
        url, {"action": "retry_lease_revocation", "_selected_action": [failing.pk]}, follow=True
    )
    assert "1 lease revoked:" in response.content.decode()
    failing.refresh_from_db()
    assert failing.state == LeaseState.REVOKED and failing.attempts == 4
    assert password not in response.content.decode()


def test_admin_rotate_root_action(rotating_resource, otp_admin_client):
    resource, old_password = rotating_resource
    response = otp_admin_client.post(
        "/admin/access/resource/", {"action": "rotate_root_password", "_selected_action": [resource.pk]}, follow=True
    )
    assert "admin password rotated and verified" in response.content.decode()
    resource.refresh_from_db()
    assert resource.admin_password.reveal() != old_password


def test_admin_role_form_refuses_bad_roles_and_ttls(resource, otp_admin_client):
    url = "/admin/access/dynamicrole/add/"
    base = {
        "resource": resource.pk,
        "name": "bad",
        "db": "app",
        "username_template": "v-{holder}-{role}-{random}-{unix}",
        "password_length": 32,
        "scopes": "[]",
        "description": "",
    }
    response = otp_admin_client.post(url, {**base, "roles": '[{"role": "read"}]'})
    assert response.status_code == 200 and "exactly the keys" in response.content.decode()
    response = otp_admin_client.post(url, {**base, "roles": '["read"]', "default_ttl": "5h", "max_ttl": "1h"})
    assert response.status_code == 200 and "longer than the max TTL" in response.content.decode()
    assert not resource.roles.filter(name="bad").exists()
    response = otp_admin_client.post(url, {**base, "roles": '["read"]', "default_ttl": "1h", "max_ttl": "5h"})
    assert response.status_code == 302
    assert resource.roles.get(name="bad").default_ttl == timedelta(hours=1)
