"""Connections from the gateway to the real deployment: discovery, TLS and the account's login.

For each client connection the gateway opens one upstream connection (1:1, so cursors, sessions and
transactions just work). :func:`open_upstream` parses the resource's URI with pymongo's parser (which
resolves ``mongodb+srv`` records), opens TCP (TLS with the resource's CA, verification on unless the
resource turned it off), sends its *own* minimal hello — never the client's, whose metadata may reach
a server only once — and follows ``primary`` until it stands on a writable member or a mongos. The
address found is cached briefly per target; a cached address that is no longer primary (a failover)
sends the next connection through discovery again. :func:`authenticate_upstream` logs in with the
stored account through :func:`gatewayproxy.wire.scram.authenticate_async`.

Errors are :class:`UpstreamError` with a ``kind`` and a message in words that never carries a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gatewayproxy.host import UpstreamTarget
from gatewayproxy.wire import codec, scram
from gatewayproxy.wire.hello import UpstreamLimits

CONNECT_TIMEOUT = 5.0
TOPOLOGY_CACHE_SECONDS = 10.0
_MAX_PRIMARY_HOPS = 3
_request_ids = itertools.count(1)


class UpstreamError(Exception):
    """The upstream could not be reached or refused the account's login.

    ``kind`` is ``"unreachable"``, ``"tls"``, ``"auth"`` or ``"config"``; the message never holds a secret.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Topology:
    """Where a target's writable member was found (and the URI options that decide TLS), and when."""

    address: tuple[str, int]
    options: dict
    found_at: float


class TopologyCache:
    """Recently found writable members, per target URI, so most connections skip discovery."""

    def __init__(self, ttl: float = TOPOLOGY_CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._items: dict[tuple, Topology] = {}
        self._moves: dict[tuple, int] = {}

    def get(self, key: tuple) -> Topology | None:
        """The cached topology of ``key`` while it is fresh."""
        found = self._items.get(key)
        if found is None or time.monotonic() - found.found_at > self.ttl:
            return None
        return found

    def put(self, key: tuple, topology: Topology) -> None:
        """Remember where ``key``'s writable member is."""
        self._items[key] = topology

    def forget(self, key: tuple) -> None:
        """Drop ``key`` so the next connection rediscovers."""
        self._items.pop(key, None)

    def moved(self, key: tuple) -> None:
        """A member of ``key``'s replica set said it is not the primary: rediscover, and count the move."""
        self._moves[key] = self._moves.get(key, 0) + 1
        self.forget(key)

    def moves(self, key: tuple) -> int:
        """How many times ``key``'s primary was seen to move (connections opened before a move follow it)."""
        return self._moves.get(key, 0)


class UpstreamConnection:
    """One open connection to a writable member or a mongos, with the limits its hello announced."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: tuple[str, int], hello: dict
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.address = address
        self.hello = hello
        self.limits = UpstreamLimits.from_hello(hello)

    def __repr__(self) -> str:
        return f"UpstreamConnection({self.address[0]}:{self.address[1]}, {self.limits.topology})"

    async def command(self, document: Mapping[str, Any]) -> dict:
        """Run one command of the gateway's own (hello, SASL) and return the reply's body."""
        self.writer.write(codec.build_op_msg(document, request_id=next(_request_ids)))
        await self.writer.drain()
        raw = await codec.read_message(self.reader, max_size=self.limits.max_message_size_bytes + 16 * 1024)
        reply = codec.parse_message(raw)
        if isinstance(reply, codec.OpMsg):
            return reply.body
        if isinstance(reply, codec.OpReply) and reply.documents:
            return reply.documents[0]
        raise UpstreamError("unreachable", "the upstream server sent an unexpected reply")

    def close(self) -> None:
        """Close the socket at once."""
        with contextlib.suppress(Exception):
            self.writer.transport.abort()


def target_key(target: UpstreamTarget) -> tuple:
    """The cache key of a target: everything that decides where and how the gateway connects."""
    return (target.uri, bool(target.tls), bool(target.tls_verify), target.ca_certificate or "")


async def resolve_seeds(target: UpstreamTarget) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Parse the URI (resolving ``mongodb+srv`` through DNS, in a thread) into seeds and options."""
    from pymongo import uri_parser  # pymongo's parser validates options and knows SRV

    def parse() -> dict[str, Any]:
        return uri_parser.parse_uri(target.uri, connect_timeout=CONNECT_TIMEOUT)

    try:
        parsed = await asyncio.to_thread(parse)
    except Exception as exc:  # InvalidURI, ConfigurationError (DNS), ValueError
        kind = "unreachable" if "DNS" in str(exc) or "SRV" in str(exc) else "config"
        raise UpstreamError(kind, f"the resource URI cannot be used: {type(exc).__name__}: {exc}") from None
    return list(parsed["nodelist"]), dict(parsed["options"])


def tls_context(target: UpstreamTarget, options: Mapping[str, Any]) -> ssl.SSLContext | None:
    """The TLS context for a target, or None for plain TCP.

    TLS is on when the resource says so or the URI does (``mongodb+srv`` implies it); the resource's CA
    PEM is trusted in addition to the system store; verification is off only when the resource turned
    it off or the URI says ``tlsInsecure``/``tlsAllowInvalidCertificates``.
    """
    if not (target.tls or options.get("tls") or options.get("ssl")):
        return None
    context = ssl.create_default_context()
    if target.ca_certificate:
        try:
            context.load_verify_locations(cadata=target.ca_certificate)
        except ssl.SSLError as exc:
            raise UpstreamError("config", f"the resource's CA certificate cannot be loaded: {exc.reason}") from None
    if not target.tls_verify or options.get("tlsInsecure") or options.get("tlsAllowInvalidCertificates"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif options.get("tlsAllowInvalidHostnames"):
        context.check_hostname = False
    return context


async def _connect(address: tuple[str, int], context: ssl.SSLContext | None, hello_command: dict) -> UpstreamConnection:
    host, port = address
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host if context else None, limit=2**16),
            CONNECT_TIMEOUT,
        )
    except ssl.SSLError as exc:
        raise UpstreamError("tls", f"TLS with {host}:{port} failed: {exc.reason or exc}") from None
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise UpstreamError("unreachable", f"cannot connect to {host}:{port}: {reason}") from None
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    probe = UpstreamConnection(reader, writer, address, {})
    try:
        reply = await asyncio.wait_for(probe.command(hello_command), CONNECT_TIMEOUT)
        if not reply.get("ok"):  # a server older than 4.4.2 knows only isMaster
            legacy = {"isMaster": 1, **{k: v for k, v in hello_command.items() if k != "hello"}}
            reply = await asyncio.wait_for(probe.command(legacy), CONNECT_TIMEOUT)
    except (OSError, EOFError, TimeoutError, codec.WireError, asyncio.IncompleteReadError) as exc:
        probe.close()
        raise UpstreamError("unreachable", f"{host}:{port} did not answer hello: {type(exc).__name__}") from None
    if not reply.get("ok"):
        probe.close()
        raise UpstreamError("unreachable", f"{host}:{port} refused hello: {reply.get('errmsg', 'no reason')}")
    return UpstreamConnection(reader, writer, address, reply)


def _writable(hello: Mapping[str, Any]) -> bool:
    return bool(hello.get("isWritablePrimary") or hello.get("ismaster")) or hello.get("msg") == "isdbgrid"


def _parse_address(value: Any) -> tuple[str, int] | None:
    if not isinstance(value, str) or not value:
        return None
    host, _, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return (host, int(port)) if host else (value, 27017)
    except ValueError:
        return None


async def open_upstream(target: UpstreamTarget, *, cache: TopologyCache | None = None) -> UpstreamConnection:
    """Connect to the target's writable member (or a mongos) and send the gateway's own hello.

    The hello asks ``saslSupportedMechs`` for the account, so :func:`authenticate_upstream` can pick
    the mechanism without another round trip.
    """
    hello_command = {"hello": 1, "saslSupportedMechs": f"{target.auth_database}.{target.username}", "$db": "admin"}
    key = target_key(target)
    cached = cache.get(key) if cache is not None else None
    if cached is not None:
        context = tls_context(target, cached.options)
        try:
            connection = await _connect(cached.address, context, hello_command)
        except UpstreamError:
            connection = None
        if connection is not None and _writable(connection.hello):
            return connection
        if connection is not None:
            connection.close()
        cache.forget(key)  # a failover or a restart: find the primary again
    seeds, options = await resolve_seeds(target)
    context = tls_context(target, options)
    errors: list[str] = []
    tried: set[tuple[str, int]] = set()
    for seed in seeds:
        address: tuple[str, int] | None = seed
        for _hop in range(_MAX_PRIMARY_HOPS):
            if address is None or address in tried:
                break
            tried.add(address)
            try:
                connection = await _connect(address, context, hello_command)
            except UpstreamError as exc:
                if exc.kind == "tls":
                    raise
                errors.append(str(exc))
                break
            if _writable(connection.hello):
                if cache is not None:
                    cache.put(key, Topology(connection.address, options, time.monotonic()))
                return connection
            connection.close()
            address = _parse_address(connection.hello.get("primary"))
            if address is None:
                errors.append(f"{connection.address[0]}:{connection.address[1]} is not primary and knows no primary")
    detail = "; ".join(errors) or "no seed to try"
    raise UpstreamError("unreachable", f"no writable member of the deployment answered ({detail})")


async def open_secondary(target: UpstreamTarget) -> UpstreamConnection | None:
    """Connect to a secondary of the target's replica set (the seeds, then the members their hellos list, in
    order, so a session's connections find the same one), or None when no member answers as a secondary."""
    hello_command = {"hello": 1, "saslSupportedMechs": f"{target.auth_database}.{target.username}", "$db": "admin"}
    seeds, options = await resolve_seeds(target)
    context = tls_context(target, options)
    candidates = list(seeds)
    tried: set[tuple[str, int]] = set()
    while candidates:
        address = candidates.pop(0)
        if address in tried:
            continue
        tried.add(address)
        try:
            connection = await _connect(address, context, hello_command)
        except UpstreamError as exc:
            if exc.kind == "tls":
                raise
            continue
        if connection.hello.get("secondary") and connection.hello.get("setName"):
            return connection
        connection.close()
        for host in connection.hello.get("hosts") or ():
            found = _parse_address(host)
            if found is not None and found not in tried:
                candidates.append(found)
    return None


async def authenticate_upstream(connection: UpstreamConnection, target: UpstreamTarget) -> None:
    """Log in on ``connection`` with the account (SCRAM-SHA-256 when offered, else SCRAM-SHA-1)."""
    offered = connection.hello.get("saslSupportedMechs")
    mechanism = "SCRAM-SHA-256"
    if isinstance(offered, list) and "SCRAM-SHA-256" not in offered and "SCRAM-SHA-1" in offered:
        mechanism = "SCRAM-SHA-1"
    password = target.password.reveal()
    try:
        await asyncio.wait_for(
            scram.authenticate_async(
                connection.command,
                mechanism=mechanism,
                username=target.username,
                password=password,
                source=target.auth_database or "admin",
            ),
            CONNECT_TIMEOUT,
        )
    except scram.ScramError as exc:
        code = f" (code {exc.code})" if exc.code is not None else ""
        raise UpstreamError("auth", f"the upstream refused the account's login{code}") from None
    except (OSError, EOFError, TimeoutError, codec.WireError, asyncio.IncompleteReadError) as exc:
        raise UpstreamError("unreachable", f"the upstream closed during login: {type(exc).__name__}") from None
    finally:
        del password
