"""Several gateway processes on one port: worker processes relay, one supervisor keeps sessions honest.

``manage.py runproxy --workers N`` (default: one per core) forks N worker processes. Each listens on the
same address with ``SO_REUSEPORT``, so the kernel spreads new connections over them, and runs a
:class:`~gatewayproxy.server.GatewayServer` that relays its connections on its own event loop and sends its
command log to the one writer process (:class:`~gatewayproxy.commandlog.WriterProcess`, one pipe per
worker). The supervisor, the process that forked them, listens on nothing: it runs the loops that must run
once per gateway — the watch on ended sessions, the control loop, the heartbeat, the end of the gateway's
sessions on stop — in a control-only ``GatewayServer`` whose sessions are the ones its workers report live.

What workers and the supervisor tell each other, over one socketpair per worker (:class:`Link`):

- a worker reports a session live when its first connection of the session logs in, gone when its last one
  closes, and a session to check now (its expiry passed); every second its metrics, which the supervisor
  adds up for ``--metrics``; what it learned of a deployment (the limits to present in a hello before
  login) and whether an address has logged-in connections (a driver's monitoring connection may stay while
  its address has one on any worker);
- the supervisor tells every worker to close a session (ended, killed, expired...) — each closes its
  connections and refuses further logins to it — passes on what one worker learned to the others, and
  tells them to stop.

A session's cursors must be usable from any worker, since a driver's pool connections land on different
ones: the ids its replies carry go into a table in memory all workers share (:class:`CursorTable`, in C),
written before the reply's last bytes reach the client, so a ``getMore`` on another connection always finds
it. Without the C extension the gateway runs one worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import mmap
import os
import pickle
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from gatewayproxy.commandlog import WriterProcess
from gatewayproxy.host import Domain
from gatewayproxy.metrics import serve_metrics
from gatewayproxy.server import GatewayServer
from gatewayproxy.wire.hello import UpstreamLimits

try:
    from gatewayproxy.wire import _speedups
except ImportError:
    _speedups = None

log = logging.getLogger("gatewayproxy.workers")

_FRAME = struct.Struct("<I")
METRICS_INTERVAL = 1.0
CURSOR_SLOTS = 1 << 18  # 4 MiB shared; the table holds up to three quarters of this many cursors


def default_workers() -> int:
    """One worker per core when the C extension is built (several workers need its cursor table), else one."""
    return (os.cpu_count() or 1) if _speedups is not None else 1


class Link(asyncio.Protocol):
    """One end of a supervisor-worker socketpair: messages (tuples) pickled, each after its length."""

    def __init__(self, on_message: Callable[[tuple], None], on_lost: Callable[[], None]) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        position = 0
        while len(buffer) - position >= 4:
            size = _FRAME.unpack_from(buffer, position)[0]
            if len(buffer) - position - 4 < size:
                break
            # Only this gateway's own processes hold the socketpair (made before the fork).
            message = pickle.loads(buffer[position + 4 : position + 4 + size])  # noqa: S301
            position += 4 + size
            try:
                self.on_message(message)
            except Exception:
                log.exception("event=link_message_failed kind=%s", message[0] if message else "?")
        del buffer[:position]

    def send(self, *message: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            data = pickle.dumps(message, protocol=5)
            self.transport.writelines((_FRAME.pack(len(data)), data))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.on_lost()


class CursorTable:
    """The (session, cursor id) pairs every worker sees: a shared anonymous mmap, read and written in C."""

    def __init__(self, slots: int = CURSOR_SLOTS) -> None:
        if _speedups is None:
            raise RuntimeError("several gateway workers need the C extension gatewayproxy.wire._speedups")
        self.buffer = mmap.mmap(-1, 16 + 16 * slots)
        _speedups.cursor_table(self.buffer, "init")
        self._full_logged = False

    def add(self, session_id: int, cursor_id: int) -> None:
        if not _speedups.cursor_table(self.buffer, "add", session_id, cursor_id) and not self._full_logged:
            self._full_logged = True  # the worker that holds the cursor still knows it
            log.warning("event=cursor_table_full cursors=%d", _speedups.cursor_table(self.buffer, "count"))

    def has(self, session_id: int, cursor_id: int) -> bool:
        return _speedups.cursor_table(self.buffer, "has", session_id, cursor_id)

    def remove(self, session_id: int, cursor_id: int) -> None:
        _speedups.cursor_table(self.buffer, "remove", session_id, cursor_id)

    def purge(self, session_id: int) -> None:
        _speedups.cursor_table(self.buffer, "purge", session_id)


def _is_cursor_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


class SessionCursors:
    """One session's cursors as a worker sees them: the ids its own connections received (in order, the
    oldest first) and, through the shared table, the ids the session's connections on other workers received.

    It answers what the relay and the policy ask of a dict: ``in``, setting, ``pop``, ``len`` and iteration
    (over this worker's ids).
    """

    __slots__ = ("local", "session_id", "table")

    def __init__(self, table: CursorTable, session_id: int) -> None:
        self.table = table
        self.session_id = session_id
        self.local: dict[Any, None] = {}

    def __contains__(self, cursor_id: Any) -> bool:
        return cursor_id in self.local or (_is_cursor_id(cursor_id) and self.table.has(self.session_id, cursor_id))

    def __setitem__(self, cursor_id: Any, value: None) -> None:
        self.local[cursor_id] = value
        if _is_cursor_id(cursor_id):
            self.table.add(self.session_id, cursor_id)

    def pop(self, cursor_id: Any, *default: Any) -> Any:
        if _is_cursor_id(cursor_id):
            self.table.remove(self.session_id, cursor_id)
        return self.local.pop(cursor_id, *default)

    def __len__(self) -> int:
        return len(self.local)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.local)


class WorkerCoordinator:
    """What a worker's GatewayServer tells its supervisor, and what it is told (see the module's docstring)."""

    def __init__(self, link_socket: socket.socket, cursors: CursorTable, *, index: int, workers: int) -> None:
        self.link_socket = link_socket
        self.cursor_table = cursors
        self.index = index
        self.workers = workers
        self.server: GatewayServer | None = None
        self.link: Link | None = None
        self.stopping = asyncio.Event()
        self._metrics_task: asyncio.Task | None = None

    async def start(self, server: GatewayServer) -> None:
        self.server = server
        loop = asyncio.get_running_loop()
        _transport, self.link = await loop.connect_accepted_socket(
            lambda: Link(self._received, self.stopping.set), self.link_socket
        )
        self._metrics_task = loop.create_task(self._push_metrics(), name="worker-metrics")

    async def _push_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_INTERVAL)
            if self.server is not None and self.link is not None:
                self.link.send("metrics", self.server.metrics.snapshot())

    def _send(self, *message: Any) -> None:
        if self.link is not None:
            self.link.send(*message)

    # -- told by the server -------------------------------------------------------------------------------

    def ready(self) -> None:
        self._send("ready", os.getpid())

    def session_live(self, session_id: int) -> None:
        self._send("live", session_id)

    def session_gone(self, session_id: int) -> None:
        self._send("gone", session_id)

    def check_soon(self, session_id: int) -> None:
        self._send("check", session_id)

    def address_logins(self, client_ip: str, present: bool) -> None:
        self._send("address", client_ip, present)

    def limits_learned(self, client_ip: str, target: tuple | None, limits: UpstreamLimits) -> None:
        self._send("limits", client_ip, target, limits)

    def connection_ids(self) -> Iterator[int]:
        """This worker's connection ids: 1 + index, then every ``workers`` (unique across the gateway)."""
        return itertools.count(self.index + 1, self.workers)

    def cursors(self, session_id: int) -> SessionCursors:
        return SessionCursors(self.cursor_table, session_id)

    def session_closed(self, session_id: int) -> None:
        self.cursor_table.purge(session_id)

    # -- told by the supervisor ---------------------------------------------------------------------------

    def _received(self, message: tuple) -> None:
        kind, server = message[0], self.server
        if server is None:
            return
        if kind == "close":
            server.close_session(message[1], message[2])
        elif kind == "limits":
            server.learn_limits(message[1], message[2], message[3])
        elif kind == "address":
            server.address_logins_elsewhere(message[1], message[2])
        elif kind == "stop":
            self.stopping.set()


class _RemoteSession:
    """A session live on some workers, as the supervisor's control-only server holds it in ``by_session``:
    closing it tells every worker."""

    __slots__ = ("session_id", "supervisor")

    def __init__(self, supervisor: Supervisor, session_id: int) -> None:
        self.supervisor = supervisor
        self.session_id = session_id

    def end_session(self, reason: str) -> None:
        self.supervisor.broadcast("close", self.session_id, reason)

    def close(self, reason: str) -> None:
        self.end_session(reason)


class Supervisor:
    """Forks the workers, then runs the gateway's loops over the sessions they report (see the module)."""

    def __init__(
        self,
        domain: Domain,
        *,
        host: str,
        port: int,
        workers: int,
        writer: WriterProcess,
        metrics_address: tuple[str, int] | None = None,
        announce: Callable[[str], None] = print,
        server_options: dict[str, Any] | None = None,
    ) -> None:
        self.domain = domain
        self.host = host
        self.port = port
        self.count = workers
        self.writer = writer
        self.metrics_address = metrics_address
        self.announce = announce
        self.server_options = server_options or {}
        self.cursors = CursorTable()
        self.links: dict[int, Link] = {}
        self.pids: dict[int, int] = {}
        self.snapshots: dict[int, dict[str, Any]] = {}
        self.live: dict[int, set[int]] = {}  # session id -> workers with a logged-in connection of it
        self.addresses: dict[str, set[int]] = {}  # client address -> workers with a logged-in connection from it
        self.server: GatewayServer | None = None
        self._ready: set[int] = set()
        self._all_ready: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._holder: socket.socket | None = None

    # -- forking ------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Fork the workers, supervise them until SIGTERM/SIGINT, stop them; the exit code."""
        self._holder = self._hold_port()
        sockets: dict[int, socket.socket] = {}
        for index in range(self.count):
            parent_end, child_end = socket.socketpair()
            pid = os.fork()
            if pid == 0:  # the worker
                parent_end.close()
                for other in sockets.values():
                    other.close()
                self._holder.close()
                code = 1
                try:
                    code = _worker_main(self, index, child_end)
                except BaseException:
                    log.exception("event=worker_failed worker=%d", index)
                finally:
                    logging.shutdown()
                    os._exit(code)
            child_end.close()
            sockets[index] = parent_end
            self.pids[index] = pid
        self.writer.close_inputs()  # the workers hold their own ends
        try:
            asyncio.run(self._supervise(sockets))
        finally:
            self._reap(timeout=1.0, kill=True)
            self._holder.close()
        return 0

    def _hold_port(self) -> socket.socket:
        """Bind (not listen) a SO_REUSEPORT socket on the address: it resolves port 0 and holds the port."""
        family, kind, proto, _name, address = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        holder = socket.socket(family, kind, proto)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(address)
        self.port = holder.getsockname()[1]
        return holder

    def _reap(self, *, timeout: float, kill: bool) -> bool:
        """Wait up to ``timeout`` seconds for the workers to exit (then kill them if ``kill``); True if all did."""
        deadline = time.monotonic() + timeout
        while self.pids and time.monotonic() < deadline:
            for index, pid in list(self.pids.items()):
                with contextlib.suppress(ChildProcessError):
                    done, _status = os.waitpid(pid, os.WNOHANG)
                    if not done:
                        continue
                self.pids.pop(index, None)
            if self.pids:
                time.sleep(0.02)
        if self.pids and kill:
            for index, pid in list(self.pids.items()):
                log.warning("event=worker_killed worker=%d pid=%d", index, pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                self.pids.pop(index, None)
        return not self.pids

    # -- supervising --------------------------------------------------------------------------------------

    async def _supervise(self, sockets: dict[int, socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        self._stop, self._all_ready = asyncio.Event(), asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        for index, sock in sockets.items():
            _transport, link = await loop.connect_accepted_socket(
                lambda index=index: Link(
                    lambda message, index=index: self._received(index, message),
                    lambda index=index: self._lost(index),
                ),
                sock,
            )
            self.links[index] = link
        self.server = GatewayServer(self.domain, host=self.host, port=self.port, **self.server_options)
        waiting = loop.create_task(self._all_ready.wait())
        stopping = loop.create_task(self._stop.wait())
        await asyncio.wait({waiting, stopping}, timeout=30.0, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        stopping.cancel()
        if not self._all_ready.is_set():
            log.error("event=workers_not_ready ready=%d of=%d", len(self._ready), self.count)
            self._stop.set()
        metrics_server = None
        if not self._stop.is_set():
            await self.server.start(listen=False)
            if self.metrics_address is not None:
                metrics_server = await serve_metrics(self.server.metrics, *self.metrics_address)
            log.info("event=listening address=%s:%s workers=%d", self.host, self.port, self.count)
            self.announce(f"gateway listening on {self.host}:{self.port} ({self.count} workers)")
            await self._stop.wait()
        self.broadcast("stop")
        await loop.run_in_executor(None, lambda: self._reap(timeout=4.0, kill=False))
        await self.server.stop()
        if metrics_server is not None:
            metrics_server.close()
        for link in self.links.values():
            if link.transport is not None:
                link.transport.close()

    def broadcast(self, *message: Any) -> None:
        for link in self.links.values():
            link.send(*message)

    def _others(self, index: int, *message: Any) -> None:
        for other, link in self.links.items():
            if other != index:
                link.send(*message)

    def _received(self, index: int, message: tuple) -> None:
        kind, server = message[0], self.server
        if kind == "ready":
            self._ready.add(index)
            if len(self._ready) == self.count and self._all_ready is not None:
                self._all_ready.set()
        elif kind == "metrics":
            self.snapshots[index] = message[1]
            if server is not None:
                server.metrics.add_up(self.snapshots.values(), sessions_live=len(self.live))
        elif server is None:
            return
        elif kind == "live":
            self.live.setdefault(message[1], set()).add(index)
            server.by_session.setdefault(message[1], {_RemoteSession(self, message[1])})
        elif kind == "gone":
            self._session_gone(index, message[1])
        elif kind == "check":
            server._check_soon.add(message[1])
        elif kind == "address":
            self._address(index, message[1], message[2])
        elif kind == "limits":
            self._others(index, *message)

    def _session_gone(self, index: int, session_id: int) -> None:
        workers = self.live.get(session_id)
        if workers is None:
            return
        workers.discard(index)
        if not workers:
            del self.live[session_id]
            if self.server is not None:
                self.server.by_session.pop(session_id, None)

    def _address(self, index: int, client_ip: str, present: bool) -> None:
        holders = self.addresses.setdefault(client_ip, set())
        before = set(holders)
        if present:
            holders.add(index)
        else:
            holders.discard(index)
        if not holders:
            del self.addresses[client_ip]
        # Each worker hears whether other workers hold logged-in connections from the address.
        for other, link in self.links.items():
            elsewhere_before, elsewhere = bool(before - {other}), bool(holders - {other})
            if elsewhere != elsewhere_before:
                link.send("address", client_ip, elsewhere)

    def _lost(self, index: int) -> None:
        self.links.pop(index, None)
        if self._stop is not None and self._stop.is_set():
            return
        log.error("event=worker_lost worker=%d", index)
        for session_id in [sid for sid, workers in self.live.items() if index in workers]:
            self._session_gone(index, session_id)
        for client_ip in [ip for ip, workers in self.addresses.items() if index in workers]:
            self._address(index, client_ip, False)
        self.snapshots.pop(index, None)
        if not self.links and self._stop is not None:
            self._stop.set()


def _worker_main(supervisor: Supervisor, index: int, link_socket: socket.socket) -> int:
    """A worker process: relay connections on the shared port until the supervisor says stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl+C reaches the supervisor, which stops us
    output = supervisor.writer.input(index)
    coordinator = WorkerCoordinator(link_socket, supervisor.cursors, index=index, workers=supervisor.count)

    async def serve() -> None:
        server = GatewayServer(
            supervisor.domain,
            host=supervisor.host,
            port=supervisor.port,
            log_output=output,
            coordinator=coordinator,
            **supervisor.server_options,
        )
        await coordinator.start(server)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, coordinator.stopping.set)
        await server.start()
        coordinator.ready()
        await coordinator.stopping.wait()
        await server.stop()

    asyncio.run(serve())
    sys.stdout.flush()
    return 0
