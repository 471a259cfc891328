"""One client connection through the gateway: the login, then the relay to its own upstream connection.

Before login the connection is answered by the gateway alone: hello/isMaster (:mod:`gatewayproxy.wire.hello`),
the SCRAM exchange (:mod:`gatewayproxy.auth`), ``ping``, ``buildInfo`` and ``endSessions``; anything else
gets Unauthorized (13). It costs almost nothing (:mod:`gatewayproxy.prelogin`): small messages only, a login
deadline, and no upstream connection. When the client's proof holds, the gateway asks the domain whether the
session's user and grant still allow it, then opens the upstream connection and logs in with the account
(only now: a client that has not proved the secret never makes the gateway connect anywhere). A refused
client hears why once it proved the secret ("the session was killed by alice"). From then on every message
is relayed byte for byte to that one upstream connection (1:1): ``moreToCome`` requests get no reply,
exhaust replies are forwarded until the last one, checksums stay as the sender made them. The gateway still
answers hellos itself, refuses a second login (``saslStart``/``authenticate``/``logout``) and whatever the
session's policy forbids, in the request's own opcode, and remembers the cursor ids its replies carry so that
``getMore``/``killCursors`` reach only the session's own cursors. When the session ends, requests in flight
are answered with the reason before both sockets close. In front of a replica set, a member's "not primary" reply
moves the connection's upstream to the new primary (:meth:`ClientConnection._follow_primary`), and a resource that
allows secondary reads gets them routed to a secondary (:meth:`ClientConnection._route`). Each message is read
once into a :class:`~gatewayproxy.wire.codec.Request` (opcode, requestID, flags, command name, database, collection,
without decoding BSON), which the policy, the pipe and the command log share; its body is decoded only
where the policy needs it, and otherwise by the command log's writer, off the relay's path.

A malformed, oversized, truncated or compressed message closes only its own connection, with the reason
logged. Nothing here imports Django: the domain is reached through the :class:`ConnectionHost` the server
passes in.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from gatewayproxy.auth import ALLOWED_BEFORE_LOGIN, REFUSED_AFTER_LOGIN, ClientLogin, LoginError, refused
from gatewayproxy.commandlog import SUMMARIES, CommandLog
from gatewayproxy.host import SessionLogin
from gatewayproxy.metrics import GatewayMetrics
from gatewayproxy.pipe import InFlight, Pipe
from gatewayproxy.policy import CURSOR_COMMANDS, SessionPolicy
from gatewayproxy.prelogin import LoginLimits
from gatewayproxy.upstream import (
    TopologyCache,
    UpstreamConnection,
    UpstreamError,
    authenticate_upstream,
    open_secondary,
    open_upstream,
    target_key,
)
from gatewayproxy.wire import codec, hello, redact

log = logging.getLogger("gatewayproxy.relay")

_UNAUTHORIZED = 13
_REPLY_MARGIN = 16 * 1024 * 1024
_UPSTREAM_OPEN_WAIT = 6.0
#: The outcome of a request that gets no reply (moreToCome).
_NO_REPLY = redact.Outcome(ok=True)
#: Cursor ids remembered per session (the oldest are forgotten past this).
MAX_CURSORS = 10_000
#: Errors by which a replica set member says it is no longer (or not yet) the primary: the SDAM specification's
#: "not writable primary" and "node is recovering" codes (NotWritablePrimary, NotPrimaryNoSecondaryOk,
#: LegacyNotPrimary, InterruptedDueToReplStateChange, NotPrimaryOrSecondary, PrimarySteppedDown,
#: InterruptedAtShutdown, ShutdownInProgress).
NOT_PRIMARY_CODES = frozenset({10107, 13435, 10058, 11602, 13436, 189, 11600, 91})
#: Commands that read and may go to a secondary when the client asks for it (and the resource allows it).
SECONDARY_READS = frozenset({"find", "aggregate", "count", "distinct", "listCollections", "listIndexes", "dbStats"})
_SECONDARY_MODES = ("secondary", "secondaryPreferred")
_CURSOR_FOLLOW_UPS = frozenset({"getMore", "killCursors"})


class ConnectionHost(Protocol):
    """What a connection needs from the server around it (see ``gatewayproxy.server.GatewayServer``)."""

    topology_cache: TopologyCache
    command_log: CommandLog
    metrics: GatewayMetrics
    login_limits: LoginLimits
    closed_sessions: dict[int, str]

    async def lookup_login(self, username: str) -> SessionLogin | None: ...

    async def session_access_problem(self, session_id: int) -> str | None: ...

    def limits_hint(self, client_ip: str, target: Any = None) -> hello.UpstreamLimits: ...

    def login_throttled(self, connection: ClientConnection) -> float: ...

    def login_unknown(self, connection: ClientConnection, username: str) -> None: ...

    def login_refused(self, connection: ClientConnection, username: str, error: LoginError) -> None: ...

    def login_deadline(self, connection: ClientConnection) -> bool: ...

    def session_cursors(self, session_id: int) -> dict[int, None]: ...

    def connection_logged_in(self, connection: ClientConnection) -> None: ...

    def connection_closed(self, connection: ClientConnection) -> None: ...


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class ClientConnection:
    """A client's connection: login state, its upstream connection once logged in, and the relay loop."""

    def __init__(
        self, host: ConnectionHost, connection_id: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.host = host
        self.id = connection_id
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("", 0)
        self.client_ip = str(peer[0])
        self.client_address = f"{peer[0]}:{peer[1]}" if peer[0] else ""
        self.upstream: UpstreamConnection | None = None
        self.login: SessionLogin | None = None
        self.policy = SessionPolicy()
        self.closed = False
        self.close_reason = ""
        self._full_logging = False
        self._session_id = 0
        self._pending: SessionLogin | None = None
        self._username = ""
        self._expiry: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._login_flow = ClientLogin(
            lookup=self._lookup,
            on_verified=self._on_verified,
            throttled=lambda: host.login_throttled(self),
            on_unknown=lambda username: host.login_unknown(self, username),
        )
        self._max_request = host.login_limits.max_message
        self.cursors: dict[int, None] = {}
        #: Whether the server counts this connection among the unauthenticated ones (see prelogin), and among
        #: the logged-in connections of its address.
        self.admitted = False
        self.counted_login = False
        self._request_ids = 0
        self.pipe: Pipe | None = None
        self._finished = False
        #: The upstream target while the deployment is a replica set (its primary may move), else None; its cache
        #: key; how many moves of its primary the topology cache counted when this connection's upstream opened.
        self._replica_set_target: Any = None
        self._target_key: tuple = ()
        self._moves_seen = 0
        self._moving: asyncio.Task | None = None
        #: Reads to a secondary (resource allow_secondary_reads on a replica set): its upstream once opened, whether
        #: opening one failed (reads then stay on the primary), the cursors it holds.
        self._secondary_reads = False
        self._secondary: UpstreamConnection | None = None
        self._secondary_failed = False
        self._secondary_cursors: dict[int, None] = {}

    @property
    def username_tried(self) -> str:
        """The session username this connection tried to log in as ("" while it only sent hellos)."""
        return self._login_flow.username

    @property
    def session_id(self) -> int:
        """The session's database id once logged in, 0 before."""
        return self._session_id

    # -- lifecycle --------------------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """Close both sockets now; the relay loop ends on its next read or write."""
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            log.info(
                "event=connection_closed connection=%s session=%s client=%s reason=%r",
                self.id,
                self._session_id or "-",
                self.client_address,
                reason,
            )
        if self.pipe is not None:
            self.pipe.close(reason)
        with contextlib.suppress(Exception):
            self.writer.transport.abort()
        if self.upstream is not None:
            self.upstream.close()
        if self._expiry is not None:
            self._expiry.cancel()
        if self._deadline is not None:
            self._deadline.cancel()

    def end_session(self, words: str) -> None:
        """The session ended: answer the requests waiting upstream with why (``words``), then close."""
        pipe = self.pipe
        if pipe is not None and not pipe.closed and pipe.in_flight and getattr(pipe, "between_replies", False):
            message = f"session ended: {words}"
            with contextlib.suppress(Exception):
                for in_flight in pipe.in_flight:
                    reply = codec.error_reply(
                        in_flight.request, code=_UNAUTHORIZED, errmsg=message, request_id=self._next_request_id()
                    )
                    self.writer.transport.write(reply)
        self.close(f"session ended: {words}")

    def _login_deadline(self) -> None:
        """The login deadline passed: close, unless the server keeps a driver's monitoring connection."""
        self._deadline = None
        if self.login is not None or self.closed:
            return
        if self.host.login_deadline(self):
            self._deadline = asyncio.get_running_loop().call_later(
                self.host.login_limits.deadline, self._login_deadline
            )
        else:
            self.close("login deadline passed")

    async def run(self) -> None:
        """Serve the connection until the client leaves, a bad message arrives or the session ends."""
        self._deadline = asyncio.get_running_loop().call_later(self.host.login_limits.deadline, self._login_deadline)
        handed_over = False
        try:
            while not self.closed:
                try:
                    raw = await codec.read_message(self.reader, max_size=self._max_request)
                except EOFError:
                    break
                self.host.metrics.bytes_in += len(raw)
                await self._before_login(raw)
                if self.login is not None and not self.closed:
                    # The pipe owns both sockets from now on and ends the connection when it closes; this task
                    # (its frames, its context) ends here, so an idle connection costs less memory.
                    handed_over = self._start_pipe()
                    break
        except codec.WireError as exc:
            self.close(f"bad message: {exc}")
        except (ConnectionError, asyncio.IncompleteReadError, OSError, EOFError) as exc:
            if not self.closed:
                self.close(f"connection lost: {type(exc).__name__}")
        except asyncio.CancelledError:
            self.close("gateway stopping")
        except Exception:  # a gateway bug: drop this client, keep serving the others
            log.exception("event=connection_error connection=%s", self.id)
            self.close("internal error")
        finally:
            if not handed_over:
                self._finish()

    def _finish(self) -> None:
        """The connection ended (before login, or when its pipe closed): close what is left, tell the server once."""
        if self._finished:
            return
        self._finished = True
        if not self.closed:
            self.close("client closed the connection")
        if self.upstream is not None:
            self.upstream.close()  # an upstream opened while the client left during its login
        self.host.connection_closed(self)

    async def _send(self, data: bytes) -> None:
        self.writer.write(data)
        self.host.metrics.bytes_out += len(data)
        await self.writer.drain()

    def _next_request_id(self) -> int:
        self._request_ids += 1
        return self._request_ids

    async def _reply(self, request: codec.Request, document: Mapping[str, Any]) -> None:
        if request.more_to_come:
            return  # the client waits for no reply
        await self._send(codec.reply_for(request, document, request_id=self._next_request_id()))

    async def _error(self, request: codec.Request, code: int, message: str, code_name: str = "") -> None:
        if request.more_to_come:
            return
        self.host.metrics.errors += 1
        data = codec.error_reply(
            request, code=code, errmsg=message, code_name=code_name, request_id=self._next_request_id()
        )
        await self._send(data)

    # -- before login -------------------------------------------------------------------------------------

    async def _lookup(self, username: str) -> SessionLogin | None:
        login = await self.host.lookup_login(username)
        if login is not None:
            self._username = username
            self._pending = login
        return login

    async def _on_verified(self, login: SessionLogin) -> None:
        """The client proved the secret: check the user and the grant now, then connect and log in upstream."""
        problem = await self.host.session_access_problem(login.session_id)
        if problem is None and login.session_id in self.host.closed_sessions:
            problem = self.host.closed_sessions[login.session_id]
        if problem is not None:
            raise refused(problem)
        if login.upstream is None or self.closed:
            raise refused("the session cannot log in now")
        self._moves_seen = self.host.topology_cache.moves(target_key(login.upstream))
        try:
            upstream = await asyncio.wait_for(
                open_upstream(login.upstream, cache=self.host.topology_cache), _UPSTREAM_OPEN_WAIT
            )
        except TimeoutError:
            raise UpstreamError("unreachable", "the upstream did not answer in time") from None
        try:
            await authenticate_upstream(upstream, login.upstream)
        except BaseException:
            upstream.close()
            raise
        if self.closed:  # the client left (or the deadline passed) while the gateway logged in upstream
            upstream.close()
            raise refused("the connection closed during the login")
        self.upstream = upstream

    async def _hello_limits(self) -> hello.UpstreamLimits:
        if self.upstream is not None:
            return self.upstream.limits
        return self.host.limits_hint(self.client_ip, self._pending.upstream if self._pending else None)

    async def _answer_hello(self, request: codec.Request) -> None:
        command = request.body
        mechs = None
        asked = hello.sasl_supported_mechs_user(command)
        if asked is not None and self.login is None:
            mechs = await self._login_flow.mechanisms_for(asked[1])
        elif asked is not None and self.login is not None and asked[1] == self._username:
            mechs = [m for m in ("SCRAM-SHA-1", "SCRAM-SHA-256") if m in (self.login.verifiers or {})]
        speculative = None
        spec = command.get("speculativeAuthenticate")
        if self.login is None and isinstance(spec, Mapping):
            speculative = await self._login_flow.speculative(spec)
        limits = await self._hello_limits()
        reply = hello.hello_reply(
            command,
            limits=limits,
            connection_id=self.id,
            sasl_supported_mechs=mechs,
            speculative_authenticate=speculative,
        )
        await self._reply(request, reply)

    def _read(self, raw: bytes) -> codec.Request | None:
        """Read a client message once; None when it closed the connection (compression is not offered)."""
        request = codec.Request.read(raw, max_size=self._max_request)
        if request.op_code == codec.OP_COMPRESSED:
            self.close("compressed message although the gateway offers no compression")
            return None
        if request.op_code == codec.OP_REPLY:
            raise codec.WireError("clients may not send OP_REPLY", 12)
        return request

    async def _before_login(self, raw: bytes) -> None:
        request = self._read(raw)
        if request is None:
            return
        command = request.body  # before login every message is a small handshake command: decode it whole
        if request.op_code == codec.OP_QUERY:
            query = request.message
            assert isinstance(query, codec.OpQuery)
            if query.collection != "$cmd" or request.command not in hello.HELLO_COMMANDS:  # only admin.$cmd hellos
                await self._error(request, 352, "Unsupported OP_QUERY command: only hello/isMaster are accepted")
                return
        name = request.command
        try:
            if name in hello.HELLO_COMMANDS:
                await self._answer_hello(request)
            elif name == "saslStart":
                await self._reply(request, await self._login_flow.sasl_start(command))
            elif name == "saslContinue":
                reply = await self._login_flow.sasl_continue(command)
                if self._login_flow.authenticated and self.login is None:
                    self._logged_in(self._login_flow.login)
                await self._reply(request, reply)
            elif name in ("ping", "endSessions"):
                await self._reply(request, {"ok": 1.0})
            elif name in ("buildInfo", "buildinfo"):
                await self._reply(request, hello.build_info_reply(await self._hello_limits()))
            elif name not in ALLOWED_BEFORE_LOGIN:
                await self._error(request, _UNAUTHORIZED, f"Command {name} requires authentication", "Unauthorized")
        except LoginError as exc:
            if exc.code == 18:
                self.host.login_refused(self, self._login_flow.username, exc)
            await self._error(request, exc.code, str(exc), exc.code_name)

    def _logged_in(self, login: SessionLogin) -> None:
        self.login = login
        self._session_id = login.session_id
        self._full_logging = bool(login.full_command_logging)
        self.policy = SessionPolicy.build(
            read_only=login.read_only,
            command_deny_list=login.command_deny_list,
            database_allow_list=login.database_allow_list,
            privileged_commands=login.privileged_commands,
        )
        self.cursors = self.host.session_cursors(login.session_id)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        assert self.upstream is not None
        # A client may send up to what the upstream accepts; replies may be larger still.
        self._max_request = max(self.upstream.limits.max_message_size_bytes, 1024 * 1024)
        remaining = (login.expires_at - _now()).total_seconds()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(max(0.0, remaining), self.end_session, "the session expired")
        log.info(
            "event=login connection=%s session=%s client=%s upstream=%s:%s topology=%s",
            self.id,
            login.session_id,
            self.client_address,
            self.upstream.address[0],
            self.upstream.address[1],
            self.upstream.limits.topology,
        )
        self.host.connection_logged_in(self)

    # -- after login: the relay -----------------------------------------------------------------------------

    def _record(
        self,
        request: codec.Request,
        outcome: redact.Outcome,
        started: float,
        *,
        refused: bool = False,
        bytes_out: int = 0,
    ) -> None:
        """Count a command in the metrics and queue it for the command log (summarised later, off this path)."""
        latency_us = int((time.perf_counter() - started) * 1_000_000)
        metrics = self.host.metrics
        metrics.commands += 1
        metrics.observe_latency(latency_us)
        if not outcome.ok:
            metrics.errors += 1
        raw, summary, full = request.raw, None, self._full_logging
        if redact.is_sensitive(request.command):
            raw, summary = None, {}  # never carry credentials to the writer: the log keeps {}
        elif len(raw) > redact.FULL_DECODE_LIMIT:
            raw, summary = None, SUMMARIES.summary(request, full=full)  # summarise a large request now
        # A CommandRecord's fields in their order (commandlog.ROW_FIELDS): a tuple is the cheapest thing to queue.
        self.host.command_log.add(
            (
                self._session_id,
                request.command,
                self.id,
                time.time(),
                request.database,
                request.collection,
                summary,
                outcome.ok,
                outcome.n,
                outcome.error_code,
                outcome.error_message,
                refused,
                latency_us,
                len(request.raw),
                bytes_out,
                raw,
                full,
            )
        )

    def _local_reply(self, request: codec.Request, document: Mapping[str, Any]) -> None:
        if request.more_to_come:
            return
        self._pipe_send(codec.reply_for(request, document, request_id=self._next_request_id()))

    def _pipe_send(self, data: bytes) -> None:
        self.host.metrics.bytes_out += len(data)
        assert self.pipe is not None
        self.pipe.send_to_client(data)

    def _refuse(self, request: codec.Request, code: int, message: str, code_name: str) -> None:
        started = time.perf_counter()
        self.host.metrics.errors += 1
        if not request.more_to_come:
            reply = codec.error_reply(
                request, code=code, errmsg=message, code_name=code_name, request_id=self._next_request_id()
            )
            self._pipe_send(reply)
        outcome = redact.Outcome(ok=False, error_code=code, error_message=message)
        self._record(request, outcome, started, refused=True)

    def _hello_after_login(self, request: codec.Request) -> None:
        command = request.body
        asked = hello.sasl_supported_mechs_user(command)
        mechs = None
        if asked is not None and asked[1] == self._username:
            mechs = [m for m in ("SCRAM-SHA-1", "SCRAM-SHA-256") if m in (self.login.verifiers or {})]
        assert self.upstream is not None
        reply = hello.hello_reply(
            command, limits=self.upstream.limits, connection_id=self.id, sasl_supported_mechs=mechs
        )
        self._local_reply(request, reply)

    def _on_request(self, raw: bytes) -> InFlight | None:
        """Decide what happens to one client message after login: forward it (return it) or answer it here."""
        request = self._read(raw)
        if request is None:
            return None
        self.host.metrics.bytes_in += len(raw)
        name = request.command
        if name in hello.HELLO_COMMANDS:
            self._hello_after_login(request)
            return None
        if name in REFUSED_AFTER_LOGIN:
            message = f"{name} is not allowed after login: this gateway connection is already logged in as its session"
            self._refuse(request, 20, message, "IllegalOperation")
            return None
        refusal = self.policy.check_request(request, self.cursors)
        if refusal is not None:
            self._refuse(request, refusal.code, refusal.message, refusal.code_name)
            return None
        target = self._replica_set_target
        if target is not None and self.host.topology_cache.moves(self._target_key) != self._moves_seen:
            # Another connection saw the primary move: this one follows before its next command (not before the
            # getMore or killCursors of a cursor, which lives on the member that opened it).
            pipe = self.pipe
            if name not in _CURSOR_FOLLOW_UPS and pipe is not None and not pipe.in_flight and not pipe.held:
                pipe.wait_with(raw)
                self._start_move("another connection saw the primary move")
                return None
        if self._secondary_reads:
            return self._route(request, raw)
        return InFlight(request)

    def _route(self, request: codec.Request, raw: bytes) -> InFlight | None:
        """Where a request goes when the session may read from a secondary: reads that ask for one (read
        preference secondary or secondaryPreferred) and the getMores/killCursors of the cursors they opened go to
        the secondary upstream (opened at the first such read: the request waits meanwhile); the rest to the
        primary. With no secondary to be found, every read goes to the primary."""
        name = request.command
        pipe = self.pipe
        assert pipe is not None
        if pipe.in_flight:  # a client waiting for no reply in between: keep to where the last request went
            return InFlight(request, to_secondary=pipe.in_flight[-1].to_secondary)
        if name in ("getMore", "killCursors"):
            wanted = bool(self._secondary_cursors) and self._cursor_ids(request) <= self._secondary_cursors.keys()
        else:
            wanted = name in SECONDARY_READS and b"$readPreference" in raw and _read_mode(request) in _SECONDARY_MODES
        if not wanted or self._secondary_failed:
            return InFlight(request)
        if pipe.secondary is not None:
            return InFlight(request, to_secondary=True)
        pipe.wait_with(raw)
        task = asyncio.get_running_loop().create_task(self._open_secondary())
        self._moving = task
        task.add_done_callback(lambda _task: setattr(self, "_moving", None))
        return None

    def _track_secondary_cursors(self, request: codec.Request, outcome: redact.Outcome) -> None:
        """Remember the cursors a secondary opened (their getMores go there); forget exhausted and killed ones."""
        cursors = self._secondary_cursors
        if request.command == "killCursors":
            for cursor_id in self._cursor_ids(request):
                cursors.pop(cursor_id, None)
        elif outcome.cursor_id:
            cursors[outcome.cursor_id] = None
            if len(cursors) > MAX_CURSORS:
                cursors.pop(next(iter(cursors)))
        elif outcome.cursor_id == 0 and request.command == "getMore":
            cursors.pop(request.cursor_id(), None)

    @staticmethod
    def _cursor_ids(request: codec.Request) -> set[int]:
        if request.command == "getMore":
            return {request.cursor_id()}
        with contextlib.suppress(codec.WireError):
            return {int(c) for c in request.checked_body().get("cursors") or ()}
        return set()

    async def _open_secondary(self) -> None:
        target = self._replica_set_target
        secondary = None
        try:
            secondary = await asyncio.wait_for(open_secondary(target), _UPSTREAM_OPEN_WAIT)
            if secondary is not None:
                await authenticate_upstream(secondary, target)
        except (UpstreamError, TimeoutError) as exc:
            log.warning("event=secondary_unavailable connection=%s session=%s error=%s", self.id, self._session_id, exc)
            if secondary is not None:
                secondary.close()
            secondary = None
        pipe = self.pipe
        if self.closed or pipe is None or pipe.closed:
            if secondary is not None:
                secondary.close()
            return
        if secondary is None:
            self._secondary_failed = True  # reads stay on the primary
        else:
            self._secondary = secondary
            pipe.set_secondary(secondary.writer.transport)
            _release_stream(secondary.writer)
            secondary.reader = None
            secondary.hello = {}
            log.info(
                "event=secondary_opened connection=%s session=%s upstream=%s:%s",
                self.id,
                self._session_id,
                secondary.address[0],
                secondary.address[1],
            )
        pipe.release()

    def _on_reply(self, in_flight: InFlight) -> None:
        """Log a request whose (last) reply went to the client, or that expects none."""
        outcome = in_flight.outcome if in_flight.outcome is not None else _NO_REPLY
        if in_flight.to_secondary:
            self._track_secondary_cursors(in_flight.request, outcome)
        elif outcome.error_code in NOT_PRIMARY_CODES and self._replica_set_target is not None:
            self._follow_primary(outcome.error_code)
        self.host.metrics.bytes_out += in_flight.bytes_out
        if in_flight.request.command in CURSOR_COMMANDS or in_flight.request.command == "killCursors":
            self._track_cursors(in_flight.request, outcome)
        self._record(in_flight.request, outcome, in_flight.started, bytes_out=in_flight.bytes_out)

    def _track_cursors(self, request: codec.Request, outcome: redact.Outcome) -> None:
        """Remember the cursor a reply opened; forget one exhausted (id 0 after a getMore) or killed."""
        cursors = self.cursors
        if request.command == "killCursors":
            with contextlib.suppress(codec.WireError):
                for cursor_id in request.checked_body().get("cursors") or ():
                    cursors.pop(cursor_id, None)
        elif outcome.cursor_id:
            cursors[outcome.cursor_id] = None
            if len(cursors) > MAX_CURSORS:
                cursors.pop(next(iter(cursors)))
        elif outcome.cursor_id == 0 and request.command == "getMore":
            cursors.pop(request.cursor_id(), None)

    def _on_pipe_close(self, reason: str) -> None:
        if self._replica_set_target is not None and reason.startswith("upstream closed"):
            self.host.topology_cache.forget(self._target_key)  # the next login rediscovers
        self.close(reason)
        self._finish()

    # -- a replica set's primary moved ----------------------------------------------------------------------

    def _follow_primary(self, code: int) -> None:
        """The upstream member said it is not the primary (a step-down, a failover): move to the new one.

        The error reply still reaches the client, whose driver marks the gateway unknown and retries the
        operation (retryable writes and reads), usually on this same pooled connection. Meanwhile the pipe keeps
        the client's requests, the gateway finds the new primary (the cached address is forgotten, so this
        session's later connections find it too) and logs in there; the kept requests then go to it. Cursors the
        old primary holds stay there (a getMore here then fails with CursorNotFound, as after any failover).
        Only when nothing else waits for a reply: a request in flight would lose its reply. The move is counted
        (unless a move this connection has not followed yet was counted already), so the session's other
        connections in this gateway process follow before their next command other than getMore/killCursors.
        """
        pipe = self.pipe
        if pipe is None or pipe.closed or pipe.held or pipe.in_flight:
            return
        cache = self.host.topology_cache
        if cache.moves(self._target_key) == self._moves_seen:
            cache.moved(self._target_key)
        else:
            cache.forget(self._target_key)
        self._start_move(f"the upstream answered code {code}")

    def _start_move(self, why: str) -> None:
        """Hold the client's requests and move this connection's upstream to the primary found now."""
        assert self.pipe is not None
        self.pipe.hold()
        log.info("event=primary_moved connection=%s session=%s why=%r", self.id, self._session_id, why)
        self._moves_seen = self.host.topology_cache.moves(self._target_key)
        task = asyncio.get_running_loop().create_task(self._move_upstream(self._replica_set_target))
        self._moving = task  # keep a reference until it ends
        task.add_done_callback(lambda _task: setattr(self, "_moving", None))

    async def _move_upstream(self, target: Any) -> None:
        try:
            upstream = await asyncio.wait_for(
                open_upstream(target, cache=self.host.topology_cache), _UPSTREAM_OPEN_WAIT
            )
        except (UpstreamError, TimeoutError) as exc:
            self.close(f"the replica set has no reachable primary: {exc}")
            return
        try:
            await authenticate_upstream(upstream, target)
        except UpstreamError as exc:
            upstream.close()
            self.close(f"the new primary refused the account's login: {exc}")
            return
        pipe = self.pipe
        if self.closed or pipe is None or pipe.closed:
            upstream.close()
            return
        old, self.upstream = self.upstream, upstream
        pipe.replace_upstream(upstream.writer.transport, _take_buffered(upstream.reader))
        _release_stream(upstream.writer)
        upstream.reader = None
        upstream.hello = {}
        if old is not None:
            old.close()
        if self._secondary is not None:  # the set's roles changed: find a secondary again at the next such read
            pipe.drop_secondary()
            self._secondary.close()
            self._secondary = None
            self._secondary_cursors.clear()
        self._secondary_failed = False
        log.info(
            "event=upstream_moved connection=%s session=%s upstream=%s:%s",
            self.id,
            self._session_id,
            upstream.address[0],
            upstream.address[1],
        )

    def _start_pipe(self) -> bool:
        """Hand both sockets to a :class:`~gatewayproxy.pipe.Pipe`; True while it runs (it ends the connection)."""
        upstream = self.upstream
        assert upstream is not None
        self.pipe = Pipe(
            client=self.writer.transport,
            upstream=upstream.writer.transport,
            max_request=self._max_request,
            max_reply=upstream.limits.max_message_size_bytes + _REPLY_MARGIN,
            on_request=self._on_request,
            on_reply=self._on_reply,
            on_close=self._on_pipe_close,
            read_outcome=redact.reply_outcome_of,
        )
        self.pipe.start(_take_buffered(self.reader), _take_buffered(upstream.reader))
        for transport in (self.writer.transport, upstream.writer.transport):
            with contextlib.suppress(Exception):
                if not transport.is_reading():
                    transport.resume_reading()
        self._slim()
        return not self.closed

    def _slim(self) -> None:
        """Let go of what the login needed and the relay does not, so that an idle connection costs little memory.

        The streams' readers and protocols (the pipe owns both sockets; the writers stay for their transports),
        the upstream's hello (its limits stay), the session's verifiers (only which mechanisms exist is asked
        after login) and the login's upstream target.
        """
        upstream = self.upstream
        assert upstream is not None
        _release_stream(self.writer)
        _release_stream(upstream.writer)
        self.reader = upstream.reader = None
        if upstream.hello.get("setName") and self.login is not None:  # a replica set member: its primary may move
            self._replica_set_target = self.login.upstream
            self._target_key = target_key(self.login.upstream)
            self._secondary_reads = bool(getattr(self.login.upstream, "secondary_reads", False))
        upstream.hello = {}
        if self.login is not None:
            mechanisms = {name: {} for name in self.login.verifiers or {}}
            self.login = replace(self.login, verifiers=mechanisms, upstream=None)
            self._login_flow.login = self.login


def _read_mode(request: codec.Request) -> str | None:
    """The mode of a request's ``$readPreference`` (its body decoded: only for reads that carry one)."""
    try:
        preference = request.checked_body().get("$readPreference")
    except codec.WireError:
        return None
    mode = preference.get("mode") if isinstance(preference, Mapping) else None
    return mode if isinstance(mode, str) else None


def _release_stream(writer: asyncio.StreamWriter) -> None:
    """Drop a stream writer's protocol and reader (with their buffer, futures and deque): only its transport is
    used once the pipe owns the socket. The writer itself stays: dropping it would close the transport."""
    writer._protocol = writer._reader = None  # type: ignore[assignment]


def _take_buffered(reader: asyncio.StreamReader) -> bytes:
    """Bytes a stream had read but nobody consumed yet (a client may pipeline right after login)."""
    buffered = getattr(reader, "_buffer", None)
    if not buffered:
        return b""
    data = bytes(buffered)
    buffered.clear()
    return data
