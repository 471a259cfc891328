"""User-management commands: createUser, updateUser, dropUser, dropAllUsersFromDatabase,
grantRolesToUser, revokeRolesFromUser and usersInfo, over the server's :class:`UserStore`.

Handlers take ``(server, conn, db, cmd)`` and return the reply document or raise
:class:`CommandError`; authorization (createUser, grantRole, viewUser, ... on the database, one's own
user for usersInfo) is checked by the dispatcher (see ``authz.py``). usersInfo takes ``filter``,
``showCredentials``, ``showCustomData`` and ``showAuthenticationRestrictions``. A user may hold
built-in roles and user-defined ones (see ``rolecmds.py``), resolved in the role's database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mongomock.filtering import filter_applies

from .errors import CommandError, bad_value, type_mismatch


def name_field(cmd: dict, field: str) -> str:
    value = cmd.get(field)
    if not isinstance(value, str):
        raise type_mismatch(f"BSON field '{field}.{field}' is the wrong type, expected type 'string'")
    return value


def roles_field(cmd: dict, command: str, *, required: bool) -> list | None:
    if "roles" not in cmd:
        if required:
            raise CommandError(40414, f"BSON field '{command}.roles' is missing but a required field", "Location40414")
        return None
    roles = cmd["roles"]
    if not isinstance(roles, list):
        raise type_mismatch(f"BSON field '{command}.roles' is the wrong type, expected type 'array'")
    return roles


def _password(cmd: dict, command: str) -> str | None:
    if "pwd" not in cmd:
        return None
    if not isinstance(cmd["pwd"], str):
        raise type_mismatch(f"BSON field '{command}.pwd' is the wrong type, expected type 'string'")
    if cmd.get("digestPassword") is False:
        raise bad_value("Use of SCRAM-SHA-256 requires undigested passwords")
    return cmd["pwd"]


def _custom_data(cmd: dict, command: str) -> dict | None:
    value = cmd.get("customData")
    if value is not None and not isinstance(value, Mapping):
        raise type_mismatch(f"BSON field '{command}.customData' is the wrong type, expected type 'object'")
    return dict(value) if value is not None else None


def create_user(server, conn, db: str, cmd: dict) -> dict:
    name = name_field(cmd, "createUser")
    password = _password(cmd, "createUser")
    server.users.create(
        name,
        db,
        password or "",
        roles_field(cmd, "createUser", required=True) or [],
        custom_data=_custom_data(cmd, "createUser"),
        mechanisms=cmd.get("mechanisms"),
        restrictions=cmd.get("authenticationRestrictions"),
    )
    return {"ok": 1.0}


def update_user(server, conn, db: str, cmd: dict) -> dict:
    name = name_field(cmd, "updateUser")
    fields = ("pwd", "roles", "customData", "mechanisms", "authenticationRestrictions")
    if not any(f in cmd for f in fields):
        raise bad_value("Must specify at least one field to update in updateUser")
    server.users.update(
        name,
        db,
        password=_password(cmd, "updateUser"),
        roles=roles_field(cmd, "updateUser", required=False),
        custom_data=_custom_data(cmd, "updateUser"),
        mechanisms=cmd.get("mechanisms"),
        restrictions=cmd.get("authenticationRestrictions"),
    )
    return {"ok": 1.0}


def drop_user(server, conn, db: str, cmd: dict) -> dict:
    server.users.drop(name_field(cmd, "dropUser"), db)
    return {"ok": 1.0}


def drop_all_users(server, conn, db: str, cmd: dict) -> dict:
    return {"n": server.users.drop_all(db), "ok": 1.0}


def grant_roles(server, conn, db: str, cmd: dict) -> dict:
    name = name_field(cmd, "grantRolesToUser")
    server.users.grant(name, db, roles_field(cmd, "grantRolesToUser", required=True) or [])
    return {"ok": 1.0}


def revoke_roles(server, conn, db: str, cmd: dict) -> dict:
    name = name_field(cmd, "revokeRolesFromUser")
    server.users.revoke(name, db, roles_field(cmd, "revokeRolesFromUser", required=True) or [])
    return {"ok": 1.0}


def _targets(value: Any, db: str) -> list[tuple[str, str]] | str | None:
    """(name, db) pairs asked for; a db name for "all users of db"; None for forAllDBs."""
    if isinstance(value, bool):
        raise type_mismatch("usersInfo must be a number, a string, a document or an array")
    if isinstance(value, int | float):
        if value != 1:
            raise bad_value("usersInfo=1 is the only numeric value allowed")
        return db
    if isinstance(value, str):
        return [(value, db)]
    if isinstance(value, Mapping):
        if value.get("forAllDBs") is True:
            return None
        if isinstance(value.get("user"), str) and isinstance(value.get("db"), str):
            return [(value["user"], value["db"])]
        raise bad_value("User name must contain a string field named: user and db")
    if isinstance(value, list):
        pairs: list[tuple[str, str]] = []
        for item in value:
            found = _targets(item, db)
            if not isinstance(found, list):
                raise bad_value("usersInfo arrays may hold only names and {user, db} documents")
            pairs.extend(found)
        return pairs
    raise type_mismatch("usersInfo must be a number, a string, a document or an array")


def users_info(server, conn, db: str, cmd: dict) -> dict:
    targets = _targets(cmd.get("usersInfo"), db)
    if targets is None:
        users = server.users.in_db(None)
    elif isinstance(targets, str):
        users = server.users.in_db(targets)
    else:
        users = [u for u in (server.users.get(n, d) for n, d in targets) if u is not None]
    show_credentials = bool(cmd.get("showCredentials"))
    show_restrictions = bool(cmd.get("showAuthenticationRestrictions"))
    filter_ = cmd.get("filter")
    if filter_ is not None and not isinstance(filter_, Mapping):
        raise type_mismatch("BSON field 'usersInfo.filter' is the wrong type, expected type 'object'")
    docs = []
    for user in users:
        doc = user.info(show_credentials=show_credentials)
        if not show_restrictions:
            doc.pop("authenticationRestrictions", None)
        elif "authenticationRestrictions" not in doc:
            doc["authenticationRestrictions"] = []
        if filter_ and not filter_applies(filter_, doc):
            continue
        if cmd.get("showCustomData") is False:
            doc.pop("customData", None)
        docs.append(doc)
    return {"users": docs, "ok": 1.0}


HANDLERS = {
    "createUser": create_user,
    "updateUser": update_user,
    "dropUser": drop_user,
    "dropAllUsersFromDatabase": drop_all_users,
    "grantRolesToUser": grant_roles,
    "revokeRolesFromUser": revoke_roles,
    "usersInfo": users_info,
}
