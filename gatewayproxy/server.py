"""The gateway process: the listening socket, the connections, and the loops that keep sessions honest.

:class:`GatewayServer` accepts client connections (one :class:`~gatewayproxy.relay.ClientConnection` task
each) and runs three background loops: a control loop that asks the domain every ``control_interval``
seconds which of its live sessions must close (expired, ended, killed, account or lease revoked) and
closes their connections; a heartbeat on the Gateway record; and the command log's flusher. On stop it
stops accepting, closes every connection, ends its sessions with ``gateway_stopped`` and flushes the log,
within a few seconds.

The domain is reached only through a :class:`~gatewayproxy.host.Domain` object
(``access.gateway_bridge.GatewayBridge`` in ``manage.py runproxy``), whose async methods run the services in
worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import resource
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from gatewayproxy.commandlog import CommandLog, WriterProcess
from gatewayproxy.host import Domain, SessionLogin
from gatewayproxy.metrics import GatewayMetrics
from gatewayproxy.relay import ClientConnection
from gatewayproxy.upstream import TopologyCache
from gatewayproxy.wire.hello import DEFAULT_LIMITS, UpstreamLimits

log = logging.getLogger("gatewayproxy.server")

LOGIN_CACHE_SECONDS = 2.0
STOP_REASON = "gateway_stopped"


def raise_open_file_limit(wanted: int = 65_536) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (capped by the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class GatewayServer:
    """One gateway: listens on ``host:port`` and relays sessions to their deployments."""

    def __init__(
        self,
        domain: Domain,
        *,
        host: str = "127.0.0.1",
        port: int = 27018,
        control_interval: float = 1.0,
        heartbeat_interval: float = 5.0,
        log_interval: float = 0.2,
        log_batch_size: int = 100,
        log_writer: WriterProcess | None = None,
    ) -> None:
        self.domain = domain
        self.host = host
        self.port = port
        self.control_interval = control_interval
        self.heartbeat_interval = heartbeat_interval
        self.metrics = GatewayMetrics()
        self.topology_cache = TopologyCache()
        self.command_log = CommandLog(
            domain.record_commands, interval=log_interval, batch_size=log_batch_size, process=log_writer
        )
        self.connections: dict[int, ClientConnection] = {}
        self.by_session: dict[int, set[ClientConnection]] = {}
        self.closed_sessions: dict[int, str] = {}
        self._ids = itertools.count(1)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []
        self._login_cache: dict[str, tuple[float, SessionLogin | None]] = {}
        self._limits_by_ip: dict[str, UpstreamLimits] = {}
        self._stopping = False
        self._check_soon: set[int] = set()

    # -- serving ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen and start the background loops."""
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True, backlog=2048, limit=2**16
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.command_log.start()
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._every(self.control_interval, self._control), name="gateway-control"),
            loop.create_task(self._every(self.heartbeat_interval, self.domain.heartbeat), name="gateway-heartbeat"),
        ]
        log.info("event=listening address=%s:%s", self.host, self.port)

    async def _every(self, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        while True:
            started = time.monotonic()
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database being away must not stop the gateway
                log.warning("event=loop_failed step=%s error=%s", getattr(step, "__name__", step), type(exc).__name__)
            await asyncio.sleep(max(0.05, interval - (time.monotonic() - started)))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopping:
            writer.transport.abort()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = ClientConnection(self, next(self._ids), reader, writer)
        self.connections[connection.id] = connection
        self.metrics.connections_open += 1
        self.metrics.connections_total += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await connection.run()
        finally:
            if task is not None:
                self._tasks.discard(task)

    # -- what connections call ----------------------------------------------------------------------------

    async def lookup_login(self, username: str) -> SessionLogin | None:
        """The session login for ``username``, cached for a moment so a driver's connection burst costs one query."""
        now = time.monotonic()
        cached = self._login_cache.get(username)
        if cached is not None and now - cached[0] < LOGIN_CACHE_SECONDS:
            login = cached[1]
        else:
            login = await self.domain.lookup_login(username)
            self._login_cache[username] = (now, login)
        if login is not None and login.session_id in self.closed_sessions:
            return None
        return login

    def limits_hint(self, client_ip: str) -> UpstreamLimits:
        """What to present to a client that has not said who it is (a driver's monitoring connection).

        The deployment this address last logged in to, else the one kind every known deployment shares,
        else a standalone with default limits.
        """
        if client_ip in self._limits_by_ip:
            return self._limits_by_ip[client_ip]
        known = set(self._limits_by_ip.values())
        return known.pop() if len(known) == 1 else DEFAULT_LIMITS

    def connection_logged_in(self, connection: ClientConnection) -> None:
        """Track a logged-in connection under its session and tell the domain (in the background)."""
        session_id = connection.session_id
        if session_id in self.closed_sessions:
            connection.close(f"session ended: {self.closed_sessions[session_id]}")
            return
        self.by_session.setdefault(session_id, set()).add(connection)
        self.metrics.logins += 1
        self.metrics.sessions_live = len(self.by_session)
        if connection.upstream is not None:
            self._limits_by_ip[connection.client_ip] = connection.upstream.limits
        self._background(self.domain.session_connected(session_id, connection.client_address))

    def connection_closed(self, connection: ClientConnection) -> None:
        """Forget a connection that ended."""
        if self.connections.pop(connection.id, None) is not None:
            self.metrics.connections_open -= 1
        if connection.session_id and connection.close_reason == "session expired":
            self._check_soon.add(connection.session_id)  # let the domain record the expiry now
        peers = self.by_session.get(connection.session_id)
        if peers is not None:
            peers.discard(connection)
            if not peers:
                del self.by_session[connection.session_id]
        self.metrics.sessions_live = len(self.by_session)

    def _background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("event=background_failed error=%s", type(task.exception()).__name__)

    # -- the control loop ---------------------------------------------------------------------------------

    async def _control(self) -> None:
        """Close the connections of sessions the domain says are over."""
        now = time.monotonic()
        for username, (at, _login) in list(self._login_cache.items()):
            if now - at >= LOGIN_CACHE_SECONDS:
                del self._login_cache[username]
        # Sessions with a cached login are checked too: one ended while its client was away must not log in again.
        cached = {login.session_id for _at, login in self._login_cache.values() if login is not None}
        session_ids = sorted(set(self.by_session) | self._check_soon | cached)
        self._check_soon = set()
        if not session_ids:
            return
        for session_id, reason in (await self.domain.sessions_to_close(session_ids)).items():
            self.close_session(session_id, reason)

    def close_session(self, session_id: int, reason: str) -> int:
        """Close every connection of a session and refuse its further logins; returns how many closed."""
        self.closed_sessions[session_id] = reason
        for username, (_at, login) in list(self._login_cache.items()):
            if login is not None and login.session_id == session_id:
                del self._login_cache[username]
        peers = self.by_session.pop(session_id, set())
        for connection in list(peers):
            connection.close(f"session ended: {reason}")
        self.metrics.sessions_live = len(self.by_session)
        if peers:
            log.info("event=session_closed session=%s reason=%s connections=%d", session_id, reason, len(peers))
        return len(peers)

    # -- stopping -----------------------------------------------------------------------------------------

    async def stop(self, reason: str = STOP_REASON, *, timeout: float = 4.0) -> None:
        """Stop accepting, close all connections, end this gateway's sessions and flush the log."""
        if self._stopping:
            return
        self._stopping = True
        log.info("event=stopping reason=%s connections=%d", reason, len(self.connections))
        if self._server is not None:
            self._server.close()
        for task in self._loops:
            task.cancel()
        for connection in list(self.connections.values()):
            connection.close("gateway stopping")
        pending = [task for task in self._tasks if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        deadline = time.monotonic() + timeout
        try:
            ended = await asyncio.wait_for(self.domain.end_sessions(reason), max(0.5, deadline - time.monotonic() - 1))
            log.info("event=sessions_ended reason=%s count=%s", reason, ended)
        except Exception as exc:
            log.warning("event=sessions_end_failed error=%s", type(exc).__name__)
        try:
            await asyncio.wait_for(self.command_log.close(), max(0.5, deadline - time.monotonic()))
        except Exception as exc:
            log.warning("event=commandlog_flush_failed error=%s", type(exc).__name__)
        log.info("event=stopped written=%d dropped=%d", self.command_log.written, self.command_log.dropped)
