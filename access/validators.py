"""Validation of what security teams type: resource URIs and role lists, with errors a person understands."""

from __future__ import annotations

import json
import re
from urllib.parse import unquote

from django.core.exceptions import ValidationError

_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+)(:(\d{1,5}))?$")
_ROLE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def split_mongodb_uri(uri: str) -> tuple[str, str, str, str, str]:
    """Split a MongoDB URI into (scheme, userinfo, hosts, database, options) without resolving anything."""
    uri = (uri or "").strip()
    for scheme in ("mongodb+srv://", "mongodb://"):
        if uri.startswith(scheme):
            rest = uri[len(scheme) :]
            break
    else:
        raise ValidationError(
            "A MongoDB URI starts with mongodb:// or mongodb+srv:// (for example mongodb://db1.example.com:27017).",
            code="scheme",
        )
    rest, _, options = rest.partition("?")
    authority, _, database = rest.partition("/")
    userinfo, _, hosts = authority.rpartition("@")
    return scheme[:-3], userinfo, hosts, unquote(database), options


def validate_resource_uri(uri: str) -> None:
    """A resource URI names hosts and options only: credentials live in accounts, the database in roles."""
    scheme, userinfo, hosts, database, _options = split_mongodb_uri(uri)
    if userinfo:
        raise ValidationError(
            "Remove the username and password from the URI: the portal keeps credentials in accounts, encrypted.",
            code="credentials",
        )
    if database:
        raise ValidationError(
            "Remove the database name (%(db)s) from the URI: set the auth database on the resource "
            "and the database on each role.",
            code="database",
            params={"db": database},
        )
    host_list = [h for h in hosts.split(",")]
    if not hosts or any(not h for h in host_list):
        raise ValidationError("The URI names no host (for example mongodb://db1.example.com:27017).", code="host")
    for host in host_list:
        match = _HOST.match(host)
        if not match:
            raise ValidationError("%(host)s is not a valid host[:port].", code="host", params={"host": host})
        if match.group(3) and not 0 < int(match.group(3)) < 65536:
            raise ValidationError("Port %(port)s is out of range.", code="port", params={"port": match.group(3)})
    if scheme == "mongodb+srv" and (len(host_list) != 1 or ":" in host_list[0]):
        raise ValidationError("A mongodb+srv:// URI names exactly one host name and no port.", code="srv")


def parse_roles(value) -> list:
    """Roles from a list or a JSON string of a list (as Vault accepts them)."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                'Roles must be JSON, for example ["readWrite", {"role": "read", "db": "reports"}] (%(error)s).',
                code="json",
                params={"error": exc.msg},
            ) from None
    return value


def validate_mongodb_roles(value) -> None:
    """A list of role names or {"role": name, "db": database} documents."""
    roles = parse_roles(value)
    if not isinstance(roles, list):
        raise ValidationError('Roles must be a list of role names or {"role", "db"} documents.', code="type")
    for index, role in enumerate(roles, start=1):
        if isinstance(role, str):
            if not _ROLE_NAME.match(role):
                raise ValidationError(
                    "Role %(n)d: %(role)r is not a role name.", code="name", params={"n": index, "role": role}
                )
        elif isinstance(role, dict):
            if set(role) != {"role", "db"} or not all(isinstance(role[k], str) and role[k] for k in role):
                raise ValidationError(
                    'Role %(n)d must have exactly the keys "role" and "db", both non-empty text.',
                    code="document",
                    params={"n": index},
                )
        else:
            raise ValidationError(
                'Role %(n)d must be a role name or a {"role", "db"} document.',
                code="type",
                params={"n": index},
            )


def validate_atlas_roles(value) -> None:
    """A list of {"roleName", "databaseName", "collectionName"?} documents."""
    roles = parse_roles(value)
    if not isinstance(roles, list) or not roles:
        raise ValidationError('Atlas roles must be a non-empty list of {"roleName", "databaseName"}.', code="type")
    for index, role in enumerate(roles, start=1):
        if not isinstance(role, dict) or not {"roleName", "databaseName"} <= set(role):
            raise ValidationError(
                "Atlas role %(n)d needs roleName and databaseName.", code="document", params={"n": index}
            )
        extra = set(role) - {"roleName", "databaseName", "collectionName"}
        if extra:
            raise ValidationError(
                "Atlas role %(n)d has unknown keys: %(keys)s.",
                code="document",
                params={"n": index, "keys": ", ".join(sorted(extra))},
            )
        if not all(isinstance(v, str) and v for v in role.values()):
            raise ValidationError(
                "Atlas role %(n)d: every value must be non-empty text.", code="document", params={"n": index}
            )


def validate_atlas_scopes(value) -> None:
    """A list of {"name", "type"} with type CLUSTER, DATA_LAKE or STREAM (empty means every cluster)."""
    scopes = parse_roles(value)
    if not isinstance(scopes, list):
        raise ValidationError('Scopes must be a list of {"name", "type"}.', code="type")
    for index, scope in enumerate(scopes, start=1):
        if not isinstance(scope, dict) or set(scope) != {"name", "type"}:
            raise ValidationError("Scope %(n)d needs exactly name and type.", code="document", params={"n": index})
        if scope["type"] not in {"CLUSTER", "DATA_LAKE", "STREAM"}:
            raise ValidationError(
                "Scope %(n)d: type must be CLUSTER, DATA_LAKE or STREAM.", code="type", params={"n": index}
            )
