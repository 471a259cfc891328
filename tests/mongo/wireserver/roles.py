"""Built-in MongoDB roles and the authorization check of the wire server.

A user holds roles as ``{"role": name, "db": db}``. Each built-in role grants a set of
*privilege classes* (``read``, ``write``, ``dbAdmin``, ``userAdmin``, ``listDatabases``,
``clusterMonitor``, ``clusterAdmin``, ``fault``) either on its own database or, for the
``*AnyDatabase`` roles, ``clusterMonitor`` and ``root``, on every database. Commands declare
the class they need (see ``commands.COMMAND_PRIVILEGES``) and :func:`is_authorized` answers.
This is a coarse model of mongod's action types, enough for tests of a privileged-access
portal: a ``read`` user cannot insert, a ``userAdmin`` cannot read data, ``root`` can do all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

ANY_DB = "*"

# role name -> (scope, privilege classes). scope "db" = the role's own database; "any" = all.
BUILTIN_ROLES: dict[str, tuple[str, frozenset[str]]] = {
    "read": ("db", frozenset({"read"})),
    "readWrite": ("db", frozenset({"read", "write"})),
    "dbAdmin": ("db", frozenset({"dbAdmin"})),
    "userAdmin": ("db", frozenset({"userAdmin"})),
    "dbOwner": ("db", frozenset({"read", "write", "dbAdmin", "userAdmin"})),
    "readAnyDatabase": ("any", frozenset({"read", "listDatabases"})),
    "readWriteAnyDatabase": ("any", frozenset({"read", "write", "listDatabases"})),
    "userAdminAnyDatabase": ("any", frozenset({"userAdmin", "listDatabases"})),
    "dbAdminAnyDatabase": ("any", frozenset({"dbAdmin", "listDatabases"})),
    "clusterMonitor": ("any", frozenset({"clusterMonitor", "listDatabases"})),
    "hostManager": ("any", frozenset({"clusterAdmin"})),
    "clusterAdmin": ("any", frozenset({"clusterMonitor", "clusterAdmin", "listDatabases"})),
    "root": (
        "any",
        frozenset(
            {"read", "write", "dbAdmin", "userAdmin", "listDatabases", "clusterMonitor", "clusterAdmin", "fault"}
        ),
    ),
}

# Roles whose scope is the whole deployment exist only in the admin database, as in mongod.
ADMIN_ONLY_ROLES = frozenset(name for name, (scope, _) in BUILTIN_ROLES.items() if scope == "any")


class RoleNotFound(LookupError):
    """A role named in a command does not exist (mongod code 31)."""

    def __init__(self, role: str, db: str) -> None:
        super().__init__(f"Could not find role: {role}@{db}")
        self.role = role
        self.db = db


def normalize_roles(roles: Iterable[object], default_db: str) -> list[dict[str, str]]:
    """Turn ``"read"`` / ``{"role", "db"}`` entries into checked ``{"role", "db"}`` dicts.

    Raises :class:`RoleNotFound` for unknown roles or admin-only roles outside ``admin``;
    raises ``TypeError`` for entries of the wrong shape.
    """
    result: list[dict[str, str]] = []
    for entry in roles:
        if isinstance(entry, str):
            role, db = entry, default_db
        elif isinstance(entry, Mapping) and isinstance(entry.get("role"), str):
            role, db = entry["role"], entry.get("db", default_db)
            if not isinstance(db, str):
                raise TypeError("role db must be a string")
        else:
            raise TypeError("roles must be strings or {role, db} documents")
        if role not in BUILTIN_ROLES or (role in ADMIN_ONLY_ROLES and db != "admin"):
            raise RoleNotFound(role, db)
        item = {"role": role, "db": db}
        if item not in result:
            result.append(item)
    return result


def privileges(roles: Iterable[Mapping[str, str]]) -> dict[str, set[str]]:
    """Map each privilege class to the databases it covers (``ANY_DB`` for all)."""
    granted: dict[str, set[str]] = {}
    for item in roles:
        scope, classes = BUILTIN_ROLES.get(item["role"], ("db", frozenset()))
        target = ANY_DB if scope == "any" else item["db"]
        for cls in classes:
            granted.setdefault(cls, set()).add(target)
    return granted


def is_authorized(roles: Iterable[Mapping[str, str]], needed: str, db: str) -> bool:
    """Whether ``roles`` grant privilege class ``needed`` on database ``db``."""
    targets = privileges(roles).get(needed, set())
    return ANY_DB in targets or db in targets


def databases_with_any_role(roles: Iterable[Mapping[str, str]]) -> set[str]:
    """Databases a user holds some database-scoped role on (for filtered listDatabases)."""
    return {item["db"] for item in roles if BUILTIN_ROLES.get(item["role"], ("any",))[0] == "db"}
