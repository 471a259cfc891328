"""The session's policy at the wire: which commands a session may send, and where.

The policy decides on what the server will read. A message the server could read differently from the
gateway is refused before any rule runs: a field of the command given twice (a second ``$db``, the command
name repeated), a second command document, or a document sequence other than the one its command takes
(``documents`` for insert, ``updates`` for update, ``deletes`` for delete, ``ops``/``nsInfo`` for bulkWrite) —
so a ``pipeline`` sent as a sequence cannot hide from the read-only rule. OP_QUERY carries only hellos
(which the gateway answers itself), as on MongoDB 5.1 and later.

Then, on every command, from the command name, database and collection the relay's
:class:`~gatewayproxy.wire.codec.Request` already read (no BSON decoding):

1. the resource's deny list (``Resource.command_deny_list``);
2. privileged command families (user and role management, applyOps, other people's operations, cluster
   administration) only when the session's policy names the family: an allow-list, not a deny list;
3. read-only sessions may only run commands that read (an allow-list, so a new write command is refused);
4. the session's database allow-list, when it has one (a few harmless commands on ``admin`` stay open);
5. no write to a ``system.*`` collection, in any session; no read of the collections that hold credentials
   (``system.users``, ``system.keys``, ``local.oplog.rs``...).

Only commands whose arguments name another namespace or carry something the rules must see are decoded
(:data:`BODY_COMMANDS`): ``renameCollection``'s ``to``, ``$out``/``$merge``/``$lookup``/``$graphLookup``/
``$unionWith`` targets with a database (sub-pipelines and ``$facet`` included), ``mapReduce``'s ``out.db``,
``dataSize``'s namespace, the cluster-wide stages ``$currentOp``/``$listSessions``/... , ``applyOps``'s
entries, ``bulkWrite``'s ``nsInfo``, view pipelines of ``create``/``collMod``, ``usersInfo`` with
``showCredentials`` or ``forAllDBs``, sharding commands naming ``db.coll``, and ``explain`` of any of these.
Decoding refuses a field given twice at any depth. Finally ``getMore``/``killCursors`` pass only for cursor
ids this session received (the relay tracks them from replies).

A refusal is a :class:`Refusal` whose message names the command and the reason, sent back as MongoDB's
Unauthorized (code 13); the command never reaches the upstream.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gatewayproxy.wire.codec import OP_QUERY, Request, WireError

UNAUTHORIZED = 13
UNSUPPORTED_OP_QUERY = 352

#: Commands a read-only session may run. Everything else (writes, DDL, user and role management,
#: server administration) is refused.
READ_COMMANDS = frozenset(
    {
        "find",
        "getMore",
        "killCursors",
        "aggregate",
        "count",
        "distinct",
        "explain",
        "listCollections",
        "listIndexes",
        "listDatabases",
        "dbStats",
        "collStats",
        "dataSize",
        "hello",
        "isMaster",
        "ismaster",
        "ping",
        "buildInfo",
        "buildinfo",
        "hostInfo",
        "serverStatus",
        "connectionStatus",
        "getParameter",
        "getCmdLineOpts",
        "endSessions",
        "startSession",
        "refreshSessions",
        "commitTransaction",
        "abortTransaction",
        "getLastError",
        "whatsmyuri",
        "usersInfo",
        "rolesInfo",
        "getLog",
        "listCommands",
        "getFreeMonitoringStatus",
        "atlasVersion",
        "dbHash",
        "validate",
    }
)

#: Commands allowed on ``admin`` even when the session's database allow-list does not name it:
#: drivers send them there for their own bookkeeping.
ADMIN_BOOKKEEPING = frozenset(
    {
        "hello",
        "isMaster",
        "ismaster",
        "ping",
        "buildInfo",
        "buildinfo",
        "endSessions",
        "killCursors",
        "commitTransaction",
        "abortTransaction",
        "listDatabases",
        "connectionStatus",
        "getParameter",
        "getCmdLineOpts",
        "hostInfo",
        "atlasVersion",
        "getLog",
        "whatsmyuri",
    }
)

#: Privileged command families: refused unless the session's policy names the family
#: (``AccessPolicy.privileged_commands``). Keys are what the policy stores; values (label, commands); the
#: label's words before the parenthesis name the family in a refusal.
PRIVILEGED_FAMILIES: dict[str, tuple[str, frozenset[str]]] = {
    "user_management": (
        "User management (createUser, updateUser, dropUser, grantRolesToUser, revokeRolesFromUser)",
        frozenset(
            {
                "createUser",
                "updateUser",
                "dropUser",
                "dropAllUsersFromDatabase",
                "grantRolesToUser",
                "revokeRolesFromUser",
            }
        ),
    ),
    "role_management": (
        "Role management (createRole, updateRole, dropRole, grantPrivilegesToRole, grantRolesToRole, ...)",
        frozenset(
            {
                "createRole",
                "updateRole",
                "dropRole",
                "dropAllRolesFromDatabase",
                "grantRolesToRole",
                "revokeRolesFromRole",
                "grantPrivilegesToRole",
                "revokePrivilegesFromRole",
                "invalidateUserCache",
            }
        ),
    ),
    "operations": (
        "Operations and sessions of others (currentOp, killOp, killSessions, $currentOp, $listSessions)",
        frozenset({"currentOp", "killOp", "killSessions", "killAllSessions", "killAllSessionsByPattern"}),
    ),
    "apply_ops": ("Raw oplog entries (applyOps)", frozenset({"applyOps"})),
    "cluster_admin": (
        "Cluster administration (shutdown, setParameter, fsync, replSet*, sharding, fail points)",
        frozenset(
            {
                "shutdown",
                "fsync",
                "fsyncUnlock",
                "setParameter",
                "setClusterParameter",
                "setFeatureCompatibilityVersion",
                "setDefaultRWConcern",
                "setUserWriteBlockMode",
                "logRotate",
                "rotateCertificates",
                "configureFailPoint",
                "replSetInitiate",
                "replSetReconfig",
                "replSetStepDown",
                "replSetStepUp",
                "replSetFreeze",
                "replSetMaintenance",
                "replSetSyncFrom",
                "replSetResizeOplog",
                "addShard",
                "removeShard",
                "addShardToZone",
                "removeShardFromZone",
                "updateZoneKeyRange",
                "balancerStart",
                "balancerStop",
                "enableSharding",
                "shardCollection",
                "reshardCollection",
                "refineCollectionShardKey",
                "unshardCollection",
                "moveCollection",
                "movePrimary",
                "moveChunk",
                "moveRange",
                "split",
                "mergeChunks",
                "clearJumboFlag",
                "cleanupOrphaned",
                "configureCollectionBalancing",
                "setAllowMigrations",
            }
        ),
    ),
}
_FAMILY_OF = {command: family for family, (_label, commands) in PRIVILEGED_FAMILIES.items() for command in commands}

#: Commands removed from MongoDB that copied from another server or database: never relayed.
COPY_COMMANDS = frozenset({"copydb", "copydbgetnonce", "copydbsaslstart", "clone", "cloneCollection"})

#: The document sequence each command may carry (drivers send these bodies' arrays as kind-1 sections).
SEQUENCE_FIELDS: dict[str, frozenset[str]] = {
    "insert": frozenset({"documents"}),
    "update": frozenset({"updates"}),
    "delete": frozenset({"deletes"}),
    "bulkWrite": frozenset({"ops", "nsInfo"}),
}

#: Collections whose documents are credentials or keys: never read through a session.
SECRET_COLLECTIONS = frozenset({"system.users", "system.backup_users", "system.new_users", "system.keys"})
SECRET_NAMESPACES = frozenset({("local", "oplog.rs"), ("local", "oplog.$main")})  # holds every user write

#: Aggregation stages that see every database (other people's operations and sessions included).
CLUSTER_STAGES = frozenset(
    {
        "$currentOp",
        "$listSessions",
        "$listLocalSessions",
        "$listCachedAndActiveUsers",
        "$shardedDataDistribution",
        "$queryStats",
        "$listSampledQueries",
        "$listCatalog",
    }
)
#: Stages that show other people's operations or sessions: the ``operations`` family.
OPERATION_STAGES = frozenset({"$currentOp", "$listSessions", "$listLocalSessions"})

#: Aggregation stages that write.
WRITE_STAGES = frozenset({"$out", "$merge"})

#: Commands whose first value is a full namespace ``db.coll`` (sharding and sizing commands).
NAMESPACE_COMMANDS = frozenset(
    {
        "dataSize",
        "datasize",
        "splitVector",
        "checkShardingIndex",
        "getShardVersion",
        "balancerCollectionStatus",
        "analyzeShardKey",
        "configureQueryAnalyzer",
        "shardCollection",
        "reshardCollection",
        "refineCollectionShardKey",
        "unshardCollection",
        "moveCollection",
        "moveChunk",
        "moveRange",
        "split",
        "mergeChunks",
        "clearJumboFlag",
        "cleanupOrphaned",
        "configureCollectionBalancing",
        "setAllowMigrations",
    }
)
#: Commands whose first value is a database name.
DATABASE_COMMANDS = frozenset({"enableSharding", "movePrimary"})

#: Commands checked by the namespaces their arguments name rather than by the database they are sent to.
NAMESPACE_ARGUMENT_COMMANDS = (
    frozenset({"bulkWrite", "renameCollection", "internalRenameIfOptionsAndIndexesMatch"})
    | NAMESPACE_COMMANDS
    | DATABASE_COMMANDS
)

#: Commands decoded for a decision (their arguments name namespaces, or hold what a rule must see).
BODY_COMMANDS = (
    frozenset(
        {
            "aggregate",
            "explain",
            "mapReduce",
            "mapreduce",
            "renameCollection",
            "internalRenameIfOptionsAndIndexesMatch",
            "usersInfo",
            "applyOps",
            "bulkWrite",
            "create",
            "collMod",
            "cloneCollectionAsCapped",
            "killCursors",
        }
    )
    | NAMESPACE_COMMANDS
    | DATABASE_COMMANDS
)

#: Commands whose reply carries a cursor id the session may then use (``cursor.id``).
CURSOR_COMMANDS = frozenset(
    {"find", "aggregate", "getMore", "listCollections", "listIndexes", "bulkWrite", "checkMetadataConsistency"}
)


@dataclass(frozen=True)
class Refusal:
    """Why a command was refused; ``message`` names the command and goes to the client."""

    code: int
    message: str
    code_name: str = "Unauthorized"


def family_words(family: str) -> str:
    """A privileged family in a sentence: "user management", "cluster administration"..."""
    return PRIVILEGED_FAMILIES[family][0].split(" (")[0].lower()


class _Refused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.refusal = Refusal(UNAUTHORIZED, message)


def _namespace(value: Any) -> tuple[str, str] | None:
    """``db.coll`` split at its first dot, or None."""
    if not isinstance(value, str) or "." not in value:
        return None
    database, _, collection = value.partition(".")
    return database, collection


def _target(spec: Any, database: str, *, name_key: str = "coll") -> tuple[str, str] | None:
    """A stage's target: a collection name on ``database``, or ``{db, coll}``; None when it names none."""
    if isinstance(spec, str):
        return database, spec
    if isinstance(spec, Mapping):
        collection = spec.get(name_key)
        target_db = spec.get("db", database)
        if isinstance(target_db, str) and isinstance(collection, str):
            return target_db, collection
        if isinstance(target_db, str) and target_db != database:
            return target_db, ""
    return None


@dataclass(frozen=True)
class SessionPolicy:
    """The rules of one session, built once at login from its ``SessionLogin``."""

    read_only: bool = False
    deny: frozenset[str] = frozenset()
    databases: frozenset[str] = frozenset()
    privileged: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        *,
        read_only: bool,
        command_deny_list: Iterable[str] | None,
        database_allow_list: Iterable[str] | None,
        privileged_commands: Iterable[str] | None = None,
    ) -> SessionPolicy:
        """Normalise the stored lists (the deny list matches command names in any letter case)."""
        deny = frozenset(str(name).lower() for name in (command_deny_list or ()) if name)
        databases = frozenset(str(name) for name in (database_allow_list or ()) if name)
        privileged = frozenset(str(name) for name in (privileged_commands or ()) if name in PRIVILEGED_FAMILIES)
        return cls(read_only=bool(read_only), deny=deny, databases=databases, privileged=privileged)

    # -- the rules -------------------------------------------------------------------------------------------

    def check(self, command: str, database: str, body: Mapping[str, Any] | None = None) -> Refusal | None:
        """Return why ``command`` on ``database`` is refused, or None when it may go upstream.

        ``body`` (the decoded command) is looked at when given, for the commands in :data:`BODY_COMMANDS`;
        the collection, for the ``system.*`` rules, is read from it too.
        """
        collection = ""
        if body is not None:
            first = body.get(command if command != "getMore" else "collection")
            collection = first if isinstance(first, str) else ""
        try:
            self._check_name(command, database, collection)
            if body is not None and command in BODY_COMMANDS:
                self._check_body(command, body, database, None)
        except _Refused as refused:
            return refused.refusal
        return None

    def check_request(self, request: Request, cursors: Container[int] | None = None) -> Refusal | None:
        """Check a client's request after login, decoding its body only when a rule needs it.

        ``cursors`` holds the cursor ids this session received; without it ``getMore``/``killCursors`` are
        not checked against ids.
        """
        command = request.command
        if request.op_code == OP_QUERY:
            message = f"Unsupported OP_QUERY command: {command}; the gateway accepts OP_QUERY only for hello"
            return Refusal(UNSUPPORTED_OP_QUERY, message, "UnsupportedOpQueryCommand")
        try:
            if request.ambiguity:
                raise _Refused(
                    f"{command} refused: {request.ambiguity}, which the server could read differently from the "
                    "gateway's policy"
                )
            if request.sequences:
                allowed = SEQUENCE_FIELDS.get(command, frozenset())
                for identifier in request.sequences:
                    if identifier not in allowed:
                        raise _Refused(
                            f"{command} refused: a document sequence named {identifier!r} is not an argument "
                            f"{command} takes as a sequence"
                        )
            self._check_name(command, request.database, request.collection)
            if command in BODY_COMMANDS:
                try:
                    body = request.checked_body()
                except WireError as exc:
                    raise _Refused(f"{command} refused: {exc}") from None
                self._check_body(command, body, request.database, request)
            elif command == "getMore" and cursors is not None:
                cursor_id = request.cursor_id()
                if cursor_id is None or cursor_id not in cursors:
                    raise _Refused(f"getMore refused: cursor {cursor_id} was not opened by this session")
            if command == "killCursors" and cursors is not None:
                ids = request.checked_body().get("cursors")
                foreign = [cid for cid in ids if cid not in cursors] if isinstance(ids, list) else [None]
                if foreign:
                    raise _Refused(f"killCursors refused: cursor {foreign[0]} was not opened by this session")
        except _Refused as refused:
            return refused.refusal
        return None

    def _check_name(self, command: str, database: str, collection: str) -> None:
        """The rules that need only the command name, its database and collection."""
        if command.lower() in self.deny:
            raise _Refused(f"{command} is denied on this resource by the gateway's policy")
        if command in COPY_COMMANDS:
            raise _Refused(f"{command} copies from another server or database and is not relayed by the gateway")
        family = _FAMILY_OF.get(command)
        if family is not None and family not in self.privileged:
            raise _Refused(f"{command} ({family_words(family)}) is not allowed by this session's access policy")
        if self.read_only and command not in READ_COMMANDS:
            raise _Refused(f"{command} is not allowed in a read-only session")
        if command in NAMESPACE_ARGUMENT_COMMANDS:
            return  # they run on admin (or anywhere): the namespaces in their arguments are checked with the body
        bookkeeping = database == "admin" and command in ADMIN_BOOKKEEPING
        if self.databases and database not in self.databases and not bookkeeping:
            raise _Refused(f"{command} on database {database!r} is outside this session's databases")
        if collection:
            if command not in READ_COMMANDS and collection.startswith("system."):
                raise _Refused(f"{command} writes to {database}.{collection}: system collections are read-only")
            if self._secret(database, collection):
                raise _Refused(f"{command} reads {database}.{collection}, which holds credentials")

    def _secret(self, database: str, collection: str) -> bool:
        return collection in SECRET_COLLECTIONS or (database, collection) in SECRET_NAMESPACES

    def _read(self, command: str, what: str, database: str, collection: str) -> None:
        if self.databases and database not in self.databases:
            raise _Refused(f"{command} {what} database {database!r}, outside this session's databases")
        if collection and self._secret(database, collection):
            raise _Refused(f"{command} {what} {database}.{collection}, which holds credentials")

    def _write(self, command: str, what: str, database: str, collection: str) -> None:
        if self.read_only:
            raise _Refused(f"{command} {what} {database}.{collection} and this session is read-only")
        if self.databases and database not in self.databases:
            raise _Refused(f"{command} {what} database {database!r}, outside this session's databases")
        if collection.startswith("system."):
            raise _Refused(f"{command} {what} {database}.{collection}: system collections are read-only")

    def _check_body(self, command: str, body: Mapping[str, Any], database: str, request: Request | None) -> None:
        """The rules that read the command's arguments: namespaces, stages, credentials."""
        first = body.get(command)
        if command == "aggregate":
            self._check_pipeline(command, body.get("pipeline"), database)
        elif command == "explain":
            inner = body.get("explain")
            if isinstance(inner, Mapping) and inner:
                inner_name = next(iter(inner))
                if self.read_only and inner_name not in READ_COMMANDS:
                    raise _Refused(f"explain of {inner_name} is not allowed in a read-only session")
                collection = inner.get(inner_name) if inner_name != "getMore" else inner.get("collection")
                self._check_name(inner_name, database, collection if isinstance(collection, str) else "")
                if inner_name in BODY_COMMANDS and inner_name != "explain":
                    self._check_body(inner_name, inner, database, None)
        elif command in ("mapReduce", "mapreduce"):
            out = body.get("out")
            if isinstance(out, str):
                self._write(command, "writes to", database, out)
            elif isinstance(out, Mapping) and "inline" not in out:
                target = next((out.get(key) for key in ("replace", "merge", "reduce") if key in out), "")
                target_db = out.get("db", database)
                self._write(command, "writes to", str(target_db), target if isinstance(target, str) else "")
        elif command in ("renameCollection", "internalRenameIfOptionsAndIndexesMatch"):
            source = _namespace(first if command == "renameCollection" else body.get("from"))
            target = _namespace(body.get("to"))
            if source is None or target is None:
                raise _Refused(f"{command} refused: its namespaces must be strings 'database.collection'")
            self._write(command, "renames", *source)
            self._write(command, "renames to", *target)
        elif command in NAMESPACE_COMMANDS:
            namespace = _namespace(first)
            if namespace is None:
                raise _Refused(f"{command} refused: its namespace must be a string 'database.collection'")
            self._read(command, "names", *namespace)
        elif command in DATABASE_COMMANDS:
            self._read(command, "names", str(first), "")
        elif command == "usersInfo":
            if body.get("showCredentials"):
                raise _Refused("usersInfo with showCredentials is refused: the gateway never shows credentials")
            if self.databases:
                if isinstance(first, Mapping) and first.get("forAllDBs"):
                    raise _Refused("usersInfo forAllDBs reads every database, outside this session's databases")
                for user in first if isinstance(first, list) else [first]:
                    if isinstance(user, Mapping) and isinstance(user.get("db"), str):
                        self._read(command, "reads users of", user["db"], "")
        elif command == "applyOps":
            self._check_ops(first, database)
        elif command == "bulkWrite":
            entries = body.get("nsInfo")
            if entries is None and request is not None:
                entries = request.sequence("nsInfo")
            for entry in entries if isinstance(entries, list) else []:
                namespace = _namespace(entry.get("ns")) if isinstance(entry, Mapping) else None
                if namespace is None:
                    raise _Refused("bulkWrite refused: each nsInfo entry needs an ns 'database.collection'")
                self._write(command, "writes to", *namespace)
        elif command in ("create", "collMod"):
            if "pipeline" in body:
                view_on = body.get("viewOn")
                if isinstance(view_on, str):
                    self._read(command, "defines a view on", database, view_on)
                self._check_pipeline(command, body.get("pipeline"), database)
        elif command == "cloneCollectionAsCapped":
            target = body.get("toCollection")
            self._write(command, "writes to", database, target if isinstance(target, str) else "")

    def _check_pipeline(self, command: str, pipeline: Any, database: str) -> None:
        if not isinstance(pipeline, list):
            return
        for stage in pipeline:
            if not isinstance(stage, Mapping) or not stage:
                continue
            for name, spec in stage.items():  # a stage has one field; the server refuses more
                self._check_stage(command, name, spec, database)

    def _check_stage(self, command: str, name: str, spec: Any, database: str) -> None:
        if name in WRITE_STAGES:
            if self.read_only:
                raise _Refused(f"{command} with $out or $merge is not allowed in a read-only session")
            into = spec.get("into", spec) if name == "$merge" and isinstance(spec, Mapping) else spec
            target = _target(into, database)
            if target is None:
                raise _Refused(f"{command} refused: {name} must name its target collection")
            self._write(command, f"{name} writes to", *target)
        elif name in ("$lookup", "$graphLookup"):
            if isinstance(spec, Mapping):
                target = _target(spec.get("from"), database)
                if target is not None:
                    self._read(command, f"{name} reads", *target)
                self._check_pipeline(command, spec.get("pipeline"), database)
        elif name == "$unionWith":
            target = _target(spec, database)
            if target is not None:
                self._read(command, "$unionWith reads", *target)
            if isinstance(spec, Mapping):
                self._check_pipeline(command, spec.get("pipeline"), database)
        elif name == "$facet" and isinstance(spec, Mapping):
            for sub in spec.values():
                self._check_pipeline(command, sub, database)
        elif name in CLUSTER_STAGES or (
            name == "$changeStream" and isinstance(spec, Mapping) and spec.get("allChangesForCluster")
        ):
            if name in OPERATION_STAGES and "operations" not in self.privileged:
                raise _Refused(
                    f"{command} with {name} ({family_words('operations')}) is not allowed by this session's "
                    "access policy"
                )
            if self.databases:
                raise _Refused(f"{command} with {name} reads every database, outside this session's databases")

    def _check_ops(self, ops: Any, database: str) -> None:
        """applyOps entries: each namespace allowed and writable, and a command entry checked as a command."""
        if not isinstance(ops, list):
            raise _Refused("applyOps refused: its operations must be a list")
        for op in ops:
            if not isinstance(op, Mapping):
                raise _Refused("applyOps refused: each operation must be a document")
            kind, namespace = op.get("op"), _namespace(op.get("ns"))
            if kind == "n":
                continue
            if namespace is None:
                raise _Refused("applyOps refused: each operation needs an ns 'database.collection'")
            inner = op.get("o")
            if kind == "c" and isinstance(inner, Mapping) and inner:
                inner_name = next(iter(inner))
                collection = inner.get(inner_name)
                self._check_name(inner_name, namespace[0], collection if isinstance(collection, str) else "")
                if inner_name == "applyOps":
                    self._check_ops(inner.get("applyOps"), namespace[0])
                elif inner_name in BODY_COMMANDS:
                    self._check_body(inner_name, inner, namespace[0], None)
            else:
                self._write("applyOps", "writes to", *namespace)
