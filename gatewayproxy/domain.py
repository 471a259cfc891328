"""The gateway's bridge to the domain: ``access.services.gateway`` run in worker threads.

This is the only gatewayproxy module that reaches Django. Each async method runs one service call
through ``asgiref.sync.sync_to_async(thread_sensitive=False)``, so the event loop never blocks on the
database; :meth:`DjangoDomain.record_commands` is synchronous because the command log already calls it
from its own writer thread with a whole batch.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async

LOST_GATEWAY_GRACE = timedelta(seconds=30)
"""A gateway whose heartbeat (every 5 s) is older than this is lost; the survivors end its sessions."""


def _in_thread(function):
    return sync_to_async(function, thread_sensitive=False)


def _closing_connections(function):
    """Run a service and close the database connections it opened in this call's context.

    Under ``sync_to_async`` each call gets a fresh context, so a connection left open would never be
    reused, only collected later; closing it at once keeps the count of open SQLite handles flat.
    """
    from django.db import connections

    def call(**kwargs):
        try:
            return function(**kwargs)
        finally:
            connections.close_all()

    call.__name__ = getattr(function, "__name__", "call")
    return call


def _reusing_connection(function):
    """Run a service in the command log's own thread, keeping its connection; a failed one is dropped."""
    from django.db import DatabaseError, connection

    def call(**kwargs):
        try:
            return function(**kwargs)
        except DatabaseError:
            connection.close()  # the next batch reconnects
            raise

    call.__name__ = getattr(function, "__name__", "call")
    return call


class DjangoDomain:
    """The :class:`gatewayproxy.server.Domain` of a gateway registered as ``gateway_id``."""

    def __init__(self, gateway_id: int) -> None:
        self.gateway_id = gateway_id

    async def lookup_login(self, username: str) -> Any | None:
        from access.services.gateway import session_login_lookup

        return await _in_thread(_closing_connections(session_login_lookup))(username=username)

    async def session_connected(self, session_id: int, client_address: str) -> None:
        from access.services.gateway import session_connected

        await _in_thread(_closing_connections(session_connected))(
            session_id=session_id, gateway_id=self.gateway_id, client_address=client_address
        )

    async def sessions_to_close(self, session_ids: list[int]) -> dict[int, str]:
        from access.services.gateway import sessions_to_close

        return await _in_thread(_closing_connections(sessions_to_close))(
            gateway_id=self.gateway_id, session_ids=session_ids
        )

    async def heartbeat(self) -> None:
        """Record this gateway alive, then end the sessions of gateways silent for LOST_GATEWAY_GRACE (crashed).

        Survivors sweeping on their heartbeat end a dead gateway's sessions within about half a minute, without
        waiting for the qcluster's minute schedule (which remains the backstop when no gateway survives).
        """
        from access.services.gateway import gateway_heartbeat, gateways_lost_sweep

        await _in_thread(_closing_connections(gateway_heartbeat))(gateway_id=self.gateway_id)
        await _in_thread(_closing_connections(gateways_lost_sweep))(grace=LOST_GATEWAY_GRACE)

    async def end_sessions(self, reason: str) -> int:
        from access.services.gateway import gateway_sessions_end

        return await _in_thread(_closing_connections(gateway_sessions_end))(gateway_id=self.gateway_id, reason=reason)

    def record_commands(self, records: list[dict]) -> None:
        from access.services.gateway import session_commands_record

        _reusing_connection(session_commands_record)(commands=records)
