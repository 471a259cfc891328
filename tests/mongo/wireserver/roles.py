"""Roles of the wire server: the built-in ones and user-defined ones (createRole), and what they grant.

A user or a role holds roles as ``{"role": name, "db": db}``. A built-in role's privileges come from
``privileges.builtin_privileges``; a user-defined role, kept in :class:`RoleStore` like mongod's
``admin.system.roles``, has its own privileges and inherits those of the roles it lists (transitively,
with cycles refused when granted). :meth:`RoleStore.grants_for` turns a user's roles into the
:class:`~.privileges.Grants` every command is checked against, read live so that a change to a role
applies to logged-in users on their next command. Errors carry mongod's codes and messages.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import CommandError, bad_value, type_mismatch
from .privileges import (
    FAULT_ACTION,
    Grants,
    Privilege,
    builtin_privileges,
    builtin_role_names,
    is_builtin,
    merge,
)

RoleRef = dict  # {"role": name, "db": db}


class RoleNotFound(LookupError):
    """A role named in a command does not exist (mongod code 31)."""

    def __init__(self, role: str, db: str) -> None:
        super().__init__(f"Could not find role: {role}@{db}")
        self.role = role
        self.db = db

    def to_error(self, prefix: str = "") -> CommandError:
        return CommandError(31, f"{prefix}{self}")


def role_refs(roles: Iterable[object], default_db: str) -> list[dict[str, str]]:
    """Turn ``"read"`` / ``{"role", "db"}`` entries into ``{"role", "db"}`` dicts, de-duplicated.

    Raises ``TypeError`` for entries of the wrong shape.
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
        item = {"role": role, "db": db}
        if item not in result:
            result.append(item)
    return result


def normalize_roles(roles: Iterable[object], default_db: str, store: RoleStore | None = None) -> list[dict[str, str]]:
    """:func:`role_refs`, each checked to exist (built-in, or user-defined in ``store``).

    Raises :class:`RoleNotFound` for an unknown role (or an admin-only one outside ``admin``).
    """
    refs = role_refs(roles, default_db)
    for item in refs:
        if not is_builtin(item["role"], item["db"]) and (store is None or not store.exists(item["role"], item["db"])):
            raise RoleNotFound(item["role"], item["db"])
    return refs


@dataclass
class Role:
    """One user-defined role as the server knows it."""

    name: str
    db: str
    privileges: list[Privilege]
    roles: list[dict[str, str]]
    restrictions: list[dict] = field(default_factory=list)

    @property
    def ref(self) -> dict[str, str]:
        return {"role": self.name, "db": self.db}


def _refuse_builtin(role: str, db: str) -> None:
    if is_builtin(role, db):
        raise bad_value(f"{role}@{db} is a built-in role and cannot be modified")


class RoleStore:
    """In-memory user-defined roles, keyed by ``(db, name)``. Safe to use from any thread."""

    def __init__(self) -> None:
        self._roles: dict[tuple[str, str], Role] = {}
        self._lock = threading.RLock()

    # -- reading -------------------------------------------------------------------------------
    def get(self, name: str, db: str) -> Role | None:
        with self._lock:
            return self._roles.get((db, name))

    def exists(self, name: str, db: str) -> bool:
        return is_builtin(name, db) or self.get(name, db) is not None

    def require(self, name: str, db: str) -> Role:
        role = self.get(name, db)
        if role is None:
            raise RoleNotFound(name, db).to_error()
        return role

    def in_db(self, db: str) -> list[Role]:
        with self._lock:
            return [role for (d, _), role in sorted(self._roles.items()) if d == db]

    def all(self) -> list[Role]:
        with self._lock:
            return [role for _, role in sorted(self._roles.items())]

    def resolve(self, refs: Iterable[Mapping[str, str]]) -> tuple[list[dict[str, str]], list[Privilege]]:
        """All roles reachable from ``refs`` (them included) and all their privileges.

        Roles that no longer exist are skipped: a dropped role grants nothing.
        """
        seen: list[dict[str, str]] = []
        privileges: list[Privilege] = []
        stack = [{"role": r["role"], "db": r["db"]} for r in refs]
        with self._lock:
            while stack:
                ref = stack.pop(0)
                if ref in seen:
                    continue
                if is_builtin(ref["role"], ref["db"]):
                    seen.append(ref)
                    privileges.extend(builtin_privileges(ref["role"], ref["db"]))
                    continue
                role = self._roles.get((ref["db"], ref["role"]))
                if role is None:
                    continue
                seen.append(ref)
                privileges.extend(role.privileges)
                stack.extend(dict(r) for r in role.roles)
        return seen, privileges

    def grants_for(self, refs: Iterable[Mapping[str, str]]) -> Grants:
        """What a holder of ``refs`` may do (built-in and user-defined roles through one path)."""
        return Grants(self.resolve(refs)[1])

    def describe(self, name: str, db: str, *, show_privileges: bool, show_restrictions: bool) -> dict | None:
        """The rolesInfo document for ``name@db`` (None if there is no such role)."""
        if is_builtin(name, db):
            doc: dict = {"role": name, "db": db, "isBuiltin": True, "roles": [], "inheritedRoles": []}
            if show_privileges:
                privileges = _shown(builtin_privileges(name, db))
                doc["privileges"] = privileges
                doc["inheritedPrivileges"] = privileges
            if show_restrictions:
                doc["authenticationRestrictions"] = []
                doc["inheritedAuthenticationRestrictions"] = []
            return doc
        with self._lock:
            role = self._roles.get((db, name))
            if role is None:
                return None
            inherited, privileges = self.resolve(role.roles)
            inherited_restrictions = [list(role.restrictions)] if role.restrictions else []
            for ref in inherited:
                other = self._roles.get((ref["db"], ref["role"]))
                if other is not None and other.restrictions:
                    inherited_restrictions.append(list(other.restrictions))
            doc = {"_id": f"{db}.{name}", "role": name, "db": db}
            if show_privileges:
                doc["privileges"] = _shown(role.privileges)
            doc["roles"] = [dict(r) for r in role.roles]
            if show_restrictions:
                doc["authenticationRestrictions"] = [list(role.restrictions)] if role.restrictions else []
            doc["isBuiltin"] = False
            doc["inheritedRoles"] = inherited
            if show_privileges:
                doc["inheritedPrivileges"] = _shown([*role.privileges, *privileges])
            if show_restrictions:
                doc["inheritedAuthenticationRestrictions"] = inherited_restrictions
            return doc

    def names_in(self, db: str, *, builtin: bool) -> list[tuple[str, str]]:
        """``(name, db)`` of the roles of ``db`` that ``rolesInfo: 1`` lists."""
        names = [(role.name, db) for role in self.in_db(db)]
        if builtin:
            names = [(name, db) for name in builtin_role_names(db)] + names
        return names

    # -- writing -------------------------------------------------------------------------------
    def _check_inheritance(self, name: str, db: str, refs: list[dict[str, str]]) -> None:
        """mongod's checkOkayToGrantRolesToRole: no self-grant, same database unless admin, no cycles."""
        for ref in refs:
            if ref == {"role": name, "db": db}:
                raise CommandError(49, f"Cannot grant role {name}@{db} to itself.")
            if db != "admin" and ref["db"] != db:
                raise CommandError(49, f"Roles on the '{db}' database cannot be granted roles from other databases")
        for ref in refs:
            if not self.exists(ref["role"], ref["db"]):
                raise RoleNotFound(ref["role"], ref["db"]).to_error(f"Cannot grant roles to '{name}@{db}': ")
        if {"role": name, "db": db} in self.resolve(refs)[0]:
            raise CommandError(49, f"Granting roles to {name}@{db} would introduce a cycle in the role graph")

    @staticmethod
    def _check_privileges(db: str, privileges: list[Privilege]) -> None:
        """mongod's checkOkayToGrantPrivilegesToRole: outside admin, only this database's resources."""
        if db == "admin":
            return
        for privilege in privileges:
            if privilege.resource.names_database() != db:
                raise CommandError(
                    49,
                    f"Roles on the '{db}' database cannot be granted privileges that target other databases "
                    "or the cluster",
                )

    def create(
        self,
        name: str,
        db: str,
        privileges: list[Privilege],
        roles: Iterable[object],
        restrictions: list[dict] | None = None,
    ) -> Role:
        if not name:
            raise bad_value("Role name must be non-empty")
        if db == "local":
            raise bad_value("Cannot create roles in the local database")
        if db == "$external":
            raise bad_value("Cannot create roles in the $external database")
        if is_builtin(name, db):
            raise bad_value("Cannot create roles with the same name as a built-in role")
        refs = _refs(roles, db)
        with self._lock:
            self._check_inheritance(name, db, refs)
            self._check_privileges(db, privileges)
            if (db, name) in self._roles:
                raise CommandError(51002, f'Role "{name}@{db}" already exists')
            role = Role(name, db, merge(privileges), refs, list(restrictions or []))
            self._roles[(db, name)] = role
            return role

    def update(
        self,
        name: str,
        db: str,
        *,
        privileges: list[Privilege] | None = None,
        roles: Iterable[object] | None = None,
        restrictions: list[dict] | None = None,
    ) -> Role:
        with self._lock:
            if is_builtin(name, db):
                raise CommandError(31, f"Role {name}@{db} not found")
            role = self.require(name, db)
            refs = _refs(roles, db) if roles is not None else None
            if refs is not None:
                self._check_inheritance(name, db, refs)
                role.roles = refs
            if privileges is not None:
                self._check_privileges(db, privileges)
                role.privileges = merge(privileges)
            if restrictions is not None:
                role.restrictions = list(restrictions)
            return role

    def grant_privileges(self, name: str, db: str, privileges: list[Privilege]) -> None:
        _refuse_builtin(name, db)
        with self._lock:
            self._check_privileges(db, privileges)
            role = self.require(name, db)
            role.privileges = merge([*role.privileges, *privileges])

    def revoke_privileges(self, name: str, db: str, privileges: list[Privilege]) -> None:
        _refuse_builtin(name, db)
        with self._lock:
            role = self.require(name, db)
            remaining: list[Privilege] = []
            for held in role.privileges:
                actions = set(held.actions)
                for gone in privileges:
                    if gone.resource == held.resource:
                        actions -= gone.actions
                if actions:
                    remaining.append(Privilege(held.resource, frozenset(actions)))
            role.privileges = remaining

    def grant_roles(self, name: str, db: str, roles: Iterable[object]) -> None:
        _refuse_builtin(name, db)
        refs = _refs(roles, db)
        with self._lock:
            role = self.require(name, db)
            self._check_inheritance(name, db, refs)
            role.roles = role.roles + [r for r in refs if r not in role.roles]

    def revoke_roles(self, name: str, db: str, roles: Iterable[object]) -> None:
        _refuse_builtin(name, db)
        refs = _refs(roles, db)
        with self._lock:
            role = self.require(name, db)
            role.roles = [r for r in role.roles if r not in refs]

    def drop(self, name: str, db: str) -> None:
        """Drop the role and take it out of every other role (the caller takes it from users)."""
        _refuse_builtin(name, db)
        with self._lock:
            self.require(name, db)
            del self._roles[(db, name)]
            gone = {"role": name, "db": db}
            for other in self._roles.values():
                other.roles = [r for r in other.roles if r != gone]

    def drop_all(self, db: str) -> int:
        """Drop every role of ``db`` and take them out of the other roles; returns how many."""
        with self._lock:
            keys = [k for k in self._roles if k[0] == db]
            for key in keys:
                del self._roles[key]
            for other in self._roles.values():
                other.roles = [r for r in other.roles if r["db"] != db]
            return len(keys)


def _refs(roles: Iterable[object], db: str) -> list[dict[str, str]]:
    try:
        return role_refs(roles, db)
    except TypeError as exc:
        raise type_mismatch(str(exc)) from None


def _shown(privileges: Iterable[Privilege]) -> list[dict]:
    """Privileges as rolesInfo prints them (the wire server's own fault action left out)."""
    docs = []
    for privilege in merge(privileges):
        actions = privilege.actions - {FAULT_ACTION}
        if actions:
            docs.append(Privilege(privilege.resource, actions).to_document())
    return docs
