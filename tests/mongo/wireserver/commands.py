"""Command dispatch: which handler runs a command and what the caller must hold to run it.

Order of checks, as in mongod: unknown command (59 CommandNotFound), then authentication
(13 "command X requires authentication"), then admin-database-only commands, then the
privilege class the command needs on its database (13 "not authorized on DB to execute
command { ... }"). Handlers come from ``handshake``, ``usercmds``, ``admin`` and ``engine``.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import admin, handshake, usercmds
from .engine import Caller
from .errors import CommandError
from .roles import ANY_DB, databases_with_any_role, is_authorized, privileges

NO_AUTH = "none"  # allowed before login
ANY_USER = "auth"  # any authenticated user

PRIVILEGES: dict[str, str | tuple[str, ...]] = {
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
    **dict.fromkeys(("getMore", "killCursors", "listDatabases", "getParameter", "getLog", "usersInfo"), ANY_USER),
    **dict.fromkeys(("find", "count", "distinct", "listIndexes", "dbStats"), ("read",)),
    "listCollections": ("read", "dbAdmin"),
    "aggregate": ("read",),
    **dict.fromkeys(("insert", "update", "delete", "findAndModify"), ("write",)),
    **dict.fromkeys(("create", "drop", "createIndexes", "dropIndexes"), ("write", "dbAdmin")),
    "dropDatabase": ("dbAdmin",),
    **dict.fromkeys(tuple(usercmds.HANDLERS), ("userAdmin",)),
    "currentOp": ANY_USER,  # clusterMonitor, or $ownOps: checked by the handler
    "serverStatus": ("clusterMonitor",),
    "killOp": ("clusterAdmin",),
    "killAllSessions": ("clusterAdmin",),
    "wireserverFault": ("fault",),
}
PRIVILEGES["usersInfo"] = ANY_USER  # own user, or userAdmin: checked by the handler

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
    }
)

_WRITE_STAGES = ("$out", "$merge")


def _is_current_op_aggregate(cmd: Mapping) -> bool:
    pipeline = cmd.get("pipeline")
    return (
        cmd.get("aggregate") == 1
        and isinstance(pipeline, list)
        and bool(pipeline)
        and isinstance(pipeline[0], Mapping)
        and "$currentOp" in pipeline[0]
    )


def _needed(name: str, cmd: Mapping) -> str | tuple[str, ...]:
    if name == "aggregate":
        if _is_current_op_aggregate(cmd):
            return ANY_USER
        pipeline = cmd.get("pipeline") if isinstance(cmd.get("pipeline"), list) else []
        if any(isinstance(s, Mapping) and any(k in s for k in _WRITE_STAGES) for s in pipeline):
            return ("read", "write")
    return PRIVILEGES[name]


def _engine_handler(server, name: str):
    method = server.engine.handlers[name]

    def run(server, conn, db: str, cmd: dict) -> dict:
        roles = conn.effective_roles()
        readable = None
        if name == "listDatabases" and ANY_DB not in privileges(roles).get("listDatabases", set()):
            readable = frozenset(databases_with_any_role(roles))
        return method(db, cmd, Caller(conn.id, frozenset(conn.users), readable))

    return run


def find_handler(server, name: str, cmd: Mapping):
    if name == "aggregate" and _is_current_op_aggregate(cmd):
        return admin.current_op_aggregate
    for table in (handshake.HANDLERS, admin.HANDLERS, usercmds.HANDLERS):
        if name in table:
            return table[name]
    if name in server.engine.handlers:
        return _engine_handler(server, name)
    return None


def dispatch(server, conn, db: str, name: str, cmd: dict) -> dict:
    """Run one command for ``conn`` and return its reply, raising CommandError on refusal."""
    handler = find_handler(server, name, cmd)
    if handler is None or name not in PRIVILEGES:
        raise CommandError(59, f"no such command: '{name}'")
    needed = _needed(name, cmd)
    if needed != NO_AUTH and not conn.users:
        raise CommandError(13, f"command {name} requires authentication")
    if name in ADMIN_ONLY and db != "admin":
        raise CommandError(13, f"{name} may only be run against the admin database.")
    if isinstance(needed, tuple):
        roles = conn.effective_roles()
        # write stages need both read and write; plain commands need any one of their classes
        if needed == ("read", "write"):
            allowed = all(is_authorized(roles, c, db) for c in needed)
        else:
            allowed = any(is_authorized(roles, c, db) for c in needed)
        if not allowed:
            raise CommandError(13, f"not authorized on {db} to execute command {conn.render(cmd)}")
    return handler(server, conn, db, cmd)
