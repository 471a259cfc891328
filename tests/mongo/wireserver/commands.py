"""Command dispatch: which handler runs a command and whether the caller may run it.

Order of checks, as in mongod: unknown command (59 CommandNotFound), then authentication
(13 "command X requires authentication"), then admin-database-only commands, then the actions the
command needs on its resources (``authz.py``), granted by the privileges of the caller's built-in and
user-defined roles (13, with mongod's message). Handlers come from ``handshake``, ``usercmds``,
``rolecmds``, ``admin`` and ``engine``.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import admin, authz, handshake, rolecmds, usercmds
from .authz import ADMIN_ONLY, ANY_USER, NO_AUTH, Request
from .engine import Caller
from .errors import CommandError
from .privileges import CLUSTER_RESOURCE, Resource

#: Every command the server knows, with what it needs (see ``authz.CHECKS``).
PRIVILEGES = authz.CHECKS

__all__ = ["ADMIN_ONLY", "ANY_USER", "NO_AUTH", "PRIVILEGES", "dispatch", "find_handler"]


def _engine_handler(server, name: str):
    method = server.engine.handlers[name]

    def run(server, conn, db: str, cmd: dict) -> dict:
        readable = visible = None
        if name == "listDatabases":
            grants = conn.grants()
            if not grants.allows(CLUSTER_RESOURCE, ["listDatabases"]):
                readable = frozenset(grants.databases_named())
        elif name == "listCollections":
            grants = conn.grants()
            if not grants.allows(Resource.database(db), ["listCollections"]):

                def visible(collection: str) -> bool:
                    return grants.any_on(Resource.namespace(db, collection))

        return method(db, cmd, Caller(conn.id, frozenset(conn.users), readable, visible))

    return run


def find_handler(server, name: str, cmd: Mapping):
    if name == "aggregate" and authz.is_current_op_aggregate(cmd):
        return admin.current_op_aggregate
    for table in (handshake.HANDLERS, admin.HANDLERS, usercmds.HANDLERS, rolecmds.HANDLERS):
        if name in table:
            return table[name]
    if name in server.engine.handlers:
        return _engine_handler(server, name)
    return None


def _remember_cursor_needs(server, reply: dict, needs: list[authz.Need]) -> None:
    """Keep what opening a cursor needed, so getMore checks it again (mongod's originating privileges)."""
    cursor = reply.get("cursor") if isinstance(reply, dict) else None
    if not isinstance(cursor, Mapping) or not cursor.get("id"):
        return
    stored = server.engine.cursors.get(int(cursor["id"]))
    if stored is not None and "needs" not in stored.meta:
        stored.meta["needs"] = list(needs)


def dispatch(server, conn, db: str, name: str, cmd: dict) -> dict:
    """Run one command for ``conn`` and return its reply, raising CommandError on refusal."""
    handler = find_handler(server, name, cmd)
    if handler is None or name not in PRIVILEGES:
        raise CommandError(59, f"no such command: '{name}'")
    check = PRIVILEGES[name]
    if check != NO_AUTH and not conn.users:
        raise CommandError(13, f"command {name} requires authentication")
    if name in ADMIN_ONLY and db != "admin":
        raise CommandError(13, f"{name} may only be run against the admin database.")
    needs: list[authz.Need] = []
    if callable(check):
        grants = conn.grants()
        needs = check(Request(server, conn, db, name, cmd, grants))
        for need in needs:
            if not grants.allows(need.target, need.actions):
                raise CommandError(13, need.message or f"not authorized on {db} to execute command {conn.render(cmd)}")
    reply = handler(server, conn, db, cmd)
    _remember_cursor_needs(server, reply, needs)
    return reply
