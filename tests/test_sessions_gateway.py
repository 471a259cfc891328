"""The gateway's calls into the domain: registration, login lookup, command batches, which sessions to close."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from access.models import AuditEvent, Gateway, SessionCommand
from access.models.leases import LeaseState
from access.models.sessions import SessionEndReason, SessionState
from access.services.gateway import (
    gateway_heartbeat,
    gateway_register,
    gateway_sessions_end,
    gateways_lost_sweep,
    session_commands_record,
    session_connected,
    session_login_lookup,
    sessions_to_close,
)
from access.services.sessions import session_end, session_open
from gatewayproxy.commandlog import CommandRecord
from gatewayproxy.wire import codec
from gatewayproxy.wire.scram import ScramClient, ScramCredentials, ScramServer
from tests.factories import AccessPolicyFactory, GatewayFactory, LeaseFactory, SessionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def opened():
    policy = AccessPolicyFactory(approval_required=False, max_duration=timedelta(hours=4))
    session, secret = session_open(user=policy.user, account=policy.account, duration=timedelta(hours=1))
    return session, secret


def test_register_creates_then_updates_the_gateway_and_heartbeat_keeps_it_alive():
    gateway = gateway_register(name="gw-east", public_host="db.example.com", public_port=27018)
    again = gateway_register(name="gw-east", public_host="db2.example.com", public_port=27019)

    assert again.pk == gateway.pk
    assert Gateway.objects.get(pk=gateway.pk).address == "db2.example.com:27019"
    assert AuditEvent.objects.filter(action="gateway.register").count() == 2
    Gateway.objects.filter(pk=gateway.pk).update(last_heartbeat=timezone.now() - timedelta(hours=1))
    gateway_heartbeat(gateway_id=gateway.pk)
    assert Gateway.objects.alive().filter(pk=gateway.pk).exists()


def test_heartbeat_of_a_deleted_gateway_raises():
    gateway = GatewayFactory()
    gateway.delete()
    with pytest.raises(Gateway.DoesNotExist):
        gateway_heartbeat(gateway_id=gateway.pk)


def test_login_lookup_gives_verifiers_that_accept_the_secret_and_the_upstream_account(opened):
    session, secret = opened
    account = session.account

    login = session_login_lookup(username=session.username)

    assert login.session_id == session.pk and login.public_id == session.public_id
    assert login.upstream.username == account.username
    assert login.upstream.password.reveal() == account.password.reveal()
    assert login.upstream.uri == account.resource.uri
    assert login.command_deny_list == account.resource.command_deny_list
    assert account.password.reveal() not in repr(login)
    server = ScramServer("SCRAM-SHA-256", lambda _name: ScramCredentials.from_dict(login.verifiers["SCRAM-SHA-256"]))
    client = ScramClient("SCRAM-SHA-256", session.username, secret)
    client.verify_server_final(server.server_final(client.final_message(server.server_first(client.first_message()))))


def test_login_lookup_refuses_ended_and_expired_sessions_with_why_and_without_a_password(opened, staff_user):
    session, _ = opened
    expired = SessionFactory(expires_at=timezone.now() - timedelta(seconds=1))

    assert session_login_lookup(username="s-nosuchus") is None
    login = session_login_lookup(username=expired.username)
    assert login.refusal == "the session expired" and login.upstream is None
    session_end(session=session, reason=SessionEndReason.KILLED, actor=staff_user)
    login = session_login_lookup(username=session.username)
    assert login.refusal == f"the session was killed by {staff_user.username}" and login.upstream is None
    assert login.verifiers == session.verifiers  # the owner can still prove the secret and hear why


def test_login_lookup_of_a_lease_session_uses_the_lease_user_until_revoked():
    lease = LeaseFactory(db="reports")
    session = SessionFactory(account=None, lease=lease)

    login = session_login_lookup(username=session.username)
    assert (login.upstream.username, login.upstream.auth_database) == (lease.username, "reports")

    lease.state = LeaseState.REVOKED
    lease.save()
    login = session_login_lookup(username=session.username)
    assert login.upstream is None and login.refusal == "the session's account or lease was revoked"


def test_connected_counts_connections_and_audits_the_first(opened):
    session, _ = opened
    gateway = GatewayFactory()

    session_connected(session_id=session.pk, gateway_id=gateway.pk, client_address="10.0.0.7:50000")
    session_connected(session_id=session.pk, gateway_id=gateway.pk, client_address="10.0.0.7:50001")

    session.refresh_from_db()
    assert session.connections == 2
    assert session.first_connected_at is not None
    assert session.gateway == gateway
    assert AuditEvent.objects.filter(action="session.connect", target_id=str(session.pk)).count() == 1


def test_commands_batch_is_stored_counted_and_scrubbed(opened):
    session, secret = opened
    other = SessionFactory()
    batch = [
        {
            "session_id": session.pk,
            "command": "find",
            "database": "app",
            "collection": "users",
            "summary": {"filter": {"name": "?"}},
            "ok": True,
            "n": 3,
            "latency_us": 420,
            "bytes_in": 100,
            "bytes_out": 900,
        },
        {
            "session_id": session.pk,
            "command": "insert",
            "database": "app",
            "summary": {"pwd": secret},
            "ok": False,
            "error_code": 13,
            "error_message": "not authorized",
            "at": timezone.now().timestamp(),
        },
        {"session_id": other.pk, "command": "ping", "refused": True},
        {"session_id": 999999, "command": "find"},
    ]

    session_commands_record(commands=batch)

    rows = list(SessionCommand.objects.filter(session=session).order_by("id"))
    assert [(r.command, r.ok, r.n, r.error_code) for r in rows] == [
        ("find", True, 3, None),
        ("insert", False, None, 13),
    ]
    assert secret not in str(rows[1].summary)
    session.refresh_from_db()
    assert (session.commands_count, session.bytes_in, session.bytes_out) == (2, 100, 900)
    assert SessionCommand.objects.get(session=other).refused is True
    assert SessionCommand.objects.count() == 3


def test_sessions_to_close_reports_ended_expired_gone_and_keeps_live(opened):
    live, _ = opened
    killed = SessionFactory()
    session_end(session=killed, reason=SessionEndReason.KILLED)
    expired = SessionFactory(expires_at=timezone.now() - timedelta(seconds=1))
    orphan = SessionFactory(account=None)

    closing = sessions_to_close(gateway_id=None, session_ids=[live.pk, killed.pk, expired.pk, orphan.pk, 424242])

    assert closing == {
        killed.pk: "killed",
        expired.pk: "expired",
        orphan.pk: "account_revoked",
        424242: "killed",
    }
    expired.refresh_from_db()
    assert (expired.state, expired.end_reason) == (SessionState.ENDED, SessionEndReason.EXPIRED)
    worded = sessions_to_close(gateway_id=None, session_ids=[killed.pk, expired.pk, 424242], in_words=True)
    assert worded == {  # what the gateway tells the clients, as its ended-session notices do
        killed.pk: "the session was killed by an administrator",
        expired.pk: "the session expired",
        424242: "the session no longer exists",
    }


def test_gateway_stop_and_lost_sweep_end_only_that_gateways_sessions():
    stopping, silent, healthy = (
        GatewayFactory(last_heartbeat=timezone.now()),
        GatewayFactory(last_heartbeat=timezone.now() - timedelta(minutes=10)),
        GatewayFactory(last_heartbeat=timezone.now()),
    )
    on_stopping, on_silent, on_healthy = (SessionFactory(gateway=g) for g in (stopping, silent, healthy))

    assert gateway_sessions_end(gateway_id=stopping.pk, reason=SessionEndReason.GATEWAY_STOPPED) == 1
    assert gateways_lost_sweep(grace=timedelta(minutes=2)) == 1

    for session in (on_stopping, on_silent, on_healthy):
        session.refresh_from_db()
    assert on_stopping.end_reason == SessionEndReason.GATEWAY_STOPPED
    assert on_silent.end_reason == SessionEndReason.GATEWAY_LOST
    assert on_healthy.state == SessionState.OPEN


def test_commands_keep_their_time_and_store_non_json_values_as_text(opened):
    import datetime

    from bson import ObjectId

    session, _ = opened
    at = timezone.now() - timedelta(seconds=30)
    object_id = ObjectId()

    session_commands_record(
        commands=[
            {
                "session_id": session.pk,
                "command": "find",
                "at": at,
                "summary": {"filter": {"_id": object_id, "when": datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)}},
                "n": 1,
            }
        ]
    )

    row = SessionCommand.objects.get(session=session)
    assert abs((row.at - at).total_seconds()) < 0.001
    assert row.summary == {"filter": {"_id": str(object_id), "when": "2026-01-02 00:00:00+00:00"}}


def test_a_gateway_record_is_redacted_by_its_writer_and_cut_once_to_the_columns(opened):
    session, _ = opened
    request = codec.Request.read(codec.build_op_msg({"find": "c" * 300, "filter": {"ssn": "123-45"}, "$db": "d" * 200}))
    record = CommandRecord(
        session_id=session.pk,
        command=request.command,
        database=request.database,
        collection=request.collection,
        ok=False,
        error_code=11000,
        error_message='E11000 duplicate key error dup key: { ssn: "123-45" } ' + "x" * 600,
        latency_us=2**40,
        bytes_in=len(request.raw),
        request=request,
    )

    session_commands_record(commands=[record.complete()])

    row = SessionCommand.objects.get(session=session)
    assert (row.command, row.database, row.collection) == ("find", "d" * 128, "c" * 255)
    assert row.summary == {"find": "c" * 300, "filter": {"ssn": "?"}}
    assert "123-45" not in row.error_message and len(row.error_message) == 500
    assert row.latency_us == 2**31 - 1
    session.refresh_from_db()
    assert (session.commands_count, session.bytes_in) == (1, len(request.raw))
