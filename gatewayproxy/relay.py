"""One client connection through the gateway: the login, then the relay to its own upstream connection.

Before login the connection is answered by the gateway alone: hello/isMaster (:mod:`gatewayproxy.wire.hello`),
the SCRAM exchange (:mod:`gatewayproxy.auth`), ``ping``, ``buildInfo`` and ``endSessions``; anything else
gets Unauthorized (13). When the client's proof holds, the upstream connection (opened in the background as
soon as the session was known) logs in with the account, and from then on every message is relayed byte
for byte to that one upstream connection (1:1): ``moreToCome`` requests get no reply, exhaust replies are
forwarded until the last one, checksums stay as the sender made them. The gateway still answers hellos
itself, refuses a second login (``saslStart``/``authenticate``/``logout``) and whatever the session's
policy forbids, in the request's own opcode. Each message is read once into a
:class:`~gatewayproxy.wire.codec.Request` (opcode, requestID, flags, command name, database, collection,
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
from typing import Any, Protocol

from gatewayproxy.auth import ALLOWED_BEFORE_LOGIN, REFUSED_AFTER_LOGIN, ClientLogin, LoginError, username_of
from gatewayproxy.commandlog import CommandLog, CommandRecord
from gatewayproxy.host import SessionLogin
from gatewayproxy.metrics import GatewayMetrics
from gatewayproxy.pipe import InFlight, Pipe
from gatewayproxy.policy import SessionPolicy
from gatewayproxy.upstream import (
    TopologyCache,
    UpstreamConnection,
    UpstreamError,
    authenticate_upstream,
    open_upstream,
)
from gatewayproxy.wire import codec, hello, redact

log = logging.getLogger("gatewayproxy.relay")

_UNAUTHORIZED = 13
_REPLY_MARGIN = 16 * 1024 * 1024
_UPSTREAM_OPEN_WAIT = 6.0
#: Before login only small handshake commands arrive; anything larger closes the connection.
MAX_MESSAGE_BEFORE_LOGIN = 1024 * 1024


class ConnectionHost(Protocol):
    """What a connection needs from the server around it (see ``gatewayproxy.server.GatewayServer``)."""

    topology_cache: TopologyCache
    command_log: CommandLog
    metrics: GatewayMetrics

    async def lookup_login(self, username: str) -> SessionLogin | None: ...

    def limits_hint(self, client_ip: str) -> hello.UpstreamLimits: ...

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
        self._opening: asyncio.Task | None = None
        self._opening_for = 0
        self._username = ""
        self._expiry: asyncio.TimerHandle | None = None
        self._login_flow = ClientLogin(lookup=self._lookup, on_verified=self._on_verified)
        self._max_request = MAX_MESSAGE_BEFORE_LOGIN
        self._request_ids = 0
        self.pipe: Pipe | None = None
        self._done: asyncio.Future | None = None

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
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
        if self.upstream is not None:
            self.upstream.close()
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
        if self._expiry is not None:
            self._expiry.cancel()

    async def run(self) -> None:
        """Serve the connection until the client leaves, a bad message arrives or the session ends."""
        try:
            while not self.closed:
                try:
                    raw = await codec.read_message(self.reader, max_size=self._max_request)
                except EOFError:
                    break
                self.host.metrics.bytes_in += len(raw)
                await self._before_login(raw)
                if self.login is not None and not self.closed:
                    await self._run_pipe()
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
            if not self.closed:
                self.close("client closed the connection")
            self._close_unused_upstream()
            self.host.connection_closed(self)

    def _close_unused_upstream(self) -> None:
        """Close an upstream connection opened for a login that never finished."""
        opening = self._opening
        if opening is None or not opening.done() or opening.cancelled() or opening.exception() is not None:
            return
        if opening.result() is not self.upstream:
            opening.result().close()

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
            self._start_opening(login)
        return login

    def _start_opening(self, login: SessionLogin) -> None:
        """Open the upstream connection in the background while the client's SCRAM goes on."""
        if self._opening_for == login.session_id and self._opening is not None:
            return
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
        self._opening_for = login.session_id
        self._opening = asyncio.get_running_loop().create_task(
            open_upstream(login.upstream, cache=self.host.topology_cache)
        )

    async def _opened_upstream(self, login: SessionLogin) -> UpstreamConnection:
        self._start_opening(login)
        task = self._opening
        assert task is not None
        return await asyncio.wait_for(asyncio.shield(task), _UPSTREAM_OPEN_WAIT)

    async def _on_verified(self, login: SessionLogin) -> None:
        try:
            upstream = await self._opened_upstream(login)
        except TimeoutError:
            raise UpstreamError("unreachable", "the upstream did not answer in time") from None
        self._opening = None
        try:
            await authenticate_upstream(upstream, login.upstream)
        except BaseException:
            upstream.close()
            raise
        self.upstream = upstream

    async def _hello_limits(self) -> hello.UpstreamLimits:
        if self.upstream is not None:
            return self.upstream.limits
        if self._opening is not None:
            with contextlib.suppress(Exception):
                upstream = await asyncio.wait_for(asyncio.shield(self._opening), _UPSTREAM_OPEN_WAIT)
                return upstream.limits
        return self.host.limits_hint(self.client_ip)

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
            payload = spec.get("payload")
            if isinstance(payload, bytes) and (user := username_of(bytes(payload))):
                await self._lookup(user)
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
                self.host.metrics.auth_failures += 1
                log.info("event=login_failed connection=%s client=%s reason=%r", self.id, self.client_address, str(exc))
            await self._error(request, exc.code, str(exc), exc.code_name)

    def _logged_in(self, login: SessionLogin) -> None:
        self.login = login
        self._session_id = login.session_id
        self._full_logging = bool(login.full_command_logging)
        self.policy = SessionPolicy.build(
            read_only=login.read_only,
            command_deny_list=login.command_deny_list,
            database_allow_list=login.database_allow_list,
        )
        assert self.upstream is not None
        # A client may send up to what the upstream accepts; replies may be larger still.
        self._max_request = max(self.upstream.limits.max_message_size_bytes, 1024 * 1024)
        remaining = (login.expires_at - _now()).total_seconds()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(max(0.0, remaining), self.close, "session expired")
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
        record = CommandRecord(
            session_id=self._session_id,
            command=request.command,
            connection_id=self.id,
            at=_now(),
            database=request.database,
            collection=request.collection,
            ok=outcome.ok,
            n=outcome.n,
            error_code=outcome.error_code,
            error_message=outcome.error_message,
            refused=refused,
            latency_us=latency_us,
            bytes_in=len(request.raw),
            bytes_out=bytes_out,
            request=request,
            full=self._full_logging,
        )
        if redact.is_sensitive(request.command):
            record.request, record.summary = None, {}  # never carry credentials to the writer: the log keeps {}
        elif len(request.raw) > redact.FULL_DECODE_LIMIT:
            record.complete()  # summarise a large request now, rather than queue its bytes
        self.host.command_log.add(record)

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
        refusal = self.policy.check_request(request)
        if refusal is not None:
            self._refuse(request, refusal.code, refusal.message, "Unauthorized")
            return None
        return InFlight(request)

    def _on_reply(self, in_flight: InFlight) -> None:
        """Log a request whose (last) reply went to the client, or that expects none."""
        outcome = redact.reply_outcome(in_flight.reply) if in_flight.reply is not None else redact.Outcome(ok=True)
        self.host.metrics.bytes_out += in_flight.bytes_out
        self._record(in_flight.request, outcome, in_flight.started, bytes_out=in_flight.bytes_out)

    def _on_pipe_close(self, reason: str) -> None:
        self.close(reason)
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def _run_pipe(self) -> None:
        """Hand both sockets to a :class:`~gatewayproxy.pipe.Pipe` and wait until it stops."""
        upstream = self.upstream
        assert upstream is not None
        self._done = asyncio.get_running_loop().create_future()
        self.pipe = Pipe(
            client=self.writer.transport,
            upstream=upstream.writer.transport,
            max_request=self._max_request,
            max_reply=upstream.limits.max_message_size_bytes + _REPLY_MARGIN,
            on_request=self._on_request,
            on_reply=self._on_reply,
            on_close=self._on_pipe_close,
        )
        self.pipe.start(_take_buffered(self.reader), _take_buffered(upstream.reader))
        for transport in (self.writer.transport, upstream.writer.transport):
            with contextlib.suppress(Exception):
                if not transport.is_reading():
                    transport.resume_reading()
        if self.closed:
            return
        await self._done


def _take_buffered(reader: asyncio.StreamReader) -> bytes:
    """Bytes a stream had read but nobody consumed yet (a client may pipeline right after login)."""
    buffered = getattr(reader, "_buffer", None)
    if not buffered:
        return b""
    data = bytes(buffered)
    buffered.clear()
    return data
