"""Privileges as mongod models them: a resource pattern and the actions allowed on it.

A privilege is ``{resource: <pattern>, actions: [...]}``; the patterns (MongoDB manual, "Resource
Document") are ``{db: "x", collection: "y"}`` (one collection), ``{db: "x", collection: ""}`` (the
database and all its non-``system.`` collections), ``{db: "", collection: "y"}`` (collection ``y`` in
every database), ``{db: "", collection: ""}`` (every database and non-system collection),
``{cluster: true}`` and ``{anyResource: true}``. A command names a *target* (a namespace, a database,
the cluster) and the actions it needs there; :meth:`Grants.allows` answers whether the privileges of a
user's roles cover all of them, with mongod's matching rules.

The built-in roles are expressed here as privileges (:func:`builtin_privileges`), written from the
manual's "Built-In Roles" page (7.x) and checked against the server's behaviour, without the
sharded/serverless-only patterns, so that built-in and user-defined roles share one authorization path.
The action names are the manual's "Privilege Actions" list (``gatewayproxy.wire.actions``, which the portal
shares); an unknown one is refused when a role is defined, as mongod does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gatewayproxy.wire.actions import PRIVILEGE_ACTIONS

from .errors import CommandError, bad_value, type_mismatch


def _actions(text: str) -> frozenset[str]:
    return frozenset(text.split())


ANY_ACTION = "anyAction"
#: The wire server's own action, held only by ``root``: it guards ``wireserverFault``. It is not a
#: mongod action, so no user-defined role can be given it.
FAULT_ACTION = "wireserverFault"

# -- resources ------------------------------------------------------------------------------------
NAMESPACE = "namespace"  # {db: "x", collection: "y"}
DATABASE = "database"  # {db: "x", collection: ""}
COLLECTION = "collection"  # {db: "", collection: "y"}
ANY_NORMAL = "anyNormal"  # {db: "", collection: ""}
CLUSTER = "cluster"  # {cluster: true}
ANY = "any"  # {anyResource: true}


def is_system_collection(name: str) -> bool:
    return name.startswith("system.")


@dataclass(frozen=True, order=True)
class Resource:
    """A resource pattern (in a privilege) or a target (what a command acts on)."""

    kind: str
    db: str = ""
    collection: str = ""

    @classmethod
    def namespace(cls, db: str, collection: str) -> Resource:
        return cls(NAMESPACE, db, collection)

    @classmethod
    def database(cls, db: str) -> Resource:
        return cls(DATABASE, db)

    @classmethod
    def of_ns(cls, ns: str) -> Resource:
        """The target of a full namespace ``db.collection``."""
        db, _, collection = ns.partition(".")
        return cls.namespace(db, collection) if collection else cls.database(db)

    def to_document(self) -> dict:
        if self.kind == CLUSTER:
            return {"cluster": True}
        if self.kind == ANY:
            return {"anyResource": True}
        return {"db": self.db, "collection": self.collection}

    def matches(self, target: Resource) -> bool:
        """Whether this privilege pattern covers ``target`` (mongod's resource search list)."""
        if self.kind == ANY:
            return True
        if target.kind == CLUSTER:
            return self.kind == CLUSTER
        if target.kind == ANY_NORMAL:
            return self.kind == ANY_NORMAL
        if target.kind == DATABASE:
            return self.kind == ANY_NORMAL or (self.kind == DATABASE and self.db == target.db)
        if target.kind == NAMESPACE:
            if self.kind == NAMESPACE:
                return (self.db, self.collection) == (target.db, target.collection)
            if self.kind == COLLECTION:
                return self.collection == target.collection
            if is_system_collection(target.collection):
                return False  # db-wide and any-normal patterns leave system collections out
            return self.kind == ANY_NORMAL or (self.kind == DATABASE and self.db == target.db)
        return False

    def names_database(self) -> str | None:
        """The one database this pattern is about (``{db: x, ...}``), else None."""
        return self.db if self.kind in (NAMESPACE, DATABASE) else None


CLUSTER_RESOURCE = Resource(CLUSTER)
ANY_RESOURCE = Resource(ANY)
ANY_NORMAL_RESOURCE = Resource(ANY_NORMAL)


def parse_resource(value: Any, field: str) -> Resource:
    """A privilege's ``resource`` document, checked as mongod checks it."""
    if not isinstance(value, Mapping):
        raise type_mismatch(f"BSON field '{field}' is the wrong type '{type(value).__name__}', expected type 'object'")
    keys = set(value)
    unknown = keys - {"db", "collection", "cluster", "anyResource"}
    if unknown:
        raise CommandError(40415, f"BSON field '{field}.{sorted(unknown)[0]}' is an unknown field.", "Location40415")
    if "anyResource" in value or "cluster" in value:
        which = "anyResource" if "anyResource" in value else "cluster"
        if value[which] is not True:
            raise bad_value(f"resource: {{{which}: false}} is not a valid resource pattern")
        if len(keys) != 1:
            raise bad_value(f"'{which}' may not be combined with other fields in a resource pattern")
        return ANY_RESOURCE if which == "anyResource" else CLUSTER_RESOURCE
    for key in ("db", "collection"):
        if key not in value:
            raise bad_value(f"resource pattern must contain '{key}' specifier")
        if not isinstance(value[key], str):
            raise type_mismatch(f"BSON field '{field}.{key}' is the wrong type, expected type 'string'")
    db, collection = value["db"], value["collection"]
    if db and collection:
        return Resource.namespace(db, collection)
    if db:
        return Resource.database(db)
    if collection:
        return Resource(COLLECTION, "", collection)
    return ANY_NORMAL_RESOURCE


@dataclass(frozen=True)
class Privilege:
    resource: Resource
    actions: frozenset[str]

    def to_document(self) -> dict:
        return {"resource": self.resource.to_document(), "actions": sorted(self.actions)}


def merge(privileges: Iterable[Privilege]) -> list[Privilege]:
    """One privilege per resource, actions united, in first-seen order (as mongod stores them)."""
    by_resource: dict[Resource, set[str]] = {}
    for privilege in privileges:
        by_resource.setdefault(privilege.resource, set()).update(privilege.actions)
    return [Privilege(resource, frozenset(actions)) for resource, actions in by_resource.items()]


def parse_privileges(value: Any, command: str) -> list[Privilege]:
    """The ``privileges`` array of createRole, updateRole, grant/revokePrivilegesToRole.

    Unknown actions are collected and refused together, as mongod does: FailedToParse (9),
    "Unrecognized action privilege strings: a,b".
    """
    field = f"{command}.privileges"
    if not isinstance(value, list):
        raise type_mismatch(f"BSON field '{field}' is the wrong type, expected type 'array'")
    privileges: list[Privilege] = []
    unrecognized: list[str] = []
    for item in value:
        if not isinstance(item, Mapping):
            raise type_mismatch(f"BSON field '{field}' must hold documents")
        for key in ("resource", "actions"):
            if key not in item:
                raise CommandError(
                    40414, f"BSON field 'privileges.{key}' is missing but a required field", "Location40414"
                )
        resource = parse_resource(item["resource"], "privileges.resource")
        actions = item["actions"]
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            raise type_mismatch("BSON field 'privileges.actions' is the wrong type, expected an array of strings")
        unrecognized.extend(a for a in actions if a not in PRIVILEGE_ACTIONS and a not in unrecognized)
        privileges.append(Privilege(resource, frozenset(a for a in actions if a in PRIVILEGE_ACTIONS)))
    if unrecognized:
        raise CommandError(9, f"Unrecognized action privilege strings: {','.join(unrecognized)}", "FailedToParse")
    return merge(privileges)


class Grants:
    """Everything a set of privileges allows, answered with mongod's matching rules."""

    def __init__(self, privileges: Iterable[Privilege]) -> None:
        self.privileges = merge(privileges)

    def allows(self, target: Resource, actions: Iterable[str]) -> bool:
        """Whether every one of ``actions`` is granted on ``target`` (possibly by several privileges)."""
        needed = set(actions)
        granted: set[str] = set()
        for privilege in self.privileges:
            if privilege.resource.matches(target):
                if ANY_ACTION in privilege.actions:
                    return True
                granted |= privilege.actions
        return needed <= granted

    def any_on(self, target: Resource) -> bool:
        """Whether some action at all is granted on ``target``."""
        return any(p.actions and p.resource.matches(target) for p in self.privileges)

    def databases_named(self) -> set[str]:
        """Databases some privilege names (``{db: x, ...}``): what listDatabases shows without the action."""
        return {db for p in self.privileges if p.actions and (db := p.resource.names_database())}


# -- built-in roles ----------------------------------------------------------------------------------
READ = _actions(
    "changeStream collStats dbHash dbStats find killCursors listCollections listIndexes listSearchIndexes planCacheRead"
)
READ_WRITE = READ | _actions(
    "cleanupStructuredEncryptionData compactStructuredEncryptionData convertToCapped createCollection createIndex "
    "createSearchIndexes dropCollection dropIndex dropSearchIndex insert remove renameCollectionSameDB update "
    "updateSearchIndex"
)
USER_ADMIN = _actions(
    "changeCustomData changePassword createUser createRole dropUser dropRole grantRole revokeRole "
    "setAuthenticationRestriction viewUser viewRole"
)
DB_ADMIN = _actions(
    "analyze bypassDocumentValidation collMod collStats compact convertToCapped createCollection dbStats "
    "dropCollection dropDatabase dropIndex dropSearchIndex createIndex createSearchIndexes enableProfiler "
    "listCollections listIndexes listSearchIndexes updateSearchIndex planCacheIndexFilter planCacheRead "
    "planCacheWrite reIndex renameCollectionSameDB storageDetails validate configureQueryAnalyzer"
)
SYSTEM_PROFILE = READ | _actions("convertToCapped createCollection dropCollection")
READ_AND_INDEX = READ | _actions("createIndex createSearchIndexes dropIndex dropSearchIndex")
CLUSTER_MONITOR = _actions(
    "connPoolStats getCmdLineOpts getDefaultRWConcern getLog getParameter getShardMap hostInfo listDatabases "
    "listSampledQueries listSessions listShards netstat operationMetrics replSetGetConfig replSetGetStatus "
    "serverStatus top useUUID inprog shardingState allCollectionStats shardedDataDistribution"
)
CLUSTER_MONITOR_DB = _actions("collStats dbStats getDatabaseVersion getShardVersion indexStats")
HOST_MANAGER = _actions(
    "applicationMessage auditConfigure connPoolSync dropConnections logRotate oidReset setParameter shutdown "
    "touch unlock flushRouterConfig fsync invalidateUserCache killAnyCursor killAnySession killop "
    "replSetResizeOplog resync trafficRecord rotateCertificates oidcListKeys oidcRefreshKeys"
)
CLUSTER_MANAGER = _actions(
    "appendOplogNote applicationMessage replSetConfigure replSetGetConfig replSetGetStatus replSetStateChange "
    "resync addShard removeShard listSessions listShards flushRouterConfig cleanupOrphaned getDefaultRWConcern "
    "runTenantMigration setDefaultRWConcern setFeatureCompatibilityVersion setClusterParameter "
    "getClusterParameter setChangeStreamState getChangeStreamState querySettings queryStatsRead "
    "queryStatsReadTransformed checkMetadataConsistency transitionFromDedicatedConfigServer "
    "transitionToDedicatedConfigServer"
)
CLUSTER_MANAGER_DB = _actions(
    "analyzeShardKey configureQueryAnalyzer clearJumboFlag splitChunk moveChunk moveCollection enableSharding "
    "splitVector refineCollectionShardKey reshardCollection"
)
RESTORE_WRITE = _actions(
    "bypassDocumentValidation collMod convertToCapped createCollection createIndex createSearchIndexes "
    "dropCollection insert updateSearchIndex"
)
WRITE_ACTIONS = _actions("insert remove update")


def _p(resource: Resource, actions: Iterable[str]) -> Privilege:
    return Privilege(resource, frozenset(actions))


def _db(db: str) -> Resource:
    return Resource.database(db)


def _ns(db: str, collection: str) -> Resource:
    return Resource.namespace(db, collection)


def _coll(collection: str) -> Resource:
    return Resource(COLLECTION, "", collection)


def _read(db: str) -> list[Privilege]:
    return [_p(_db(db), READ), _p(_ns(db, "system.js"), READ)]


def _read_write(db: str) -> list[Privilege]:
    return [_p(_db(db), READ_WRITE), _p(_ns(db, "system.js"), READ_WRITE)]


def _user_admin(db: str) -> list[Privilege]:
    return [_p(_db(db), USER_ADMIN)]


def _db_admin(db: str) -> list[Privilege]:
    return [_p(_db(db), DB_ADMIN), _p(_ns(db, "system.profile"), SYSTEM_PROFILE)]


def _read_any(db: str) -> list[Privilege]:
    return [
        _p(ANY_NORMAL_RESOURCE, READ),
        _p(CLUSTER_RESOURCE, ["listDatabases"]),
        _p(_coll("system.js"), READ),
    ]


def _read_write_any(db: str) -> list[Privilege]:
    return [*_read_any(db), _p(ANY_NORMAL_RESOURCE, READ_WRITE), _p(_coll("system.js"), READ_WRITE)]


def _user_admin_any(db: str) -> list[Privilege]:
    return [
        _p(ANY_NORMAL_RESOURCE, USER_ADMIN | {"listCachedAndActiveUsers"}),
        _p(_db("local"), USER_ADMIN),
        _p(_db("config"), USER_ADMIN),
        _p(CLUSTER_RESOURCE, ["listDatabases", "authSchemaUpgrade", "invalidateUserCache", "viewUser"]),
        _p(_ns("admin", "system.users"), READ_AND_INDEX),
        _p(_ns("admin", "system.roles"), READ_AND_INDEX),
        _p(_coll("system.users"), READ),
        _p(_ns("admin", "system.version"), READ),
        _p(_ns("admin", "system.backup_users"), READ),
    ]


def _db_admin_any(db: str) -> list[Privilege]:
    return [
        _p(CLUSTER_RESOURCE, ["listDatabases", "applyOps"]),
        _p(ANY_NORMAL_RESOURCE, DB_ADMIN),
        _p(_coll("system.profile"), SYSTEM_PROFILE),
    ]


def _cluster_monitor(db: str) -> list[Privilege]:
    return [
        *_read("config"),
        *_read("local"),
        _p(CLUSTER_RESOURCE, CLUSTER_MONITOR),
        _p(ANY_NORMAL_RESOURCE, CLUSTER_MONITOR_DB),
        _p(_db("config"), CLUSTER_MONITOR_DB),
        _p(_ns("config", "system.sessions"), CLUSTER_MONITOR_DB),
        _p(_db("local"), CLUSTER_MONITOR_DB),
        _p(_ns("local", "system.replset"), ["find"]),
        _p(_coll("system.profile"), ["find"]),
    ]


def _host_manager(db: str) -> list[Privilege]:
    return [_p(CLUSTER_RESOURCE, HOST_MANAGER), _p(ANY_NORMAL_RESOURCE, ["killCursors"])]


def _cluster_manager(db: str) -> list[Privilege]:
    return [
        *_read("config"),
        _p(CLUSTER_RESOURCE, CLUSTER_MANAGER),
        _p(ANY_NORMAL_RESOURCE, CLUSTER_MANAGER_DB),
        _p(_db("config"), CLUSTER_MANAGER_DB | WRITE_ACTIONS),
        _p(_db("local"), CLUSTER_MANAGER_DB | WRITE_ACTIONS),
        _p(_ns("local", "system.replset"), READ),
        _p(ANY_RESOURCE, ["dbCheck"]),
    ]


def _cluster_admin(db: str) -> list[Privilege]:
    return [
        *_cluster_monitor(db),
        *_host_manager(db),
        *_cluster_manager(db),
        _p(ANY_NORMAL_RESOURCE, ["dropDatabase"]),
        _p(ANY_RESOURCE, ["importCollection", "exportCollection"]),
    ]


def _backup(db: str) -> list[Privilege]:
    return [
        _p(CLUSTER_RESOURCE, ["appendOplogNote", "serverStatus", "setUserWriteBlockMode"]),
        _p(CLUSTER_RESOURCE, ["getParameter", "listDatabases", "useUUID"]),
        _p(ANY_RESOURCE, ["collStats", "listCollections", "listIndexes", "listSearchIndexes"]),
        _p(ANY_NORMAL_RESOURCE, ["find"]),
        _p(_db("config"), ["find"]),
        _p(_db("local"), ["find"]),
        *(_p(_coll(name), ["find"]) for name in ("system.js", "system.users", "system.profile")),
        *(_p(_ns("admin", name), ["find"]) for name in ("system.backup_users", "system.roles", "system.version")),
        _p(_ns("config", "settings"), ["find", "insert", "update"]),
    ]


def _restore(db: str) -> list[Privilege]:
    return [
        _p(
            CLUSTER_RESOURCE,
            ["getParameter", "forceUUID", "useUUID", "bypassWriteBlockingMode", "setUserWriteBlockMode", "applyOps"],
        ),
        _p(_db("local"), RESTORE_WRITE),
        _p(_db("config"), RESTORE_WRITE),
        _p(ANY_RESOURCE, ["listCollections"]),
        _p(ANY_NORMAL_RESOURCE, RESTORE_WRITE | USER_ADMIN),
        _p(_coll("system.js"), RESTORE_WRITE),
        _p(_ns("admin", "system.backup_users"), RESTORE_WRITE),
        _p(_ns("admin", "system.version"), RESTORE_WRITE | {"find"}),
        _p(_coll("system.users"), RESTORE_WRITE | {"find", "update", "remove"}),
        _p(_ns("admin", "system.roles"), ["createIndex"]),
    ]


def _root(db: str) -> list[Privilege]:
    return [
        *_cluster_admin(db),
        *_user_admin_any(db),
        *_db_admin_any(db),
        *_read_write_any(db),
        *_backup(db),
        *_restore(db),
        _p(ANY_RESOURCE, ["validate"]),
        _p(CLUSTER_RESOURCE, ["useTenant", FAULT_ACTION]),
    ]


# role name -> (defined only in admin?, privileges for the role's database)
BUILTIN_ROLES = {
    "read": (False, _read),
    "readWrite": (False, _read_write),
    "dbAdmin": (False, _db_admin),
    "userAdmin": (False, _user_admin),
    "dbOwner": (False, lambda db: [*_read_write(db), *_db_admin(db), *_user_admin(db)]),
    "enableSharding": (
        False,
        lambda db: [
            _p(
                ANY_NORMAL_RESOURCE,
                [
                    "analyzeShardKey",
                    "enableSharding",
                    "moveCollection",
                    "refineCollectionShardKey",
                    "reshardCollection",
                ],
            )
        ],
    ),
    "readAnyDatabase": (True, _read_any),
    "readWriteAnyDatabase": (True, _read_write_any),
    "userAdminAnyDatabase": (True, _user_admin_any),
    "dbAdminAnyDatabase": (True, _db_admin_any),
    "clusterMonitor": (True, _cluster_monitor),
    "hostManager": (True, _host_manager),
    "clusterManager": (True, _cluster_manager),
    "clusterAdmin": (True, _cluster_admin),
    "backup": (True, _backup),
    "restore": (True, _restore),
    "root": (True, _root),
}


def is_builtin(role: str, db: str) -> bool:
    """Whether ``role@db`` is a built-in role (the *AnyDatabase and cluster roles exist only in admin)."""
    entry = BUILTIN_ROLES.get(role)
    return entry is not None and (not entry[0] or db == "admin")


def builtin_role_names(db: str) -> list[str]:
    """Built-in roles that exist in ``db``, sorted."""
    return sorted(name for name in BUILTIN_ROLES if is_builtin(name, db))


def builtin_privileges(role: str, db: str) -> list[Privilege]:
    """The privileges of built-in ``role@db`` (merged per resource); empty if it is not one."""
    if not is_builtin(role, db):
        return []
    return merge(BUILTIN_ROLES[role][1](db))
