"""The wire server's user store: users, their SCRAM credentials, roles and restrictions.

Users live in memory, keyed by ``(db, user)`` like mongod's ``admin.system.users``. Passwords
are never stored: only the SCRAM-SHA-1 / SCRAM-SHA-256 credentials derived with
``gatewayproxy.wire.scram``. The user-management commands (createUser, usersInfo, ...) are thin
wrappers over :class:`UserStore` in ``commands.py``; errors carry mongod's codes and messages.
"""

from __future__ import annotations

import ipaddress
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bson.binary import Binary

from gatewayproxy.wire import scram

from .errors import CommandError, bad_value
from .roles import RoleNotFound, RoleStore, normalize_roles

ALL_MECHANISMS = ("SCRAM-SHA-1", "SCRAM-SHA-256")


@dataclass
class User:
    """One database user as the server knows it."""

    name: str
    db: str
    credentials: dict[str, Any]  # mechanism -> scram.ScramCredentials
    roles: list[dict[str, str]]
    custom_data: dict | None = None
    restrictions: list[dict] = field(default_factory=list)
    user_id: uuid.UUID = field(default_factory=uuid.uuid4)

    @property
    def mechanisms(self) -> list[str]:
        return [m for m in ALL_MECHANISMS if m in self.credentials]

    def info(self, *, show_credentials: bool = False) -> dict:
        """The document usersInfo returns for this user."""
        doc: dict[str, Any] = {
            "_id": f"{self.db}.{self.name}",
            "userId": Binary.from_uuid(self.user_id),
            "user": self.name,
            "db": self.db,
            "roles": [dict(r) for r in self.roles],
            "mechanisms": self.mechanisms,
        }
        if self.custom_data is not None:
            doc["customData"] = self.custom_data
        if self.restrictions:
            doc["authenticationRestrictions"] = [dict(r) for r in self.restrictions]
        if show_credentials:
            doc["credentials"] = {
                mech: {
                    "iterationCount": cred.iterations,
                    "salt": _b64(cred.salt),
                    "storedKey": _b64(cred.stored_key),
                    "serverKey": _b64(cred.server_key),
                }
                for mech, cred in self.credentials.items()
            }
        return doc


def _b64(value: bytes | str) -> str:
    import base64

    return value if isinstance(value, str) else base64.b64encode(value).decode()


def user_not_found(name: str, db: str, *, quoted: bool = False) -> CommandError:
    """UserNotFound; mongod quotes the name only in dropUser's message (FerretDB copies both forms)."""
    return CommandError(11, f"User '{name}@{db}' not found" if quoted else f"User {name}@{db} not found")


def check_restrictions(restrictions: Iterable[Any]) -> list[dict]:
    """Validate ``authenticationRestrictions``: a list of {clientSource?, serverAddress?} CIDR lists."""
    if not isinstance(restrictions, list):
        raise CommandError(14, "authenticationRestrictions must be an array")
    checked = []
    for item in restrictions:
        if not isinstance(item, Mapping):
            raise CommandError(14, "authenticationRestrictions entries must be documents")
        entry: dict[str, list[str]] = {}
        for key, value in item.items():
            if key not in ("clientSource", "serverAddress"):
                raise bad_value(f"Unknown restriction field: {key}")
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise CommandError(14, f"{key} must be a string or an array of strings")
            for cidr in values:
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    raise bad_value(f"'{cidr}' is not a valid CIDR range") from None
            entry[key] = list(values)
        checked.append(entry)
    return checked


def _in_any(address: str, cidrs: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(c, strict=False) for c in cidrs)


def restrictions_allow(restrictions: list[dict], client_ip: str, server_ip: str) -> bool:
    """mongod's rule: with restrictions present, at least one entry must match in full."""
    if not restrictions:
        return True
    for entry in restrictions:
        if "clientSource" in entry and not _in_any(client_ip, entry["clientSource"]):
            continue
        if "serverAddress" in entry and not _in_any(server_ip, entry["serverAddress"]):
            continue
        return True
    return False


class UserStore:
    """In-memory users with SCRAM credentials. Safe to use from the server loop and test threads."""

    def __init__(self, *, iterations: dict[str, int] | None = None, roles: RoleStore | None = None) -> None:
        self._users: dict[tuple[str, str], User] = {}
        #: User-defined roles a user may be given (built-in roles are always there).
        self.roles = roles if roles is not None else RoleStore()
        self._lock = threading.RLock()
        # Lower iteration counts keep tests fast; mongod's defaults are 10000 / 15000.
        self._iterations = iterations or {"SCRAM-SHA-1": 10000, "SCRAM-SHA-256": 15000}

    # -- reading -------------------------------------------------------------------------------
    def get(self, name: str, db: str) -> User | None:
        with self._lock:
            return self._users.get((db, name))

    def require(self, name: str, db: str) -> User:
        user = self.get(name, db)
        if user is None:
            raise user_not_found(name, db)
        return user

    def in_db(self, db: str | None) -> list[User]:
        with self._lock:
            users = [u for (d, _), u in sorted(self._users.items()) if db is None or d == db]
        return users

    def roles_of(self, name: str, db: str) -> list[dict[str, str]]:
        """Current roles of a user (empty once it is dropped): changes apply to live connections."""
        user = self.get(name, db)
        return [dict(r) for r in user.roles] if user else []

    def credentials(self, name: str, db: str, mechanism: str):
        user = self.get(name, db)
        return user.credentials.get(mechanism) if user else None

    # -- writing -------------------------------------------------------------------------------
    def _derive(self, name: str, password: str, mechanisms: list[str]) -> dict[str, Any]:
        return {
            mech: scram.derive_credentials(mech, name, password, iterations=self._iterations[mech])
            for mech in mechanisms
        }

    @staticmethod
    def _mechanisms(value: Any) -> list[str]:
        if value is None:
            return list(ALL_MECHANISMS)
        if not isinstance(value, list) or not value:
            raise bad_value("mechanisms field must not be empty")
        for mech in value:
            if mech not in ALL_MECHANISMS:
                raise bad_value(f"Unknown auth mechanism '{mech}'")
        return [m for m in ALL_MECHANISMS if m in value]

    def create(
        self,
        name: str,
        db: str,
        password: str,
        roles: Iterable[Any] = (),
        *,
        custom_data: dict | None = None,
        mechanisms: list[str] | None = None,
        restrictions: list | None = None,
    ) -> User:
        if not name:
            raise bad_value("User document needs 'user' field to be non-empty")
        if db == "$external":
            raise bad_value("Cannot create SCRAM users in the $external database")
        if not isinstance(password, str) or not password:
            raise bad_value(
                "Must provide a 'pwd' field for all user documents, except those with"
                " '$external' as the user's source db"
            )
        try:
            checked_roles = normalize_roles(roles, db, self.roles)
        except RoleNotFound as exc:
            raise CommandError(31, str(exc)) from None
        mechs = self._mechanisms(mechanisms)
        checked_restrictions = check_restrictions(restrictions or [])
        with self._lock:
            if (db, name) in self._users:
                raise CommandError(51003, f'User "{name}@{db}" already exists')
            user = User(
                name=name,
                db=db,
                credentials=self._derive(name, password, mechs),
                roles=checked_roles,
                custom_data=custom_data,
                restrictions=checked_restrictions,
            )
            self._users[(db, name)] = user
        return user

    def update(
        self,
        name: str,
        db: str,
        *,
        password: str | None = None,
        roles: Iterable[Any] | None = None,
        custom_data: dict | None = None,
        mechanisms: list[str] | None = None,
        restrictions: list | None = None,
    ) -> User:
        with self._lock:
            user = self.require(name, db)
            mechs = self._mechanisms(mechanisms) if mechanisms is not None else user.mechanisms
            if mechanisms is not None and password is None and not set(mechs) <= set(user.mechanisms):
                raise bad_value("mechanisms field must be a subset of previously set mechanisms")
            new_roles = user.roles
            if roles is not None:
                try:
                    new_roles = normalize_roles(roles, db, self.roles)
                except RoleNotFound as exc:
                    raise CommandError(31, str(exc)) from None
            new_restrictions = check_restrictions(restrictions) if restrictions is not None else None
            if password is not None:
                if not isinstance(password, str) or not password:
                    raise bad_value("pwd must be a non-empty string")
                user.credentials = self._derive(name, password, mechs)
            elif mechanisms is not None:
                user.credentials = {m: c for m, c in user.credentials.items() if m in mechs}
            user.roles = new_roles
            if custom_data is not None:
                user.custom_data = custom_data
            if new_restrictions is not None:
                user.restrictions = new_restrictions
            return user

    def drop(self, name: str, db: str) -> None:
        with self._lock:
            if self._users.pop((db, name), None) is None:
                raise user_not_found(name, db, quoted=True)

    def drop_all(self, db: str) -> int:
        with self._lock:
            keys = [k for k in self._users if k[0] == db]
            for key in keys:
                del self._users[key]
            return len(keys)

    def grant(self, name: str, db: str, roles: Iterable[Any]) -> None:
        with self._lock:
            user = self.require(name, db)
            try:
                extra = normalize_roles(roles, db, self.roles)
            except RoleNotFound as exc:
                raise CommandError(31, str(exc)) from None
            user.roles = user.roles + [r for r in extra if r not in user.roles]

    def remove_role(self, role: str, db: str) -> None:
        """Take ``role@db`` from every user (dropRole)."""
        gone = {"role": role, "db": db}
        with self._lock:
            for user in self._users.values():
                user.roles = [r for r in user.roles if r != gone]

    def remove_roles_of_db(self, db: str) -> None:
        """Take every user-defined role of ``db`` from every user (dropAllRolesFromDatabase)."""
        with self._lock:
            for user in self._users.values():
                user.roles = [r for r in user.roles if r["db"] != db or self.roles.exists(r["role"], r["db"])]

    def revoke(self, name: str, db: str, roles: Iterable[Any]) -> None:
        with self._lock:
            user = self.require(name, db)
            try:
                gone = normalize_roles(roles, db, self.roles)
            except RoleNotFound as exc:
                raise CommandError(31, str(exc)) from None
            user.roles = [r for r in user.roles if r not in gone]
