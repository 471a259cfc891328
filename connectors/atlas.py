"""The MongoDB Atlas connector: database users of one Atlas project through the Atlas Administration API v2.

It signs every request with HTTP digest authentication (RFC 7616) using the project's API key pair (the
private key stays encrypted on the Resource until a request is signed), asks for the versioned media type
of each resource (`application/vnd.atlas.<date>+json`), retries throttling (429) and server errors (5xx)
with capped exponential backoff that honours `Retry-After`, and turns Atlas's error documents
(`error`, `errorCode`, `detail`, `reason`) into a `ConnectorError` whose message a person can read.

Atlas applies a user change to the project's clusters asynchronously: a user that the API already lists
cannot log in until every cluster's `changeStatus` says APPLIED. `create_user` and `drop_user` therefore
wait for that (`wait_until_applied`) before they return, so credentials are never handed out before they
work and a revocation is only reported once the user is gone from the clusters.

Users created for leases carry this system's tag twice: in `labels` (`pam-system`, `pam-lease`) and in
`description` (`pam:<system> <lease suffix>`), and `list_users` presents them with the same
`customData.pam` tag as self-hosted users, so the reconciler treats both kinds alike. Each user also gets
`deleteAfterDate` (the lease's expiry, clamped to what Atlas accepts) as a safety net should revocation
never run.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import requests
from requests.auth import HTTPDigestAuth

from connectors.base import ConnectorError
from connectors.mongodb import TAG_KEY

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://cloud.mongodb.com"
API_PREFIX = "/api/atlas/v2"
DATABASE_USERS_VERSION = "2023-01-01"
"""Resource version of databaseUsers and clusters/{name}/status (the current stable one for both)."""
CLUSTERS_VERSION = "2024-08-05"
"""Resource version of the clusters list (2023-02-01 and older are deprecated)."""
AUTH_DATABASE = "admin"
"""SCRAM users in Atlas always authenticate against `admin`; roles name the databases they reach."""
DELETE_AFTER_LIMIT = timedelta(days=7)
"""Atlas refuses a `deleteAfterDate` more than one week after the request."""
DELETE_AFTER_MARGIN = timedelta(minutes=5)
"""Kept below the one-week limit so clock skew between this host and Atlas never gets the request refused."""
DESCRIPTION_MAX_LENGTH = 100
LABEL_SYSTEM = "pam-system"
LABEL_LEASE = "pam-lease"
DESCRIPTION_PREFIX = "pam:"
PAGE_SIZE = 500
"""Items per page when listing users and clusters (Atlas's maximum)."""
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
PROCESSES_VERSION = "2023-01-01"
"""Resource version of processes and processes/{processId}/databases (Monitoring and Logs)."""
PRIMARY_PROCESS_TYPES = frozenset({"REPLICA_PRIMARY", "SHARD_PRIMARY", "SHARD_STANDALONE"})
DATA_PROCESS_TYPES = PRIMARY_PROCESS_TYPES | {"REPLICA_SECONDARY", "SHARD_SECONDARY"}
"""`typeName`s of the mongod processes that hold a replica set's (or shard's) data; config servers, mongos and
processes still deploying (NO_DATA) hold none of the project's databases."""
SYSTEM_DATABASES = frozenset({"admin", "local", "config"})
"""The server's own databases, never offered for scoped access from a listing."""
CUSTOM_ROLES_VERSION = "2023-01-01"
"""Resource version of customDBRoles/roles."""
PROJECT_LIMITS_VERSION = "2023-01-01"
"""Resource version of groups/{groupId}/limits/{limitName}."""
CUSTOM_ROLES_LIMIT_NAME = "atlas.project.security.databaseAccess.customRoles"
"""The project limit on custom database roles (Atlas's default 100, raisable by the project's owner)."""
LIMITS_UNSUPPORTED = frozenset({404, 405, 406, 501})
"""Answers meaning this Atlas (or Cloud Manager / a stand-in) has no project-limits endpoint for that limit."""
CUSTOM_ROLE_ACTIONS = {
    "find": "FIND",
    "insert": "INSERT",
    "remove": "REMOVE",
    "update": "UPDATE",
    "bypassDocumentValidation": "BYPASS_DOCUMENT_VALIDATION",
    "useUUID": "USE_UUID",
    "killop": "KILL_OP",
    "createCollection": "CREATE_COLLECTION",
    "createIndex": "CREATE_INDEX",
    "dropCollection": "DROP_COLLECTION",
    "enableProfiler": "ENABLE_PROFILER",
    "changeStream": "CHANGE_STREAM",
    "collMod": "COLL_MOD",
    "compact": "COMPACT",
    "convertToCapped": "CONVERT_TO_CAPPED",
    "dropDatabase": "DROP_DATABASE",
    "dropIndex": "DROP_INDEX",
    "reIndex": "RE_INDEX",
    "renameCollectionSameDB": "RENAME_COLLECTION_SAME_DB",
    "listSessions": "LIST_SESSIONS",
    "killAnySession": "KILL_ANY_SESSION",
    "collStats": "COLL_STATS",
    "connPoolStats": "CONN_POOL_STATS",
    "dbHash": "DB_HASH",
    "dbStats": "DB_STATS",
    "getCmdLineOpts": "GET_CMD_LINE_OPTS",
    "getLog": "GET_LOG",
    "getParameter": "GET_PARAMETER",
    "getShardMap": "GET_SHARD_MAP",
    "hostInfo": "HOST_INFO",
    "inprog": "IN_PROG",
    "listDatabases": "LIST_DATABASES",
    "listCollections": "LIST_COLLECTIONS",
    "listIndexes": "LIST_INDEXES",
    "listShards": "LIST_SHARDS",
    "netstat": "NETSTAT",
    "replSetGetConfig": "REPL_SET_GET_CONFIG",
    "replSetGetStatus": "REPL_SET_GET_STATUS",
    "serverStatus": "SERVER_STATUS",
    "validate": "VALIDATE",
    "shardingState": "SHARDING_STATE",
    "top": "TOP",
    "killCursors": "KILL_CURSORS",
    "planCacheRead": "PLAN_CACHE_READ",
    "planCacheWrite": "PLAN_CACHE_WRITE",
    "planCacheIndexFilter": "PLAN_CACHE_INDEX_FILTER",
    "storageDetails": "STORAGE_DETAILS",
    "flushRouterConfig": "FLUSH_ROUTER_CONFIG",
    "listSearchIndexes": "LIST_SEARCH_INDEXES",
    "createSearchIndexes": "CREATE_SEARCH_INDEXES",
    "dropSearchIndex": "DROP_SEARCH_INDEX",
    "updateSearchIndex": "UPDATE_SEARCH_INDEX",
}
"""MongoDB privilege actions that Atlas custom roles accept, with Atlas's name for each (a subset: Atlas's
custom-role API supports fewer actions than mongod)."""


@dataclass(frozen=True)
class ProjectLimit:
    """A project limit: `limit` and `usage` as Atlas reports them (`source` "atlas"), or, where Atlas does not
    report it, the limit from the named setting and no usage (`source` "setting": the caller counts for itself)."""

    name: str
    limit: int
    usage: int | None
    source: str


def media_type(version: str) -> str:
    """The versioned media type Atlas expects in Accept (and Content-Type) for a resource version."""
    return f"application/vnd.atlas.{version}+json"


def atlas_timestamp(value: datetime) -> str:
    """An ISO 8601 UTC timestamp with a `Z`, to the second, as Atlas writes them."""
    return value.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def delete_after_date(expires_at: datetime, *, now: datetime | None = None) -> datetime:
    """`expires_at` clamped to the latest `deleteAfterDate` Atlas accepts now (one week ahead, minus a margin)."""
    now = now or datetime.now(UTC)
    return min(expires_at, now + DELETE_AFTER_LIMIT - DELETE_AFTER_MARGIN)


def atlas_roles(roles: Iterable, *, default_db: str = "admin") -> list[dict]:
    """Roles in Atlas's shape: {roleName, databaseName, collectionName?}.

    Accepts Atlas documents as they are, and for convenience MongoDB's forms ("readWrite" on `default_db`,
    {"role", "db"}). Built-in roles such as readAnyDatabase and atlasAdmin live on `admin`.
    """
    converted = []
    for role in roles or []:
        if isinstance(role, str):
            converted.append({"roleName": role, "databaseName": default_db})
        elif isinstance(role, dict) and "roleName" in role:
            doc = {"roleName": role["roleName"], "databaseName": role.get("databaseName") or default_db}
            if role.get("collectionName"):
                doc["collectionName"] = role["collectionName"]
            converted.append(doc)
        elif isinstance(role, dict) and "role" in role:
            converted.append({"roleName": role["role"], "databaseName": role.get("db") or default_db})
        else:
            raise ConnectorError(f"Not an Atlas role: {role!r}.", kind="config")
    return converted


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _setting(name: str, given):
    """An explicit option, else the Django setting `name` (declared with its default in portal/settings.py)."""
    if given is not None:
        return given
    from django.conf import settings

    return getattr(settings, name)


def _error_kind(status: int) -> str:
    if status == 401:
        return "auth"
    if status == 403:
        return "permission"
    if status == 404:
        return "not_found"
    if status == 409:
        return "conflict"
    if status in (400, 406, 415, 422):
        return "config"
    return "server"


class AtlasConnector:
    """Database users of one Atlas project (Resource.kind "atlas"), with the MongoDBConnector's user calls.

    Waits and retries default to the settings PAM_ATLAS_TIMEOUT (15 s per request), PAM_ATLAS_APPLY_TIMEOUT
    (600 s for clusters to apply a change), PAM_ATLAS_POLL_INTERVAL (2 s), PAM_ATLAS_MAX_RETRIES (5) and
    PAM_ATLAS_BACKOFF_BASE (0.5 s, doubling, capped at 30 s); keyword options override them.

    `create_user`, `drop_user`, `get_user`, `list_users`, `kill_user_connections`, `can_login` take the same
    arguments as their MongoDB counterparts (the `db` is always Atlas's auth database, `admin`), plus
    Atlas's `scopes`, `expires_at` (sets `deleteAfterDate`) and `update_user_expiry` for renewals.
    `list_database_names` reads the databases of the project's clusters (processes/{id}/databases); collections
    cannot be listed (`lists_collections` False). One connector may be shared by threads: each thread gets its
    own HTTP session.
    """

    def __init__(
        self,
        resource,
        *,
        timeout: float | None = None,
        timeout_ms: int | None = None,
        apply_timeout: float | None = None,
        poll_interval: float | None = None,
        max_retries: int | None = None,
        backoff_base: float | None = None,
        backoff_cap: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not getattr(resource, "atlas_group_id", ""):
            raise ConnectorError(f"Resource {resource.name} has no Atlas project (group) id.", kind="config")
        if not getattr(resource, "atlas_public_key", "") or not resource.atlas_private_key:
            raise ConnectorError(f"Resource {resource.name} has no Atlas API key pair.", kind="config")
        self.resource_name = resource.name
        self.group_id = resource.atlas_group_id
        self.base_url = (getattr(resource, "atlas_base_url", "") or DEFAULT_BASE_URL).rstrip("/")
        self.public_key = resource.atlas_public_key
        self._private_key = resource.atlas_private_key  # a Secret; revealed only to sign requests
        self.timeout = timeout_ms / 1000 if timeout_ms else _setting("PAM_ATLAS_TIMEOUT", timeout)
        self.apply_timeout = _setting("PAM_ATLAS_APPLY_TIMEOUT", apply_timeout)
        self.poll_interval = _setting("PAM_ATLAS_POLL_INTERVAL", poll_interval)
        self.max_retries = int(_setting("PAM_ATLAS_MAX_RETRIES", max_retries))
        self.backoff_base = _setting("PAM_ATLAS_BACKOFF_BASE", backoff_base)
        self.backoff_cap = backoff_cap
        self._sleep = sleep
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.auth = HTTPDigestAuth(self.public_key, self._private_key.reveal())
            session.headers["User-Agent"] = "mongo-pam-atlas-connector"
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _url(self, path: str) -> str:
        return f"{self.base_url}{API_PREFIX}/groups/{quote(self.group_id, safe='')}{path}"

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_cap, self.backoff_base * 2**attempt)

    def _request(
        self,
        method: str,
        path: str,
        *,
        version: str = DATABASE_USERS_VERSION,
        body: dict | None = None,
        params: dict | None = None,
        what: str = "",
        secrets: Iterable[str] = (),
    ) -> requests.Response:
        """Send one API call, retrying 429/5xx and connection failures; return the response of a 2xx or 404.

        Any other outcome raises ConnectorError with Atlas's own words. `what` names the operation in messages;
        `secrets` are scrubbed from any text that could reach a message.
        """
        headers = {"Accept": media_type(version)}
        data = None
        if body is not None:
            headers["Content-Type"] = media_type(version)
            data = json.dumps(body).encode()
        url = self._url(path)
        what = what or f"{method} {path}"
        attempt = 0
        while True:
            try:
                response = self._session().request(
                    method, url, data=data, params=params, headers=headers, timeout=self.timeout
                )
            except requests.Timeout:
                failure = ConnectorError(f"Atlas did not answer within {self.timeout:g} s ({what}).", kind="timeout")
                retry_after = None
            except requests.ConnectionError as exc:
                failure = ConnectorError(
                    f"Atlas at {self.base_url} is unreachable ({what}): {type(exc).__name__}.", kind="unreachable"
                )
                retry_after = None
            else:
                if response.status_code < 300 or response.status_code == 404:
                    return response
                failure = self._error(response, what=what, secrets=secrets)
                if response.status_code not in RETRY_STATUSES:
                    raise failure
                retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
            if attempt >= self.max_retries:
                raise ConnectorError(f"{failure.message} (gave up after {attempt + 1} attempts)", kind=failure.kind)
            wait = retry_after if retry_after is not None else self._backoff(attempt)
            wait = min(wait, self.backoff_cap)
            log.info("Atlas %s: %s; retrying in %.1f s", what, failure.message, wait)
            self._sleep(wait)
            attempt += 1

    def _error(self, response: requests.Response, *, what: str, secrets: Iterable[str]) -> ConnectorError:
        """Atlas's error document as a ConnectorError: `Atlas refused <what>: <detail> (HTTP 409 CODE)`."""
        status = response.status_code
        try:
            doc = response.json()
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        code = str(doc.get("errorCode") or "")
        detail = str(doc.get("detail") or doc.get("reason") or response.reason or "no detail")
        if status == 401:
            detail = (
                f"the API key {self.public_key} was not accepted (wrong private key, a disabled key, or this "
                f"host is not on the key's API access list). {detail}"
            )
        text = f"Atlas refused {what}: {detail} (HTTP {status}{' ' + code if code else ''})"
        for secret in [*secrets, self._private_key.reveal()]:
            if secret:
                text = text.replace(secret, "[redacted]")
        error = ConnectorError(text[:1000], kind=_error_kind(status))
        error.atlas_error_code = code
        error.http_status = status
        return error

    # -- cluster change status ------------------------------------------------------------------------------
    def cluster_names(self) -> list[str]:
        """Names of the project's clusters (every page)."""
        names: list[str] = []
        page = 1
        while True:
            response = self._request(
                "GET",
                "/clusters",
                version=CLUSTERS_VERSION,
                params={"pageNum": page, "itemsPerPage": PAGE_SIZE},
                what="listing clusters",
            )
            if response.status_code == 404:
                raise self._error(response, what="listing clusters", secrets=())
            doc = response.json()
            results = doc.get("results") or []
            names += [c["name"] for c in results if c.get("name")]
            if not results or len(names) >= int(doc.get("totalCount") or 0):
                return names
            page += 1

    def cluster_change_status(self, name: str) -> str:
        """`APPLIED` or `PENDING`: whether Atlas has finished applying user changes on cluster `name`."""
        response = self._request(
            "GET", f"/clusters/{quote(name, safe='')}/status", what=f"reading the status of cluster {name}"
        )
        if response.status_code == 404:
            raise self._error(response, what=f"reading the status of cluster {name}", secrets=())
        return str(response.json().get("changeStatus", ""))

    def wait_until_applied(self, *, scopes: list[dict] | None = None, timeout: float | None = None) -> None:
        """Return once every cluster the change reaches reports changeStatus APPLIED; else ConnectorError(timeout).

        `scopes` limits the clusters to the CLUSTER scopes of a user (none: every cluster of the project).
        A project without clusters has nothing to apply.
        """
        timeout = self.apply_timeout if timeout is None else timeout
        if scopes:
            waiting = [s["name"] for s in scopes if s.get("type", "CLUSTER") == "CLUSTER"]
        else:
            waiting = self.cluster_names()
        deadline = time.monotonic() + timeout
        while waiting:
            waiting = [name for name in waiting if self.cluster_change_status(name) != "APPLIED"]
            if not waiting:
                return
            if time.monotonic() >= deadline:
                raise ConnectorError(
                    f"Atlas has not applied the user change on cluster(s) {', '.join(waiting)} after "
                    f"{timeout:g} s; the change stays pending in project {self.group_id}.",
                    kind="timeout",
                )
            self._sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))

    # -- databases (scoped access: what a requester may pick) ----------------------------------------------------
    lists_collections = False
    """The Admin API lists the databases of a process but not their collections (no listCollections)."""

    def _paged(self, path: str, *, version: str, what: str) -> list[dict]:
        """Every item of a paginated list (`pageNum`/`itemsPerPage`, PAGE_SIZE a page, up to `totalCount`)."""
        items: list[dict] = []
        page = 1
        while True:
            response = self._request(
                "GET", path, version=version, params={"pageNum": page, "itemsPerPage": PAGE_SIZE}, what=what
            )
            if response.status_code == 404:
                raise self._error(response, what=what, secrets=())
            doc = response.json()
            results = [item for item in (doc.get("results") or []) if isinstance(item, dict)]
            items += results
            if not results or len(items) >= int(doc.get("totalCount") or 0):
                return items
            page += 1

    def data_processes(self) -> list[dict]:
        """One mongod per replica set of the project (each shard of a sharded cluster is one): its primary, else
        a secondary (they hold the same databases), as Atlas describes processes ({id, typeName, replicaSetName,
        hostname, userAlias, ...}), sorted by id."""
        chosen: dict[str, tuple[int, dict]] = {}
        for process in self._paged("/processes", version=PROCESSES_VERSION, what="listing the project's processes"):
            kind = process.get("typeName")
            if kind not in DATA_PROCESS_TYPES or not process.get("id"):
                continue
            key = process.get("replicaSetName") or process["id"]
            rank = 0 if kind in PRIMARY_PROCESS_TYPES else 1
            if key not in chosen or (rank, process["id"]) < (chosen[key][0], chosen[key][1]["id"]):
                chosen[key] = (rank, process)
        return sorted((process for _, process in chosen.values()), key=lambda process: process["id"])

    def list_database_names(self) -> list[str]:
        """The names of the databases on the project's clusters, sorted, without the server's own (admin, local,
        config): each replica set's (or shard's) primary asked through the Admin API, every page, names merged."""
        names: set[str] = set()
        for process in self.data_processes():
            process_id = process["id"]
            for doc in self._paged(
                f"/processes/{quote(process_id, safe=':')}/databases",
                version=PROCESSES_VERSION,
                what=f"listing the databases of {process.get('userAlias') or process_id}",
            ):
                name = str(doc.get("databaseName") or "")
                if name and name not in SYSTEM_DATABASES:
                    names.add(name)
        return sorted(names)

    def list_collection_names(self, *, db: str) -> list[str]:
        """The Admin API cannot list collections: ConnectorError(config) saying so (see `lists_collections`)."""
        raise ConnectorError(
            f"Atlas's Admin API lists no collections (asked for those of {db!r}); name them instead.", kind="config"
        )

    # -- users ----------------------------------------------------------------------------------------------
    def _user_path(self, username: str, db: str = AUTH_DATABASE) -> str:
        return f"/databaseUsers/{quote(db or AUTH_DATABASE, safe='')}/{quote(username, safe='')}"

    @staticmethod
    def _auth_db(db: str) -> str:
        # Atlas SCRAM users always live in admin ($external: LDAP, X.509, IAM); any other `db` a caller passes is
        # the database its roles are about, carried by the roles instead.
        return "$external" if db == "$external" else AUTH_DATABASE

    def verify_connection(self) -> None:
        """Check that the key pair is accepted and may read the project's database users."""
        response = self._request(
            "GET", "/databaseUsers", params={"itemsPerPage": 1}, what="reading the project's database users"
        )
        if response.status_code == 404:
            raise self._error(response, what=f"reading project {self.group_id}", secrets=())

    def create_user(
        self,
        *,
        db: str = AUTH_DATABASE,
        username: str,
        password: str,
        roles: list,
        custom_data: dict | None = None,
        mechanisms: list | None = None,
        scopes: list[dict] | None = None,
        expires_at: datetime | None = None,
        wait: bool = True,
    ) -> dict:
        """Create a SCRAM user in the project and (with `wait`) return only once every cluster has applied it.

        `custom_data` `{"pam": {"lease_id", "system"}}` becomes labels and the description; `expires_at`
        becomes `deleteAfterDate` (clamped to one week ahead); `scopes` [{name, type}] limits the clusters
        (omitted: all). A retried request that Atlas had in fact carried out (409 for our own lease) counts as
        done. Raises ConnectorError(kind="conflict") when another user has the name.
        """
        auth_db = self._auth_db(db)
        body: dict[str, Any] = {
            "groupId": self.group_id,
            "databaseName": auth_db,
            "username": username,
            "password": password,
            "roles": atlas_roles(roles),
        }
        scopes = [{"name": s["name"], "type": s["type"]} for s in (scopes or [])]
        if scopes:
            body["scopes"] = scopes
        tag = (custom_data or {}).get(TAG_KEY) if isinstance(custom_data, dict) else None
        if isinstance(tag, dict):
            body["labels"] = [{"key": LABEL_SYSTEM, "value": str(tag.get("system", ""))[:255]}]
            if tag.get("lease_id"):
                body["labels"].append({"key": LABEL_LEASE, "value": str(tag["lease_id"])[:255]})
            body["description"] = _description(system=str(tag.get("system", "")), lease_id=str(tag.get("lease_id", "")))
        if expires_at is not None:
            body["deleteAfterDate"] = atlas_timestamp(delete_after_date(expires_at))
        try:
            response = self._request(
                "POST", "/databaseUsers", body=body, what=f"creating database user {username}", secrets=[password]
            )
        except ConnectorError as exc:
            if exc.kind != "conflict" or not self._is_ours(username=username, auth_db=auth_db, tag=tag):
                raise
            # An earlier attempt (whose answer was lost to a 5xx or a timeout) did create it.
            response = None
        if response is not None and response.status_code == 404:
            raise self._error(response, what=f"creating database user {username}", secrets=[password])
        if wait:
            self.wait_until_applied(scopes=scopes)
        created = self.get_user(db=auth_db, username=username)
        if created is None:
            raise ConnectorError(f"Atlas does not list user {username} after creating it.", kind="server")
        return created

    def _is_ours(self, *, username: str, auth_db: str, tag: dict | None) -> bool:
        if not isinstance(tag, dict) or not tag.get("lease_id"):
            return False
        existing = self.get_user(db=auth_db, username=username)
        return bool(existing) and existing["customData"].get(TAG_KEY, {}).get("lease_id") == tag["lease_id"]

    def update_user_expiry(self, *, db: str = AUTH_DATABASE, username: str, expires_at: datetime) -> datetime:
        """Move the user's `deleteAfterDate` (a renewal); return the date set. ConnectorError(not_found) if gone."""
        when = delete_after_date(expires_at)
        response = self._request(
            "PATCH",
            self._user_path(username, self._auth_db(db)),
            body={"deleteAfterDate": atlas_timestamp(when)},
            what=f"moving the expiry of database user {username}",
        )
        if response.status_code == 404:
            raise self._error(response, what=f"moving the expiry of database user {username}", secrets=())
        return when

    def drop_user(self, *, db: str = AUTH_DATABASE, username: str, wait: bool = True) -> bool:
        """Delete the user and (with `wait`) wait until the clusters applied it; False when it was already gone."""
        response = self._request(
            "DELETE", self._user_path(username, self._auth_db(db)), what=f"deleting database user {username}"
        )
        if response.status_code == 404:
            return False
        if wait:
            self.wait_until_applied()
        return True

    def get_user(self, *, db: str = AUTH_DATABASE, username: str) -> dict | None:
        """The user as `list_users` shows it, or None when Atlas does not know it."""
        response = self._request(
            "GET", self._user_path(username, self._auth_db(db)), what=f"reading database user {username}"
        )
        if response.status_code == 404:
            return None
        return _as_mongodb_user(response.json())

    def list_users(self, *, db: str | None = None) -> list[dict]:
        """Every database user of the project (all pages), as {"user", "db", "roles", "customData", "atlas"}.

        `customData.pam` is rebuilt from the labels (or the description) this system sets, so tagged Atlas
        users look like tagged MongoDB users to the reconciler. `atlas` keeps Atlas's document (no password).
        """
        users: list[dict] = []
        page = 1
        while True:
            response = self._request(
                "GET",
                "/databaseUsers",
                params={"pageNum": page, "itemsPerPage": PAGE_SIZE},
                what="listing database users",
            )
            if response.status_code == 404:
                raise self._error(response, what="listing database users", secrets=())
            doc = response.json()
            results = doc.get("results") or []
            users += [_as_mongodb_user(u) for u in results]
            if not results or len(users) >= int(doc.get("totalCount") or 0):
                break
            page += 1
        if db is not None:
            users = [u for u in users if u["db"] == db]
        return users

    def change_password(self, *, db: str = AUTH_DATABASE, username: str, password: str) -> None:
        """Set a new password (stored account rotation) and wait until every cluster applied it."""
        response = self._request(
            "PATCH",
            self._user_path(username, self._auth_db(db)),
            body={"password": password},
            what=f"changing the password of database user {username}",
            secrets=[password],
        )
        if response.status_code == 404:
            raise self._error(response, what=f"changing the password of {username}", secrets=[password])
        self.wait_until_applied()

    def grant_roles(self, *, db: str = AUTH_DATABASE, username: str, roles: list) -> None:
        """Add roles (Atlas or MongoDB form; MongoDB names are taken on `db`) and wait until applied."""
        self._set_roles(
            db=db,
            username=username,
            change=lambda current: current + [r for r in atlas_roles(roles, default_db=db) if r not in current],
        )

    def revoke_roles(self, *, db: str = AUTH_DATABASE, username: str, roles: list) -> None:
        """Remove roles and wait until applied (Atlas refuses a user left with no role: ConnectorError)."""
        removed = atlas_roles(roles, default_db=db)
        self._set_roles(db=db, username=username, change=lambda current: [r for r in current if r not in removed])

    def _set_roles(self, *, db: str, username: str, change: Callable[[list[dict]], list[dict]]) -> None:
        user = self.get_user(db=db, username=username)
        if user is None:
            raise ConnectorError(f"Atlas has no database user {username}.", kind="not_found")
        current = [dict(r) for r in user["atlas"].get("roles") or []]
        response = self._request(
            "PATCH",
            self._user_path(username, self._auth_db(db)),
            body={"roles": change(current)},
            what=f"changing the roles of database user {username}",
        )
        if response.status_code == 404:
            raise self._error(response, what=f"changing the roles of {username}", secrets=())
        self.wait_until_applied(scopes=user["atlas"].get("scopes") or None)

    def lock_user(self, *, db: str = AUTH_DATABASE, username: str):
        """Atlas database users cannot be locked: ConnectorError(config) saying so."""
        raise ConnectorError(
            "Atlas database users cannot be locked; revoke the lease or delete the user instead.", kind="config"
        )

    def unlock_user(self, *, db: str = AUTH_DATABASE, username: str, restrictions=None):
        """Atlas database users cannot be locked, so there is nothing to unlock: ConnectorError(config)."""
        raise ConnectorError("Atlas database users cannot be locked or unlocked.", kind="config")

    def kill_user_connections(self, *, db: str = AUTH_DATABASE, username: str) -> int:
        """0: the Admin API cannot end a user's connections; once the deletion is applied it can open no new one."""
        return 0

    def can_login(self, *, db: str = AUTH_DATABASE, username: str, password: str) -> bool:
        """Whether the leased credentials still work, as far as the Admin API can tell.

        The Admin API cannot try a password. A user it still lists is taken to log in (its password is the
        one this system set); a user it no longer lists, once its deletion was applied on every cluster
        (`drop_user` waits for that), cannot.
        """
        return self.get_user(db=db, username=username) is not None

    # -- custom database roles (scoped access) ------------------------------------------------------------------
    def _role_path(self, name: str = "") -> str:
        return "/customDBRoles/roles" + (f"/{quote(name, safe='')}" if name else "")

    def list_custom_roles(self) -> list[dict]:
        """The project's custom database roles, as Atlas returns them ({roleName, actions, inheritedRoles})."""
        response = self._request(
            "GET", self._role_path(), version=CUSTOM_ROLES_VERSION, what="listing custom database roles"
        )
        if response.status_code == 404:
            raise self._error(response, what="listing custom database roles", secrets=())
        doc = response.json()
        return list(doc.get("results") or []) if isinstance(doc, dict) else list(doc or [])

    def get_custom_role(self, name: str) -> dict | None:
        """One custom database role, or None when the project has none of that name."""
        response = self._request(
            "GET", self._role_path(name), version=CUSTOM_ROLES_VERSION, what=f"reading custom role {name}"
        )
        return None if response.status_code == 404 else response.json()

    def create_custom_role(
        self, *, name: str, actions: list[dict], inherited_roles: list[dict] | None = None, wait: bool = True
    ) -> dict:
        """Create a custom database role and (with `wait`) return once every cluster applied it.

        `actions` are Atlas's [{action: "FIND", resources: [{db, collection}]}]. A role of that name left by an
        earlier attempt whose answer was lost (409) counts as done when it is identical.
        """
        body = {"roleName": name, "actions": actions, "inheritedRoles": list(inherited_roles or [])}
        try:
            self._request(
                "POST", self._role_path(), version=CUSTOM_ROLES_VERSION, body=body, what=f"creating custom role {name}"
            )
        except ConnectorError as exc:
            existing = self.get_custom_role(name) if exc.kind == "conflict" else None
            if existing is None or custom_role_key(existing) != custom_role_key(body):
                raise
        if wait:
            self.wait_until_applied()
        created = self.get_custom_role(name)
        if created is None:
            raise ConnectorError(f"Atlas does not list custom role {name} after creating it.", kind="server")
        return created

    def delete_custom_role(self, name: str, *, wait: bool = True) -> bool:
        """Delete a custom database role (waiting until applied); False when it was already gone."""
        response = self._request(
            "DELETE", self._role_path(name), version=CUSTOM_ROLES_VERSION, what=f"deleting custom role {name}"
        )
        if response.status_code == 404:
            return False
        if wait:
            self.wait_until_applied()
        return True

    def custom_role_users(self, name: str) -> list[str]:
        """The database users holding custom role `name` (a role in use must not be deleted)."""
        return sorted(
            user["user"] for user in self.list_users() if any(role.get("role") == name for role in user["roles"])
        )

    # -- project limits ---------------------------------------------------------------------------------------------
    def project_limit(self, name: str) -> dict | None:
        """One limit of the project as Atlas returns it ({name, value, currentUsage, defaultLimit, maximumLimit}),
        or None when this Atlas does not offer it (404, or an answer in LIMITS_UNSUPPORTED)."""
        what = f"reading the project limit {name}"
        try:
            response = self._request(
                "GET", f"/limits/{quote(name, safe='')}", version=PROJECT_LIMITS_VERSION, what=what
            )
        except ConnectorError as exc:
            if getattr(exc, "http_status", None) in LIMITS_UNSUPPORTED:
                return None
            raise
        if response.status_code == 404:
            return None
        doc = response.json()
        if not isinstance(doc, dict):
            raise ConnectorError(f"Atlas answered {what} with no limit document.", kind="server")
        return doc

    def custom_role_limit(self) -> ProjectLimit:
        """How many custom database roles the project may hold and holds, from Atlas's project limit
        CUSTOM_ROLES_LIMIT_NAME (`value`, else `defaultLimit`; `currentUsage`). Only where Atlas does not offer that
        endpoint is the limit the setting PAM_ATLAS_CUSTOM_ROLE_LIMIT (usage None). Other failures raise."""
        doc = self.project_limit(CUSTOM_ROLES_LIMIT_NAME)
        if doc is not None:
            value = doc.get("value", doc.get("defaultLimit"))
            usage = doc.get("currentUsage")
            try:
                limit = int(value)
                usage = None if usage is None else int(usage)
            except (TypeError, ValueError):
                raise ConnectorError(
                    f"Atlas reported the project limit {CUSTOM_ROLES_LIMIT_NAME} without a number: {value!r}.",
                    kind="server",
                ) from None
            return ProjectLimit(CUSTOM_ROLES_LIMIT_NAME, limit, usage, "atlas")
        limit = int(_setting("PAM_ATLAS_CUSTOM_ROLE_LIMIT", None))
        return ProjectLimit(CUSTOM_ROLES_LIMIT_NAME, limit, None, "setting")

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
        self._local = threading.local()

    def __enter__(self) -> AtlasConnector:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AtlasConnector(resource={self.resource_name!r}, group_id={self.group_id!r})"


def custom_role_key(role: dict) -> tuple:
    """What a custom role grants, independent of its name and of the order Atlas lists things in: two roles with
    the same key are identical (so one may be reused instead of making another)."""
    actions = tuple(
        sorted(
            (
                str(item.get("action", "")),
                tuple(
                    sorted(
                        (
                            bool(resource.get("cluster", False)),
                            str(resource.get("db", "")),
                            str(resource.get("collection", "")),
                        )
                        for resource in item.get("resources") or []
                    )
                ),
            )
            for item in role.get("actions") or []
        )
    )
    inherited = tuple(sorted((str(r.get("db", "")), str(r.get("role", ""))) for r in role.get("inheritedRoles") or []))
    return actions, inherited


def _description(*, system: str, lease_id: str) -> str:
    """`pam:<system> <lease id>`, keeping the end of a long lease id (its random part), within 100 characters."""
    head = f"{DESCRIPTION_PREFIX}{system}"
    room = DESCRIPTION_MAX_LENGTH - len(head) - 1
    if not lease_id or room <= 0:
        return head[:DESCRIPTION_MAX_LENGTH]
    return f"{head} {lease_id[-room:]}"


def _tag_from_atlas(user: dict) -> dict | None:
    labels = {label.get("key"): label.get("value") for label in user.get("labels") or [] if isinstance(label, dict)}
    if labels.get(LABEL_SYSTEM):
        return {"system": labels[LABEL_SYSTEM], "lease_id": labels.get(LABEL_LEASE, "")}
    description = str(user.get("description") or "")
    if description.startswith(DESCRIPTION_PREFIX):
        system, _, lease_suffix = description[len(DESCRIPTION_PREFIX) :].partition(" ")
        return {"system": system, "lease_id": lease_suffix, "from_description": True}
    return None


def _as_mongodb_user(user: dict) -> dict:
    tag = _tag_from_atlas(user)
    return {
        "user": user.get("username", ""),
        "db": user.get("databaseName", AUTH_DATABASE),
        "roles": [
            {
                "role": r.get("roleName"),
                "db": r.get("databaseName"),
                **({"collection": r["collectionName"]} if r.get("collectionName") else {}),
            }
            for r in user.get("roles") or []
        ],
        "customData": {TAG_KEY: tag} if tag else {},
        "atlas": {k: v for k, v in user.items() if k != "password"},
    }
