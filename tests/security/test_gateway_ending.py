"""Attacks on the end of access at the gateway (issue 12, section 4): logging in again once a session ended, and
keeping a connection that should be cut.

Refused: once a session is ended, killed or expired, or its user is deactivated or their grant removed, no new login
succeeds (the gateway looks the session up and checks the user and the grant at every login, with no cache), and the
client that proved the secret is told why ("the session was killed by alice"); open connections close within a
second of the end (the gateway polls the ends every 200 ms), and a request in flight is answered with the reason.
"""

from __future__ import annotations

import time

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from access.models import AccessPolicy, Session
from access.models.sessions import SessionEndReason
from access.services.sessions import session_end
from gatewayproxy.wire import codec, scram
from tests.factories import UserFactory
from tests.gateway_fixtures import account_on, session_on
from tests.security.gateway_wire import RawClient, op_msg

pytestmark = [pytest.mark.wireserver, pytest.mark.django_db(transaction=True)]


def refused_login(port: int, session: Session, secret: str) -> str:
    """Log in with the right secret; return the gateway's refusal (the test fails if the login succeeds)."""
    with RawClient(port) as client, pytest.raises(scram.ScramError) as failure:
        client.login(session.username, secret)
    return str(failure.value)


def test_no_login_succeeds_once_the_session_ended_and_the_client_hears_why(
    wire_server, gateway, gateway_proxy, staff_user
):
    account = account_on(wire_server)
    cases = []
    killed, killed_secret = session_on(gateway, account)
    cases.append((killed, killed_secret, lambda s: session_end(session=s, reason="killed", actor=staff_user)))
    ended, ended_secret = session_on(gateway, account)
    cases.append((ended, ended_secret, lambda s: session_end(session=s, reason="ended_by_user", actor=s.user)))
    expired, expired_secret = session_on(gateway, account)
    cases.append((expired, expired_secret, lambda s: Session.objects.filter(pk=s.pk).update(expires_at=s.started_at)))
    # Behind the services' backs (no session end is recorded): the login's own check must catch these.
    deactivated, deactivated_secret = session_on(gateway, account)
    cases.append(
        (deactivated, deactivated_secret, lambda s: type(s.user).objects.filter(pk=s.user_id).update(is_active=False))
    )
    ungranted, ungranted_secret = session_on(gateway, account)
    cases.append((ungranted, ungranted_secret, lambda s: AccessPolicy.objects.filter(user=s.user_id).delete()))
    expected = [
        f"the session was killed by {staff_user.username}",
        "the session was ended by its user",
        "the session expired",
        "the user was deactivated",
        "the user's access grant was removed",
    ]
    for (session, secret, end), words in zip(cases, expected, strict=True):
        with RawClient(gateway_proxy.port) as client:  # a login just before the end (old gateways cached it)
            client.login(session.username, secret)
        end(session)
        message = refused_login(gateway_proxy.port, session, secret)  # at once, not after a cache's seconds
        assert message.startswith(f"Authentication failed: {words}"), message
    # A client that cannot prove the secret learns nothing about the session.
    assert refused_login(gateway_proxy.port, killed, "a-guess").startswith("Authentication failed. ")


def test_a_drivers_next_command_after_a_kill_says_who_killed_the_session(
    wire_server, gateway, gateway_proxy, staff_user
):
    session, secret = session_on(gateway, account_on(wire_server))
    with MongoClient(gateway_proxy.uri(session.username, secret), serverSelectionTimeoutMS=3000) as driver:
        driver.app.items.insert_one({"n": 1})
        session_end(session=session, reason=SessionEndReason.KILLED, actor=staff_user)
        deadline = time.monotonic() + 5
        while True:
            try:
                driver.app.items.find_one({})
            except PyMongoError as exc:
                message = str(exc)
                if "killed" in message or time.monotonic() > deadline:
                    break
            assert time.monotonic() < deadline, "the killed session still runs commands"
            time.sleep(0.05)
    assert f"the session was killed by {staff_user.username}" in message, message


def test_mongosh_on_an_ended_session_says_why(wire_server, gateway, gateway_proxy, staff_user, mongosh):
    session, secret = session_on(gateway, account_on(wire_server))
    session_end(session=session, reason=SessionEndReason.KILLED, actor=staff_user)
    result = mongosh(gateway_proxy.uri(session.username, secret), "db.runCommand({ping: 1})")
    assert result.returncode != 0
    assert f"the session was killed by {staff_user.username}" in result.stdout + result.stderr


def test_open_connections_close_within_a_second_and_requests_in_flight_hear_why(
    wire_server, wire_faults_cleared, gateway, gateway_proxy, staff_user
):
    account = account_on(wire_server)
    cut = []
    for _trial in range(5):
        session, secret = session_on(gateway, account)
        with RawClient(gateway_proxy.port) as idle:
            idle.login(session.username, secret)
            assert idle.command({"ping": 1, "$db": "admin"})["ok"] == 1
            started = time.monotonic()
            session_end(session=session, reason=SessionEndReason.KILLED, actor=staff_user)
            waited = idle.closed_within(3)
            assert waited is not None, "the connection stayed open"
            cut.append(time.monotonic() - started)
    assert max(cut) < 1.0, cut
    # A command waiting on the server when the session is killed gets the reason, not a bare disconnection.
    session, secret = session_on(gateway, account)
    wire_server.faults.set_delay(3000, "find")
    with RawClient(gateway_proxy.port) as busy:
        busy.login(session.username, secret)
        busy.request_id += 1
        busy.send(op_msg({"find": "items", "filter": {}, "$db": "app"}, request_id=busy.request_id))
        time.sleep(0.3)
        started = time.monotonic()
        session_end(session=session, reason=SessionEndReason.KILLED, actor=staff_user)
        reply = codec.parse_op_msg(busy.receive())
        assert time.monotonic() - started < 1.0
        assert reply.response_to == busy.request_id and reply.body["ok"] == 0
        assert reply.body["errmsg"] == f"session ended: the session was killed by {staff_user.username}"
        assert busy.closed_within(2) is not None


def test_deactivating_the_user_refuses_their_next_login_with_why(wire_server, gateway, gateway_proxy, staff_user):
    from access.services.offboarding import user_access_end

    owner = UserFactory()
    session, secret = session_on(gateway, account_on(wire_server), user=owner)
    owner.is_active = False
    owner.save()
    user_access_end(user=owner, reason=SessionEndReason.USER_DEACTIVATED, actor=staff_user)
    uri = gateway_proxy.uri(session.username, secret)
    with pytest.raises(OperationFailure) as failure, MongoClient(uri, serverSelectionTimeoutMS=3000) as driver:
        driver.admin.command("ping")
    assert "Authentication failed: the user was deactivated" in str(failure.value)
