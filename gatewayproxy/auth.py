"""The client side of the gateway's login: it plays a MongoDB server's SCRAM toward drivers.

A client logs in with its session username and one-time secret through ordinary ``saslStart`` /
``saslContinue`` (or a ``speculativeAuthenticate`` inside its hello), with SCRAM-SHA-256 or SCRAM-SHA-1.
:class:`ClientLogin` checks the proof against the session's stored verifiers with
:class:`gatewayproxy.wire.scram.ScramServer`; only when the proof holds does it let the caller check the
session's user and grant and open and log in the upstream connection (``on_verified``), so the final SCRAM
reply already tells the client whether the deployment could be reached. Unknown users and wrong secrets fail
the same way, with MongoDB's ``AuthenticationFailed`` (code 18), after a plausible server-first message; a
client that proved the secret of a session that may no longer log in is told why ("the session was killed by
alice"), since only its owner can prove it. A throttled address is refused before any lookup.

No I/O here except the two awaited callables; replies are plain dicts for the caller to encode.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import bson

from gatewayproxy.host import SessionLogin
from gatewayproxy.upstream import UpstreamError
from gatewayproxy.wire import scram

#: Commands a client may send before it has logged in.
ALLOWED_BEFORE_LOGIN = frozenset(
    {"hello", "isMaster", "ismaster", "saslStart", "saslContinue", "ping", "buildInfo", "buildinfo", "endSessions"}
)
#: Commands refused after login: the connection is already authenticated as the session.
REFUSED_AFTER_LOGIN = frozenset({"saslStart", "saslContinue", "authenticate", "logout", "getnonce"})

AUTH_FAILED_CODE = 18
HOST_UNREACHABLE_CODE = 6


class LoginError(Exception):
    """A login step failed; ``code``/``code_name`` and the message go to the client as is.

    ``reason`` says why in words for the audit trail (never a secret); ``counted`` is True when the failure was
    already counted against the client's address (an unknown name is counted when it is looked up).
    """

    def __init__(self, code: int, message: str, code_name: str, *, reason: str = "", counted: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.code_name = code_name
        self.reason = reason or message
        self.counted = counted


def _auth_failed(reason: str = "wrong secret", *, counted: bool = False) -> LoginError:
    return LoginError(AUTH_FAILED_CODE, scram.AUTH_FAILED, "AuthenticationFailed", reason=reason, counted=counted)


def refused(words: str) -> LoginError:
    """A login refused for a reason the client may hear (it proved the secret): the session ended, the user..."""
    return LoginError(AUTH_FAILED_CODE, f"Authentication failed: {words}", "AuthenticationFailed", reason=words)


def username_of(client_first: bytes) -> str | None:
    """The user named in a SCRAM client-first message (``n,,n=USER,r=...``), or None if malformed."""
    if not client_first.startswith(b"n,,"):
        return None
    first = client_first[3:].split(b",", 1)[0]
    if not first.startswith(b"n="):
        return None
    try:
        return scram.unescape_username(first[2:])
    except scram.ScramError:
        return None


def _payload(command: Mapping[str, Any]) -> bytes:
    value = command.get("payload", b"")
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise LoginError(14, "payload must be BinData or a string", "TypeMismatch")


@dataclass
class _Conversation:
    server: scram.ScramServer
    login: SessionLogin | None
    skip_empty: bool
    unknown: bool = False
    verified: bool = False


class ClientLogin:
    """The login state of one client connection.

    ``lookup(username)`` returns the session's :class:`~gatewayproxy.host.SessionLogin` (``verifiers``,
    ``expires_at``, ...) or None; ``on_verified(login)`` runs once the proof holds and may
    raise :class:`~gatewayproxy.upstream.UpstreamError`, which fails the login with a clear reason.
    """

    def __init__(
        self,
        *,
        lookup: Callable[[str], Awaitable[SessionLogin | None]],
        on_verified: Callable[[SessionLogin], Awaitable[None]],
        throttled: Callable[[], float] = lambda: 0.0,
        on_unknown: Callable[[str], None] = lambda username: None,
    ) -> None:
        self._lookup = lookup
        self._on_verified = on_verified
        self._throttled = throttled
        self._on_unknown = on_unknown
        self._conversations: dict[int, _Conversation] = {}
        self._next_id = 0
        self._unknown: set[str] = set()
        self.login: SessionLogin | None = None
        self.username = ""

    @property
    def authenticated(self) -> bool:
        """Whether the client proved the session's secret (and the upstream login succeeded)."""
        return self.login is not None

    async def mechanisms_for(self, username: str) -> list[str] | None:
        """``saslSupportedMechs`` for a user: the mechanisms of a known session, None for anyone else."""
        try:
            login = await self._live_login(username)
        except LoginError:
            return None  # throttled: the driver's saslStart will hear why
        if login is None:
            return None
        return [m for m in scram.MECHANISMS if m in (login.verifiers or {})]

    async def _live_login(self, username: str) -> SessionLogin | None:
        """The session ``username`` logs in to (a refused one included, with its ``refusal``), or None.

        A throttled address is refused here, before the lookup; an unknown name is counted once per connection.
        """
        self.username = username
        wait = self._throttled()
        if wait > 0:
            raise LoginError(
                AUTH_FAILED_CODE,
                f"Authentication failed: too many failed logins from this address; try again in {int(wait) + 1} s",
                "AuthenticationFailed",
                reason="too many failed logins from this address",
                counted=True,
            )
        login = await self._lookup(username)
        if login is None:
            if username not in self._unknown:
                self._unknown.add(username)
                self._on_unknown(username)
            return None
        if not login.refusal and login.expires_at <= datetime.datetime.now(datetime.UTC):
            return replace(login, refusal="the session expired", upstream=None)
        return login

    async def sasl_start(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Answer ``saslStart`` (or the body of ``speculativeAuthenticate``) with the server-first message."""
        mechanism = command.get("mechanism")
        if mechanism not in scram.MECHANISMS:
            raise LoginError(
                334,
                f"Received authentication for mechanism {mechanism} which is not enabled",
                "MechanismUnavailable",
            )
        client_first = _payload(command)
        username = username_of(client_first)
        login = await self._live_login(username) if username else None
        unknown = login is None
        credentials = None
        if login is not None:
            stored = (login.verifiers or {}).get(mechanism)
            try:
                credentials = scram.ScramCredentials.from_dict(stored) if stored else None
            except scram.ScramError:
                credentials = None
        server = scram.ScramServer(mechanism, lambda name: credentials if name == username else None)
        try:
            server_first = server.server_first(client_first)
        except scram.ScramError:
            raise _auth_failed() from None
        self._next_id += 1
        options = command.get("options") if isinstance(command.get("options"), Mapping) else {}
        self._conversations[self._next_id] = _Conversation(
            server, login if credentials is not None else None, bool(options.get("skipEmptyExchange")), unknown
        )
        return {"conversationId": self._next_id, "done": False, "payload": bson.Binary(server_first), "ok": 1.0}

    async def sasl_continue(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Answer ``saslContinue``: check the proof, log in upstream, and reply with the server signature."""
        conversation_id = command.get("conversationId")
        conversation = self._conversations.get(conversation_id) if isinstance(conversation_id, int) else None
        if conversation is None:
            raise LoginError(17, "No SASL session state found", "ProtocolError")
        if conversation.verified:  # the empty third round trip of clients without skipEmptyExchange
            del self._conversations[conversation_id]
            return {"conversationId": conversation_id, "done": True, "payload": bson.Binary(b""), "ok": 1.0}
        try:
            server_final = conversation.server.server_final(_payload(command))
        except scram.ScramError:
            del self._conversations[conversation_id]
            if conversation.unknown:
                raise _auth_failed("unknown session username", counted=True) from None
            raise _auth_failed() from None
        if conversation.login is None:  # cannot happen with decoy keys, but never trust a decoy
            del self._conversations[conversation_id]
            raise _auth_failed()
        if conversation.login.refusal:  # the owner proved the secret of a session that ended: say why
            del self._conversations[conversation_id]
            raise refused(conversation.login.refusal)
        try:
            await self._on_verified(conversation.login)
        except LoginError:
            del self._conversations[conversation_id]
            raise
        except UpstreamError as exc:
            del self._conversations[conversation_id]
            if exc.kind == "auth":
                raise LoginError(
                    AUTH_FAILED_CODE, f"gateway could not authenticate upstream: {exc}", "AuthenticationFailed"
                ) from None
            raise LoginError(
                HOST_UNREACHABLE_CODE, f"gateway could not reach the upstream server: {exc}", "HostUnreachable"
            ) from None
        self.login = conversation.login
        done = conversation.skip_empty
        if done:
            del self._conversations[conversation_id]
        else:
            conversation.verified = True
        return {"conversationId": conversation_id, "done": done, "payload": bson.Binary(server_final), "ok": 1.0}

    async def speculative(self, command: Mapping[str, Any]) -> dict[str, Any] | None:
        """Run a hello's ``speculativeAuthenticate`` saslStart; None (field left out) when it fails."""
        if not isinstance(command, Mapping) or not command.get("saslStart"):
            return None
        try:
            reply = await self.sasl_start(command)
        except LoginError:
            return None  # mongod leaves the field out; the driver then authenticates normally
        reply.pop("ok", None)
        return reply
