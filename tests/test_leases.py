"""Leases against real servers: issue a user, log in with it, renew, revoke until the login really fails.

The wire server covers roles, kills and faults; FerretDB covers the roles-free path with real SCRAM.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pymongo
import pytest
from django.utils import timezone
from pymongo.errors import PyMongoError

from access.models import AuditEvent, Lease
from access.models.leases import LeaseState
from access.services import leases as lease_services
from access.services.leases import (
    LeaseError,
    lease_issue,
    lease_renew,
    lease_revoke,
    lease_revoke_prefix,
    password_generate,
    revoke_backoff,
    username_render,
)
from connectors import connector_for
from tests.factories import DynamicRoleFactory, UserFactory, resource_on
from tests.helpers import audit_text
from tests.mongo.logins import logs_in


def leased_client(host_port: str, lease: Lease, password: str) -> pymongo.MongoClient:
    """A client that logs in with the lease's credentials the way a user would, through a connection string."""
    return pymongo.MongoClient(
        f"mongodb://{lease.username}:{password}@{host_port}/{lease.db}?authSource={lease.db}&directConnection=true",
        serverSelectionTimeoutMS=3000,
        connectTimeoutMS=3000,
        socketTimeoutMS=3000,
    )


def login_works(host_port: str, lease: Lease, password: str) -> bool:
    return logs_in(host_port, lease.db, lease.username, password)


@pytest.fixture
def wire_role(wire_resource):
    return DynamicRoleFactory(resource=wire_resource, name="app-rw", db="app", roles=["readWrite"])


@pytest.fixture
def holder(db):
    return UserFactory(username="alice")


# -- names, passwords, backoff -----------------------------------------------------------------------------
def test_default_username_is_legal_unique_and_short():
    names = {
        username_render(template="v-{holder}-{role}-{random}-{unix}", holder="Alice Smith@corp", role="app-rw")
        for _ in range(50)
    }
    assert len(names) == 50
    for name in names:
        assert name.startswith("v-Alice-Smith-corp-app-rw-")
        assert len(name) <= 100
        assert all(c.isalnum() or c in "._-" for c in name)


def test_username_of_very_long_holder_and_role_keeps_its_random_part():
    name = username_render(template="v-{holder}-{role}-{random}-{unix}", holder="h" * 150, role="r" * 64)
    assert len(name) <= 100
    random_part = name.split("-")[3]
    assert len(random_part) == 20


def test_username_template_with_unknown_field_is_a_validation_error():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as caught:
        username_render(template="v-{nope}", holder="a", role="b")
    assert "username_template" in caught.value.message_dict


def test_passwords_are_long_mixed_and_need_no_escaping_in_a_uri():
    from urllib.parse import quote

    for length in (16, 32, 64):
        password = password_generate(length)
        assert len(password) == length
        assert quote(password, safe="") == password
    assert len({password_generate() for _ in range(100)}) == 100


def test_revocation_backoff_doubles_and_is_capped_at_five_minutes():
    assert [revoke_backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert revoke_backoff(30) == timedelta(minutes=5)


# -- the full life of a lease on the wire server ----------------------------------------------------------
def test_issue_login_renew_revoke_cuts_the_open_connection_and_later_logins(wire_server, wire_role, holder):
    lease, password = lease_issue(role=wire_role, holder=holder)
    assert lease.lease_id.startswith(f"mongodb/{wire_role.resource.name}/creds/app-rw/")
    assert lease.state == LeaseState.ACTIVE
    assert timedelta(minutes=59) < lease.expires_at - timezone.now() <= timedelta(hours=1)

    with connector_for(wire_role.resource) as admin:
        user = admin.get_user(db="app", username=lease.username)
    assert [r["role"] for r in user["roles"]] == ["readWrite"]
    assert user["customData"]["pam"]["lease_id"] == lease.lease_id

    client = leased_client(wire_server.host_port, lease, password)
    client.app.things.insert_one({"n": 1})
    assert client.app.things.count_documents({}) >= 1

    renewed = lease_renew(lease=lease, increment=timedelta(hours=2), actor=holder)
    assert timedelta(hours=1, minutes=59) < renewed.expires_at - timezone.now() <= timedelta(hours=2)

    revoked = lease_revoke(lease=lease, actor=holder)
    assert revoked.state == LeaseState.REVOKED
    assert revoked.revoked_at is not None and revoked.attempts == 1 and revoked.last_error == ""
    with pytest.raises(PyMongoError):
        client.app.things.find_one({})
    client.close()
    assert not login_works(wire_server.host_port, lease, password)

    actions = list(AuditEvent.objects.filter(target_id=str(lease.pk)).order_by("seq").values_list("action", flat=True))
    assert actions == ["lease.issue", "lease.renew", "lease.revoke"]
    assert password not in audit_text()


def test_renew_is_capped_at_max_ttl(wire_role, holder):
    wire_role.max_ttl = timedelta(hours=2)
    wire_role.save()
    lease, _ = lease_issue(role=wire_role, holder=holder)
    renewed = lease_renew(lease=lease, increment=timedelta(hours=10))
    assert renewed.expires_at == renewed.max_expires_at
    assert renewed.max_expires_at - renewed.issued_at == timedelta(hours=2)
    lease_revoke(lease=lease)


def test_ttl_asked_above_the_max_is_capped(wire_role, holder):
    lease, _ = lease_issue(role=wire_role, holder=holder, ttl=timedelta(days=30), max_ttl=timedelta(hours=3))
    assert lease.expires_at - lease.issued_at == timedelta(hours=3)
    assert lease.max_expires_at - lease.issued_at == timedelta(hours=3)
    lease_revoke(lease=lease)


def test_renew_refuses_a_revoked_lease(wire_role, holder):
    lease, _ = lease_issue(role=wire_role, holder=holder)
    lease_revoke(lease=lease)
    with pytest.raises(LeaseError, match="cannot be renewed"):
        lease_renew(lease=lease, increment=timedelta(hours=1))


def test_revoking_twice_is_a_no_op(wire_role, holder):
    lease, _ = lease_issue(role=wire_role, holder=holder)
    first = lease_revoke(lease=lease)
    second = lease_revoke(lease=lease)
    assert first.state == second.state == LeaseState.REVOKED
    assert second.attempts == 1 and second.revoked_at == first.revoked_at
    assert AuditEvent.objects.filter(action="lease.revoke", target_id=str(lease.pk)).count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_revokers_revoke_once(wire_server):
    resource = resource_on(wire_server)
    role = DynamicRoleFactory(resource=resource, db="app", roles=["read"])
    lease, _ = lease_issue(role=role, holder=UserFactory())
    results, barrier = [], threading.Barrier(4)

    def revoke():
        from django.db import connection

        barrier.wait()
        try:
            results.append(lease_revoke(lease=Lease.objects.get(pk=lease.pk)).state)
        finally:
            connection.close()

    threads = [threading.Thread(target=revoke) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert LeaseState.REVOKED in results
    assert set(results) <= {LeaseState.REVOKED, LeaseState.REVOKING}
    assert AuditEvent.objects.filter(action="lease.revoke", target_id=str(lease.pk)).count() == 1
    assert Lease.objects.get(pk=lease.pk).attempts == 1


def test_revoke_prefix_revokes_only_matching_live_leases(wire_role, holder):
    first, _ = lease_issue(role=wire_role, holder=holder)
    second, _ = lease_issue(role=wire_role, holder=holder)
    other_role = DynamicRoleFactory(resource=wire_role.resource, name="other", db="app", roles=["read"])
    other, _ = lease_issue(role=other_role, holder=holder)
    done = lease_revoke_prefix(prefix=f"mongodb/{wire_role.resource.name}/creds/app-rw/", actor=holder)
    assert {lease.pk for lease in done} == {first.pk, second.pk}
    assert all(lease.state == LeaseState.REVOKED for lease in done)
    assert Lease.objects.get(pk=other.pk).state == LeaseState.ACTIVE
    lease_revoke(lease=other)


# -- failures and retries --------------------------------------------------------------------------------
def test_revoke_while_the_server_refuses_connections_fails_then_is_retried_until_it_holds(
    wire_faults_cleared, wire_role, holder
):
    wire_server = wire_faults_cleared
    lease, password = lease_issue(role=wire_role, holder=holder)
    wire_server.refuse_connections("close")
    with connector_for(wire_role.resource, timeout_ms=500) as connector:
        failed = lease_revoke(lease=lease, connector=connector, reason="revoked")
    assert failed.state == LeaseState.REVOKE_FAILED
    assert failed.attempts == 1 and failed.last_error
    assert password not in failed.last_error and wire_server.admin_password not in failed.last_error
    assert timedelta(seconds=1) <= failed.next_attempt_at - timezone.now() <= timedelta(seconds=2)
    assert not Lease.objects.due().filter(pk=lease.pk).exists()  # not before its backoff

    wire_server.clear_faults()
    later = timezone.now() + timedelta(seconds=3)
    with lease_services.ConnectorCache() as connectors:
        handled = lease_services.leases_revoke_due(now=later, connectors=connectors)
    assert handled == 1
    lease.refresh_from_db()
    assert lease.state == LeaseState.REVOKED and lease.attempts == 2 and lease.last_error == ""
    assert not login_works(wire_server.host_port, lease, password)
    actions = list(AuditEvent.objects.filter(target_id=str(lease.pk)).order_by("seq").values_list("action", flat=True))
    assert actions == ["lease.issue", "lease.revoke_failed", "lease.revoke"]
    assert password not in audit_text()


def test_a_failed_issue_leaves_no_user_behind(wire_faults_cleared, wire_role, holder):
    wire_faults_cleared.fail_command("createUser", 91, "shutting down", times=1)
    with pytest.raises(LeaseError, match="could not be created"):
        lease_issue(role=wire_role, holder=holder)
    lease = Lease.objects.get(role=wire_role)
    assert lease.state == LeaseState.REVOKE_FAILED and lease.revoke_reason == "issue_failed"
    with lease_services.ConnectorCache() as connectors:
        assert lease_services.leases_revoke_due(connectors=connectors) == 1
    lease.refresh_from_db()
    # A failed attempt, never a "revoked" lease its holder never received; why it failed stays on it.
    assert lease.state == LeaseState.FAILED and lease.revoked_at is None
    assert lease.last_error.startswith("Issue failed:")


def test_an_issue_refused_as_a_name_conflict_never_drops_the_existing_user(wire_faults_cleared, wire_role, holder):
    wire_faults_cleared.fail_command("createUser", 51003, "User already exists", times=1)
    with pytest.raises(LeaseError, match="could not be created"):
        lease_issue(role=wire_role, holder=holder)
    lease = Lease.objects.get(role=wire_role)
    assert lease.state == LeaseState.FAILED and lease.revoke_reason == "issue_failed"
    assert not Lease.objects.due().exists()


def test_a_stale_revoking_claim_is_taken_over(wire_role, holder):
    lease, _ = lease_issue(role=wire_role, holder=holder)
    Lease.objects.filter(pk=lease.pk).update(
        state=LeaseState.REVOKING, next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    with lease_services.ConnectorCache() as connectors:
        assert lease_services.leases_revoke_due(connectors=connectors) == 1
    lease.refresh_from_db()
    assert lease.state == LeaseState.REVOKED


# -- expiry through the sweeper loop (in-process) ---------------------------------------------------------
def test_the_sweeper_revokes_expired_leases_within_a_second_or_two(wire_server, wire_role, holder):
    from access.services.sweeper import lease_sweeper_run

    leases = []
    for _ in range(3):
        lease, password = lease_issue(role=wire_role, holder=holder, ttl=timedelta(seconds=1))
        leases.append((lease, password))
    report = lease_sweeper_run(run_for=3.0, interval=0.2)
    assert report.acquired and report.completed and report.handled == 3
    for lease, password in leases:
        lease.refresh_from_db()
        assert lease.state == LeaseState.EXPIRED and lease.revoke_reason == "expired"
        assert (lease.revoked_at - lease.expires_at) < timedelta(seconds=2.5)
        assert not login_works(wire_server.host_port, lease, password)


def test_only_one_sweeper_runs_at_a_time_and_a_dead_ones_lock_expires(db):
    from access.models import BackgroundLock
    from access.services.sweeper import SWEEPER_LOCK, lease_sweeper_run

    BackgroundLock.objects.create(name=SWEEPER_LOCK, holder="other", expires_at=timezone.now() + timedelta(seconds=10))
    assert lease_sweeper_run(run_for=0.1).acquired is False
    BackgroundLock.objects.filter(name=SWEEPER_LOCK).update(expires_at=timezone.now() - timedelta(seconds=1))
    report = lease_sweeper_run(run_for=0.1)
    assert report.acquired and report.completed
    assert BackgroundLock.objects.get(name=SWEEPER_LOCK).expires_at <= timezone.now()


# -- FerretDB: an independent server, real SCRAM, no roles -------------------------------------------------
def test_lease_life_on_ferretdb(ferret_resource, ferretdb_server):
    role = DynamicRoleFactory(resource=ferret_resource, name="ferret", db="admin", roles=[])
    lease, password = lease_issue(role=role, holder=UserFactory())
    host_port = f"127.0.0.1:{ferretdb_server.port}"
    assert login_works(host_port, lease, password)
    lease_renew(lease=lease, increment=timedelta(minutes=5))
    revoked = lease_revoke(lease=lease)
    assert revoked.state == LeaseState.REVOKED, revoked.last_error
    assert not login_works(host_port, lease, password)


@pytest.mark.wireserver
def test_revoking_a_lease_ends_the_gateway_sessions_opened_on_it(wire_role, holder):
    from access.models import Session
    from access.models.sessions import SessionEndReason, SessionState
    from tests.factories import SessionFactory

    lease, _password = lease_issue(role=wire_role, holder=holder)
    session = SessionFactory(user=holder, account=None, lease=lease)
    lease_revoke(lease=lease)
    session = Session.objects.get(pk=session.pk)
    assert (session.state, session.end_reason) == (SessionState.ENDED, SessionEndReason.ACCOUNT_REVOKED)
