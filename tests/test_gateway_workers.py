"""A gateway of several worker processes (``runproxy --workers``): one session seen as one, whichever worker
the kernel hands each connection to.

Raw clients log in with the session secret (SCRAM-SHA-256) through ``runproxy --workers 2`` in front of the
in-repo wire server. Which worker serves a connection shows in the gateway's log (each line carries its
process id); sixteen connections land on both workers except once in 2^15 runs.
"""

from __future__ import annotations

import re
import socket
import struct
import time
import urllib.request

import bson
import pytest

from access.models import Gateway, SessionCommand
from access.models.sessions import SessionEndReason
from access.services.sessions import session_end
from gatewayproxy.wire import codec as wire
from gatewayproxy.wire import scram
from tests.gateway_fixtures import GatewayProcess, account_on, session_on, wait_for
from tests.helpers import unique_name

pytestmark = pytest.mark.django_db(transaction=True)

CONNECTIONS = 16


class Client:
    """A socket logged in through the gateway, sending commands as OP_MSG."""

    def __init__(self, port: int, username: str, secret: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.request_id = 0
        scram.authenticate(self.command, mechanism="SCRAM-SHA-256", username=username, password=secret)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def command(self, document: dict) -> dict:
        self.request_id += 1
        self.sock.sendall(wire.build_op_msg(document, request_id=self.request_id))
        header = self._exactly(16)
        return wire.parse_op_msg(header + self._exactly(struct.unpack("<i", header[:4])[0] - 16)).body

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise EOFError("the gateway closed the connection")
            data += chunk
        return data

    def closed_within(self, seconds: float) -> bool:
        """Whether the gateway closes this connection within ``seconds`` (what it sends first is read and dropped)."""
        self.sock.settimeout(seconds)
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except TimeoutError:
            return False
        except OSError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def gateway2(tmp_path, transactional_db):
    """``runproxy --workers 2`` for this test."""
    process = GatewayProcess(tmp_path / "runproxy.log", name=unique_name("workers"), workers=2).start()
    yield process
    process.stop()


def _worker_of(gateway: GatewayProcess, client: Client) -> str:
    """The process id of the worker that logged ``client`` in, from the gateway's log."""
    pattern = re.compile(rf"pid=(\d+) event=login connection=\d+ session=\d+ client=127\.0\.0\.1:{client.port} ")
    found = wait_for(lambda: pattern.search(gateway.log_text()))
    return found.group(1)


def _metrics(gateway: GatewayProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return {name: float(value) for name, _, value in (line.partition(" ") for line in lines if line[:1] != "#")}


def _clients(gateway: GatewayProcess, username: str, secret: str) -> list[Client]:
    return [Client(gateway.port, username, secret) for _ in range(CONNECTIONS)]


def test_one_session_is_accounted_once_across_workers(wire_server, gateway2):
    session, secret = session_on(Gateway.objects.get(pk=gateway2.gateway_id), account_on(wire_server))
    clients = _clients(gateway2, session.username, secret)
    try:
        workers = {_worker_of(gateway2, client) for client in clients}
        assert len(workers) == 2, "the kernel gave every connection to one worker"
        for number, client in enumerate(clients):
            assert client.command({"insert": "items", "documents": [{"n": number}], "$db": "app"})["n"] == 1

        logged = SessionCommand.objects.filter(session=session, command="insert")
        assert wait_for(lambda: logged.count() == CONNECTIONS)
        assert len({row.connection_id for row in logged}) == CONNECTIONS  # one per connection, none twice
        session.refresh_from_db()
        assert session.connections == CONNECTIONS
        assert wait_for(lambda: type(session).objects.get(pk=session.pk).commands_count == CONNECTIONS)
        assert type(session).objects.get(pk=session.pk).bytes_in > 0

        # /metrics adds the workers up: every connection and command once, the session once.
        def counted() -> bool:
            metrics = _metrics(gateway2)
            return (
                metrics["pam_gateway_connections_open"] == CONNECTIONS
                and metrics["pam_gateway_commands_total"] == CONNECTIONS
                and metrics["pam_gateway_sessions_live"] == 1
            )

        assert wait_for(counted, timeout=5.0)
    finally:
        for client in clients:
            client.close()


def test_a_cursor_opened_on_one_worker_is_read_on_another(wire_server, gateway2):
    session, secret = session_on(Gateway.objects.get(pk=gateway2.gateway_id), account_on(wire_server))
    clients = _clients(gateway2, session.username, secret)
    try:
        by_worker: dict[str, Client] = {}
        for client in clients:
            by_worker.setdefault(_worker_of(gateway2, client), client)
        opener, reader = by_worker.values()
        opener.command({"insert": "stream", "documents": [{"n": n} for n in range(3)], "$db": "app"})
        opened = opener.command({"find": "stream", "filter": {}, "batchSize": 1, "$db": "app"})
        cursor_id = opened["cursor"]["id"]
        assert cursor_id != 0

        more = reader.command({"getMore": bson.Int64(cursor_id), "collection": "stream", "batchSize": 1, "$db": "app"})
        assert more["ok"] == 1 and [doc["n"] for doc in more["cursor"]["nextBatch"]] == [1]
        # A cursor id the session never received is refused on every worker.
        for client in (opener, reader):
            refused = client.command({"getMore": bson.Int64(cursor_id + 1), "collection": "stream", "$db": "app"})
            assert refused["ok"] == 0 and "was not opened by this session" in refused["errmsg"]
    finally:
        for client in clients:
            client.close()


def test_an_ended_session_is_closed_on_every_worker(wire_server, gateway2):
    session, secret = session_on(Gateway.objects.get(pk=gateway2.gateway_id), account_on(wire_server))
    clients = _clients(gateway2, session.username, secret)
    try:
        assert len({_worker_of(gateway2, client) for client in clients}) == 2
        assert all(client.command({"ping": 1, "$db": "admin"})["ok"] == 1 for client in clients)

        session_end(session=session, reason=SessionEndReason.KILLED)

        started = time.monotonic()
        assert all(client.closed_within(5.0) for client in clients)
        assert time.monotonic() - started < 5.0
        # Whichever worker a new connection reaches, the ended session cannot log in again.
        for _ in range(6):
            with pytest.raises((scram.ScramError, EOFError, OSError)):
                Client(gateway2.port, session.username, secret).close()
    finally:
        for client in clients:
            client.close()


def test_one_worker_runs_in_one_process(wire_server, tmp_path, transactional_db):
    gateway = GatewayProcess(tmp_path / "runproxy.log", name=unique_name("single"), workers=1).start()
    try:
        session, secret = session_on(Gateway.objects.get(pk=gateway.gateway_id), account_on(wire_server))
        clients = [Client(gateway.port, session.username, secret) for _ in range(4)]
        assert len({_worker_of(gateway, client) for client in clients}) == 1
        assert clients[0].command({"insert": "items", "documents": [{"n": 1}], "$db": "app"})["n"] == 1
        assert wait_for(lambda: SessionCommand.objects.filter(session=session, command="insert").count() == 1)
        for client in clients:
            client.close()
    finally:
        gateway.stop()
