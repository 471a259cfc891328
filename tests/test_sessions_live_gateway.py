"""The live session stream across processes, without Redis: a real `runproxy` subprocess records the commands a
pymongo client runs through it, and the websocket consumer in this process streams them, then the kill."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from access.models.sessions import SessionEndReason
from access.services.sessions import session_end
from tests.factories import AccountFactory, ResourceFactory
from tests.helpers import otp_browser_session, session_socket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.wireserver]

DOCUMENT_VALUE = "confidential-sku-7Qx"
ACCOUNT_PASSWORD = "live-acct-pass-9Zr"


async def _events_until(communicator, predicate, timeout: float) -> list[dict]:
    events = []
    deadline = time.monotonic() + timeout
    while not events or not predicate(events):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no matching event in {timeout}s; got {events}"
        events.append(await communicator.receive_json_from(timeout=remaining))
    return events


def test_commands_recorded_by_the_gateway_process_stream_live_and_the_kill_follows(
    wire_server, gateway_session, gateway_proxy, settings
):
    settings.PAM_SESSION_EVENTS = "database"  # what the embedded default (in-memory channel layer) uses
    wire_server.create_user("live-acct", ACCOUNT_PASSWORD, [{"role": "root", "db": "admin"}])
    resource = ResourceFactory(uri=f"mongodb://{wire_server.host_port}", tls=False)
    account = AccountFactory(resource=resource, username="live-acct", password=ACCOUNT_PASSWORD)
    session, secret, uri = gateway_session(account)
    client = MongoClient(uri, serverSelectionTimeoutMS=5000, retryReads=False, retryWrites=False)

    browser_session = otp_browser_session(session.user)

    async def scenario():
        communicator = session_socket(session, session.user, browser_session)
        assert (await communicator.connect(timeout=5))[0]
        assert (await communicator.receive_json_from(timeout=5))["type"] == "snapshot"

        def run_commands():
            client.livetest.orders.insert_one({"sku": DOCUMENT_VALUE})
            assert client.livetest.orders.find_one({"sku": DOCUMENT_VALUE})["sku"] == DOCUMENT_VALUE
            return time.monotonic()

        done_at = await database_sync_to_async(run_commands)()
        events = await _events_until(
            communicator, lambda seen: {"insert", "find"} <= {e.get("command") for e in seen}, timeout=10
        )
        seen_at = time.monotonic()
        await database_sync_to_async(session_end)(session=session, reason=SessionEndReason.KILLED)
        ended = await _events_until(communicator, lambda seen: seen[-1]["type"] == "ended", timeout=5)
        await communicator.disconnect()
        return events + ended, seen_at - done_at

    try:
        events, lag = async_to_sync(scenario)()
        commands = [e for e in events if e["type"] == "command"]
        insert = next(e for e in commands if e["command"] == "insert")
        assert (insert["database"], insert["collection"], insert["ok"]) == ("livetest", "orders", True)
        assert events[-1]["type"] == "ended" and events[-1]["reason"] == "killed"
        text = repr(events)
        assert DOCUMENT_VALUE not in text and secret not in text and ACCOUNT_PASSWORD not in text
        print(f"live view lag after the client's last reply: {lag * 1000:.0f} ms")

        # The gateway drops the killed session's connections within 2 s.
        deadline = time.monotonic() + 2.5
        while True:
            try:
                client.livetest.orders.find_one({})
            except PyMongoError:
                break
            assert time.monotonic() < deadline, "the killed session still runs commands"
            time.sleep(0.1)
    finally:
        client.close()
    session.refresh_from_db()
    assert session.commands_count >= 2 and session.first_connected_at is not None
    assert session.ended_at is not None and session.end_reason == SessionEndReason.KILLED
