"""SCRAM-SHA-1 and SCRAM-SHA-256 as MongoDB speaks them, for both ends of a conversation.

The gateway is a SCRAM client toward the upstream server (with the lease's credentials) and a SCRAM
server toward the user's driver (with session credentials it issued). This module implements both
roles over plain bytes (RFC 5802 / RFC 7677 with MongoDB's rules: SHA-1 hashes
``hex(md5("user:mongo:pwd"))`` instead of the password, SHA-256 SASLpreps it, no channel binding,
at least 4096 iterations) plus transport-agnostic helpers that run the ``saslStart``/``saslContinue``
exchange through any ``run_command`` callable.

The server side works only from stored keys (:class:`ScramCredentials`), never from a password.
Error messages never contain passwords, proofs or keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import bson
from pymongo.saslprep import saslprep

MECHANISMS = ("SCRAM-SHA-1", "SCRAM-SHA-256")
MIN_ITERATIONS = 4096
#: A client refuses server-chosen iteration counts above this, so a hostile server cannot stall it.
MAX_ITERATIONS = 10_000_000
DEFAULT_ITERATIONS = {"SCRAM-SHA-1": 10_000, "SCRAM-SHA-256": 15_000}
SALT_SIZES = {"SCRAM-SHA-1": 16, "SCRAM-SHA-256": 28}
_DIGESTS = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}
_GS2_HEADER = b"n,,"
_CHANNEL_BINDING = base64.b64encode(_GS2_HEADER)  # b"biws"
AUTH_FAILED = "Authentication failed."


class ScramError(Exception):
    """A SCRAM conversation failed. ``code``/``code_name`` carry the server's error when there was one."""

    def __init__(self, message: str, *, code: int | None = None, code_name: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.code_name = code_name


# --------------------------------------------------------------------------------------------------------
# Key derivation.
# --------------------------------------------------------------------------------------------------------


def _digest(mechanism: str) -> str:
    try:
        return _DIGESTS[mechanism]
    except KeyError:
        raise ScramError(f"unsupported mechanism {mechanism!r}; expected one of {MECHANISMS}") from None


def mongo_password(mechanism: str, username: str, password: str) -> str:
    """The string MongoDB feeds to PBKDF2: SASLprep(password) for SHA-256, hex MD5 digest for SHA-1."""
    if _digest(mechanism) == "sha256":
        try:
            return saslprep(password)
        except ValueError as exc:
            raise ScramError("password contains characters SASLprep prohibits") from exc
    data = f"{username}:mongo:{password}".encode()
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _hmac(mechanism: str, key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, _digest(mechanism))


def _hash(mechanism: str, data: bytes) -> bytes:
    return hashlib.new(_digest(mechanism), data).digest()


class _KeyCache:
    """A small thread-safe LRU of (client key, server key) by mechanism, password hash, salt, iterations.

    PBKDF2 with 15000 iterations costs milliseconds; the gateway authenticates many upstream connections
    with the same credentials. Passwords are not kept: the key is an HMAC of the password under a
    per-process random secret.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._items: OrderedDict[tuple, tuple[bytes, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._secret = os.urandom(32)

    def keys(self, mechanism: str, prepared: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
        tag = hmac.digest(self._secret, prepared.encode("utf-8"), "sha256")
        key = (mechanism, tag, salt, iterations)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        salted = hashlib.pbkdf2_hmac(_digest(mechanism), prepared.encode("utf-8"), salt, iterations)
        value = (_hmac(mechanism, salted, b"Client Key"), _hmac(mechanism, salted, b"Server Key"))
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_KEY_CACHE = _KeyCache()


def _prepare(mechanism: str, username: str, password: str, mongodb_rules: bool) -> str:
    if not mongodb_rules:
        _digest(mechanism)
        return password
    return mongo_password(mechanism, username, password)


def client_and_server_keys(
    mechanism: str, username: str, password: str, salt: bytes, iterations: int, *, mongodb_rules: bool = True
) -> tuple[bytes, bytes]:
    """Return (ClientKey, ServerKey) for a password, through the salted-password LRU cache.

    ``mongodb_rules=False`` uses the password as given (plain RFC 5802), for tests and non-MongoDB peers.
    """
    prepared = _prepare(mechanism, username, password, mongodb_rules)
    return _KEY_CACHE.keys(mechanism, prepared, salt, iterations)


@dataclass(frozen=True)
class ScramCredentials:
    """What a SCRAM server stores for a user: salt, iteration count, StoredKey and ServerKey."""

    mechanism: str
    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (bytes as base64) for storing in a database field."""
        return {
            "mechanism": self.mechanism,
            "salt": base64.b64encode(self.salt).decode("ascii"),
            "iterations": self.iterations,
            "stored_key": base64.b64encode(self.stored_key).decode("ascii"),
            "server_key": base64.b64encode(self.server_key).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScramCredentials:
        """Rebuild credentials from :meth:`to_dict` output; malformed data raises ScramError."""
        try:
            mechanism = data["mechanism"]
            iterations = int(data["iterations"])
            salt, stored, server = (_b64decode(data[k]) for k in ("salt", "stored_key", "server_key"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ScramError("stored SCRAM credentials are malformed") from exc
        size = hashlib.new(_digest(mechanism)).digest_size
        if len(stored) != size or len(server) != size or iterations < MIN_ITERATIONS or not salt:
            raise ScramError("stored SCRAM credentials are malformed")
        return cls(mechanism, salt, iterations, stored, server)


def derive_credentials(
    mechanism: str,
    username: str,
    password: str,
    *,
    salt: bytes | None = None,
    iterations: int | None = None,
    mongodb_rules: bool = True,
) -> ScramCredentials:
    """Derive the stored form of a password (random salt and MongoDB's default iterations by default)."""
    _digest(mechanism)
    salt = os.urandom(SALT_SIZES[mechanism]) if salt is None else salt
    iterations = DEFAULT_ITERATIONS[mechanism] if iterations is None else iterations
    if iterations < MIN_ITERATIONS or not salt:
        raise ScramError(f"need a non-empty salt and at least {MIN_ITERATIONS} iterations")
    client_key, server_key = client_and_server_keys(
        mechanism, username, password, salt, iterations, mongodb_rules=mongodb_rules
    )
    return ScramCredentials(mechanism, salt, iterations, _hash(mechanism, client_key), server_key)


# --------------------------------------------------------------------------------------------------------
# Message syntax.
# --------------------------------------------------------------------------------------------------------


def _b64decode(value: str | bytes) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("invalid base64") from exc


def escape_username(username: str) -> bytes:
    """SCRAM saslname escaping: ``=`` becomes ``=3D`` and ``,`` becomes ``=2C``."""
    return username.encode("utf-8").replace(b"=", b"=3D").replace(b",", b"=2C")


def unescape_username(value: bytes) -> str:
    """Undo :func:`escape_username`; any other ``=`` sequence or invalid UTF-8 raises ScramError."""
    parts = value.split(b"=")
    out = [parts[0]]
    for part in parts[1:]:
        if part[:2] == b"3D":
            out.append(b"=" + part[2:])
        elif part[:2] == b"2C":
            out.append(b"," + part[2:])
        else:
            raise ScramError("username has an invalid '=' escape")
    try:
        return b"".join(out).decode("utf-8")
    except UnicodeDecodeError:
        raise ScramError("username is not valid UTF-8") from None


def _attributes(message: bytes, expected: str) -> list[tuple[str, bytes]]:
    """Split ``a=1,b=2`` into pairs, checking the leading attribute names are ``expected`` in order."""
    pairs = []
    for item in message.split(b","):
        if len(item) < 2 or item[1:2] != b"=" or not (0x41 <= item[0] <= 0x5A or 0x61 <= item[0] <= 0x7A):
            raise ScramError("malformed SCRAM message")
        pairs.append((chr(item[0]), item[2:]))
    names = "".join(name for name, _ in pairs)
    if not names.startswith(expected):
        if "m" in names:
            raise ScramError("SCRAM mandatory extensions are not supported")
        raise ScramError(f"malformed SCRAM message: expected attributes {','.join(expected)}")
    return pairs


def _new_nonce() -> bytes:
    return base64.b64encode(os.urandom(24))


def _valid_nonce(nonce: bytes) -> bool:
    return bool(nonce) and all(0x21 <= byte <= 0x7E and byte != 0x2C for byte in nonce)


# --------------------------------------------------------------------------------------------------------
# Client.
# --------------------------------------------------------------------------------------------------------


class ScramClient:
    """The client side of one SCRAM conversation: first_message, final_message, verify_server_final."""

    def __init__(
        self,
        mechanism: str,
        username: str,
        password: str,
        *,
        nonce: bytes | None = None,
        mongodb_rules: bool = True,
    ) -> None:
        self.mechanism = mechanism
        self.username = username
        # SASLprep or digest now, so a bad password fails before any network round trip.
        self._prepared = _prepare(mechanism, username, password, mongodb_rules)
        self._nonce = nonce or _new_nonce()
        if not _valid_nonce(self._nonce):
            raise ScramError("client nonce must be printable ASCII without commas")
        self._first_bare = b"n=" + escape_username(username) + b",r=" + self._nonce
        self._server_signature: bytes | None = None
        self.authenticated = False

    def __repr__(self) -> str:
        return f"ScramClient({self.mechanism!r}, {self.username!r})"

    def first_message(self) -> bytes:
        """The client-first message: ``n,,n=USER,r=NONCE``."""
        return _GS2_HEADER + self._first_bare

    def final_message(self, server_first: bytes) -> bytes:
        """Check the server-first message and return the client-final message with the proof."""
        fields = dict(_attributes(bytes(server_first), "rsi"))
        nonce, iterations = fields["r"], self._iterations(fields["i"])
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce) or not _valid_nonce(nonce):
            raise ScramError("server nonce does not extend the client nonce")
        try:
            salt = _b64decode(fields["s"])
        except ValueError:
            raise ScramError("server salt is not valid base64") from None
        if not salt:
            raise ScramError("server sent an empty salt")
        client_key, server_key = _KEY_CACHE.keys(self.mechanism, self._prepared, salt, iterations)
        without_proof = b"c=" + _CHANNEL_BINDING + b",r=" + nonce
        auth_message = b",".join((self._first_bare, bytes(server_first), without_proof))
        signature = _hmac(self.mechanism, _hash(self.mechanism, client_key), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = _hmac(self.mechanism, server_key, auth_message)
        return without_proof + b",p=" + base64.b64encode(proof)

    @staticmethod
    def _iterations(value: bytes) -> int:
        if not value.isdigit() or len(value) > 10:
            raise ScramError("server sent an invalid iteration count")
        iterations = int(value)
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise ScramError(f"server iteration count {iterations} is outside {MIN_ITERATIONS}..{MAX_ITERATIONS}")
        return iterations

    def verify_server_final(self, server_final: bytes) -> None:
        """Check the server's signature (constant time); raise ScramError on ``e=`` or a mismatch."""
        if self._server_signature is None:
            raise ScramError("server-final received before client-final was sent")
        server_final = bytes(server_final)
        if server_final.startswith(b"e="):
            reason = server_final[2:].split(b",")[0].decode("ascii", "replace")
            raise ScramError(f"server rejected authentication: {reason}")
        fields = dict(_attributes(server_final, "v"))
        try:
            received = _b64decode(fields["v"])
        except ValueError:
            received = b""
        if not hmac.compare_digest(received, self._server_signature):
            raise ScramError("server signature is invalid")
        self.authenticated = True


# --------------------------------------------------------------------------------------------------------
# Server.
# --------------------------------------------------------------------------------------------------------

_DECOY_SECRET = os.urandom(32)


def _decoy_credentials(mechanism: str, username: str) -> ScramCredentials:
    """Credentials for an unknown user: stable salt per user, keys no proof can match."""
    salt = hmac.digest(_DECOY_SECRET, username.encode("utf-8"), "sha256")[: SALT_SIZES[mechanism]]
    size = hashlib.new(_digest(mechanism)).digest_size
    return ScramCredentials(mechanism, salt, DEFAULT_ITERATIONS[mechanism], os.urandom(size), os.urandom(size))


class ScramServer:
    """The server side of one SCRAM conversation, verifying a client against stored keys.

    ``lookup(username)`` returns the user's :class:`ScramCredentials` or ``None``. An unknown user gets
    a plausible server-first message and fails at the proof, exactly like a wrong password.
    """

    def __init__(
        self,
        mechanism: str,
        lookup: Callable[[str], ScramCredentials | None],
        *,
        nonce: bytes | None = None,
    ) -> None:
        _digest(mechanism)
        self.mechanism = mechanism
        self._lookup = lookup
        self._server_nonce = nonce or _new_nonce()
        self.username: str | None = None
        self.authenticated = False
        self._credentials: ScramCredentials | None = None
        self._auth_prefix = b""
        self._nonce = b""
        self._finished = False

    def __repr__(self) -> str:
        return f"ScramServer({self.mechanism!r}, username={self.username!r}, authenticated={self.authenticated})"

    def server_first(self, client_first: bytes) -> bytes:
        """Parse client-first (``n,,n=USER,r=NONCE``) and return ``r=NONCE,s=SALT,i=ITERATIONS``."""
        if self._credentials is not None:
            raise ScramError("client-first received twice")
        client_first = bytes(client_first)
        if not client_first.startswith(b"n,"):
            raise ScramError("channel binding is not supported; the GS2 flag must be 'n'")
        authzid, _, bare = client_first[2:].partition(b",")
        if authzid:
            raise ScramError("an authorization identity is not supported")
        fields = _attributes(bare, "nr")
        username, nonce = unescape_username(fields[0][1]), fields[1][1]
        if not username or not _valid_nonce(nonce):
            raise ScramError("client-first message has an empty username or an invalid nonce")
        credentials = self._lookup(username)
        if credentials is None or credentials.mechanism != self.mechanism:
            credentials = _decoy_credentials(self.mechanism, username)
        self.username, self._credentials = username, credentials
        self._nonce = nonce + self._server_nonce
        salt = base64.b64encode(credentials.salt)
        server_first = b"r=" + self._nonce + b",s=" + salt + b",i=" + str(credentials.iterations).encode()
        self._auth_prefix = bare + b"," + server_first
        return server_first

    def server_final(self, client_final: bytes) -> bytes:
        """Verify client-final (channel binding, nonce, proof) and return ``v=SERVER_SIGNATURE``.

        A wrong proof raises ScramError("Authentication failed."); the conversation cannot be retried.
        """
        if self._credentials is None or self._finished:
            raise ScramError("client-final received out of order")
        self._finished = True
        client_final = bytes(client_final)
        fields = _attributes(client_final, "cr")
        without_proof, _, proof_b64 = client_final.rpartition(b",p=")
        if fields[0][1] != _CHANNEL_BINDING or fields[1][1] != self._nonce or fields[-1][0] != "p":
            raise ScramError(AUTH_FAILED)
        try:
            proof = _b64decode(proof_b64)
        except ValueError:
            raise ScramError(AUTH_FAILED) from None
        if not self._proof_matches(proof, self._auth_prefix + b"," + without_proof):
            raise ScramError(AUTH_FAILED)
        self.authenticated = True
        signature = _hmac(self.mechanism, self._credentials.server_key, self._auth_prefix + b"," + without_proof)
        return b"v=" + base64.b64encode(signature)

    def _proof_matches(self, proof: bytes, auth_message: bytes) -> bool:
        stored_key = self._credentials.stored_key
        signature = _hmac(self.mechanism, stored_key, auth_message)
        if len(proof) != len(signature):
            return False
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        return hmac.compare_digest(_hash(self.mechanism, client_key), stored_key)


# --------------------------------------------------------------------------------------------------------
# The MongoDB saslStart / saslContinue exchange.
# --------------------------------------------------------------------------------------------------------


def sasl_start_command(mechanism: str, payload: bytes, source: str = "admin") -> dict[str, Any]:
    """The ``saslStart`` command a driver sends (also the body of ``speculativeAuthenticate``)."""
    return {
        "saslStart": 1,
        "mechanism": mechanism,
        "payload": bson.Binary(payload),
        "autoAuthorize": 1,
        "options": {"skipEmptyExchange": True},
        "$db": source,
    }


def _check_reply(reply: Mapping[str, Any]) -> bytes:
    """Raise ScramError for a failed command reply; return its payload bytes."""
    if not reply.get("ok"):
        code = reply.get("code")
        message = str(reply.get("errmsg") or AUTH_FAILED)
        raise ScramError(
            f"{message} (code {code})" if code is not None else message,
            code=code,
            code_name=reply.get("codeName"),
        )
    payload = reply.get("payload", b"")
    if not isinstance(payload, bytes):
        raise ScramError("server reply has no binary payload")
    return bytes(payload)


def _conversation(
    mechanism: str, username: str, password: str, source: str
) -> Generator[dict[str, Any], Mapping[str, Any], None]:
    """Yield the commands of one authentication, receiving each reply; shared by sync and async."""
    if mechanism not in MECHANISMS:
        raise ScramError(f"unsupported mechanism {mechanism!r}; expected one of {MECHANISMS}")
    client = ScramClient(mechanism, username, password)
    reply = yield sasl_start_command(mechanism, client.first_message(), source)
    server_first = _check_reply(reply)
    conversation_id = reply.get("conversationId")
    final = client.final_message(server_first)
    reply = yield {
        "saslContinue": 1,
        "conversationId": conversation_id,
        "payload": bson.Binary(final),
        "$db": source,
    }
    client.verify_server_final(_check_reply(reply))
    # Servers before 4.4 ignore skipEmptyExchange and want one more, empty, round trip.
    if not reply.get("done"):
        empty = {
            "saslContinue": 1,
            "conversationId": conversation_id,
            "payload": bson.Binary(b""),
            "$db": source,
        }
        reply = yield empty
        _check_reply(reply)
        if not reply.get("done"):
            raise ScramError("SASL conversation did not complete")


def authenticate(
    run_command: Callable[[dict[str, Any]], Mapping[str, Any]],
    *,
    mechanism: str,
    username: str,
    password: str,
    source: str = "admin",
) -> None:
    """Authenticate over ``run_command`` (command document in, reply out); ScramError on failure."""
    steps = _conversation(mechanism, username, password, source)
    command = next(steps)
    while True:
        try:
            command = steps.send(run_command(command))
        except StopIteration:
            return


async def authenticate_async(
    run_command: Callable[[dict[str, Any]], Awaitable[Mapping[str, Any]]],
    *,
    mechanism: str,
    username: str,
    password: str,
    source: str = "admin",
) -> None:
    """The asyncio twin of :func:`authenticate`: ``run_command`` is a coroutine function."""
    steps = _conversation(mechanism, username, password, source)
    command = next(steps)
    while True:
        reply = await run_command(command)
        try:
            command = steps.send(reply)
        except StopIteration:
            return
