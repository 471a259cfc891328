"""Wire-level behaviour of the gateway that drivers rarely exercise: exhaust replies, checksums, 1,000 connections.

A small scripted upstream (SCRAM login with ``gatewayproxy.wire.scram``, then canned replies) sits behind the
real gateway subprocess, and a raw socket client logs in with the session secret and sends hand-made
messages, so the test sees exactly the bytes that cross the gateway.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import struct
import threading

import bson
import pytest
from pymongo import MongoClient

from gatewayproxy.wire import codec as wire
from gatewayproxy.wire import scram
from tests.factories import AccountFactory, ResourceFactory
from tests.gateway_fixtures import account_on, session_on
from tests.helpers import unique_name, unique_password
from tests.secret_scan import remember

pytestmark = pytest.mark.django_db(transaction=True)


class ScriptedUpstream:
    """An upstream that logs in one user and answers ``getMore`` with three exhaust replies."""

    def __init__(self, username: str, password: str) -> None:
        self.hello_fields: dict = {"isWritablePrimary": True}
        self.credentials = {m: scram.derive_credentials(m, username, password) for m in scram.MECHANISMS}
        self.username = username
        self.received: list[bytes] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conversation: scram.ScramServer | None = None
        try:
            while True:
                raw = await wire.read_message(reader)
                message = wire.parse_message(raw)
                body = message.body if isinstance(message, wire.OpMsg) else message.query
                name = next(iter(body))
                if name in ("hello", "isMaster"):
                    reply = {**self.hello_fields, "maxWireVersion": 21, "minWireVersion": 0, "ok": 1.0}
                    reply["saslSupportedMechs"] = list(scram.MECHANISMS)
                elif name == "saslStart":
                    conversation = scram.ScramServer(
                        body["mechanism"], lambda _user, mechanism=body["mechanism"]: self.credentials[mechanism]
                    )
                    first = conversation.server_first(bytes(body["payload"]))
                    reply = {"conversationId": 1, "done": False, "payload": bson.Binary(first), "ok": 1.0}
                elif name == "saslContinue":
                    final = conversation.server_final(bytes(body["payload"]))
                    reply = {"conversationId": 1, "done": True, "payload": bson.Binary(final), "ok": 1.0}
                else:
                    self.received.append(raw)
                    if name == "getMore" and message.exhaust_allowed:
                        for batch in range(3):
                            flags = wire.MORE_TO_COME if batch < 2 else 0
                            doc = {
                                "cursor": {"nextBatch": [{"batch": batch}], "id": 0 if batch == 2 else 42},
                                "ok": 1.0,
                            }
                            writer.write(wire.build_op_msg(doc, flags=flags, response_to=message.request_id))
                        await writer.drain()
                        continue
                    reply = {"echo": name, "ok": 1.0}
                    if name == "aggregate":  # opens the cursor the exhaust test reads
                        reply = {"cursor": {"firstBatch": [], "id": bson.Int64(42), "ns": "app.c"}, "ok": 1.0}
                    checksum = isinstance(message, wire.OpMsg) and message.checksum_present
                    writer.write(wire.build_op_msg(reply, response_to=message.request_id, checksum=checksum))
                    await writer.drain()
                    continue
                writer.write(wire.reply_for(message, reply))
                await writer.drain()
        except (EOFError, ConnectionError, wire.WireError, scram.ScramError, asyncio.CancelledError):
            writer.close()


class RawClient:
    """A socket that logs in through the gateway with SCRAM and sends hand-made messages."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.request_id = 0

    def send(self, message: bytes) -> None:
        self.sock.sendall(message)

    def receive(self) -> bytes:
        header = self._exactly(16)
        return header + self._exactly(struct.unpack("<i", header[:4])[0] - 16)

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise EOFError("closed")
            data += chunk
        return data

    def command(self, document: dict, **options) -> wire.OpMsg:
        self.request_id += 1
        self.send(wire.build_op_msg(document, request_id=self.request_id, **options))
        return wire.parse_op_msg(self.receive())

    def login(self, username: str, secret: str) -> None:
        scram.authenticate(
            lambda doc: self.command(doc).body, mechanism="SCRAM-SHA-256", username=username, password=secret
        )

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def scripted(gateway):
    username, password = unique_name("acct"), unique_password()
    upstream = ScriptedUpstream(username, password)
    resource_row = ResourceFactory(uri=f"mongodb://127.0.0.1:{upstream.port}", tls=False)
    session_name, secret = _session_for(gateway, resource_row, username, password)
    yield upstream, session_name, secret
    upstream.stop()


def test_exhaust_replies_are_all_forwarded(scripted, gateway_proxy):
    _upstream, username, secret = scripted
    client = RawClient(gateway_proxy.port)
    try:
        client.login(username, secret)
        opened = client.command({"aggregate": "c", "pipeline": [], "cursor": {}, "$db": "app"}).body
        assert opened["cursor"]["id"] == 42  # the session's own cursor: getMore may read it
        client.send(
            wire.build_op_msg(
                {"getMore": bson.Int64(42), "collection": "c", "$db": "app"}, flags=wire.EXHAUST_ALLOWED, request_id=9
            )
        )
        replies = [wire.parse_op_msg(client.receive()) for _ in range(3)]
        assert [r.body["cursor"]["nextBatch"][0]["batch"] for r in replies] == [0, 1, 2]
        assert [r.more_to_come for r in replies] == [True, True, False]
        assert client.command({"ping": 1, "$db": "admin"}).body == {"echo": "ping", "ok": 1.0}
    finally:
        client.close()


def test_checksummed_messages_cross_unchanged_both_ways(scripted, gateway_proxy):
    upstream, username, secret = scripted
    client = RawClient(gateway_proxy.port)
    try:
        client.login(username, secret)
        request = wire.build_op_msg({"find": "c", "filter": {}, "$db": "app"}, request_id=77, checksum=True)
        client.send(request)
        reply_bytes = client.receive()
        reply = wire.parse_op_msg(reply_bytes)  # verifies the CRC-32C trailer
        assert reply.checksum_present and reply.body == {"echo": "find", "ok": 1.0} and reply.response_to == 77
        assert upstream.received[-1] == request  # byte for byte
    finally:
        client.close()


def test_the_gateway_holds_a_thousand_client_connections(wire_server, gateway_session, gateway_proxy):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2500 and hard >= 2500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    hello = wire.build_op_msg({"hello": 1, "$db": "admin"}, request_id=1)
    _session, _secret, uri = gateway_session(account_on(wire_server))

    async def open_all() -> int:
        # From four loopback addresses: the gateway caps unauthenticated connections per client address.
        pairs = [
            await asyncio.open_connection("127.0.0.1", gateway_proxy.port, local_addr=(f"127.0.0.{2 + n % 4}", 0))
            for n in range(1000)
        ]
        for _reader, writer in pairs:
            writer.write(hello)
        answered = 0
        for reader, _writer in pairs:
            header = await asyncio.wait_for(reader.readexactly(16), 30)
            await reader.readexactly(struct.unpack("<i", header[:4])[0] - 16)
            answered += 1
        with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:  # still serving everyone
            client.app.items.insert_one({"n": 1})
        for _reader, writer in pairs:
            writer.close()
        return answered

    assert asyncio.run(open_all()) == 1000


def _session_for(gateway, resource_row, username: str, password: str) -> tuple[str, str]:
    account = AccountFactory(resource=resource_row, username=username, password=password)
    remember(password)
    session, secret = session_on(gateway, account)
    return session.username, secret


def test_a_new_connection_after_a_failover_goes_to_the_new_primary(gateway, gateway_proxy):
    username, password = unique_name("acct"), unique_password()
    first, second = ScriptedUpstream(username, password), ScriptedUpstream(username, password)
    a, b = f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"
    first.hello_fields = {"isWritablePrimary": True, "setName": "rs0", "hosts": [a, b], "primary": a}
    second.hello_fields = {
        "isWritablePrimary": False,
        "secondary": True,
        "setName": "rs0",
        "hosts": [a, b],
        "primary": a,
    }
    resource_row = ResourceFactory(uri=f"mongodb://{b},{a}/?replicaSet=rs0", tls=False)
    session_name, secret = _session_for(gateway, resource_row, username, password)
    try:
        client = RawClient(gateway_proxy.port)
        hello = client.command({"hello": 1, "saslSupportedMechs": f"admin.{session_name}", "$db": "admin"}).body
        assert hello["msg"] == "isdbgrid" and "hosts" not in hello and "setName" not in hello
        client.login(session_name, secret)
        client.command({"ping": 1, "$db": "admin"})
        client.close()
        assert len(first.received) == 1 and not second.received  # followed `primary` from the secondary seed

        first.hello_fields = {**second.hello_fields, "primary": b}  # the election moved the primary
        second.hello_fields = {"isWritablePrimary": True, "setName": "rs0", "hosts": [a, b], "primary": b}
        client = RawClient(gateway_proxy.port)
        client.login(session_name, secret)
        client.command({"ping": 1, "$db": "admin"})
        client.close()
        assert len(first.received) == 1 and len(second.received) == 1
    finally:
        first.stop()
        second.stop()
