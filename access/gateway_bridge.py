"""The bridge between the gateway and Django: ``access.services.gateway`` run in worker threads.

``manage.py runproxy`` hands a :class:`GatewayBridge` to :class:`gatewayproxy.server.GatewayServer` as its
:class:`gatewayproxy.host.Domain`; it is the only place where the proxy's needs meet Django (the proxy
itself imports nothing of ``access``). Each async method runs one service call through
``asgiref.sync.sync_to_async(thread_sensitive=False)``, so the event loop never blocks on the database;
:meth:`GatewayBridge.record_commands` is synchronous because the command log already calls it from its own
writer with a whole batch.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection, connections

from access.services.auth_events import gateway_login_failed
from access.services.gateway import (
    gateway_heartbeat,
    gateway_sessions_end,
    gateways_lost_sweep,
    session_commands_record,
    session_connected,
    session_login_lookup,
    sessions_to_close,
)
from access.services.offboarding import session_access_problem
from access.services.revocations import EndedSession, gateway_ended_sessions_since
from gatewayproxy.commandlog import CommandRecord
from gatewayproxy.host import SessionLogin
from gatewayproxy.prelogin import LoginLimits

LOST_GATEWAY_GRACE = timedelta(seconds=30)
"""A gateway whose heartbeat (every 5 s) is older than this is lost; the survivors end its sessions."""

T = TypeVar("T")


async def _in_thread(function: Callable[..., T], **kwargs: Any) -> T:
    """Run a service in a worker thread and close the database connections it opened there.

    Under ``sync_to_async`` each call gets a fresh context, so a connection left open would never be
    reused, only collected later; closing it at once keeps the count of open SQLite handles flat.
    """

    def call() -> T:
        try:
            return function(**kwargs)
        finally:
            connections.close_all()

    return await sync_to_async(call, thread_sensitive=False)()


def login_limits_from_settings() -> LoginLimits:
    """The gateway's pre-login limits from the settings (`PAM_GATEWAY_LOGIN_*`, README's Configuration)."""
    return LoginLimits(
        deadline=settings.PAM_GATEWAY_LOGIN_TIMEOUT,
        max_message=settings.PAM_GATEWAY_PRELOGIN_MAX_MESSAGE,
        per_address=settings.PAM_GATEWAY_UNAUTHENTICATED_PER_ADDRESS,
        total=settings.PAM_GATEWAY_UNAUTHENTICATED_TOTAL,
        failures=settings.PAM_GATEWAY_LOGIN_FAILURES,
        window=settings.PAM_GATEWAY_LOGIN_FAILURE_WINDOW,
    )


class GatewayBridge:
    """The :class:`gatewayproxy.host.Domain` of a gateway registered as ``gateway_id``.

    ``login_limits`` (from the settings) is what the server applies to clients before they log in.
    """

    def __init__(self, gateway_id: int) -> None:
        self.gateway_id = gateway_id
        self.login_limits = login_limits_from_settings()

    async def lookup_login(self, username: str) -> SessionLogin | None:
        return await _in_thread(session_login_lookup, username=username)

    async def session_connected(self, session_id: int, client_address: str) -> None:
        await _in_thread(
            session_connected, session_id=session_id, gateway_id=self.gateway_id, client_address=client_address
        )

    async def sessions_to_close(self, session_ids: list[int]) -> dict[int, str]:
        return await _in_thread(sessions_to_close, gateway_id=self.gateway_id, session_ids=session_ids, in_words=True)

    async def heartbeat(self) -> None:
        """Record this gateway alive, then end the sessions of gateways silent for LOST_GATEWAY_GRACE (crashed).

        Survivors sweeping on their heartbeat end a dead gateway's sessions within about half a minute, without
        waiting for the qcluster's minute schedule (which remains the backstop when no gateway survives).
        """
        await _in_thread(gateway_heartbeat, gateway_id=self.gateway_id)
        await _in_thread(gateways_lost_sweep, grace=LOST_GATEWAY_GRACE)

    async def end_sessions(self, reason: str) -> int:
        return await _in_thread(gateway_sessions_end, gateway_id=self.gateway_id, reason=reason)

    async def login_failed(self, username: str, client_address: str, reason: str) -> None:
        """Audit a client login the gateway refused (unknown name, wrong proof, ended session...); no secret."""
        await _in_thread(gateway_login_failed, username=username, client_address=client_address, reason=reason)

    async def ended_sessions_since(self, cursor: int | None) -> tuple[list[EndedSession], int]:
        """Sessions ended after `cursor` (None: the last few seconds), and the next cursor: poll about every 200 ms
        and close each named session's connections, telling the client `description` (at least once: see
        access.services.revocations)."""
        return await _in_thread(gateway_ended_sessions_since, cursor=cursor)

    async def session_access_problem(self, session_id: int) -> str | None:
        """At each login, after the secret was proved: None if the user and their grant still allow the session,
        else why not in words ("the user was deactivated")."""
        return await _in_thread(session_access_problem, session_id=session_id)

    def record_commands(self, records: list[CommandRecord]) -> None:
        """Store a batch in the command log's own thread or process, keeping its database connection.

        A failed batch drops the connection, so the next one reconnects.
        """
        try:
            session_commands_record(commands=records)
        except DatabaseError:
            connection.close()
            raise
