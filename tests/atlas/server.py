"""A local stand-in for the Atlas Administration API v2: database users and cluster change status, over real HTTP.

It speaks the protocol the connector must cope with, not a convenient subset of it:
- RFC 7616 digest authentication: every request without valid credentials gets a 401 with
  `WWW-Authenticate: Digest realm="MMS Public API", nonce=..., qop="auth", algorithm=MD5` (or SHA-256);
  the response hash is recomputed from the stored private key and compared in constant time; nonces age out
  and are then refused with `stale=true`; nonce counts must grow.
- Versioned media types: an Accept header other than `application/vnd.atlas.<date>+json` for a known
  version of the resource gets 406 INVALID_VERSION_DATE, as Atlas answers.
- Atlas's JSON shapes and error documents ({"detail", "error", "errorCode", "parameters", "reason"}):
  404 USERNAME_NOT_FOUND, 409 USER_ALREADY_EXISTS, 400 for a deleteAfterDate more than a week ahead,
  429 RATE_LIMITED with Retry-After, 500 UNEXPECTED_ERROR.
- Eventual consistency: every user change makes each affected cluster report changeStatus PENDING for
  `pending_polls` status reads before APPLIED; a user is not "usable" until then.
- deleteAfterDate: users past it disappear, as Atlas deletes them itself.
- Custom database roles (`customDBRoles/roles`): list, create, read, update, delete, with Atlas's action names
  (an unknown one is 400 INVALID_CUSTOM_ROLE_ACTION), 409 for a name taken, 409 for deleting a role a user
  holds, and the project's limit (`custom_role_limit`, 100 by default: 400 CUSTOM_ROLE_LIMIT_EXCEEDED beyond).
  A role change makes every cluster PENDING like a user change; a user naming a role that is neither built in
  nor a custom role of the project is refused (400 INVALID_ROLE).
- Project limits (`limits/{limitName}`, GET): `atlas.project.security.databaseAccess.customRoles` and
  `...databaseAccess.users` as Atlas documents them ({name, value, currentUsage, defaultLimit, maximumLimit});
  another name is 400 INVALID_ENUM_VALUE. `project_limits = False` makes the endpoint absent (404), as on an
  Atlas-compatible API without it.
- Processes and their databases (`processes`, `processes/{processId}/databases`, GET, paginated by `pageNum` and
  `itemsPerPage` (1..500, else 400)): each cluster is a three-member replica set whose primary is not always the
  first member; each member lists the cluster's databases (`admin`, `config`, `local` and those seeded with
  `set_databases(cluster, names)`) as `{databaseName, links}`. An unknown process is 404.

Fault knobs: `fail_next(method, path_fragment, status=..., times=..., retry_after=...)`. Everything it
received is in `requests_seen` (method, path, status) for assertions. Run it with `AtlasApiServer().start()`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REALM = "MMS Public API"
VERSIONS = {
    "databaseUsers": {"2023-01-01"},
    "clusterStatus": {"2023-01-01"},
    "clusters": {"2023-02-01", "2024-08-05"},
    "customDBRoles": {"2023-01-01"},
    "limits": {"2023-01-01"},
    "processes": {"2023-01-01"},
}
SERVER_DATABASES = ("admin", "config", "local")
CUSTOM_ROLES_LIMIT = "atlas.project.security.databaseAccess.customRoles"
USERS_LIMIT = "atlas.project.security.databaseAccess.users"
LIMIT_BOUNDS = {CUSTOM_ROLES_LIMIT: (100, 1400), USERS_LIMIT: (100, 900)}
"""Atlas's documented default and the most an API override may set, per limit name."""
BUILTIN_ROLES = frozenset(
    {
        "atlasAdmin",
        "backup",
        "clusterMonitor",
        "dbAdmin",
        "dbAdminAnyDatabase",
        "enableSharding",
        "read",
        "readAnyDatabase",
        "readWrite",
        "readWriteAnyDatabase",
    }
)


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


CUSTOM_ROLE_ACTIONS = _names(
    """
    FIND INSERT REMOVE UPDATE BYPASS_DOCUMENT_VALIDATION USE_UUID KILL_OP CREATE_COLLECTION CREATE_INDEX
    DROP_COLLECTION ENABLE_PROFILER CHANGE_STREAM COLL_MOD COMPACT CONVERT_TO_CAPPED DROP_DATABASE DROP_INDEX
    RE_INDEX RENAME_COLLECTION_SAME_DB LIST_SESSIONS KILL_ANY_SESSION COLL_STATS CONN_POOL_STATS DB_HASH DB_STATS
    GET_CMD_LINE_OPTS GET_LOG GET_PARAMETER GET_SHARD_MAP HOST_INFO IN_PROG LIST_DATABASES LIST_COLLECTIONS
    LIST_INDEXES LIST_SHARDS NETSTAT REPL_SET_GET_CONFIG REPL_SET_GET_STATUS SERVER_STATUS VALIDATE SHARDING_STATE
    TOP KILL_CURSORS PLAN_CACHE_READ PLAN_CACHE_WRITE PLAN_CACHE_INDEX_FILTER STORAGE_DETAILS FLUSH_ROUTER_CONFIG
    LIST_SEARCH_INDEXES CREATE_SEARCH_INDEXES DROP_SEARCH_INDEX UPDATE_SEARCH_INDEX SQL_GET_SCHEMA SQL_SET_SCHEMA
    """
)
_ROLE_NAME = re.compile(r"^[\w-]{1,64}$")
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_USERS = re.compile(r"^/api/atlas/v2/groups/(?P<group>[^/]+)/databaseUsers/?$")
_USER = re.compile(r"^/api/atlas/v2/groups/(?P<group>[^/]+)/databaseUsers/(?P<db>[^/]+)/(?P<user>[^/]+)/?$")
_CLUSTERS = re.compile(r"^/api/atlas/v2/groups/(?P<group>[^/]+)/clusters/?$")
_STATUS = re.compile(r"^/api/atlas/v2/groups/(?P<group>[^/]+)/clusters/(?P<cluster>[^/]+)/status/?$")
_ROLES = re.compile(r"^/api/atlas/v2/groups/(?P<group>[^/]+)/customDBRoles/roles/?$")
_ROLE = re.compile(r"^/api/atlas/v2/groups/(?P<group>[^/]+)/customDBRoles/roles/(?P<role>[^/]+)/?$")
_PROCESSES = re.compile(r"^/api/atlas/v2/groups/(?P<group>[^/]+)/processes/?$")
_PROCESS_DATABASES = re.compile(r"^/api/atlas/v2/groups/(?P<group>[^/]+)/processes/(?P<process>[^/]+)/databases/?$")
_LIMIT = re.compile(r"^/api/atlas/v2/groups/(?P<group>[^/]+)/limits/(?P<limit>[^/]+)/?$")
_AUTH_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


@dataclass
class Fault:
    """Answer the next `times` requests matching `method` and `path_fragment` with `status` instead."""

    method: str
    path_fragment: str
    status: int
    times: int = 1
    retry_after: str | None = None
    error_code: str = ""
    carry_out: bool = False
    """Do the request, then answer with the error anyway (a reply lost on the way back)."""
    delay: float = 0.0
    """Wait this long before answering (with status 0: then answer normally), to exercise client timeouts."""


@dataclass
class AtlasState:
    """The project as the fake Atlas holds it."""

    group_id: str
    public_key: str
    private_key: str
    clusters: list[str] = field(default_factory=lambda: ["Cluster0", "Cluster1"])
    pending_polls: int = 2
    users: dict[tuple[str, str], dict] = field(default_factory=dict)
    custom_roles: dict[str, dict] = field(default_factory=dict)
    custom_role_limit: int = 100
    project_limits: bool = True
    """False: no `limits/{limitName}` endpoint (404), as an Atlas-compatible API without project limits."""
    databases: dict[str, list[str]] = field(default_factory=dict)
    """Per cluster, the databases it holds besides the server's own (see `set_databases`)."""
    pending: dict[str, int] = field(default_factory=dict)
    nonces: dict[str, tuple[float, int]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests_seen: list[tuple[str, str, int]] = field(default_factory=list)
    unauthorized: int = 0
    authorization_headers: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class AtlasApiServer:
    """A threaded HTTP server on 127.0.0.1 speaking the endpoints above for one project."""

    def __init__(
        self,
        *,
        group_id: str | None = None,
        public_key: str = "abcdefgh",
        private_key: str | None = None,
        algorithm: str = "MD5",
        nonce_ttl: float = 300.0,
        pending_polls: int = 2,
        clusters: list[str] | None = None,
    ):
        self.state = AtlasState(
            group_id=group_id or secrets.token_hex(12),
            public_key=public_key,
            private_key=private_key or f"{secrets.token_hex(4)}-{secrets.token_hex(2)}-{secrets.token_hex(6)}",
            pending_polls=pending_polls,
            clusters=list(clusters) if clusters is not None else ["Cluster0", "Cluster1"],
        )
        self.algorithm = algorithm
        self.nonce_ttl = nonce_ttl
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> AtlasApiServer:
        server = self

        class Handler(_Handler):
            atlas = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="atlas-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- knobs and views for tests ------------------------------------------------------------------------------
    def fail_next(
        self,
        method: str,
        path_fragment: str,
        *,
        status: int,
        times: int = 1,
        retry_after: str | None = None,
        error_code: str = "",
        carry_out: bool = False,
        delay: float = 0.0,
    ) -> None:
        """Answer the next `times` matching requests with `status` (0: answer normally, after `delay` seconds)."""
        with self.state.lock:
            self.state.faults.append(
                Fault(method.upper(), path_fragment, status, times, retry_after, error_code, carry_out, delay)
            )

    def expire_nonces(self) -> None:
        """Make every nonce handed out so far stale (as if the server restarted or time passed)."""
        with self.state.lock:
            self.state.nonces = {n: (float("-inf"), count) for n, (_, count) in self.state.nonces.items()}

    def user(self, username: str, db: str = "admin") -> dict | None:
        with self.state.lock:
            self._sweep_expired()
            found = self.state.users.get((db, username))
            return dict(found) if found else None

    def add_user(self, doc: dict) -> None:
        """Put a user in the project directly (as if created by hand in the Atlas UI)."""
        with self.state.lock:
            self.state.users[(doc.get("databaseName", "admin"), doc["username"])] = {"databaseName": "admin", **doc}

    def remove_user(self, username: str, db: str = "admin") -> None:
        """Delete a user behind the portal's back (as Atlas does at deleteAfterDate, or an operator by hand)."""
        with self.state.lock:
            self.state.users.pop((db, username), None)

    def custom_role(self, name: str) -> dict | None:
        with self.state.lock:
            found = self.state.custom_roles.get(name)
            return json.loads(json.dumps(found)) if found else None

    def add_custom_role(self, doc: dict) -> None:
        """Put a custom role in the project directly (as an Atlas administrator would in the UI)."""
        with self.state.lock:
            self.state.custom_roles[doc["roleName"]] = {"actions": [], "inheritedRoles": [], **doc}

    def set_databases(self, cluster: str, names: list[str]) -> None:
        """Make `cluster` hold these databases (besides admin, config and local), as its processes list them."""
        with self.state.lock:
            self.state.databases[cluster] = list(names)

    def processes(self) -> list[dict]:
        """The project's processes as Atlas describes them: three mongod per cluster, one of them the primary."""
        return [doc for _, doc in self._process_table()]

    def _process_table(self) -> list[tuple[str, dict]]:
        """(cluster name, process document) for every process, sorted by process id."""
        with self.state.lock:
            clusters = list(self.state.clusters)
        docs = []
        for index, cluster in enumerate(clusters):
            slug = re.sub(r"[^a-z0-9]", "", cluster.lower()) or "cluster"
            replica_set = f"atlas-{hashlib.sha256(cluster.encode()).hexdigest()[:6]}-shard-0"
            for member in range(3):
                alias = f"{slug}-shard-00-{member:02d}.abcde.mongodb.net"
                docs.append(
                    (
                        cluster,
                        {
                            "created": "2026-01-01T00:00:00Z",
                            "groupId": self.state.group_id,
                            "hostname": f"atlas-{slug}-shard-00-{member:02d}.abcde.mongodb.net",
                            "id": f"{alias}:27017",
                            "lastPing": "2026-01-01T00:00:00Z",
                            "links": [],
                            "port": 27017,
                            "replicaSetName": replica_set,
                            "typeName": "REPLICA_PRIMARY" if member == index % 3 else "REPLICA_SECONDARY",
                            "userAlias": alias,
                            "version": "8.0.4",
                        },
                    )
                )
        return sorted(docs, key=lambda row: row[1]["id"])

    def is_applied(self) -> bool:
        with self.state.lock:
            return not any(self.state.pending.values())

    def count(self, method: str, fragment: str, status: int | None = None) -> int:
        with self.state.lock:
            return sum(
                1
                for m, p, s in self.state.requests_seen
                if m == method and fragment in p and (status is None or s == status)
            )

    # -- internals (called with the lock held) -------------------------------------------------------------
    def _sweep_expired(self) -> None:
        now = datetime.now(UTC)
        for key, doc in list(self.state.users.items()):
            when = doc.get("deleteAfterDate")
            if when and _parse_time(when) <= now:
                del self.state.users[key]
                self._touch(doc.get("scopes"))

    def _touch(self, scopes: list | None) -> None:
        targets = [s["name"] for s in scopes or [] if s.get("type") == "CLUSTER"] or self.state.clusters
        for name in targets:
            if name in self.state.clusters:
                self.state.pending[name] = self.state.pending_polls


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _error(status: int, code: str, detail: str, reason: str, parameters: list | None = None) -> dict:
    return {"detail": detail, "error": status, "errorCode": code, "parameters": parameters or [], "reason": reason}


class _Handler(BaseHTTPRequestHandler):
    atlas: AtlasApiServer
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # one write per reply (headers and body), flushed by handle_one_request
    disable_nagle_algorithm = True
    server_version = "AtlasApiTestServer/1.0"

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    # -- plumbing --------------------------------------------------------------------------------------------
    def _send(self, status: int, body: dict | None, *, headers: dict | None = None, version: str | None = None):
        lost = getattr(self, "_lost_reply", None)
        if lost is not None:  # the work is done; the client gets the injected error instead
            self._lost_reply = None
            self._send_fault(lost)
            return
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        content_type = f"application/vnd.atlas.{version}+json" if version and status < 400 else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)
        with self.atlas.state.lock:
            self.atlas.state.requests_seen.append((self.command, urlsplit(self.path).path, status))

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _challenge(self, *, stale: bool = False):
        state = self.atlas.state
        nonce = secrets.token_urlsafe(24)
        with state.lock:
            state.nonces[nonce] = (time.monotonic(), 0)
            state.unauthorized += 1
        header = (
            f'Digest realm="{REALM}", domain="", nonce="{nonce}", algorithm={self.atlas.algorithm}, '
            f'qop="auth", stale={"true" if stale else "false"}'
        )
        self._send(
            401,
            _error(401, "", "You are not authorized for this resource.", "Unauthorized"),
            headers={"WWW-Authenticate": header},
        )

    def _authenticated(self) -> bool:
        """Check the Authorization header as RFC 7616 says; answer 401 (maybe stale) and return False if not."""
        header = self.headers.get("Authorization", "")
        with self.atlas.state.lock:
            self.atlas.state.authorization_headers.append(header)
        if not header.startswith("Digest "):
            self._challenge()
            return False
        params = {
            m.group(1): m.group(2) if m.group(2) is not None else m.group(3) for m in _AUTH_PARAM.finditer(header)
        }
        state = self.atlas.state
        algorithm = params.get("algorithm", "MD5")
        hash_fn = _HASHES.get(algorithm)
        nonce = params.get("nonce", "")
        if hash_fn is None or algorithm != self.atlas.algorithm or params.get("realm") != REALM:
            self._challenge()
            return False
        if params.get("username") != state.public_key or params.get("uri") != self.path:
            self._challenge()
            return False
        with state.lock:
            issued = state.nonces.get(nonce)
        if issued is None:
            self._challenge()
            return False
        try:
            nc = int(params.get("nc", "0"), 16)
        except ValueError:
            nc = 0

        def h(text: str) -> str:
            return hash_fn(text.encode()).hexdigest()

        ha1 = h(f"{state.public_key}:{REALM}:{state.private_key}")
        ha2 = h(f"{self.command}:{params.get('uri')}")
        if params.get("qop") != "auth" or not params.get("cnonce"):
            self._challenge()
            return False
        expected = h(f"{ha1}:{nonce}:{params.get('nc')}:{params.get('cnonce')}:auth:{ha2}")
        if not hmac.compare_digest(expected, params.get("response", "")):
            self._challenge()
            return False
        # The hash is right: a stale nonce now gets stale=true so the client retries without asking its user.
        with state.lock:
            issued_at, last_nc = state.nonces[nonce]
            if time.monotonic() - issued_at > self.atlas.nonce_ttl:
                stale = True
            elif nc <= last_nc:
                stale = True  # a replayed nonce count
            else:
                stale = False
                state.nonces[nonce] = (issued_at, nc)
        if stale:
            self._challenge(stale=True)
            return False
        return True

    def _method_not_allowed(self) -> None:
        self._send(405, _error(405, "METHOD_NOT_ALLOWED", "Method not allowed.", "Method Not Allowed"))

    def _version_ok(self, resource: str) -> str | None:
        accept = self.headers.get("Accept", "")
        match = re.fullmatch(r"application/vnd\.atlas\.(\d{4}-\d{2}-\d{2})\+json", accept.strip())
        if match and match.group(1) in VERSIONS[resource]:
            return match.group(1)
        self._send(
            406,
            _error(
                406,
                "INVALID_VERSION_DATE",
                f"The version date in the Accept header ({accept or 'none'}) is not a version of this resource.",
                "Not Acceptable",
            ),
        )
        return None

    def _fault(self) -> bool:
        state = self.atlas.state
        path = urlsplit(self.path).path
        with state.lock:
            for fault in state.faults:
                if fault.times > 0 and fault.method == self.command and fault.path_fragment in path:
                    fault.times -= 1
                    chosen = fault
                    break
            else:
                return False
        if chosen.delay:
            time.sleep(chosen.delay)
        if chosen.status == 0:
            return False
        if chosen.carry_out:
            self._lost_reply = chosen
            return False
        self._send_fault(chosen)
        return True

    def _send_fault(self, chosen: Fault) -> None:
        code = chosen.error_code or {429: "RATE_LIMITED", 500: "UNEXPECTED_ERROR", 503: "SERVICE_UNAVAILABLE"}.get(
            chosen.status, "UNEXPECTED_ERROR"
        )
        headers = {"Retry-After": chosen.retry_after} if chosen.retry_after is not None else None
        reason = {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}.get(
            chosen.status, "Error"
        )
        self._send(chosen.status, _error(chosen.status, code, f"Injected {reason.lower()}.", reason), headers=headers)

    def _dispatch(self):
        self._lost_reply = None
        self._body = self._read_body()  # read before answering, even a 401, so keep-alive stays in sync
        if not self._authenticated():
            return
        if self._fault():
            return
        path = urlsplit(self.path).path
        state = self.atlas.state
        for pattern, handler in (
            (_USERS, self._users),
            (_USER, self._user),
            (_CLUSTERS, self._clusters),
            (_STATUS, self._status),
            (_ROLES, self._roles),
            (_ROLE, self._role),
            (_LIMIT, self._limit),
            (_PROCESSES, self._processes),
            (_PROCESS_DATABASES, self._process_databases),
        ):
            match = pattern.match(path)
            if match:
                if match.group("group") != state.group_id:
                    self._send(
                        404,
                        _error(
                            404,
                            "GROUP_NOT_FOUND",
                            f"No group with ID {match.group('group')} exists.",
                            "Not Found",
                            [match.group("group")],
                        ),
                    )
                    return
                handler(match)
                return
        self._send(404, _error(404, "RESOURCE_NOT_FOUND", f"Cannot find resource {path}.", "Not Found"))

    do_GET = do_POST = do_PATCH = do_DELETE = lambda self: self._dispatch()

    # -- endpoints -------------------------------------------------------------------------------------------
    def _json_body(self) -> dict | None:
        try:
            body = json.loads(self._body or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._send(400, _error(400, "INVALID_JSON", "Invalid JSON.", "Bad Request"))
            return None
        return body

    def _check_delete_after(self, value) -> bool:
        try:
            when = _parse_time(str(value))
        except ValueError:
            self._send(400, _error(400, "INVALID_DATE", f"{value} is not a date.", "Bad Request"))
            return False
        now = datetime.now(UTC)
        if when <= now or when > now + timedelta(weeks=1):
            self._send(
                400,
                _error(
                    400,
                    "INVALID_DELETE_AFTER_DATE",
                    f"Invalid deleteAfterDate {value}: it must be in the future and within one week.",
                    "Bad Request",
                ),
            )
            return False
        return True

    def _roles_ok(self, roles: list) -> bool:
        """Each role has roleName and databaseName and is built in or a custom role of the project; else 400."""
        for role in roles:
            if not isinstance(role, dict) or not role.get("roleName") or not role.get("databaseName"):
                self._send(
                    400, _error(400, "INVALID_ROLE", "Each role needs roleName and databaseName.", "Bad Request")
                )
                return False
            name = role["roleName"]
            with self.atlas.state.lock:
                known = name in BUILTIN_ROLES or name in self.atlas.state.custom_roles
            if not known:
                self._send(
                    400,
                    _error(400, "INVALID_ROLE", f"Role {name} is neither built in nor a custom role.", "Bad Request"),
                )
                return False
        return True

    def _public(self, doc: dict) -> dict:
        return {k: v for k, v in doc.items() if k != "password"}

    def _users(self, match):
        version = self._version_ok("databaseUsers")
        if version is None:
            return
        state = self.atlas.state
        if self.command == "GET":
            query = parse_qs(urlsplit(self.path).query)
            page = int(query.get("pageNum", ["1"])[0])
            per_page = int(query.get("itemsPerPage", ["100"])[0])
            with state.lock:
                self.atlas._sweep_expired()
                docs = [self._public(d) for _, d in sorted(state.users.items())]
            chunk = docs[(page - 1) * per_page : page * per_page]
            self._send(200, {"links": [], "results": chunk, "totalCount": len(docs)}, version=version)
            return
        if self.command != "POST":
            self._method_not_allowed()
            return
        body = self._json_body()
        if body is None:
            return
        if len(body.get("username") or "") > 1024 or len(body.get("password") or "") < 8:
            self._send(
                400,
                _error(
                    400,
                    "INVALID_ATTRIBUTE",
                    "username must be at most 1024 characters and password at least 8.",
                    "Bad Request",
                ),
            )
            return
        missing = [k for k in ("databaseName", "username", "groupId") if not body.get(k)]
        if missing:
            self._send(
                400,
                _error(
                    400,
                    "MISSING_ATTRIBUTE",
                    f"The required attribute {missing[0]} was not specified.",
                    "Bad Request",
                    [missing[0]],
                ),
            )
            return
        if body["databaseName"] not in ("admin", "$external"):
            self._send(
                400, _error(400, "INVALID_DATABASE_NAME", "databaseName must be admin or $external.", "Bad Request")
            )
            return
        if len(body.get("description") or "") > 100:
            self._send(400, _error(400, "INVALID_ATTRIBUTE", "description is longer than 100.", "Bad Request"))
            return
        if "deleteAfterDate" in body and not self._check_delete_after(body["deleteAfterDate"]):
            return
        if not self._roles_ok(body.get("roles") or []):
            return
        key = (body["databaseName"], body["username"])
        with state.lock:
            self.atlas._sweep_expired()
            if key in state.users:
                conflict = True
            else:
                conflict = False
                doc = {
                    "databaseName": body["databaseName"],
                    "groupId": state.group_id,
                    "username": body["username"],
                    "password": body.get("password", ""),
                    "roles": body.get("roles") or [],
                    "scopes": body.get("scopes") or [],
                    "labels": body.get("labels") or [],
                    "ldapAuthType": "NONE",
                    "x509Type": "NONE",
                    "awsIAMType": "NONE",
                    "oidcAuthType": "NONE",
                }
                for optional in ("description", "deleteAfterDate"):
                    if optional in body:
                        doc[optional] = body[optional]
                state.users[key] = doc
                self.atlas._touch(doc["scopes"])
        if conflict:
            self._send(
                409,
                _error(
                    409,
                    "USER_ALREADY_EXISTS",
                    f"The specified user {body['username']} already exists.",
                    "Conflict",
                    [body["username"]],
                ),
            )
            return
        self._send(201, self._public(doc), version=version)

    def _user(self, match):
        version = self._version_ok("databaseUsers")
        if version is None:
            return
        state = self.atlas.state
        key = (unquote(match.group("db")), unquote(match.group("user")))
        with state.lock:
            self.atlas._sweep_expired()
            doc = state.users.get(key)
        if doc is None:
            self._send(
                404,
                _error(
                    404,
                    "USERNAME_NOT_FOUND",
                    f"No user with username {key[1]} exists.",
                    "Not Found",
                    [key[1]],
                ),
            )
            return
        if self.command == "GET":
            self._send(200, self._public(doc), version=version)
        elif self.command == "DELETE":
            with state.lock:
                if state.users.pop(key, None) is not None:
                    self.atlas._touch(doc.get("scopes"))
            self._send(204, None, version=version)
        elif self.command == "PATCH":
            body = self._json_body()
            if body is None:
                return
            if "deleteAfterDate" in body and not self._check_delete_after(body["deleteAfterDate"]):
                return
            if "roles" in body and not self._roles_ok(body["roles"] or []):
                return
            with state.lock:
                for name in ("deleteAfterDate", "roles", "scopes", "labels", "description", "password"):
                    if name in body:
                        doc[name] = body[name]
                if {"roles", "scopes", "password"} & set(body):
                    self.atlas._touch(doc.get("scopes"))
            self._send(200, self._public(doc), version=version)
        else:
            self._method_not_allowed()

    def _roles(self, match):
        version = self._version_ok("customDBRoles")
        if version is None:
            return
        state = self.atlas.state
        if self.command == "GET":
            with state.lock:
                docs = [json.loads(json.dumps(d)) for _, d in sorted(state.custom_roles.items())]
            self._send(200, docs, version=version)
            return
        if self.command != "POST":
            self._method_not_allowed()
            return
        body = self._json_body()
        if body is None:
            return
        name = body.get("roleName")
        if not isinstance(name, str) or not _ROLE_NAME.match(name) or name in BUILTIN_ROLES:
            self._send(400, _error(400, "INVALID_ATTRIBUTE", f"Invalid roleName {name!r}.", "Bad Request", [name]))
            return
        problem = _custom_role_problem(body)
        if problem is not None:
            code, _, detail = problem.rpartition(":") if problem.startswith("INVALID_") else ("", "", problem)
            self._send(400, _error(400, code or "INVALID_ATTRIBUTE", detail, "Bad Request"))
            return
        with state.lock:
            if name in state.custom_roles:
                outcome = "conflict"
            elif len(state.custom_roles) >= state.custom_role_limit:
                outcome = "limit"
            else:
                outcome = "created"
                doc = {"roleName": name, "actions": body["actions"], "inheritedRoles": body.get("inheritedRoles") or []}
                state.custom_roles[name] = doc
                self.atlas._touch(None)
        if outcome == "conflict":
            self._send(409, _error(409, "DUPLICATE_DATABASE_ROLE", f"A custom role {name} already exists.", "Conflict"))
        elif outcome == "limit":
            self._send(
                400,
                _error(
                    400,
                    "CUSTOM_ROLE_LIMIT_EXCEEDED",
                    f"The project already has {state.custom_role_limit} custom roles, its limit.",
                    "Bad Request",
                ),
            )
        else:
            self._send(200, doc, version=version)

    def _role(self, match):
        version = self._version_ok("customDBRoles")
        if version is None:
            return
        state = self.atlas.state
        name = unquote(match.group("role"))
        with state.lock:
            doc = state.custom_roles.get(name)
            holders = [
                user["username"]
                for user in state.users.values()
                if any(role.get("roleName") == name for role in user.get("roles") or [])
            ]
        if doc is None:
            self._send(404, _error(404, "ATLAS_CUSTOM_ROLE_NOT_FOUND", f"No custom role {name} exists.", "Not Found"))
            return
        if self.command == "GET":
            self._send(200, doc, version=version)
        elif self.command == "DELETE":
            if holders:
                self._send(
                    409,
                    _error(
                        409,
                        "CANNOT_DELETE_ROLE_IN_USE",
                        f"Custom role {name} is assigned to {len(holders)} database user(s).",
                        "Conflict",
                    ),
                )
                return
            with state.lock:
                state.custom_roles.pop(name, None)
                self.atlas._touch(None)
            self._send(204, None, version=version)
        elif self.command == "PATCH":
            body = self._json_body()
            if body is None:
                return
            problem = _custom_role_problem({"actions": doc["actions"], **body})
            if problem is not None:
                self._send(400, _error(400, "INVALID_ATTRIBUTE", problem, "Bad Request"))
                return
            with state.lock:
                for key in ("actions", "inheritedRoles"):
                    if key in body:
                        doc[key] = body[key]
                self.atlas._touch(None)
            self._send(200, doc, version=version)
        else:
            self._method_not_allowed()

    def _limit(self, match):
        state = self.atlas.state
        if not state.project_limits:
            path = urlsplit(self.path).path
            self._send(404, _error(404, "RESOURCE_NOT_FOUND", f"Cannot find resource {path}.", "Not Found"))
            return
        version = self._version_ok("limits")
        if version is None:
            return
        if self.command != "GET":
            self._method_not_allowed()
            return
        name = unquote(match.group("limit"))
        if name not in LIMIT_BOUNDS:
            self._send(
                400,
                _error(400, "INVALID_ENUM_VALUE", f"An invalid enumeration value {name} was specified.", "Bad Request"),
            )
            return
        default, maximum = LIMIT_BOUNDS[name]
        with state.lock:
            self.atlas._sweep_expired()
            if name == CUSTOM_ROLES_LIMIT:
                value, usage = state.custom_role_limit, len(state.custom_roles)
            else:
                value, usage = default, len(state.users)
        body = {"name": name, "value": value, "currentUsage": usage, "defaultLimit": default, "maximumLimit": maximum}
        self._send(200, body, version=version)

    def _page(self, docs: list[dict], version: str) -> None:
        """Answer one page of `docs` as Atlas lists things ({links, results, totalCount}); 400 for a bad page."""
        query = parse_qs(urlsplit(self.path).query)
        try:
            page = int(query.get("pageNum", ["1"])[0])
            per_page = int(query.get("itemsPerPage", ["100"])[0])
        except ValueError:
            page = per_page = 0
        if page < 1 or not 1 <= per_page <= 500:
            self._send(
                400,
                _error(
                    400,
                    "INVALID_QUERY_PARAMETER",
                    "pageNum must be at least 1 and itemsPerPage between 1 and 500.",
                    "Bad Request",
                ),
            )
            return
        chunk = docs[(page - 1) * per_page : page * per_page]
        self._send(200, {"links": [], "results": chunk, "totalCount": len(docs)}, version=version)

    def _processes(self, match):
        version = self._version_ok("processes")
        if version is None:
            return
        if self.command != "GET":
            self._method_not_allowed()
            return
        self._page(self.atlas.processes(), version)

    def _process_databases(self, match):
        version = self._version_ok("processes")
        if version is None:
            return
        if self.command != "GET":
            self._method_not_allowed()
            return
        process_id = unquote(match.group("process"))
        cluster = next((name for name, doc in self.atlas._process_table() if doc["id"] == process_id), None)
        if cluster is None:
            self._send(
                404,
                _error(
                    404, "PROCESS_NOT_FOUND", f"No process {process_id} exists in group.", "Not Found", [process_id]
                ),
            )
            return
        with self.atlas.state.lock:
            names = sorted({*SERVER_DATABASES, *self.atlas.state.databases.get(cluster, [])})
        self._page([{"databaseName": name, "links": []} for name in names], version)

    def _clusters(self, match):
        version = self._version_ok("clusters")
        if version is None:
            return
        names = self.atlas.state.clusters
        results = [{"name": n, "stateName": "IDLE", "groupId": self.atlas.state.group_id} for n in names]
        self._send(200, {"links": [], "results": results, "totalCount": len(results)}, version=version)

    def _status(self, match):
        version = self._version_ok("clusterStatus")
        if version is None:
            return
        state = self.atlas.state
        name = unquote(match.group("cluster"))
        if name not in state.clusters:
            self._send(
                404, _error(404, "CLUSTER_NOT_FOUND", f"No cluster named {name} exists in group.", "Not Found", [name])
            )
            return
        with state.lock:
            self.atlas._sweep_expired()
            left = state.pending.get(name, 0)
            if left > 0:
                state.pending[name] = left - 1
        self._send(200, {"changeStatus": "PENDING" if left > 0 else "APPLIED"}, version=version)


def _custom_role_problem(body: dict) -> str | None:
    """Why a custom role document is invalid, or None."""
    actions = body.get("actions")
    if not isinstance(actions, list):
        return "actions must be an array"
    for item in actions:
        if not isinstance(item, dict) or item.get("action") not in CUSTOM_ROLE_ACTIONS:
            action = item.get("action") if isinstance(item, dict) else item
            return f"INVALID_CUSTOM_ROLE_ACTION:{action} is not an action custom roles support"
        for resource in item.get("resources") or []:
            if not isinstance(resource, dict):
                return "each resource must be an object"
            if resource.get("cluster") is True:
                continue
            if not isinstance(resource.get("db"), str) or not isinstance(resource.get("collection", ""), str):
                return "each resource needs db and collection"
    inherited = body.get("inheritedRoles") or []
    if not isinstance(inherited, list) or not all(isinstance(r, dict) and r.get("role") for r in inherited):
        return "inheritedRoles must hold {db, role} objects"
    return None
