"""Validation of what security teams type: resource URIs and role lists, with errors a person understands."""

from __future__ import annotations

import json
import re
from urllib.parse import unquote, unquote_plus

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


# The URI options the portal understands, by their lower-case name (drivers read option names case-insensitively).
# Anything else is refused: an option the portal does not know may change where or how the stored credentials
# are sent (authMechanism=PLAIN sends the password as written; tlsCAFile reads a file of the portal's host).
URI_OPTIONS = {
    name.lower(): name
    for name in (
        # where: hosts and topology
        "replicaSet",
        "directConnection",
        "loadBalanced",
        "srvServiceName",
        "srvMaxHosts",
        # TLS (the CA comes from the resource's own CA certificate field, never a file path)
        "tls",
        "ssl",
        "tlsInsecure",
        "tlsAllowInvalidCertificates",
        "tlsAllowInvalidHostnames",
        "tlsDisableOCSPEndpointCheck",
        "tlsDisableCertificateRevocationCheck",
        # timeouts and pools
        "connectTimeoutMS",
        "socketTimeoutMS",
        "serverSelectionTimeoutMS",
        "serverSelectionTryOnce",
        "heartbeatFrequencyMS",
        "localThresholdMS",
        "maxIdleTimeMS",
        "waitQueueTimeoutMS",
        "timeoutMS",
        "wTimeoutMS",
        "maxPoolSize",
        "minPoolSize",
        "maxConnecting",
        # reads and writes
        "readPreference",
        "readPreferenceTags",
        "maxStalenessSeconds",
        "readConcernLevel",
        "w",
        "journal",
        "retryWrites",
        "retryReads",
        # the rest
        "appName",
        "compressors",
        "zlibCompressionLevel",
        "authSource",
        "authMechanism",
    )
}
ALLOWED_AUTH_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1")
_FILE_OPTIONS = {"tlscafile", "tlscertificatekeyfile", "tlscertificatekeyfilepassword", "tlscrlfile"}
# TLS options that turn certificate checking off: they must agree with the resource's "verify TLS" setting.
URI_TLS_INSECURE_OPTIONS = frozenset({"tlsinsecure", "tlsallowinvalidcertificates", "tlsallowinvalidhostnames"})
_TRUE_VALUES = frozenset({"true", "1", "yes"})


def uri_options(options: str) -> list[tuple[str, str]]:
    """The (lower-case name, value) pairs of a URI's option string, read as drivers read them.

    Drivers separate options with `&` or `;`, read names case-insensitively and without percent-decoding, and
    percent-decode values (`+` is a space). A pair without exactly one `=` is refused.
    """
    pairs = []
    for item in re.split(r"[&;]", options or ""):
        if not item:
            continue
        if item.count("=") != 1:
            raise ValidationError("The URI options must read name=value, separated by &.", code="option")
        key, value = item.split("=")
        pairs.append((key.lower(), unquote_plus(value)))
    return pairs


def uri_option_is_true(options: str, name: str) -> bool | None:
    """The boolean value of option `name` (lower case) in an option string, or None when it is absent."""
    values = [value for key, value in uri_options(options) if key == name]
    return None if not values else values[-1].strip().lower() in _TRUE_VALUES


def validate_uri_options(options: str) -> None:
    """Only options the portal understands; authMechanism only SCRAM (the password never leaves as written)."""
    for key, value in uri_options(options):
        if key == "authmechanism":
            if value not in ALLOWED_AUTH_MECHANISMS:
                raise ValidationError(
                    "authMechanism=%(value)s is not allowed: the portal logs in with SCRAM-SHA-256 or SCRAM-SHA-1 "
                    "only, which never send the password itself (remove authMechanism, or set one of those).",
                    code="auth_mechanism",
                    params={"value": value[:40]},
                )
        elif key in _FILE_OPTIONS:
            raise ValidationError(
                "%(name)s is not allowed: the portal does not read files of its own host for a resource; paste the "
                "CA certificate into the resource's CA certificate field.",
                code="option",
                params={"name": key},
            )
        elif key not in URI_OPTIONS:
            raise ValidationError(
                "The URI option %(name)s is not one the portal understands (allowed: host list, replicaSet, "
                "TLS options, timeouts, directConnection, readPreference, appName, authSource, ...).",
                code="option",
                params={"name": key[:40] if re.fullmatch(r"[A-Za-z0-9_]+", key) else "(unreadable name)"},
            )


def validate_resource_uri(uri: str) -> None:
    """A resource URI names hosts and options only: credentials live in accounts, the database in roles.

    The one URI rule of the portal: the model's validation (the admin, the API and the services) and every
    connector check it, so a URI refused at one door is refused at all of them.
    """
    if re.search(r"[\s\x00-\x1f\x7f#]", uri or ""):
        raise ValidationError("A MongoDB URI has no spaces, control characters or #.", code="characters")
    scheme, userinfo, hosts, database, options = split_mongodb_uri(uri)
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
    validate_uri_options(options)


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
