"""The live session stream at ws/sessions/<public_id>/: snapshot, commands, end, and who may watch."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from access.models.sessions import SessionEndReason
from access.services.gateway import session_commands_record
from access.services.sessions import session_end, session_open
from tests.factories import AccessPolicyFactory, UserFactory
from tests.helpers import otp_browser_session, session_cookie, session_socket

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 3


@pytest.fixture
def opened():
    policy = AccessPolicyFactory(approval_required=False)
    session, secret = session_open(user=policy.user, account=policy.account, duration=timedelta(hours=1))
    return session, secret


def _command(session, name, **fields) -> dict:
    return {"session_id": session.pk, "command": name, "database": "app", "collection": "orders", **fields}


async def _next_of_type(communicator, kind: str) -> dict:
    while True:
        message = await communicator.receive_json_from(timeout=TIMEOUT)
        if message["type"] == kind:
            return message


@pytest.mark.parametrize("mode", ["database", "channel_layer"])
def test_owner_sees_snapshot_then_commands_from_another_thread_then_the_end(opened, settings, mode):
    settings.PAM_SESSION_EVENTS = mode
    session, secret = opened
    session_commands_record(commands=[_command(session, "ping", database="admin", collection="")])

    browser_session = otp_browser_session(session.user)

    async def scenario():
        communicator = session_socket(session, session.user, browser_session)
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        assert connected
        snapshot = await communicator.receive_json_from(timeout=TIMEOUT)
        assert snapshot["type"] == "snapshot"
        assert snapshot["session"]["username"] == session.username
        assert [c["command"] for c in snapshot["commands"]] == ["ping"]

        # The gateway records through sync_to_async, in a worker thread with its own database connection.
        await database_sync_to_async(session_commands_record)(
            commands=[_command(session, "find", n=2, summary={"filter": {"sku": "?"}}), _command(session, "insert")]
        )
        first = await _next_of_type(communicator, "command")
        second = await _next_of_type(communicator, "command")
        assert (first["command"], first["n"], first["collection"]) == ("find", 2, "orders")
        assert second["command"] == "insert" and second["id"] > first["id"]

        await database_sync_to_async(session_end)(session=session, reason=SessionEndReason.KILLED)
        ended = await _next_of_type(communicator, "ended")
        assert ended["reason"] == "killed" and ended["ended_at"]
        await communicator.disconnect()
        return [first, second, ended, snapshot]

    messages = async_to_sync(scenario)()
    assert secret not in repr(messages)


def test_an_ended_session_sends_snapshot_then_ended(opened, settings):
    settings.PAM_SESSION_EVENTS = "database"
    session, _ = opened
    session_end(session=session, reason=SessionEndReason.ENDED_BY_USER)

    browser_session = otp_browser_session(session.user)

    async def scenario():
        communicator = session_socket(session, session.user, browser_session)
        await communicator.connect(timeout=TIMEOUT)
        assert (await communicator.receive_json_from(timeout=TIMEOUT))["type"] == "snapshot"
        ended = await communicator.receive_json_from(timeout=TIMEOUT)
        await communicator.disconnect()
        return ended

    assert async_to_sync(scenario)()["reason"] == "ended_by_user"


def test_another_users_socket_is_closed_with_4403(opened):
    session, _ = opened
    stranger = UserFactory()
    browser_session = otp_browser_session(stranger)

    async def scenario():
        communicator = session_socket(session, stranger, browser_session)
        await communicator.connect(timeout=TIMEOUT)
        closed = await communicator.receive_output(timeout=TIMEOUT)
        await communicator.wait()
        return closed

    closed = async_to_sync(scenario)()
    assert closed == {"type": "websocket.close", "code": 4403}


def _through_the_real_app(session, cookie: bytes):
    from portal.asgi import application

    async def scenario():
        communicator = WebsocketCommunicator(
            application,
            f"/ws/sessions/{session.public_id}/",
            headers=[(b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", cookie)],
        )
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        first = await communicator.receive_output(timeout=TIMEOUT)
        await communicator.disconnect()
        return connected, first

    return async_to_sync(scenario)()


def test_staff_with_view_session_and_otp_watch_anyones_session_through_the_real_asgi_app(opened, staff_user):
    session, _ = opened

    connected, first = _through_the_real_app(session, session_cookie(staff_user).encode())

    assert connected and first["type"] == "websocket.send"
    assert json.loads(first["text"])["session"]["session_id"] == str(session.public_id)


def test_viewers_without_a_verified_otp_device_are_refused_owner_and_staff_alike(opened, staff_user):
    session, _ = opened

    _connected, first = _through_the_real_app(session, session_cookie(staff_user, otp=False).encode())
    assert first == {"type": "websocket.close", "code": 4403}

    _connected, first = _through_the_real_app(session, session_cookie(session.user, otp=False).encode())
    assert first == {"type": "websocket.close", "code": 4403}

    _connected, first = _through_the_real_app(session, session_cookie(session.user).encode())
    assert json.loads(first["text"])["type"] == "snapshot"


def test_anonymous_socket_through_the_real_asgi_app_is_refused(opened):
    from portal.asgi import application

    session, _ = opened

    async def scenario():
        communicator = WebsocketCommunicator(
            application, f"/ws/sessions/{session.public_id}/", headers=[(b"origin", b"http://localhost")]
        )
        await communicator.connect(timeout=TIMEOUT)
        closed = await communicator.receive_output(timeout=TIMEOUT)
        await communicator.wait()
        return closed

    assert async_to_sync(scenario)()["code"] == 4403


@pytest.mark.parametrize("mode", ["database", "channel_layer"])
def test_the_view_ends_a_session_that_expires_while_watched(settings, mode):
    settings.PAM_SESSION_EVENTS = mode
    policy = AccessPolicyFactory(approval_required=False)
    session, _ = session_open(user=policy.user, account=policy.account, duration=timedelta(seconds=1))

    browser_session = otp_browser_session(session.user)

    async def scenario():
        communicator = session_socket(session, session.user, browser_session)
        await communicator.connect(timeout=TIMEOUT)
        assert (await communicator.receive_json_from(timeout=TIMEOUT))["type"] == "snapshot"
        ended = await _next_of_type(communicator, "ended")
        await communicator.disconnect()
        return ended

    assert async_to_sync(scenario)()["reason"] == "expired"
    session.refresh_from_db()
    assert session.end_reason == SessionEndReason.EXPIRED
