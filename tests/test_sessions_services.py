"""Opening and ending gateway sessions: grants, caps, verifiers only, idempotent ends, audit rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import serializers
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.utils import timezone

from access.models import AccessRequest, AuditEvent, Session
from access.models.sessions import SessionEndReason, SessionState
from access.services.resources import account_delete, resource_delete
from access.services.sessions import (
    session_end,
    session_end_for_account,
    session_end_for_lease,
    session_open,
    sessions_end_orphaned,
    sessions_expire_due,
)
from gatewayproxy.wire.scram import ScramClient, ScramCredentials, ScramServer
from tests.factories import (
    AccessPolicyFactory,
    AccountFactory,
    GatewayFactory,
    LeaseFactory,
    SessionFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def grant():
    """A user with a standing (no approval) policy on an account, capped at 2 hours."""
    return AccessPolicyFactory(max_duration=timedelta(hours=2), approval_required=False)


def _database_dump() -> str:
    """Every row of every table as text, to search for a secret."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')
            chunks.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(chunks)


def test_open_returns_a_secret_that_only_verifiers_remember(grant):
    session, secret = session_open(user=grant.user, account=grant.account, duration=timedelta(hours=1))

    assert len(secret) >= 32
    assert session.username.startswith("s-") and len(session.username) == 10
    assert set(session.verifiers) == {"SCRAM-SHA-1", "SCRAM-SHA-256"}
    assert secret not in _database_dump()
    assert secret not in serializers.serialize("json", Session.objects.all())
    for mechanism, stored in session.verifiers.items():
        server = ScramServer(mechanism, lambda _name, stored=stored: ScramCredentials.from_dict(stored))
        client = ScramClient(mechanism, session.username, secret)
        server_first = server.server_first(client.first_message())
        client.verify_server_final(server.server_final(client.final_message(server_first)))


def test_open_writes_an_audit_row_without_the_secret(grant):
    session, secret = session_open(user=grant.user, account=grant.account, duration=timedelta(minutes=30))

    event = AuditEvent.objects.get(action="session.open", target_id=str(session.pk))
    assert event.actor == grant.user
    assert event.data["duration_seconds"] == 1800
    assert event.data["username"] == session.username
    assert secret not in str(event.data)


def test_open_is_capped_at_the_policy_maximum(grant):
    before = timezone.now()
    session, _ = session_open(user=grant.user, account=grant.account, duration=timedelta(hours=8))

    assert timedelta(hours=2) - timedelta(seconds=5) <= session.expires_at - before <= timedelta(hours=2, seconds=5)


def test_open_is_capped_at_the_approved_window():
    policy = AccessPolicyFactory(approval_required=True, max_duration=timedelta(hours=4))
    approver = UserFactory()
    AccessRequest.objects.create(
        requester=policy.user,
        policy=policy,
        account=policy.account,
        reason="incident 42",
        duration=timedelta(minutes=10),
        state="approved",
        approver=approver,
        decided_at=timezone.now(),
        expires_at=timezone.now() + timedelta(minutes=10),
    )
    session, _ = session_open(user=policy.user, account=policy.account, duration=timedelta(hours=1))

    assert session.expires_at <= timezone.now() + timedelta(minutes=10)


def test_open_without_a_grant_is_denied():
    stranger = UserFactory()
    account = AccountFactory()

    with pytest.raises(PermissionDenied):
        session_open(user=stranger, account=account, duration=timedelta(hours=1))
    assert not Session.objects.exists()
    assert not AuditEvent.objects.filter(action="session.open").exists()


def test_read_only_policy_forces_a_read_only_session():
    policy = AccessPolicyFactory(read_only=True, approval_required=False)

    session, _ = session_open(user=policy.user, account=policy.account, duration=timedelta(hours=1), read_only=False)

    assert session.read_only is True


def test_open_picks_the_resources_gateway_else_an_alive_one(grant):
    stale = GatewayFactory(last_heartbeat=timezone.now() - timedelta(hours=1))
    alive = GatewayFactory(last_heartbeat=timezone.now())
    session, _ = session_open(user=grant.user, account=grant.account, duration=timedelta(hours=1))
    assert session.gateway == alive

    grant.account.resource.gateway = stale
    grant.account.resource.save()
    session, _ = session_open(user=grant.user, account=grant.account, duration=timedelta(hours=1))
    assert session.gateway == stale


def test_end_is_idempotent_and_audited_once(grant):
    session, _ = session_open(user=grant.user, account=grant.account, duration=timedelta(hours=1))

    session_end(session=session, reason=SessionEndReason.ENDED_BY_USER, actor=grant.user)
    first_end = session.ended_at
    session_end(session=session, reason=SessionEndReason.KILLED)

    session.refresh_from_db()
    assert session.state == SessionState.ENDED
    assert session.end_reason == SessionEndReason.ENDED_BY_USER
    assert session.ended_at == first_end
    assert AuditEvent.objects.filter(action="session.end", target_id=str(session.pk)).count() == 1


def test_account_and_lease_revocation_end_their_sessions():
    account_session = SessionFactory()
    other = SessionFactory()
    lease = LeaseFactory()
    lease_session = SessionFactory(account=None, lease=lease)

    assert session_end_for_account(account=account_session.account) == 1
    assert session_end_for_lease(lease=lease, reason=SessionEndReason.ACCOUNT_REVOKED) == 1
    assert session_end_for_account(account=account_session.account) == 0

    account_session.refresh_from_db()
    lease_session.refresh_from_db()
    other.refresh_from_db()
    assert account_session.end_reason == lease_session.end_reason == SessionEndReason.ACCOUNT_REVOKED
    assert other.state == SessionState.OPEN


def test_expire_sweep_ends_only_due_sessions():
    due = SessionFactory(expires_at=timezone.now() - timedelta(seconds=1))
    live = SessionFactory()

    assert sessions_expire_due() == 1

    due.refresh_from_db()
    live.refresh_from_db()
    assert (due.state, due.end_reason) == (SessionState.ENDED, SessionEndReason.EXPIRED)
    assert live.state == SessionState.OPEN


def test_deleting_an_account_or_resource_ends_its_sessions(grant):
    by_account, _ = session_open(user=grant.user, account=grant.account, duration=timedelta(hours=1))
    other_account = AccountFactory()
    by_resource = SessionFactory(account=other_account)

    account_delete(actor="manage.py", account=grant.account)
    resource_delete(actor="manage.py", resource=other_account.resource)

    for session in (by_account, by_resource):
        session.refresh_from_db()
        assert (session.state, session.end_reason) == (SessionState.ENDED, SessionEndReason.ACCOUNT_REVOKED)
    assert AuditEvent.objects.filter(action="session.end", actor_name="manage.py").count() == 2


def test_orphaned_sessions_are_ended_by_the_sweep():
    orphan = SessionFactory(account=None)
    SessionFactory()

    assert sessions_end_orphaned() == 1
    orphan.refresh_from_db()
    assert orphan.end_reason == SessionEndReason.ACCOUNT_REVOKED


def test_an_atlas_account_cannot_back_a_gateway_session():
    from django.core.exceptions import ValidationError

    from tests.factories import ResourceFactory

    atlas = ResourceFactory(kind="atlas", uri="", atlas_group_id="5f0000000000000000000001")
    policy = AccessPolicyFactory(approval_required=False, account=AccountFactory(resource=atlas))

    with pytest.raises(ValidationError) as error:
        session_open(user=policy.user, account=policy.account, duration=timedelta(hours=1))
    assert "account" in error.value.message_dict
