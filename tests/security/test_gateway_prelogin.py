"""Attacks before login (issue 12, section 5): a client that has not proved a session secret costs almost nothing.

Refused: a connection that does not log in within the deadline is closed; unauthenticated connections over the cap
of their address, or of the gateway, are closed at once; a message before login larger than a handshake closes the
connection; the gateway opens no upstream connection for a client that has not proved the secret; an address whose
logins keep failing (wrong secret, unknown session name) is refused without a lookup until its window passes.
Every failure is counted in the gateway's metrics and audited (gateway.login_failed: name, address, reason).
A gateway (`runproxy`, one worker) runs here with small limits so the attacks are quick.
"""

from __future__ import annotations

import socket
import time

import pytest
from pymongo import MongoClient

from access.models import AuditAction, AuditEvent
from gatewayproxy.wire import codec, scram
from tests.gateway_fixtures import account_on, session_on, wait_for
from tests.helpers import unique_name
from tests.security.gateway_wire import RawClient, TunedGateway

pytestmark = [pytest.mark.wireserver, pytest.mark.django_db(transaction=True)]

LIMITS = {
    "PAM_GATEWAY_LOGIN_TIMEOUT": "1.5",
    "PAM_GATEWAY_UNAUTHENTICATED_PER_ADDRESS": "20",
    "PAM_GATEWAY_UNAUTHENTICATED_TOTAL": "50",
    "PAM_GATEWAY_LOGIN_FAILURES": "3",
    "PAM_GATEWAY_LOGIN_FAILURE_WINDOW": "60",
}


@pytest.fixture
def tuned(tmp_path, transactional_db):
    gateway = TunedGateway(tmp_path / "runproxy.log", LIMITS, name="prelogin-gateway")
    gateway.workers = 1  # the caps and the throttle are counted per process: one process makes them exact
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.fixture
def gateway_row(tuned):
    from access.models import Gateway

    return Gateway.objects.get(pk=tuned.gateway_id)


def hello(source: str, port: int, **fields) -> socket.socket:
    """A connection from `source` that sent a hello and read its answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    sock.sendall(codec.build_op_msg({"hello": 1, "$db": "admin", **fields}, request_id=1))
    header = sock.recv(16, socket.MSG_WAITALL)
    if len(header) == 16:
        sock.recv(int.from_bytes(header[:4], "little") - 16, socket.MSG_WAITALL)
    return sock


def answered(sock: socket.socket) -> bool:
    """Whether the gateway still answers a ping on this connection (a closed one reads EOF or resets)."""
    try:
        sock.sendall(codec.build_op_msg({"ping": 1, "$db": "admin"}, request_id=2))
        return len(sock.recv(16, socket.MSG_WAITALL)) == 16
    except OSError:
        return False


def test_no_upstream_connection_is_opened_before_the_secret_is_proved(wire_server, tuned, gateway_row):
    session, secret = session_on(gateway_row, account_on(wire_server))
    before = wire_server.connections_created
    # A client that knows the session's name but not its secret: hello, speculative and plain saslStart, a bad proof.
    with RawClient(tuned.port) as client:
        first = scram.ScramClient("SCRAM-SHA-256", session.username, "not-the-secret")
        speculative = scram.sasl_start_command("SCRAM-SHA-256", first.first_message())
        reply = client.command(
            {"hello": 1, "saslSupportedMechs": f"admin.{session.username}", "speculativeAuthenticate": speculative}
            | {"$db": "admin"}
        )
        assert reply["saslSupportedMechs"] and "speculativeAuthenticate" in reply
        with pytest.raises(scram.ScramError, match="Authentication failed"):
            client.login(session.username, "not-the-secret")
    with RawClient(tuned.port) as stalled:  # starts a login and never finishes it
        started = stalled.command(
            scram.sasl_start_command(
                "SCRAM-SHA-256", scram.ScramClient("SCRAM-SHA-256", session.username, "x").first_message()
            )
        )
        assert started["ok"] == 1
        time.sleep(0.5)
        assert wire_server.connections_created == before  # nothing reached the deployment
    with RawClient(tuned.port) as owner:
        owner.login(session.username, secret)
        assert owner.command({"ping": 1, "$db": "admin"})["ok"] == 1
    assert wire_server.connections_created == before + 1  # the proof opened exactly one


def test_a_login_must_finish_before_the_deadline(wire_server, tuned, gateway_row):
    idle = socket.create_connection(("127.0.0.1", tuned.port), timeout=5)
    talker = hello("127.0.0.1", tuned.port)
    with RawClient(tuned.port) as client:
        waited = client.closed_within(5)
    assert waited is not None and 1.0 < waited < 4, waited
    assert not answered(talker)
    assert idle.recv(1) == b""
    idle.close()
    talker.close()
    # A driver that logged in keeps its monitoring connection (hellos only) and its pool past the deadline.
    session, secret = session_on(gateway_row, account_on(wire_server))
    database = unique_name("app")
    with MongoClient(
        tuned.uri(session.username, secret), serverSelectionTimeoutMS=5000, heartbeatFrequencyMS=500
    ) as driver:
        driver[database].items.insert_one({"n": 1})
        time.sleep(4)
        assert driver[database].items.count_documents({}) == 1
    assert tuned.metrics()["pam_gateway_login_deadline_closed_total"] >= 3


def test_unauthenticated_connections_are_capped_per_address_and_in_all(wire_server, tuned, gateway_row):
    held = []
    try:
        first = [hello("127.0.0.2", tuned.port) for _ in range(25)]
        held += first
        assert sum(answered(sock) for sock in first) == 20  # the address's cap
        second = [hello("127.0.0.3", tuned.port) for _ in range(20)]
        held += second
        third = [hello("127.0.0.4", tuned.port) for _ in range(20)]
        held += third
        assert sum(answered(sock) for sock in second) == 20
        assert sum(answered(sock) for sock in third) == 10  # the gateway's cap: 50 in all
        metrics = tuned.metrics()
        assert metrics["pam_gateway_prelogin_refused_total"] >= 15
        assert metrics["pam_gateway_connections_unauthenticated"] == 50
    finally:
        for sock in held:
            sock.close()
    # Logged-in clients do not count: once the half-open ones are gone, sessions log in as usual.
    session, secret = session_on(gateway_row, account_on(wire_server))
    assert wait_for(lambda: tuned.metrics()["pam_gateway_connections_unauthenticated"] == 0)
    with MongoClient(tuned.uri(session.username, secret), serverSelectionTimeoutMS=5000, maxPoolSize=30) as driver:
        assert driver.app.command("ping")["ok"] == 1


def test_a_message_before_login_is_at_most_a_handshake(wire_server, tuned, gateway_row):
    padded = codec.build_op_msg({"hello": 1, "client": {"padding": "x" * 9000}, "$db": "admin"}, request_id=1)
    assert len(padded) > 8192
    with socket.create_connection(("127.0.0.1", tuned.port), timeout=5) as sock:
        sock.sendall(padded)
        assert sock.recv(16) == b""  # closed, not answered
    assert "exceeds the limit of 8192" in tuned.log_text()
    # A driver's handshake (client metadata, speculative authentication) fits.
    session, secret = session_on(gateway_row, account_on(wire_server))
    with MongoClient(tuned.uri(session.username, secret, appname="x" * 120), serverSelectionTimeoutMS=5000) as driver:
        assert driver.admin.command("ping")["ok"] == 1


def test_failed_logins_are_throttled_per_address_counted_and_audited(wire_server, tuned, gateway_row):
    session, secret = session_on(gateway_row, account_on(wire_server))
    for _ in range(3):  # wrong secrets from one address
        with RawClient(tuned.port, source="127.0.0.5") as client, pytest.raises(scram.ScramError) as failure:
            client.login(session.username, "guessed-secret")
        assert "Authentication failed." in str(failure.value)
    with RawClient(tuned.port, source="127.0.0.5") as client, pytest.raises(scram.ScramError) as failure:
        client.login(session.username, secret)  # even the right secret: the address is throttled
    assert "too many failed logins from this address" in str(failure.value)
    for name in ("s-nobody-1", "s-nobody-2", "s-nobody-3"):  # unknown names from another address
        with RawClient(tuned.port, source="127.0.0.6") as client, pytest.raises(scram.ScramError):
            client.login(name, "whatever")
    with RawClient(tuned.port, source="127.0.0.6") as client, pytest.raises(scram.ScramError, match="too many"):
        client.login(session.username, secret)
    with RawClient(tuned.port, source="127.0.0.7") as client:  # other addresses are not affected
        client.login(session.username, secret)
    metrics = tuned.metrics()
    assert metrics["pam_gateway_auth_failures_total"] >= 8
    assert metrics["pam_gateway_logins_throttled_total"] >= 2
    assert metrics["pam_gateway_login_unknown_total"] >= 3
    failed = AuditEvent.objects.filter(action=AuditAction.GATEWAY_LOGIN_FAILED).order_by("id")
    assert wait_for(lambda: failed.count() >= 8)
    rows = list(failed)
    reasons = [(row.data["username"], row.data["client_address"].rsplit(":", 1)[0], row.data["reason"]) for row in rows]
    assert reasons.count((session.username, "127.0.0.5", "wrong secret")) == 3
    assert (session.username, "127.0.0.5", "too many failed logins from this address") in reasons, reasons
    assert {
        ("s-nobody-1", "127.0.0.6", "unknown session username"),
        ("s-nobody-3", "127.0.0.6", "unknown session username"),
    } <= set(reasons)
    assert all(secret not in repr(row.data) for row in rows)
