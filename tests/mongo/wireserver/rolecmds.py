"""Role-management commands: createRole, updateRole, dropRole, dropAllRolesFromDatabase,
grantPrivilegesToRole, revokePrivilegesFromRole, grantRolesToRole, revokeRolesFromRole and rolesInfo,
over the server's :class:`~.roles.RoleStore`.

Handlers take ``(server, conn, db, cmd)`` and return the reply or raise :class:`CommandError` with
mongod's codes: RoleNotFound (31), ``Role "r@db" already exists`` (51002), InvalidRoleModification (49)
for cycles and cross-database grants, FailedToParse (9) for an unknown action, BadValue (2) for a
built-in role. Authorization (createRole, grantRole, viewRole, ... on the database) is checked by the
dispatcher (see ``authz.py``). ``authenticationRestrictions`` are validated and shown but not enforced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import CommandError, bad_value, type_mismatch
from .privileges import Privilege, parse_privileges
from .roles import role_refs
from .usercmds import name_field, roles_field
from .users import check_restrictions


def _required_privileges(cmd: dict, command: str) -> list[Privilege]:
    if "privileges" not in cmd:
        raise CommandError(40414, f"BSON field '{command}.privileges' is missing but a required field", "Location40414")
    return parse_privileges(cmd["privileges"], command)


def _restrictions(cmd: dict) -> list[dict] | None:
    value = cmd.get("authenticationRestrictions")
    return check_restrictions(value) if value is not None else None


def create_role(server, conn, db: str, cmd: dict) -> dict:
    name = name_field(cmd, "createRole")
    privileges = _required_privileges(cmd, "createRole")
    roles = roles_field(cmd, "createRole", required=True) or []
    server.roles.create(name, db, privileges, roles, _restrictions(cmd))
    return {"ok": 1.0}


def update_role(server, conn, db: str, cmd: dict) -> dict:
    name = name_field(cmd, "updateRole")
    if not any(f in cmd for f in ("privileges", "roles", "authenticationRestrictions")):
        raise bad_value("Must specify at least one field to update in updateRole")
    privileges = parse_privileges(cmd["privileges"], "updateRole") if "privileges" in cmd else None
    roles = roles_field(cmd, "updateRole", required=False)
    server.roles.update(name, db, privileges=privileges, roles=roles, restrictions=_restrictions(cmd))
    return {"ok": 1.0}


def drop_role(server, conn, db: str, cmd: dict) -> dict:
    name = name_field(cmd, "dropRole")
    server.roles.drop(name, db)
    server.users.remove_role(name, db)
    return {"ok": 1.0}


def drop_all_roles(server, conn, db: str, cmd: dict) -> dict:
    count = server.roles.drop_all(db)
    server.users.remove_roles_of_db(db)
    return {"n": count, "ok": 1.0}


def _non_empty(cmd: dict, command: str, field: str) -> list:
    if field not in cmd:
        raise CommandError(40414, f"BSON field '{command}.{field}' is missing but a required field", "Location40414")
    value = cmd[field]
    if not isinstance(value, list):
        raise type_mismatch(f"BSON field '{command}.{field}' is the wrong type, expected type 'array'")
    if not value:
        raise bad_value(f'{command} command requires a non-empty "{field}" array')
    return value


def grant_privileges(server, conn, db: str, cmd: dict) -> dict:
    name = name_field(cmd, "grantPrivilegesToRole")
    _non_empty(cmd, "grantPrivilegesToRole", "privileges")
    server.roles.grant_privileges(name, db, parse_privileges(cmd["privileges"], "grantPrivilegesToRole"))
    return {"ok": 1.0}


def revoke_privileges(server, conn, db: str, cmd: dict) -> dict:
    name = name_field(cmd, "revokePrivilegesFromRole")
    _non_empty(cmd, "revokePrivilegesFromRole", "privileges")
    server.roles.revoke_privileges(name, db, parse_privileges(cmd["privileges"], "revokePrivilegesFromRole"))
    return {"ok": 1.0}


def grant_roles(server, conn, db: str, cmd: dict) -> dict:
    name = name_field(cmd, "grantRolesToRole")
    server.roles.grant_roles(name, db, _non_empty(cmd, "grantRolesToRole", "roles"))
    return {"ok": 1.0}


def revoke_roles(server, conn, db: str, cmd: dict) -> dict:
    name = name_field(cmd, "revokeRolesFromRole")
    server.roles.revoke_roles(name, db, _non_empty(cmd, "revokeRolesFromRole", "roles"))
    return {"ok": 1.0}


def _targets(value: Any, db: str) -> list[tuple[str, str]] | None:
    """``(name, db)`` pairs asked for, or None for ``rolesInfo: 1`` (every role of ``db``)."""
    if isinstance(value, bool):
        raise type_mismatch("rolesInfo must be a number, a string, a document or an array")
    if isinstance(value, int | float):
        if value != 1:
            raise bad_value("rolesInfo=1 is the only numeric value allowed")
        return None
    items = value if isinstance(value, list) else [value]
    pairs: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, Mapping) and not (isinstance(item.get("role"), str) and isinstance(item.get("db"), str)):
            raise bad_value("Role name must contain a string field named: role and db")
        try:
            refs = role_refs([item], db)
        except TypeError:
            raise type_mismatch("rolesInfo entries must be role names or {role, db} documents") from None
        pairs.extend((r["role"], r["db"]) for r in refs if (r["role"], r["db"]) not in pairs)
    return pairs


def roles_info(server, conn, db: str, cmd: dict) -> dict:
    targets = _targets(cmd.get("rolesInfo"), db)
    show_privileges = cmd.get("showPrivileges", False)
    if show_privileges == "asUserFragment":
        raise CommandError(238, "showPrivileges: 'asUserFragment' is not supported by the wire server")
    if not isinstance(show_privileges, bool | int | float):
        raise type_mismatch("showPrivileges must be a boolean")
    show_restrictions = bool(cmd.get("showAuthenticationRestrictions", False))
    if targets is None:
        targets = server.roles.names_in(db, builtin=bool(cmd.get("showBuiltinRoles", False)))
    docs = []
    for name, role_db in targets:
        doc = server.roles.describe(
            name, role_db, show_privileges=bool(show_privileges), show_restrictions=show_restrictions
        )
        if doc is not None:  # mongod leaves out roles that do not exist
            docs.append(doc)
    return {"roles": docs, "ok": 1.0}


HANDLERS = {
    "createRole": create_role,
    "updateRole": update_role,
    "dropRole": drop_role,
    "dropAllRolesFromDatabase": drop_all_roles,
    "grantPrivilegesToRole": grant_privileges,
    "revokePrivilegesFromRole": revoke_privileges,
    "grantRolesToRole": grant_roles,
    "revokeRolesFromRole": revoke_roles,
    "rolesInfo": roles_info,
}
