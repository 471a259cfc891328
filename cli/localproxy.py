"""The local proxy of `pam db access`: MongoDB clients connect to 127.0.0.1 with no credentials, and each connection
is relayed to the gateway, logged in there as the session (its username and one-time secret, SCRAM-SHA-256).

It is the gateway's own wire code turned around: :func:`gatewayproxy.upstream.open_upstream` and
:func:`~gatewayproxy.upstream.authenticate_upstream` open and log in the connection to the gateway (the SCRAM
client of :mod:`gatewayproxy.wire.scram`), :func:`gatewayproxy.wire.hello.hello_reply` answers the clients'
hellos here (a standalone or mongos built from the limits the gateway announced, so drivers never look past
127.0.0.1), and :class:`gatewayproxy.pipe.Pipe` relays every other message byte for byte. A client that sends
credentials anyway is told it needs none.

On loopback no password is asked. Listening on another address (`--listen`) demands a local password, printed
once by `pam`: clients then log in as user `pam` with it, checked by the gateway's SCRAM server
(:class:`gatewayproxy.auth.ClientLogin`) before anything reaches the gateway. The session secret never leaves
this process: not to the clients, not to the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from gatewayproxy.auth import ClientLogin, LoginError, username_of
from gatewayproxy.host import SessionLogin, UpstreamTarget
from gatewayproxy.pipe import InFlight, Pipe
from gatewayproxy.upstream import UpstreamConnection, UpstreamError, authenticate_upstream, open_upstream
from gatewayproxy.wire import codec, hello, scram

log = logging.getLogger("cli.localproxy")

LOCAL_USER = "pam"
GATEWAY_WAIT = 10.0
MAX_MESSAGE_BEFORE_RELAY = 1024 * 1024
_REPLY_MARGIN = 16 * 1024 * 1024
_CREDENTIAL_COMMANDS = frozenset({"saslStart", "saslContinue", "authenticate", "logout", "getnonce"})
_UNAUTHORIZED = 13
_NEEDS_NO_CREDENTIALS = (
    "This local pam proxy logs you in itself: connect without a username and password "
    "(mongodb://127.0.0.1:PORT/?directConnection=true)."
)


def gateway_target(*, address: str, username: str, secret: str) -> UpstreamTarget:
    """Where and as whom the proxy logs in: the gateway, as the session (the secret stays masked in reprs)."""
    from gatewayproxy.host import Password

    return UpstreamTarget(
        uri=f"mongodb://{address}/?directConnection=true",
        auth_database="admin",
        tls=False,
        tls_verify=True,
        ca_certificate="",
        username=username,
        password=Password(secret),
    )


class LocalProxy:
    """A listening socket and its client connections."""

    def __init__(
        self,
        *,
        gateway: UpstreamTarget,
        expires_at: datetime.datetime,
        host: str = "127.0.0.1",
        port: int = 0,
        password: str | None = None,
    ) -> None:
        self.gateway = gateway
        self.expires_at = expires_at
        self.host = host
        self.port = port
        self.connections: set[LocalConnection] = set()
        self.server: asyncio.base_events.Server | None = None
        self.gateway_errors: list[str] = []
        self._ids = itertools.count(1)
        self._login: SessionLogin | None = None
        if password is not None:
            verifiers = {
                mechanism: scram.derive_credentials(mechanism, LOCAL_USER, password).to_dict()
                for mechanism in scram.MECHANISMS
            }
            self._login = SessionLogin(
                session_id=0,
                public_id=uuid.uuid4(),
                username=LOCAL_USER,
                verifiers=verifiers,
                expires_at=expires_at,
                read_only=False,
                database_allow_list=[],
                command_deny_list=[],
                full_command_logging=False,
                upstream=gateway,
            )

    @property
    def needs_password(self) -> bool:
        return self._login is not None

    async def start(self) -> int:
        """Listen; return the port (chosen by the system when 0)."""
        self.server = await asyncio.start_server(self._accept, self.host, self.port, limit=2**16)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = LocalConnection(self, next(self._ids), reader, writer)
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    def close_all(self, reason: str) -> int:
        """Close every client connection (and its gateway connection) now; return how many there were."""
        connections = list(self.connections)
        for connection in connections:
            connection.close(reason)
        return len(connections)

    async def stop(self, reason: str = "pam stopped") -> None:
        """Stop listening and close every connection (their handlers end on their own, at once)."""
        if self.server is not None:
            self.server.close()
        self.close_all(reason)
        await asyncio.sleep(0)

    async def lookup(self, username: str) -> SessionLogin | None:
        return self._login if username == LOCAL_USER else None


class LocalConnection:
    """One client: hellos answered here, an optional local login, then the relay to its own gateway connection."""

    def __init__(self, proxy: LocalProxy, connection_id: int, reader, writer) -> None:
        self.proxy = proxy
        self.id = connection_id
        self.reader = reader
        self.writer = writer
        self.closed = False
        self.pipe: Pipe | None = None
        self._done: asyncio.Future | None = None
        self._request_ids = itertools.count(1)
        self._gateway = asyncio.get_running_loop().create_task(self._open_gateway())
        self._upstream: UpstreamConnection | None = None
        self._login = ClientLogin(lookup=proxy.lookup, on_verified=self._on_verified) if proxy.needs_password else None

    # -- the gateway side ---------------------------------------------------------------------------------
    async def _open_gateway(self) -> UpstreamConnection:
        upstream = await open_upstream(self.proxy.gateway)
        try:
            await authenticate_upstream(upstream, self.proxy.gateway)
        except BaseException:
            upstream.close()
            raise
        return upstream

    async def _gateway_connection(self) -> UpstreamConnection:
        if self._upstream is None:
            try:
                self._upstream = await asyncio.wait_for(asyncio.shield(self._gateway), GATEWAY_WAIT)
            except TimeoutError:
                raise UpstreamError("unreachable", "the gateway did not answer in time") from None
            except UpstreamError as exc:
                self.proxy.gateway_errors.append(str(exc))
                raise
        return self._upstream

    async def _on_verified(self, _login: SessionLogin) -> None:
        await self._gateway_connection()

    # -- lifecycle ----------------------------------------------------------------------------------------
    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            log.debug("connection %s closed: %s", self.id, reason)
        if self.pipe is not None:
            self.pipe.close(reason)
        with contextlib.suppress(Exception):
            self.writer.transport.abort()
        if self._upstream is not None:
            self._upstream.close()
        if not self._gateway.done():
            self._gateway.cancel()
        elif not self._gateway.cancelled() and self._gateway.exception() is None and self._upstream is None:
            self._gateway.result().close()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def run(self) -> None:
        try:
            while not self.closed:
                try:
                    raw = await codec.read_message(self.reader, max_size=MAX_MESSAGE_BEFORE_RELAY)
                except EOFError:
                    break
                if await self._before_relay(raw):
                    await self._relay(raw)
                    break
        except (codec.WireError, ConnectionError, asyncio.IncompleteReadError, OSError, EOFError) as exc:
            self.close(f"{type(exc).__name__}: {exc}")
        except asyncio.CancelledError:
            self.close("pam stopping")
        except Exception:
            log.exception("local connection %s failed", self.id)
            self.close("internal error")
        finally:
            self.close("client closed the connection")

    # -- before the relay -----------------------------------------------------------------------------------
    def _next_id(self) -> int:
        return next(self._request_ids)

    async def _send(self, request: codec.Request, document: Mapping[str, Any]) -> None:
        if request.more_to_come:
            return
        self.writer.write(codec.reply_for(request, document, request_id=self._next_id()))
        await self.writer.drain()

    async def _error(self, request: codec.Request, code: int, message: str, code_name: str = "") -> None:
        if request.more_to_come:
            return
        reply = codec.error_reply(request, code=code, errmsg=message, code_name=code_name, request_id=self._next_id())
        self.writer.write(reply)
        await self.writer.drain()

    async def _before_relay(self, raw: bytes) -> bool:
        """Answer one handshake message here; True when the relay should take over from this message on."""
        request = codec.Request.read(raw, max_size=MAX_MESSAGE_BEFORE_RELAY)
        if request.op_code == codec.OP_COMPRESSED:
            self.close("compressed message although no compression is offered")
            return False
        name = request.command
        if request.op_code == codec.OP_QUERY and name not in hello.HELLO_COMMANDS:
            await self._error(request, 352, "Unsupported OP_QUERY command: only hello/isMaster are accepted")
            return False
        if name in hello.HELLO_COMMANDS:
            await self._answer_hello(request)
            return False
        if self._login is None or (self._login.authenticated and name not in ("saslStart", "saslContinue")):
            return True
        try:
            if name == "saslStart":
                await self._send(request, await self._login.sasl_start(request.body))
            elif name == "saslContinue":
                await self._send(request, await self._login.sasl_continue(request.body))
            elif name in ("ping", "endSessions"):
                await self._send(request, {"ok": 1.0})
            elif name in ("buildInfo", "buildinfo"):
                await self._send(request, hello.build_info_reply(await self._limits()))
            else:
                await self._error(request, _UNAUTHORIZED, f"Command {name} requires authentication", "Unauthorized")
        except LoginError as exc:
            await self._error(request, exc.code, str(exc), exc.code_name)
        return False

    async def _limits(self) -> hello.UpstreamLimits:
        try:
            return (await self._gateway_connection()).limits
        except UpstreamError:
            return hello.DEFAULT_LIMITS

    async def _answer_hello(self, request: codec.Request) -> None:
        command = request.body
        mechanisms = speculative = None
        if self._login is not None and not self._login.authenticated:
            asked = hello.sasl_supported_mechs_user(command)
            if asked is not None:
                mechanisms = await self._login.mechanisms_for(asked[1])
            spec = command.get("speculativeAuthenticate")
            if isinstance(spec, Mapping) and isinstance(spec.get("payload"), bytes) and username_of(spec["payload"]):
                speculative = await self._login.speculative(spec)
        try:
            limits = (await self._gateway_connection()).limits
        except UpstreamError as exc:
            await self._error(request, 6, f"pam could not log in to the gateway: {exc}", "HostUnreachable")
            return
        reply = hello.hello_reply(
            command,
            limits=limits,
            connection_id=self.id,
            sasl_supported_mechs=mechanisms,
            speculative_authenticate=speculative,
        )
        await self._send(request, reply)

    # -- the relay ------------------------------------------------------------------------------------------
    async def _relay(self, first: bytes) -> None:
        try:
            upstream = await self._gateway_connection()
        except UpstreamError as exc:
            request = codec.Request.read(first, max_size=MAX_MESSAGE_BEFORE_RELAY)
            await self._error(request, 6, f"pam could not log in to the gateway: {exc}", "HostUnreachable")
            self.close("gateway login failed")
            return
        self._done = asyncio.get_running_loop().create_future()
        self.pipe = Pipe(
            client=self.writer.transport,
            upstream=upstream.writer.transport,
            max_request=max(upstream.limits.max_message_size_bytes, MAX_MESSAGE_BEFORE_RELAY),
            max_reply=upstream.limits.max_message_size_bytes + _REPLY_MARGIN,
            on_request=self._on_request,
            on_reply=lambda _in_flight: None,
            on_close=self._on_pipe_close,
            read_outcome=lambda _chunks: None,  # the gateway keeps the command log; nothing is read here
        )
        self.pipe.start(first + _take_buffered(self.reader), _take_buffered(upstream.reader))
        for transport in (self.writer.transport, upstream.writer.transport):
            with contextlib.suppress(Exception):
                if not transport.is_reading():
                    transport.resume_reading()
        if not self.closed:
            await self._done

    def _on_request(self, raw: bytes) -> InFlight | None:
        request = codec.Request.read(raw, max_size=self.pipe.max_request if self.pipe else MAX_MESSAGE_BEFORE_RELAY)
        name = request.command
        if request.op_code == codec.OP_COMPRESSED:
            self.close("compressed message although no compression is offered")
            return None
        if name in hello.HELLO_COMMANDS:
            assert self._upstream is not None
            reply = hello.hello_reply(request.body, limits=self._upstream.limits, connection_id=self.id)
            self._local_reply(request, codec.reply_for(request, reply, request_id=self._next_id()))
            return None
        if name in _CREDENTIAL_COMMANDS:
            message = _NEEDS_NO_CREDENTIALS.replace("PORT", str(self.proxy.port))
            self._local_reply(request, codec.error_reply(request, code=18, errmsg=message, request_id=self._next_id()))
            return None
        return InFlight(request)

    def _local_reply(self, request: codec.Request, data: bytes) -> None:
        if not request.more_to_come and self.pipe is not None:
            self.pipe.send_to_client(data)

    def _on_pipe_close(self, reason: str) -> None:
        self.close(reason)


def _take_buffered(reader: asyncio.StreamReader) -> bytes:
    """Bytes a stream had read that nobody consumed yet (a client may pipeline right after its first command)."""
    buffered = getattr(reader, "_buffer", None)
    if not buffered:
        return b""
    data = bytes(buffered)
    buffered.clear()
    return data
