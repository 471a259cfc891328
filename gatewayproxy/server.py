"""The gateway process: the listening socket, the connections, and the loops that keep sessions honest.

:class:`GatewayServer` accepts client connections (one :class:`~gatewayproxy.relay.ClientConnection` task
each) and runs four background loops: a watch on ended sessions (every ``ended_interval`` seconds, 0.2 by
default, it reads the sessions the domain ended since its cursor and closes their connections, telling
clients why); a control loop, the fallback, that asks the domain every ``control_interval`` seconds which of
its live sessions must close (expired, ended, killed, account or lease revoked); a heartbeat on the Gateway
record; and the command log's flusher. Before login a connection is bounded by
:class:`~gatewayproxy.prelogin.LoginLimits` (caps per address and in total, a deadline, small messages, a
throttle on failed logins); every failed login is counted in the metrics and audited through the domain.
Logins are not cached: each one is looked up, and once its secret is proved, the session's user and grant
are checked by the domain. On stop it
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
from dataclasses import replace
from typing import Any

from gatewayproxy.auth import LoginError
from gatewayproxy.commandlog import CommandLog
from gatewayproxy.host import Domain, SessionLogin, UpstreamTarget
from gatewayproxy.metrics import GatewayMetrics
from gatewayproxy.prelogin import LoginLimits, PreLoginGuard
from gatewayproxy.relay import ClientConnection
from gatewayproxy.upstream import TopologyCache, target_key
from gatewayproxy.wire.hello import DEFAULT_LIMITS, MONGOS, UpstreamLimits

log = logging.getLogger("gatewayproxy.server")

STOP_REASON = "gateway_stopped"


def raise_open_file_limit(wanted: int = 65_536) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (capped by the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _names_a_cluster(uri: str) -> bool:
    """Whether a deployment URI names a replica set or several hosts (so the gateway presents a mongos)."""
    hosts = uri.partition("://")[2].rpartition("@")[2].partition("/")[0].partition("?")[0]
    return uri.startswith("mongodb+srv://") or "," in hosts or "replicaSet=" in uri


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
        log_interval: float = 0.1,
        log_batch_size: int = 500,
        log_output: int | None = None,
        login_limits: LoginLimits | None = None,
        ended_interval: float = 0.2,
        coordinator: Any = None,
    ) -> None:
        self.domain = domain
        # A worker of several (gatewayproxy.workers): it reports its sessions to its supervisor, which runs the
        # loops below once for the whole gateway and tells every worker which sessions to close.
        self.coordinator = coordinator
        self.host = host
        self.port = port
        self.control_interval = control_interval
        self.heartbeat_interval = heartbeat_interval
        self.ended_interval = ended_interval
        self.login_limits = login_limits or getattr(domain, "login_limits", None) or LoginLimits()
        if coordinator is not None:  # one worker of several: its share of the gateway's pre-login limits
            self.login_limits = self.login_limits.shared_by(coordinator.workers)
        self.guard = PreLoginGuard(self.login_limits)
        self.metrics = GatewayMetrics()
        self.topology_cache = TopologyCache()
        self.command_log = CommandLog(
            domain.record_commands, interval=log_interval, batch_size=log_batch_size, output=log_output
        )
        self.connections: dict[int, ClientConnection] = {}
        self.by_session: dict[int, set[ClientConnection]] = {}
        self.closed_sessions: dict[int, str] = {}
        # Connection ids are unique in the gateway: each worker counts in its own residue class.
        self._ids = coordinator.connection_ids() if coordinator is not None else itertools.count(1)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []
        self._lookups: dict[str, asyncio.Future] = {}
        self._limits_by_ip: dict[str, UpstreamLimits] = {}
        self._limits_by_target: dict[tuple, UpstreamLimits] = {}
        self._logins_by_ip: dict[str, int] = {}
        self._logins_elsewhere: set[str] = set()  # addresses with logged-in connections on other workers
        self._cursors: dict[int, dict[int, None]] = {}
        self._ended_cursor: int | None = None
        self._stopping = False
        self._check_soon: set[int] = set()

    # -- serving ------------------------------------------------------------------------------------------

    async def start(self, *, listen: bool = True) -> None:
        """Listen and start the background loops.

        A worker (with a coordinator) shares the port with its peers (``SO_REUSEPORT``) and leaves the loops to
        its supervisor, whose control-only server starts them without listening (``listen=False``).
        """
        if listen:
            self._server = await asyncio.start_server(
                self._accept,
                self.host,
                self.port,
                reuse_address=True,
                reuse_port=self.coordinator is not None,
                backlog=2048,
                limit=2**16,
            )
            self.port = self._server.sockets[0].getsockname()[1]
            await self.command_log.start()
            log.info("event=listening address=%s:%s", self.host, self.port)
        if self.coordinator is not None:
            return
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._every(self.ended_interval, self._watch_ended), name="gateway-ended"),
            loop.create_task(self._every(self.control_interval, self._control), name="gateway-control"),
            loop.create_task(self._every(self.heartbeat_interval, self.domain.heartbeat), name="gateway-heartbeat"),
        ]

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
        del reader, writer  # the connection holds the streams, and lets them go once its pipe owns the sockets
        if not self.guard.admit(connection.client_ip):
            self.metrics.prelogin_refused += 1
            connection.writer.transport.abort()  # over the cap of unauthenticated connections (per address, in all)
            return
        connection.admitted = True
        self.metrics.connections_unauthenticated = self.guard.unauthenticated
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
        """The session login for ``username``; concurrent lookups of one name (a driver's burst) share one query.

        Nothing is cached beyond the query: whether the session may still log in is decided after the proof
        by :meth:`session_access_problem`, and a session this gateway saw end is refused with its reason.
        """
        pending = self._lookups.get(username)
        if pending is None:
            pending = asyncio.ensure_future(self.domain.lookup_login(username))
            self._lookups[username] = pending
            pending.add_done_callback(lambda _done: self._lookups.pop(username, None))
        login = await asyncio.shield(pending)
        if login is not None and not login.refusal and login.session_id in self.closed_sessions:
            return replace(login, refusal=self.closed_sessions[login.session_id], upstream=None)
        return login

    async def session_access_problem(self, session_id: int) -> str | None:
        """Asked at each login once the secret is proved: None while the user and grant allow the session."""
        try:
            return await self.domain.session_access_problem(session_id)
        except Exception as exc:  # the database away: refuse (fail closed), say so
            log.warning("event=access_check_failed session=%s error=%s", session_id, type(exc).__name__)
            return "the gateway cannot check the session's access right now; try again"

    def login_throttled(self, connection: ClientConnection) -> float:
        """Seconds until ``connection``'s address may try to log in again (0.0: now)."""
        return self.guard.throttled_for(connection.client_ip)

    def login_unknown(self, connection: ClientConnection, username: str) -> None:
        """A client named a session username nobody has: count it against its address, audit it."""
        self.metrics.login_unknown += 1
        self._login_failure(connection, username, "unknown session username")

    def login_refused(self, connection: ClientConnection, username: str, error: LoginError) -> None:
        """A login failed (wrong secret, ended session, throttled...): count it, log it, audit it."""
        self.metrics.auth_failures += 1
        log.info(
            "event=login_failed connection=%s client=%s reason=%r",
            connection.id,
            connection.client_address,
            error.reason,
        )
        if error.reason == "too many failed logins from this address":
            self.metrics.logins_throttled += 1
            if self.guard.throttle_audit_due(connection.client_ip):
                self._audit_login_failure(connection, username, error.reason)
        elif not error.counted:
            self._login_failure(connection, username, error.reason)

    def _login_failure(self, connection: ClientConnection, username: str, reason: str) -> None:
        if self.guard.failed(connection.client_ip):
            self._audit_login_failure(connection, username, reason)

    def _audit_login_failure(self, connection: ClientConnection, username: str, reason: str) -> None:
        self._background(self.domain.login_failed(username, connection.client_address, reason))

    def login_deadline(self, connection: ClientConnection) -> bool:
        """The login deadline of ``connection`` passed: True keeps it for one more deadline.

        Only a driver's monitoring connection is kept (it never logs in: it sends hellos and nothing else), and
        only while its address has a logged-in connection here.
        """
        logged_in_here = self._logins_by_ip.get(connection.client_ip, 0) > 0
        keep = not connection.username_tried and (logged_in_here or connection.client_ip in self._logins_elsewhere)
        if not keep:
            self.metrics.login_deadline_closed += 1
        return keep

    def session_cursors(self, session_id: int) -> dict[int, None]:
        """The cursor ids the session's connections on this gateway received (shared: drivers pool connections)."""
        cursors = self._cursors.get(session_id)
        if cursors is None:
            # With several workers, a table they all share: a driver's getMore may reach any of them.
            cursors = self._cursors[session_id] = self.coordinator.cursors(session_id) if self.coordinator else {}
        return cursors

    def limits_hint(self, client_ip: str, target: UpstreamTarget | None = None) -> UpstreamLimits:
        """What to present in a hello before login, when no upstream connection exists yet.

        The deployment of the session the client named: as a login to it here found it, else as its URI says
        (several hosts, ``replicaSet`` or ``mongodb+srv``: a mongos); else the deployment this address last logged
        in to, else the one kind every known deployment shares, else a standalone with default limits.
        """
        if target is not None:
            known = self._limits_by_target.get(target_key(target))
            if known is not None:
                return known
            if _names_a_cluster(target.uri):  # a replica set or a cluster is presented as a mongos
                return replace(DEFAULT_LIMITS, topology=MONGOS)
        if client_ip in self._limits_by_ip:
            return self._limits_by_ip[client_ip]
        known = set(self._limits_by_ip.values())
        return known.pop() if len(known) == 1 else DEFAULT_LIMITS

    def learn_limits(self, client_ip: str, target: tuple | None, limits: UpstreamLimits) -> None:
        """Remember what a login found of a deployment, for the hellos of clients that have not logged in yet."""
        self._limits_by_ip[client_ip] = limits
        if target is not None:
            self._limits_by_target[target] = limits

    def address_logins_elsewhere(self, client_ip: str, present: bool) -> None:
        """Another worker has (or no longer has) logged-in connections from ``client_ip``."""
        if present:
            self._logins_elsewhere.add(client_ip)
        else:
            self._logins_elsewhere.discard(client_ip)

    def connection_logged_in(self, connection: ClientConnection) -> None:
        """Track a logged-in connection under its session and tell the domain (in the background)."""
        self._release(connection)
        session_id = connection.session_id
        if session_id in self.closed_sessions:
            connection.end_session(self.closed_sessions[session_id])
            return
        peers = self.by_session.setdefault(session_id, set())
        peers.add(connection)
        self._logins_by_ip[connection.client_ip] = self._logins_by_ip.get(connection.client_ip, 0) + 1
        if self.coordinator is not None:
            if len(peers) == 1:
                self.coordinator.session_live(session_id)
            if self._logins_by_ip[connection.client_ip] == 1:
                self.coordinator.address_logins(connection.client_ip, True)
        connection.counted_login = True
        self.metrics.logins += 1
        self.metrics.sessions_live = len(self.by_session)
        if connection.upstream is not None and connection.login is not None:
            key = target_key(connection.login.upstream) if connection.login.upstream is not None else None
            self.learn_limits(connection.client_ip, key, connection.upstream.limits)
            if self.coordinator is not None:
                self.coordinator.limits_learned(connection.client_ip, key, connection.upstream.limits)
        self._background(self.domain.session_connected(session_id, connection.client_address))

    def _release(self, connection: ClientConnection) -> None:
        """``connection`` no longer counts among the unauthenticated ones (it logged in or closed)."""
        if connection.admitted:
            connection.admitted = False
            self.guard.release(connection.client_ip)
            self.metrics.connections_unauthenticated = self.guard.unauthenticated

    def connection_closed(self, connection: ClientConnection) -> None:
        """Forget a connection that ended."""
        self._release(connection)
        if connection.counted_login:
            connection.counted_login = False
            left = self._logins_by_ip.get(connection.client_ip, 0) - 1
            if left > 0:
                self._logins_by_ip[connection.client_ip] = left
            else:
                self._logins_by_ip.pop(connection.client_ip, None)
                if self.coordinator is not None:
                    self.coordinator.address_logins(connection.client_ip, False)
        if self.connections.pop(connection.id, None) is not None:
            self.metrics.connections_open -= 1
        if connection.session_id and connection.close_reason == "session ended: the session expired":
            self._check_soon.add(connection.session_id)  # let the domain record the expiry now
            if self.coordinator is not None:
                self.coordinator.check_soon(connection.session_id)
        peers = self.by_session.get(connection.session_id)
        if peers is not None:
            peers.discard(connection)
            if not peers:
                del self.by_session[connection.session_id]
                if self.coordinator is not None:
                    self.coordinator.session_gone(connection.session_id)
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

    async def _watch_ended(self) -> None:
        """Close, within about ``ended_interval``, the connections of the sessions the domain just ended."""
        ended, self._ended_cursor = await self.domain.ended_sessions_since(self._ended_cursor)
        for item in ended:
            if item.session_id is not None and item.session_id in self.by_session:
                self.close_session(item.session_id, item.description)

    async def _control(self) -> None:
        """The fallback: close the connections of sessions the domain says are over (if a notice was missed)."""
        self.guard.prune()
        session_ids = sorted(set(self.by_session) | self._check_soon)
        self._check_soon = set()
        if not session_ids:
            return
        for session_id, reason in (await self.domain.sessions_to_close(session_ids)).items():
            self.close_session(session_id, reason)

    def close_session(self, session_id: int, reason: str) -> int:
        """Close every connection of a session, telling clients ``reason``, and refuse its further logins here.

        Returns how many connections closed.
        """
        self.closed_sessions[session_id] = reason
        self._cursors.pop(session_id, None)
        if self.coordinator is not None:
            self.coordinator.session_closed(session_id)
        peers = self.by_session.pop(session_id, set())
        for connection in list(peers):
            connection.end_session(reason)
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
            if self.coordinator is None:  # a worker's supervisor ends the gateway's sessions once all workers stopped
                ended = await asyncio.wait_for(
                    self.domain.end_sessions(reason), max(0.5, deadline - time.monotonic() - 1)
                )
                log.info("event=sessions_ended reason=%s count=%s", reason, ended)
        except Exception as exc:
            log.warning("event=sessions_end_failed error=%s", type(exc).__name__)
        try:
            await asyncio.wait_for(self.command_log.close(), max(0.5, deadline - time.monotonic()))
        except Exception as exc:
            log.warning("event=commandlog_flush_failed error=%s", type(exc).__name__)
        log.info("event=stopped written=%d dropped=%d", self.command_log.written, self.command_log.dropped)
