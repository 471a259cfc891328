"""What each command needs: the actions on which resource, as mongod's checks and the MongoDB manual
("Privilege Actions") say.

:data:`CHECKS` maps every command to :data:`NO_AUTH` (runs before login), :data:`ANY_USER` (any logged-in
user; the handler may check more) or a function returning the :class:`Need` list of that request. The
dispatcher refuses with Unauthorized (13) the first need the caller's :class:`~.privileges.Grants` do
not cover: with mongod's message for that check, or else "not authorized on DB to execute command
{ ... }". The needs of a command that opened a cursor are kept on the cursor and checked again on each
getMore, as mongod does with a cursor's originating privileges.

Commands and what they need (``ns`` = the command's ``db.collection``):

- find, count, distinct: ``find`` on ns. getMore: what the command that opened the cursor needed.
- insert: ``insert``; update: ``update`` (+ ``insert`` with an upsert); delete: ``remove``;
  findAndModify: ``find`` + ``update`` or ``remove`` (+ ``insert`` with upsert), on ns;
  ``bypassDocumentValidation: true`` also needs that action.
- aggregate: ``find`` on ns (``collStats``/``indexStats`` for those first stages); ``$out``: ``insert`` +
  ``remove`` on the output; ``$merge``: ``insert`` + ``update`` on the output; ``$lookup``,
  ``$graphLookup``, ``$unionWith``: ``find`` on the other collection (sub-pipelines and ``$facet``
  included). ``$currentOp``: see currentOp.
- create: ``createCollection`` or ``insert`` on ns; drop: ``dropCollection``; createIndexes:
  ``createIndex``; dropIndexes: ``dropIndex``; listIndexes: ``listIndexes``, on ns.
- listCollections: ``listCollections`` on the database; without it, ``authorizedCollections: true`` with
  ``nameOnly: true`` lists the collections the user has some privilege on.
- dropDatabase: ``dropDatabase``; dbStats: ``dbStats``, on the database.
- listDatabases (admin): ``listDatabases`` on the cluster lists all; without it, the databases some
  privilege names (refused with ``authorizedDatabases: false``).
- killCursors: none for the caller's own cursors, ``killAnyCursor`` on the cursor's ns for others'.
- currentOp (admin): ``inprog`` on the cluster, or only one's own operations with ``$ownOps``.
- killOp (admin): ``killop`` on the cluster, or one's own operation. killAllSessions (admin):
  ``killAnySession`` on the cluster. serverStatus, getLog, getParameter (admin): that action on the cluster.
- createUser: ``createUser`` on the database + ``grantRole`` on each role's database
  (+ ``setAuthenticationRestriction`` with restrictions). updateUser: ``changePassword`` (or, for
  oneself, ``changeOwnPassword``) for pwd/mechanisms, ``changeCustomData`` (or ``changeOwnCustomData``),
  for roles ``revokeRole`` on every database + ``grantRole`` on each role's. dropUser,
  dropAllUsersFromDatabase: ``dropUser``. grantRolesToUser / revokeRolesFromUser: ``grantRole`` /
  ``revokeRole`` on each role's database. usersInfo: one's own user, else ``viewUser`` on the users'
  database (on the cluster for ``forAllDBs``).
- createRole: ``createRole`` on the database + ``grantRole`` for each inherited role's database and for
  each privilege's database (on admin for cluster-wide or multi-database privileges). updateRole:
  ``revokeRole`` on every database + the grants of what it sets. grantRolesToRole /
  revokeRolesFromRole, grantPrivilegesToRole / revokePrivilegesFromRole: ``grantRole`` / ``revokeRole``
  as for createRole. dropRole, dropAllRolesFromDatabase: ``dropRole``. rolesInfo: roles one holds,
  else ``viewRole`` on the role's database.
- wireserverFault (admin): the wire server's own action, which only ``root`` holds.
- hello, isMaster, saslStart, saslContinue, logout, ping, buildInfo, connectionStatus, endSessions:
  nothing, even before login.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .privileges import (
    ANY_NORMAL_RESOURCE,
    CLUSTER_RESOURCE,
    FAULT_ACTION,
    Grants,
    Resource,
    parse_resource,
)
from .roles import role_refs

NO_AUTH = "none"  # allowed before login
ANY_USER = "auth"  # any authenticated user; the handler checks the rest


@dataclass(frozen=True)
class Need:
    """Actions needed on a target, and mongod's refusal message when it has its own."""

    target: Resource
    actions: frozenset[str]
    message: str | None = None


@dataclass
class Request:
    """One command as the checks see it."""

    server: Any
    conn: Any
    db: str
    name: str
    cmd: dict
    grants: Grants

    def ns(self, field: str | None = None) -> Resource | None:
        """The command's collection (``cmd[field]``, default the command name) as a target."""
        value = self.cmd.get(field or self.name)
        if not isinstance(value, str) or not value:
            return None  # the handler refuses it with mongod's error
        return Resource.namespace(self.db, value)

    @property
    def database(self) -> Resource:
        return Resource.database(self.db)


Check = Callable[[Request], list[Need]]


def need(target: Resource, *actions: str, message: str | None = None) -> Need:
    return Need(target, frozenset(actions), message)


def _on_ns(*actions: str) -> Check:
    def check(req: Request) -> list[Need]:
        target = req.ns()
        if target is None:
            return []
        extra = ("bypassDocumentValidation",) if req.cmd.get("bypassDocumentValidation") is True else ()
        return [need(target, *actions, *extra)]

    return check


def _on_db(*actions: str) -> Check:
    return lambda req: [need(req.database, *actions)]


def _on_cluster(*actions: str) -> Check:
    return lambda req: [need(CLUSTER_RESOURCE, *actions)]


# -- CRUD ---------------------------------------------------------------------------------------------
def _update(req: Request) -> list[Need]:
    target = req.ns()
    if target is None:
        return []
    specs = req.cmd.get("updates")
    upsert = isinstance(specs, list) and any(isinstance(s, Mapping) and s.get("upsert") is True for s in specs)
    actions = ["update", *(["insert"] if upsert else [])]
    if req.cmd.get("bypassDocumentValidation") is True:
        actions.append("bypassDocumentValidation")
    return [need(target, *actions)]


def _find_and_modify(req: Request) -> list[Need]:
    target = req.ns()
    if target is None:
        return []
    actions = ["find", "remove" if req.cmd.get("remove") else "update"]
    if req.cmd.get("upsert") is True:
        actions.append("insert")
    if req.cmd.get("bypassDocumentValidation") is True:
        actions.append("bypassDocumentValidation")
    return [need(target, *actions)]


def _create(req: Request) -> list[Need]:
    target = req.ns()
    if target is None:
        return []
    # mongod: the insert action also allows create
    return [need(target, "insert" if req.grants.allows(target, ["insert"]) else "createCollection")]


def _stage_target(db: str, value: Any) -> Resource | None:
    """A stage's other collection: ``"coll"`` or ``{db, coll}``."""
    if isinstance(value, str) and value:
        return Resource.namespace(db, value)
    if isinstance(value, Mapping) and isinstance(value.get("coll"), str) and value["coll"]:
        other_db = value.get("db", db)
        return Resource.namespace(other_db if isinstance(other_db, str) and other_db else db, value["coll"])
    return None


def _pipeline_needs(db: str, pipeline: Any, bypass: bool) -> list[Need]:
    needs: list[Need] = []
    if not isinstance(pipeline, list):
        return needs
    for stage in pipeline:
        if not isinstance(stage, Mapping):
            continue
        for op, spec in stage.items():
            if op == "$out":
                target = _stage_target(db, spec)
                extra = ("bypassDocumentValidation",) if bypass else ()
                if target is not None:
                    needs.append(need(target, "insert", "remove", *extra))
            elif op == "$merge":
                into = spec.get("into") if isinstance(spec, Mapping) else spec
                target = _stage_target(db, into)
                if target is not None:
                    needs.append(need(target, "insert", "update"))
            elif op in ("$lookup", "$graphLookup"):
                if isinstance(spec, Mapping):
                    target = _stage_target(db, spec.get("from"))
                    if target is not None:
                        needs.append(need(target, "find"))
                    needs.extend(_pipeline_needs(db, spec.get("pipeline"), bypass))
            elif op == "$unionWith":
                coll = spec.get("coll") if isinstance(spec, Mapping) else spec
                target = _stage_target(db, coll)
                if target is not None:
                    needs.append(need(target, "find"))
                if isinstance(spec, Mapping):
                    needs.extend(_pipeline_needs(db, spec.get("pipeline"), bypass))
            elif op == "$facet" and isinstance(spec, Mapping):
                for sub in spec.values():
                    needs.extend(_pipeline_needs(db, sub, bypass))
    return needs


def is_current_op_aggregate(cmd: Mapping) -> bool:
    pipeline = cmd.get("pipeline")
    return (
        cmd.get("aggregate") == 1
        and isinstance(pipeline, list)
        and bool(pipeline)
        and isinstance(pipeline[0], Mapping)
        and "$currentOp" in pipeline[0]
    )


def _aggregate(req: Request) -> list[Need]:
    if is_current_op_aggregate(req.cmd):
        return []  # current_op_aggregate checks inprog itself
    pipeline = req.cmd.get("pipeline")
    needs: list[Need] = []
    target = req.ns("aggregate")
    if target is not None:
        first = pipeline[0] if isinstance(pipeline, list) and pipeline else None
        if isinstance(first, Mapping) and "$collStats" in first:
            needs.append(need(target, "collStats"))
        elif isinstance(first, Mapping) and "$indexStats" in first:
            needs.append(need(target, "indexStats"))
        else:
            needs.append(need(target, "find"))
    bypass = req.cmd.get("bypassDocumentValidation") is True
    return needs + _pipeline_needs(req.db, pipeline, bypass)


def _get_more(req: Request) -> list[Need]:
    cursor_id = req.cmd.get("getMore")
    if isinstance(cursor_id, bool) or not isinstance(cursor_id, int):
        return []
    cursor = req.server.engine.cursors.get(int(cursor_id))
    if cursor is None or (cursor.owners and not cursor.owners & set(req.conn.users)):
        return []  # the handler answers CursorNotFound, or "not created by the authenticated user"
    message = f"not authorized for getMore with cursor id {int(cursor_id)}"
    return [Need(n.target, n.actions, message) for n in cursor.meta.get("needs", [])]


def _kill_cursors(req: Request) -> list[Need]:
    ids = req.cmd.get("cursors")
    if not isinstance(ids, list):
        return []
    needs = []
    for cursor_id in ids:
        if isinstance(cursor_id, bool) or not isinstance(cursor_id, int):
            continue
        cursor = req.server.engine.cursors.get(int(cursor_id))
        if cursor is not None and cursor.owners and not cursor.owners & set(req.conn.users):
            needs.append(need(Resource.of_ns(cursor.ns), "killAnyCursor"))
    return needs


def _list_databases(req: Request) -> list[Need]:
    if req.cmd.get("authorizedDatabases") is False:
        return [need(CLUSTER_RESOURCE, "listDatabases")]
    return []  # the handler lists only what the user may see


def _list_collections(req: Request) -> list[Need]:
    if req.grants.allows(req.database, ["listCollections"]):
        return []
    if req.cmd.get("authorizedCollections") is True and req.cmd.get("nameOnly") is True:
        return []  # the handler lists only the collections the user has privileges on
    return [need(req.database, "listCollections")]


# -- user and role management ------------------------------------------------------------------------
def _roles_named(req: Request, field: str = "roles") -> list[dict[str, str]]:
    value = req.cmd.get(field)
    if not isinstance(value, list):
        return []
    try:
        return role_refs(value, req.db)
    except TypeError:
        return []  # the handler refuses the malformed entry


def _role_needs(req: Request, verb: str) -> list[Need]:
    """What granting (``verb="grant"``) or revoking the roles a command names needs: ``<verb>Role`` on each
    role's database."""
    return [
        need(Resource.database(r["db"]), f"{verb}Role", message=f"Not authorized to {verb} role: {r['role']}@{r['db']}")
        for r in _roles_named(req)
    ]


def _grant_roles(req: Request) -> list[Need]:
    return _role_needs(req, "grant")


def _revoke_roles(req: Request) -> list[Need]:
    return _role_needs(req, "revoke")


def _privilege_resources(req: Request) -> list[Resource]:
    value = req.cmd.get("privileges")
    resources = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, Mapping):
            try:
                resources.append(parse_resource(item.get("resource"), "privileges.resource"))
            except Exception:  # malformed: the handler refuses it with mongod's error
                continue
    return resources


def _privilege_needs(req: Request, verb: str) -> list[Need]:
    """What granting (``verb="grant"``) or revoking privileges needs: ``<verb>Role`` on the database each
    privilege's resource names, or on ``admin`` for a resource spanning databases or the cluster."""
    needs = []
    for resource in _privilege_resources(req):
        db = resource.names_database()
        if db is not None:
            # mongod's message has no space before "database"
            message = f"Not authorized to {verb} privileges on the {db}database"
            needs.append(need(Resource.database(db), f"{verb}Role", message=message))
        else:
            message = (
                f"To {verb} privileges affecting multiple databases or the cluster,"
                f" must be authorized to {verb} roles from the admin database"
            )
            needs.append(need(Resource.database("admin"), f"{verb}Role", message=message))
    return needs


def _grant_privileges(req: Request) -> list[Need]:
    return _privilege_needs(req, "grant")


def _revoke_privileges(req: Request) -> list[Need]:
    return _privilege_needs(req, "revoke")


def _restrictions(req: Request) -> list[Need]:
    if "authenticationRestrictions" not in req.cmd:
        return []
    return [need(req.database, "setAuthenticationRestriction", message="Unauthorized")]


def _create_user(req: Request) -> list[Need]:
    return [
        need(req.database, "createUser", message=f"Not authorized to create users on db: {req.db}"),
        *_grant_roles(req),
        *_restrictions(req),
    ]


def _as_self(req: Request, own_action: str, action: str) -> bool:
    name = req.cmd.get("updateUser")
    is_self = isinstance(name, str) and (name, req.db) in req.conn.users
    return (is_self and req.grants.allows(req.database, [own_action])) or req.grants.allows(req.database, [action])


def _update_user(req: Request) -> list[Need]:
    name = req.cmd.get("updateUser")
    who = f"{name}@{req.db}"
    needs = []
    changes_password = "pwd" in req.cmd or "mechanisms" in req.cmd
    if changes_password and not _as_self(req, "changeOwnPassword", "changePassword"):
        what = "password" if "pwd" in req.cmd else "mechanisms"
        needs.append(need(req.database, "changePassword", message=f"Not authorized to change {what} of user: {who}"))
    if "customData" in req.cmd and not _as_self(req, "changeOwnCustomData", "changeCustomData"):
        needs.append(
            need(req.database, "changeCustomData", message=f"Not authorized to change customData of user: {who}")
        )
    if "roles" in req.cmd:
        needs.append(
            need(
                ANY_NORMAL_RESOURCE,
                "revokeRole",
                message="In order to use updateUser to set roles array, must be authorized to revoke any role in "
                "the system",
            )
        )
        needs.extend(_grant_roles(req))
    return needs + _restrictions(req)


def _drop_user(req: Request) -> list[Need]:
    return [need(req.database, "dropUser", message=f"Not authorized to drop users from the {req.db} database")]


def _users_info(req: Request) -> list[Need]:
    value = req.cmd.get("usersInfo")
    if isinstance(value, Mapping) and value.get("forAllDBs") is True:
        return [need(CLUSTER_RESOURCE, "viewUser", message="Not authorized to view users from all databases")]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [need(req.database, "viewUser", message=f"Not authorized to view users from the {req.db} database")]
    items = value if isinstance(value, list) else [value]
    needs = []
    for item in items:
        if isinstance(item, str):
            user = (item, req.db)
        elif isinstance(item, Mapping) and isinstance(item.get("user"), str) and isinstance(item.get("db"), str):
            user = (item["user"], item["db"])
        else:
            continue  # the handler refuses it
        if user in req.conn.users:
            continue  # one may always see oneself
        needs.append(
            need(
                Resource.database(user[1]),
                "viewUser",
                message=f"Not authorized to view users from the {req.db} database",
            )
        )
    return needs


def _create_role(req: Request) -> list[Need]:
    return [
        need(req.database, "createRole", message=f"Not authorized to create roles on db: {req.db}"),
        *_grant_roles(req),
        *_grant_privileges(req),
        *_restrictions(req),
    ]


def _update_role(req: Request) -> list[Need]:
    needs = [
        need(
            ANY_NORMAL_RESOURCE,
            "revokeRole",
            message="updateRole command required the ability to revoke any role in the system",
        )
    ]
    if "roles" in req.cmd:
        needs.extend(_grant_roles(req))
    if "privileges" in req.cmd:
        needs.extend(_grant_privileges(req))
    return needs + _restrictions(req)


def _drop_role(req: Request) -> list[Need]:
    return [need(req.database, "dropRole", message=f"Not authorized to drop roles from the {req.db} database")]


def _roles_info(req: Request) -> list[Need]:
    value = req.cmd.get("rolesInfo")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [need(req.database, "viewRole", message=f"Not authorized to view roles from the {req.db} database")]
    items = value if isinstance(value, list) else [value]
    held = req.server.roles.resolve(req.conn.effective_roles())[0]
    needs = []
    for item in items:
        try:
            refs = role_refs([item], req.db)
        except TypeError:
            continue  # the handler refuses it
        for ref in refs:
            if ref in held:
                continue  # one may always see the roles one has
            needs.append(
                need(
                    Resource.database(ref["db"]),
                    "viewRole",
                    message=f"Not authorized to view roles from the {ref['db']} database",
                )
            )
    return needs


# -- the table -----------------------------------------------------------------------------------------
CHECKS: dict[str, str | Check] = {
    **dict.fromkeys(
        (
            "hello",
            "isMaster",
            "ismaster",
            "saslStart",
            "saslContinue",
            "logout",
            "ping",
            "buildInfo",
            "buildinfo",
            "connectionStatus",
            "endSessions",
        ),
        NO_AUTH,
    ),
    "find": _on_ns("find"),
    "count": _on_ns("find"),
    "distinct": _on_ns("find"),
    "getMore": _get_more,
    "killCursors": _kill_cursors,
    "insert": _on_ns("insert"),
    "update": _update,
    "delete": _on_ns("remove"),
    "findAndModify": _find_and_modify,
    "aggregate": _aggregate,
    "create": _create,
    "drop": _on_ns("dropCollection"),
    "createIndexes": _on_ns("createIndex"),
    "dropIndexes": _on_ns("dropIndex"),
    "listIndexes": _on_ns("listIndexes"),
    "listCollections": _list_collections,
    "listDatabases": _list_databases,
    "dropDatabase": _on_db("dropDatabase"),
    "dbStats": _on_db("dbStats"),
    "createUser": _create_user,
    "updateUser": _update_user,
    "dropUser": _drop_user,
    "dropAllUsersFromDatabase": _drop_user,
    "grantRolesToUser": _grant_roles,
    "revokeRolesFromUser": _revoke_roles,
    "usersInfo": _users_info,
    "createRole": _create_role,
    "updateRole": _update_role,
    "dropRole": _drop_role,
    "dropAllRolesFromDatabase": _drop_role,
    "grantPrivilegesToRole": _grant_privileges,
    "revokePrivilegesFromRole": _revoke_privileges,
    "grantRolesToRole": _grant_roles,
    "revokeRolesFromRole": _revoke_roles,
    "rolesInfo": _roles_info,
    "currentOp": ANY_USER,  # inprog, or $ownOps: checked by the handler
    "killOp": ANY_USER,  # killop, or one's own operation: checked by the handler
    "killAllSessions": _on_cluster("killAnySession"),
    "serverStatus": _on_cluster("serverStatus"),
    "getLog": _on_cluster("getLog"),
    "getParameter": _on_cluster("getParameter"),
    "wireserverFault": _on_cluster(FAULT_ACTION),
    "replSetStepDown": _on_cluster("replSetStateChange"),
    "replSetGetStatus": _on_cluster("replSetGetStatus"),
}

ADMIN_ONLY = frozenset(
    {
        "listDatabases",
        "getParameter",
        "currentOp",
        "killOp",
        "killAllSessions",
        "serverStatus",
        "getLog",
        "wireserverFault",
        "replSetStepDown",
        "replSetGetStatus",
    }
)
