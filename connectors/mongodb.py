"""The pymongo connector for self-hosted MongoDB: create, change, lock and drop users, and end their connections.

`MongoDBConnector(resource)` logs in with the resource's admin account (its URI, `mongodb+srv` included,
its auth database and its TLS settings) and keeps one cached `MongoClient` until `close()` or the end of a
`with` block. User-management writes carry a majority write concern. Every failure surfaces as a
`ConnectorError` whose kind says what went wrong (DNS, TLS, auth, permission, timeout, unreachable, ...)
and whose message says it in words without any password in it.

Users this system creates carry `customData: {"pam": {...}}` (see `TAG_KEY`) so the reconciler can find them.
Locking a user replaces its `authenticationRestrictions` with one no client can satisfy and hands back the
previous value, so unlocking restores it exactly.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import queue
import re
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bson.binary import Binary
from bson.objectid import ObjectId
from bson.son import SON
from pymongo import MongoClient
from pymongo.errors import (
    ConfigurationError,
    ConnectionFailure,
    ExecutionTimeout,
    InvalidURI,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

from connectors.base import ConnectorError
from gatewayproxy.wire import scram

log = logging.getLogger(__name__)

TAG_KEY = "pam"
"""customData key marking users this system created: {"pam": {"lease_id": ..., "system": ...}}."""

LOCK_RESTRICTIONS: list[dict[str, list[str]]] = [{"clientSource": ["0.0.0.0/32"]}]
"""authenticationRestrictions no client can satisfy: no connection ever comes from 0.0.0.0."""

MAJORITY = {"w": "majority"}

LOGIN_PROBES = 8
"""At most this many credential-less clients per connector try logins at once (threads of a revocation batch)."""
PROBE_WAIT_SECONDS = 60
"""How long a login check waits for one of them before the revocation counts as failed (and is retried)."""

# Server error codes (src/mongo/base/error_codes.yml)
AUTHENTICATION_FAILED = 18
UNAUTHORIZED = 13
USER_NOT_FOUND = 11
ROLE_NOT_FOUND = 31
USER_EXISTS = 51003
DUPLICATE_KEY = 11000
COMMAND_NOT_FOUND = 59
COMMAND_NOT_SUPPORTED = 115
MECHANISM_UNAVAILABLE = 334
NOT_IMPLEMENTED = 238
MAX_TIME_EXPIRED = 50
WRITE_CONCERN_FAILED = 64
BAD_VALUE = 2
FAILED_TO_PARSE = 9
UNKNOWN_FIELD = 40415
_UNSUPPORTED = frozenset({COMMAND_NOT_FOUND, COMMAND_NOT_SUPPORTED, NOT_IMPLEMENTED})
TYPE_MISMATCH = 14
_LIST_REFUSED = _UNSUPPORTED | {BAD_VALUE, FAILED_TO_PARSE, TYPE_MISMATCH}
"""Answers of a server that takes no list of users in usersInfo: ask for them one by one instead."""

_DNS_HINTS = (
    "name or service not known",
    "nodename nor servname",
    "temporary failure in name resolution",
    "no address associated",
    "getaddrinfo failed",
    "dns",
    "nxdomain",
    "srv record",
    "errno -2",
    "errno -3",
    "errno -5",
)
_TLS_HINTS = ("ssl", "tls", "certificate", "handshake", "wrong_version_number", "unexpected eof")
_UNREACHABLE_HINTS = (
    "connection refused",
    "no route to host",
    "network is unreachable",
    "host is unreachable",
    "connection reset",
    "connection closed",
    "errno 111",
)
_TIMEOUT_HINTS = ("timed out", "timeout")
_CONFIGURED_TIMEOUTS = re.compile(r"\s*\(configured timeouts:[^)]*\)")


def _plain(value: Any) -> Any:
    """BSON values as JSON-friendly Python (UUIDs and ObjectIds as strings), for records and audit rows."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Binary):
        try:
            return str(value.as_uuid())
        except ValueError:
            return value.hex()
    if isinstance(value, uuid.UUID | ObjectId):
        return str(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def _effective_users(operation: Mapping[str, Any]) -> set[tuple[str, str]]:
    """The (db, user) pairs a currentOp entry runs as."""
    return {
        (str(user.get("db")), str(user.get("user")))
        for user in operation.get("effectiveUsers") or []
        if isinstance(user, Mapping)
    }


def user_definition(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A usersInfo document without credentials, as plain JSON: what may be kept in a record."""
    return {k: _plain(v) for k, v in doc.items() if k not in ("credentials", "$clusterTime", "operationTime")}


def _network_kind(text: str) -> str:
    lowered = text.lower()
    if any(hint in lowered for hint in _DNS_HINTS):
        return "dns"
    if any(hint in lowered for hint in _TLS_HINTS):
        return "tls"
    if any(hint in lowered for hint in _UNREACHABLE_HINTS):
        return "unreachable"
    if any(hint in lowered for hint in _TIMEOUT_HINTS):
        return "timeout"
    return "unreachable"


_NETWORK_WORDS = {
    "dns": "the host name does not resolve (DNS)",
    "tls": "the TLS handshake failed (is TLS on at the server? is the CA certificate right?)",
    "unreachable": "the server is unreachable (nothing listens at that address, or the network refuses)",
    "timeout": "the server did not answer in time",
}


class _Combiner:
    """Runs concurrent calls of one kind as one server command (flat combining).

    A call queues its key; whoever gets the turn sends one command for every key queued by then, so the threads
    of a revocation batch that look up or cut users at the same moment share a `usersInfo` or a
    `killAllSessions` instead of sending one each. Alone, a call is one command with one key, as before.
    """

    def __init__(self, run_many: Callable[[list], dict]):
        self._run_many = run_many
        self._pending: list[list] = []
        self._lock = threading.Lock()  # guards _pending
        self._turn = threading.Lock()  # one command in flight

    def __call__(self, key):
        slot = [key, False, None, None]  # key, done, result, error
        with self._lock:
            self._pending.append(slot)
        with self._turn:
            if not slot[1]:
                with self._lock:
                    batch, self._pending = self._pending, []
                try:
                    results = self._run_many(list(dict.fromkeys(queued[0] for queued in batch)))
                    for queued in batch:
                        queued[2] = results[queued[0]]
                except ConnectorError as exc:
                    for queued in batch:
                        queued[3] = exc
                finally:
                    for queued in batch:
                        queued[1] = True
        if slot[3] is not None:
            exc = slot[3]  # a copy per caller: threads never raise (and annotate) one exception object together
            raise ConnectorError(exc.message, kind=exc.kind, code=exc.code)
        return slot[2]


class MongoDBConnector:
    """Manages database users on one MongoDB deployment through its admin account.

    Use as a context manager (or call `close()`): the `MongoClient` and any CA file written for it live
    until then. `timeout_ms` bounds server selection, connecting and each command.
    """

    def __init__(self, resource, *, timeout_ms: int = 5000):
        self.resource = resource
        self.timeout_ms = timeout_ms
        self._verifying = False
        self._client: MongoClient | None = None
        self._ca_path: str | None = None
        self._write_concern_supported = True
        self._lock = threading.Lock()  # one cached client even when threads of a batch ask at once
        self._probes: queue.LifoQueue[MongoClient] = queue.LifoQueue()
        self._probes_made = 0
        self._users_info = _Combiner(self._users_info_many)
        self._kill = _Combiner(self._kill_many)

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> MongoDBConnector:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MongoDBConnector resource={getattr(self.resource, 'name', '?')!r}>"

    def close(self) -> None:
        """Close the cached clients and remove the CA file written for them."""
        if self._client is not None:
            self._client.close()
            self._client = None
        while True:
            try:
                self._probes.get_nowait().close()
            except queue.Empty:
                break
        self._probes_made = 0
        if self._ca_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._ca_path)
            self._ca_path = None

    # -- connection ------------------------------------------------------------------------------
    @property
    def _name(self) -> str:
        return getattr(self.resource, "name", "") or "the resource"

    def _admin_password(self) -> str:
        secret = self.resource.admin_password
        return secret.reveal() if secret is not None and hasattr(secret, "reveal") else (secret or "")

    def _ca_file(self) -> str | None:
        pem = (self.resource.ca_certificate or "").strip()
        if not pem:
            return None
        if self._ca_path is None:
            # NamedTemporaryFile creates the file readable by this user only (0600).
            with tempfile.NamedTemporaryFile("w", prefix="pam-ca-", suffix=".pem", delete=False) as handle:
                handle.write(pem + "\n")
                self._ca_path = handle.name
        return self._ca_path

    def _client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "serverSelectionTimeoutMS": self.timeout_ms,
            "connectTimeoutMS": self.timeout_ms,
            "socketTimeoutMS": self.timeout_ms,
            "appname": "pam-connector",
            "tls": bool(self.resource.tls),
        }
        if self.resource.tls:
            if not self.resource.tls_verify:
                options["tlsAllowInvalidCertificates"] = True
            ca_file = self._ca_file()
            if ca_file:
                options["tlsCAFile"] = ca_file
        return options

    def _check_settings(self) -> None:
        """Refuse to send stored credentials to settings the portal does not allow or has not verified.

        The URI must pass the portal's one URI rule (`access.validators.validate_resource_uri`: known options
        only, SCRAM only); and unless this connector is verifying them right now, the connection settings must
        be those the resource was created with or last verified with (`Resource.connection_verified`).
        """
        from django.core.exceptions import ValidationError

        from access.validators import validate_resource_uri

        try:
            validate_resource_uri(self.resource.uri)
        except ValidationError as exc:
            raise ConnectorError(f"{self._name}: the URI is refused: {' '.join(exc.messages)}", kind="config") from None
        if not self._verifying and not getattr(self.resource, "connection_verified", False):
            raise ConnectorError(
                f"{self._name}: its connection settings (hosts, URI options or TLS) changed since they were last "
                "verified, so stored credentials are not sent to them: verify the connection first (the admin's "
                "Verify connection action, or the API's verify_connection)",
                kind="config",
            )

    def _new_client(self, *, username: str | None, password: str, auth_source: str | None, **extra) -> MongoClient:
        self._check_settings()
        credentials = {"username": username, "password": password, "authSource": auth_source} if username else {}
        try:
            return MongoClient(host=self.resource.uri, **credentials, **self._client_options(), **extra)
        except PyMongoError as exc:
            raise self._translate(exc, f"Could not connect to {self._name}", secrets=[password]) from None

    @property
    def client(self) -> MongoClient:
        """The admin account's client, made on first use and cached (each use checks the settings still hold)."""
        self._check_settings()
        if self._client is None:
            if not self.resource.admin_username:
                raise ConnectorError(f"{self._name} has no admin account configured", kind="config")
            with self._lock:
                if self._client is None:
                    self._client = self._new_client(
                        username=self.resource.admin_username,
                        password=self._admin_password(),
                        auth_source=self.resource.auth_database or "admin",
                        maxPoolSize=16,  # the sweeper's threads share it
                    )
        return self._client

    # -- error translation -------------------------------------------------------------------------
    def _scrub(self, text: str, secrets: Iterable[str] = ()) -> str:
        for secret in [self._admin_password(), *secrets]:
            if secret and len(secret) >= 4:
                text = text.replace(secret, "********")
        return text

    def _network_detail(self, exc: PyMongoError, client: MongoClient | None = None) -> str:
        details: list[str] = []
        client = client or self._client
        if client is not None:
            try:
                for description in client.topology_description.server_descriptions().values():
                    if description.error is not None:
                        details.append(str(description.error))
            except Exception:  # the description is only a better message; never fail on it
                details = []
        text = "; ".join(details) or str(exc).split(", Timeout:")[0]
        return _CONFIGURED_TIMEOUTS.sub("", text)

    def _translate(
        self, exc: PyMongoError, doing: str, *, secrets: Iterable[str] = (), client: MongoClient | None = None
    ) -> ConnectorError:
        """One ConnectorError for a pymongo exception, with a kind and a message that names the cause.

        `client` is the one that failed, when not the admin's (its topology says what went wrong on the network).
        """
        secrets = list(secrets)
        admin = self.resource.admin_username
        if isinstance(exc, OperationFailure) and not isinstance(exc, ExecutionTimeout | WTimeoutError):
            code = exc.code
            errmsg = (exc.details or {}).get("errmsg") or str(exc).split(", full error:")[0]
            errmsg = self._scrub(str(errmsg), secrets)
            if code == AUTHENTICATION_FAILED:
                message = (
                    f"{doing}: the server refused the login of {admin!r} (wrong username or password, "
                    f"or wrong auth database {self.resource.auth_database!r})"
                )
                return ConnectorError(message, kind="auth", code=code)
            if code == UNAUTHORIZED:
                message = f"{doing}: the admin account {admin!r} lacks the privilege for this ({errmsg})"
                return ConnectorError(message, kind="permission", code=code)
            if code in (USER_NOT_FOUND, ROLE_NOT_FOUND):
                return ConnectorError(f"{doing}: {errmsg}", kind="not_found", code=code)
            if code in (USER_EXISTS, DUPLICATE_KEY):
                return ConnectorError(f"{doing}: {errmsg}", kind="conflict", code=code)
            if code in (MAX_TIME_EXPIRED, WRITE_CONCERN_FAILED):
                return ConnectorError(
                    f"{doing}: the server did not finish in time ({errmsg})", kind="timeout", code=code
                )
            if code in _UNSUPPORTED:
                return ConnectorError(f"{doing}: the server does not support this ({errmsg})", kind="server", code=code)
            return ConnectorError(f"{doing}: the server refused ({errmsg}, code {code})", kind="server", code=code)
        if isinstance(exc, ExecutionTimeout | WTimeoutError):
            return ConnectorError(f"{doing}: the server did not finish in time", kind="timeout", code=exc.code)
        if isinstance(exc, InvalidURI):
            return ConnectorError(f"{doing}: the URI is invalid ({self._scrub(str(exc), secrets)})", kind="config")
        if isinstance(exc, ConfigurationError):
            text = self._scrub(str(exc), secrets)
            cause = exc.__cause__
            is_dns = (cause is not None and type(cause).__module__.startswith("dns")) or "dns" in text.lower()
            if is_dns:
                return ConnectorError(f"{doing}: the host name does not resolve (DNS): {text}", kind="dns")
            return ConnectorError(f"{doing}: the connection settings are invalid ({text})", kind="config")
        if isinstance(exc, NetworkTimeout):
            detail = self._scrub(self._network_detail(exc, client), secrets)
            kind = "tls" if "ssl" in detail.lower() else "timeout"
            return ConnectorError(f"{doing}: {_NETWORK_WORDS[kind]}: {detail}", kind=kind)
        if isinstance(exc, ConnectionFailure):
            detail = self._scrub(self._network_detail(exc, client), secrets)
            kind = _network_kind(detail)
            return ConnectorError(f"{doing}: {_NETWORK_WORDS[kind]}: {detail}", kind=kind)
        text = self._scrub(str(exc), secrets)
        return ConnectorError(f"{doing}: {type(exc).__name__}: {text}", kind="server")

    # -- commands --------------------------------------------------------------------------------
    def _command(self, db: str, command: SON, doing: str, *, secrets: Iterable[str] = ()) -> dict:
        try:
            return self.client[db].command(command)
        except PyMongoError as exc:
            raise self._translate(exc, doing, secrets=secrets) from None

    def _write(self, db: str, command: SON, doing: str, *, secrets: Iterable[str] = ()) -> dict:
        """Run a user-management write with majority write concern (dropped once if the server cannot parse it)."""
        if self._write_concern_supported:
            with_concern = SON(command)
            with_concern["writeConcern"] = {**MAJORITY, "wtimeout": self.timeout_ms}
            try:
                return self.client[db].command(with_concern)
            except OperationFailure as exc:
                errmsg = str((exc.details or {}).get("errmsg", ""))
                if exc.code in (BAD_VALUE, FAILED_TO_PARSE, UNKNOWN_FIELD, NOT_IMPLEMENTED) and (
                    "writeConcern" in errmsg
                ):
                    log.warning("%s does not accept writeConcern on user commands; sending without it", self._name)
                    self._write_concern_supported = False
                else:
                    raise self._translate(exc, doing, secrets=secrets) from None
            except PyMongoError as exc:
                raise self._translate(exc, doing, secrets=secrets) from None
        return self._command(db, command, doing, secrets=secrets)

    # -- checks ----------------------------------------------------------------------------------
    def verify_connection(self) -> dict[str, Any]:
        """Log in with the admin account and check it may manage users; say in words what failed.

        Returns a summary without secrets: server version and product, topology, the admin user and its
        roles. Raises ConnectorError with kind dns, tls, unreachable, timeout, auth, permission or config.
        """
        # This call is the verification: the one use of stored credentials against settings not yet verified.
        self._verifying = True
        try:
            return self._verify_connection()
        finally:
            self._verifying = False

    def _verify_connection(self) -> dict[str, Any]:
        doing = f"Could not connect to {self._name}"
        self._command("admin", SON([("ping", 1)]), doing)
        build_info = self._command("admin", SON([("buildInfo", 1)]), doing)
        status = self._command("admin", SON([("connectionStatus", 1)]), doing)
        try:
            self._check_user_admin()
        except OperationFailure as exc:
            if exc.code == UNAUTHORIZED:
                message = (
                    f"{self._name}: the admin account {self.resource.admin_username!r} logged in but may not "
                    "manage users (usersInfo was refused): give it userAdminAnyDatabase or root"
                )
                raise ConnectorError(message, kind="permission", code=exc.code) from None
            raise self._translate(exc, doing) from None
        except PyMongoError as exc:
            raise self._translate(exc, doing) from None
        auth_info = status.get("authInfo", {})
        return {
            "server": "FerretDB" if "ferretdbVersion" in build_info else "MongoDB",
            "version": build_info.get("version", ""),
            "topology": str(self.client.topology_description.topology_type_name),
            "user": self.resource.admin_username,
            "roles": _plain(auth_info.get("authenticatedUserRoles", [])),
        }

    def _check_user_admin(self) -> None:
        """usersInfo over every database, which needs userAdminAnyDatabase (filtered to nothing where possible)."""
        filtered = SON([("usersInfo", {"forAllDBs": True}), ("filter", {"user": "pam-permission-check"})])
        try:
            self.client.admin.command(filtered)
        except OperationFailure as exc:
            if exc.code not in _UNSUPPORTED:
                raise
            self.client.admin.command(SON([("usersInfo", {"forAllDBs": True})]))

    def can_login(self, *, db: str, username: str, password: str) -> bool:
        """Whether `username`@`db` can log in with `password` now: a full SCRAM login on a connection of its own.

        False when the server refuses the login; ConnectorError when the server cannot be reached. The login runs
        on a credential-less client kept for such checks (one connection, so the SCRAM conversation stays on it):
        a refused login leaves its connection as it was, and it serves the next check; a login that succeeds
        leaves it logged in as `username`, so that client is closed rather than reused. No client, topology or
        monitor is made per check.
        """
        doing = f"Could not test the login of {username!r} on {self._name}"
        probe = self._probe_take()
        reusable = False
        try:
            try:  # the mechanisms the server holds for this user, as a driver asks before it logs in
                hello = probe.admin.command(SON([("hello", 1), ("saslSupportedMechs", f"{db}.{username}")]))
            except PyMongoError as exc:
                raise self._translate(exc, doing, secrets=[password], client=probe) from None
            held = hello.get("saslSupportedMechs") or []
            # A driver's choice: SCRAM-SHA-256 unless the user holds only SCRAM-SHA-1 credentials.
            mechanisms = ("SCRAM-SHA-1",) if held and "SCRAM-SHA-256" not in held else ("SCRAM-SHA-256", "SCRAM-SHA-1")
            for mechanism in mechanisms:
                try:
                    scram.authenticate(
                        lambda command: probe[db].command(SON((k, v) for k, v in command.items() if k != "$db")),
                        mechanism=mechanism,
                        username=username,
                        password=password,
                        source=db,
                    )
                except OperationFailure as exc:
                    if exc.code == AUTHENTICATION_FAILED:
                        reusable = True
                        return False
                    if exc.code == MECHANISM_UNAVAILABLE and mechanism == "SCRAM-SHA-256":
                        continue  # SCRAM-SHA-256 is not enabled on this server
                    raise self._translate(exc, doing, secrets=[password]) from None
                except scram.ScramError as exc:  # the server's answers do not add up (nonce, signature)
                    raise ConnectorError(
                        f"{doing}: the server's SCRAM answer is invalid ({exc})", kind="server"
                    ) from None
                except PyMongoError as exc:
                    raise self._translate(exc, doing, secrets=[password], client=probe) from None
                return True
            raise ConnectorError(f"{doing}: the server offers no SCRAM mechanism for it", kind="server")
        finally:
            self._probe_give_back(probe, reusable=reusable)

    def _probe_take(self) -> MongoClient:
        """A credential-less client with one connection for login checks: an idle one, or a new one under the cap."""
        self._check_settings()  # the leased password goes only where the admin's would
        try:
            return self._probes.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            make = self._probes_made < LOGIN_PROBES
            if make:
                self._probes_made += 1
        if not make:
            try:  # a queue, not a failure: under a burst of revocations the checks take turns
                return self._probes.get(timeout=PROBE_WAIT_SECONDS)
            except queue.Empty:
                raise ConnectorError(f"{self._name}: every login check client stayed busy", kind="timeout") from None
        try:
            # One connection, no retries: saslStart and saslContinue must reach the server on the same connection.
            return self._new_client(
                username=None, password="", auth_source=None, maxPoolSize=1, retryReads=False, retryWrites=False
            )
        except BaseException:
            with self._lock:
                self._probes_made -= 1
            raise

    def _probe_give_back(self, probe: MongoClient, *, reusable: bool) -> None:
        if reusable:
            self._probes.put(probe)
            return
        with self._lock:
            self._probes_made -= 1
        probe.close()

    # -- users -----------------------------------------------------------------------------------
    def get_user(self, *, db: str, username: str) -> dict | None:
        """The user's definition (roles, mechanisms, customData, authenticationRestrictions), or None.

        Concurrent calls (the threads of a revocation batch) share one `usersInfo` for all their users.
        """
        return self._users_info((db, username))

    def _users_info_many(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict | None]:
        if len(keys) > 1:
            command = SON(
                [
                    ("usersInfo", [{"user": username, "db": db} for db, username in keys]),
                    ("showAuthenticationRestrictions", True),
                ]
            )
            try:
                reply = self._command("admin", command, f"Could not read {len(keys)} users on {self._name}")
            except ConnectorError as error:
                if error.code not in _LIST_REFUSED:
                    raise
            else:  # the server's answer names each user it found
                found = {(doc.get("db"), doc.get("user")): doc for doc in reply.get("users") or []}
                return {key: user_definition(found[key]) if key in found else None for key in keys}
        results = {}
        for db, username in keys:  # one key, or a server that takes no list
            reply = self._command(
                db,
                SON([("usersInfo", {"user": username, "db": db}), ("showAuthenticationRestrictions", True)]),
                f"Could not read user {username!r} on {self._name}",
            )
            users = reply.get("users") or []
            results[(db, username)] = user_definition(users[0]) if users else None
        return results

    def list_users(self, *, db: str | None = None) -> list[dict]:
        """Users of one database, or of every database when `db` is None (definitions without credentials)."""
        if db is None:
            command, on = SON([("usersInfo", {"forAllDBs": True})]), "admin"
        else:
            command, on = SON([("usersInfo", 1)]), db
        reply = self._command(on, command, f"Could not list users on {self._name}")
        return [user_definition(doc) for doc in reply.get("users") or []]

    def create_user(
        self,
        *,
        db: str,
        username: str,
        password: str,
        roles: list,
        custom_data: dict | None = None,
        mechanisms: list[str] | None = None,
    ) -> None:
        """Create `username` in `db` with `roles` (and a customData tag, and a mechanism list, when given).

        A server without customData support (FerretDB) gets the user without its tag, with a warning logged.
        """
        doing = f"Could not create user {username!r} in {db!r} on {self._name}"
        command = SON([("createUser", username), ("pwd", password), ("roles", list(roles))])
        if mechanisms:
            command["mechanisms"] = list(mechanisms)
        if custom_data is not None:
            command["customData"] = custom_data
        try:
            self._write(db, command, doing, secrets=[password])
        except ConnectorError as error:
            if not (custom_data is not None and error.code == NOT_IMPLEMENTED and "customData" in error.message):
                raise
            log.warning("%s does not store customData; user %s@%s is created without its tag", self._name, username, db)
            del command["customData"]
            self._write(db, command, doing, secrets=[password])

    def drop_user(self, *, db: str, username: str) -> bool:
        """Drop `username` from `db`; False when it was already gone (which counts as done)."""
        try:
            self._write(db, SON([("dropUser", username)]), f"Could not drop user {username!r} on {self._name}")
        except ConnectorError as error:
            if error.code == USER_NOT_FOUND:
                return False
            raise
        return True

    def change_password(self, *, db: str, username: str, password: str) -> None:
        """Set a new password for `username` in `db` (live connections stay open: see kill_user_connections)."""
        doing = f"Could not change the password of {username!r} on {self._name}"
        self._write(db, SON([("updateUser", username), ("pwd", password)]), doing, secrets=[password])

    def grant_roles(self, *, db: str, username: str, roles: list) -> None:
        """Add `roles` ("read" or {"role", "db"}) to `username` in `db`."""
        doing = f"Could not grant roles to {username!r} on {self._name}"
        self._write(db, SON([("grantRolesToUser", username), ("roles", list(roles))]), doing)

    def revoke_roles(self, *, db: str, username: str, roles: list) -> None:
        """Remove `roles` from `username` in `db`."""
        doing = f"Could not revoke roles from {username!r} on {self._name}"
        self._write(db, SON([("revokeRolesFromUser", username), ("roles", list(roles))]), doing)

    def lock_user(self, *, db: str, username: str) -> list[dict]:
        """Refuse every new login of `username`; return its previous authenticationRestrictions for unlock_user.

        Live connections stay open: end them with kill_user_connections.
        """
        doing = f"Could not lock user {username!r} on {self._name}"
        user = self.get_user(db=db, username=username)
        if user is None:
            raise ConnectorError(f"{doing}: user {username!r} does not exist in {db!r}", kind="not_found")
        previous = user.get("authenticationRestrictions") or []
        self._set_restrictions(db=db, username=username, restrictions=LOCK_RESTRICTIONS, doing=doing)
        return previous

    def unlock_user(self, *, db: str, username: str, restrictions: list[dict] | None = None) -> None:
        """Put back `restrictions` (the value lock_user returned; none means no restriction)."""
        doing = f"Could not unlock user {username!r} on {self._name}"
        self._set_restrictions(db=db, username=username, restrictions=list(restrictions or []), doing=doing)

    def _set_restrictions(self, *, db: str, username: str, restrictions: list[dict], doing: str) -> None:
        command = SON([("updateUser", username), ("authenticationRestrictions", restrictions)])
        try:
            self._write(db, command, doing)
        except ConnectorError as error:
            if error.code == BAD_VALUE and "at least one field" in error.message:
                raise ConnectorError(
                    f"{doing}: the server does not support authenticationRestrictions", kind="server", code=error.code
                ) from None
            raise
        user = self.get_user(db=db, username=username)
        if user is None:
            raise ConnectorError(f"{doing}: user {username!r} does not exist in {db!r}", kind="not_found")
        if (user.get("authenticationRestrictions") or []) != restrictions:
            raise ConnectorError(f"{doing}: the server did not keep the authenticationRestrictions", kind="server")

    # -- connections -----------------------------------------------------------------------------
    def _users_operations(self, keys: list[tuple[str, str]], doing: str) -> list[dict] | None:
        """The connections and operations of these users seen by currentOp (idle ones too), or None when refused."""
        if len(keys) == 1:
            mine = {"user": keys[0][1], "db": keys[0][0]}
        else:
            mine = {"$or": [{"user": username, "db": db} for db, username in keys]}
        command = SON([("currentOp", 1), ("$all", True), ("$ownOps", False), ("effectiveUsers", {"$elemMatch": mine})])
        try:
            operations = list(self.client.admin.command(command).get("inprog") or [])
        except OperationFailure as exc:
            if exc.code == UNAUTHORIZED or exc.code in _UNSUPPORTED:
                return None
            raise self._translate(exc, doing) from None
        except PyMongoError as exc:
            raise self._translate(exc, doing) from None
        wanted = set(keys)  # whatever the server's filter did, count and kill only these users' operations
        return [op for op in operations if wanted & _effective_users(op)]

    def kill_user_connections(self, *, db: str, username: str) -> int:
        """End every live connection and operation of `username`@`db`; return how many currentOp showed.

        Uses killAllSessions for the user; where the server refuses it, kills each of the user's
        operations found by currentOp with killOp. Concurrent calls (the threads of a revocation batch)
        share one currentOp and one killAllSessions for all their users.
        """
        return self._kill((db, username))

    def _kill_many(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        if len(keys) == 1:
            doing = f"Could not end the connections of {keys[0][1]!r} on {self._name}"
        else:
            doing = f"Could not end the connections of {len(keys)} users on {self._name}"
        operations = self._users_operations(keys, doing)
        shown = {key: sum(1 for op in operations or [] if key in _effective_users(op)) for key in keys}
        try:
            patterns = [{"user": username, "db": db} for db, username in keys]
            self.client.admin.command(SON([("killAllSessions", patterns)]))
            return shown
        except OperationFailure as exc:
            refused = exc.code == UNAUTHORIZED or exc.code in _UNSUPPORTED
            if not refused:
                raise self._translate(exc, doing) from None
            if operations is None:
                raise ConnectorError(
                    f"{doing}: the admin account may run neither killAllSessions nor currentOp", kind="permission"
                ) from None
        except PyMongoError as exc:
            raise self._translate(exc, doing) from None
        killed = dict.fromkeys(keys, 0)
        for operation in operations:
            opid = operation.get("opid")
            if opid is None:
                continue
            self._command("admin", SON([("killOp", 1), ("op", opid)]), doing)
            for key in _effective_users(operation) & set(keys):
                killed[key] += 1
        return killed

    # -- roles (scoped access) -------------------------------------------------------------------
    def create_role(self, *, db: str, name: str, privileges: list[dict], roles: list | None = None) -> None:
        """Create user-defined role `name` in `db` with `privileges` ([{resource: {db, collection}, actions}])."""
        doing = f"Could not create role {name!r} in {db!r} on {self._name}"
        command = SON([("createRole", name), ("privileges", list(privileges)), ("roles", list(roles or []))])
        self._write(db, command, doing)

    def drop_role(self, *, db: str, name: str) -> bool:
        """Drop role `name` from `db`; False when it was already gone (which counts as done)."""
        try:
            self._write(db, SON([("dropRole", name)]), f"Could not drop role {name!r} on {self._name}")
        except ConnectorError as error:
            if error.code == ROLE_NOT_FOUND:
                return False
            raise
        return True

    def get_role(self, *, db: str, name: str) -> dict | None:
        """The role's definition with its privileges (rolesInfo), or None when it does not exist."""
        reply = self._command(
            db,
            SON([("rolesInfo", {"role": name, "db": db}), ("showPrivileges", True)]),
            f"Could not read role {name!r} on {self._name}",
        )
        roles = reply.get("roles") or []
        return _plain(roles[0]) if roles else None

    def list_roles(self, *, db: str) -> list[dict]:
        """The user-defined roles of `db` (names and databases, without privileges)."""
        reply = self._command(db, SON([("rolesInfo", 1)]), f"Could not list the roles of {db!r} on {self._name}")
        return [_plain(role) for role in reply.get("roles") or []]

    # -- what is on the server -------------------------------------------------------------------
    def list_database_names(self) -> list[str]:
        """The names of the deployment's databases (listDatabases, names only), sorted."""
        reply = self._command(
            "admin",
            SON([("listDatabases", 1), ("nameOnly", True)]),
            f"Could not list the databases of {self._name}",
        )
        return sorted(str(doc.get("name", "")) for doc in reply.get("databases") or [] if doc.get("name"))

    def list_collection_names(self, *, db: str) -> list[str]:
        """The names of the collections and views of `db` (listCollections, names only), sorted."""
        doing = f"Could not list the collections of {db!r} on {self._name}"
        try:
            names = self.client[db].list_collection_names()
        except PyMongoError as exc:
            raise self._translate(exc, doing) from None
        return sorted(names)
