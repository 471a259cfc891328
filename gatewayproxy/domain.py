"""The gateway's bridge to the domain: ``access.services.gateway`` run in worker threads.

This is the only gatewayproxy module that reaches Django. Each async method runs one service call
through ``asgiref.sync.sync_to_async(thread_sensitive=False)``, so the event loop never blocks on the
database; :meth:`DjangoDomain.record_commands` is synchronous because the command log already calls it
from a worker thread with a whole batch.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async


def _in_thread(function):
    return sync_to_async(function, thread_sensitive=False)


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
        from access.services.gateway import gateway_heartbeat

        await _in_thread(_closing_connections(gateway_heartbeat))(gateway_id=self.gateway_id)

    async def end_sessions(self, reason: str) -> int:
        from access.services.gateway import gateway_sessions_end

        return await _in_thread(_closing_connections(gateway_sessions_end))(gateway_id=self.gateway_id, reason=reason)

    def record_commands(self, records: list[dict]) -> None:
        from access.services.gateway import session_commands_record

        _closing_connections(session_commands_record)(commands=records)


def _closing_connections(function):
    """Wrap a service so stale database connections of the worker thread are replaced first."""
    from django.db import close_old_connections

    def call(**kwargs):
        close_old_connections()
        return function(**kwargs)

    call.__name__ = getattr(function, "__name__", "call")
    return call
