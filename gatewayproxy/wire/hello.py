"""The hello/isMaster replies the gateway makes itself, so that drivers never leave it.

A replica-set member's hello (``setName``, ``hosts``, ``me``) makes a driver drop the gateway's address and
connect to the members directly; a ``topologyVersion`` makes it stream hellos with exhaust; ``compression``
makes it compress. So the gateway never relays the upstream's hello: it presents a standalone in front of
a standalone and a mongos (``msg: "isdbgrid"``) in front of a replica set or a sharded cluster, carrying
the upstream's size limits and wire versions, and nothing else from it.

Pure functions over dicts; :class:`UpstreamLimits` is what the upstream module learns from its own hello.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STANDALONE = "standalone"
MONGOS = "mongos"

HELLO_COMMANDS = frozenset({"hello", "isMaster", "ismaster"})

#: A modern server's wire version range, used before the upstream is known (the first hello of a
#: connection that has not said who it is yet).
DEFAULT_MIN_WIRE_VERSION = 0
DEFAULT_MAX_WIRE_VERSION = 21

# The server version matching a wire version, for a buildInfo answered before login.
_VERSION_BY_WIRE = {25: "8.0.0", 21: "7.0.0", 17: "6.0.0", 13: "5.0.0", 9: "4.4.0", 8: "4.2.0", 7: "4.0.0", 6: "3.6.0"}


@dataclass(frozen=True)
class UpstreamLimits:
    """What the gateway copies from the upstream's hello: its kind, size limits and wire versions."""

    topology: str = STANDALONE
    max_bson_object_size: int = 16 * 1024 * 1024
    max_message_size_bytes: int = 48_000_000
    max_write_batch_size: int = 100_000
    min_wire_version: int = DEFAULT_MIN_WIRE_VERSION
    max_wire_version: int = DEFAULT_MAX_WIRE_VERSION
    logical_session_timeout_minutes: int | None = 30

    @classmethod
    def from_hello(cls, reply: Mapping[str, Any]) -> UpstreamLimits:
        """Read the limits from an upstream hello reply; a replica set or a mongos becomes ``MONGOS``."""
        sharded = reply.get("msg") == "isdbgrid"
        topology = MONGOS if sharded or reply.get("setName") else STANDALONE
        default = cls()

        def number(key: str, fallback: int | None) -> int | None:
            value = reply.get(key)
            return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else fallback

        return cls(
            topology=topology,
            max_bson_object_size=number("maxBsonObjectSize", default.max_bson_object_size),
            max_message_size_bytes=number("maxMessageSizeBytes", default.max_message_size_bytes),
            max_write_batch_size=number("maxWriteBatchSize", default.max_write_batch_size),
            min_wire_version=number("minWireVersion", default.min_wire_version),
            max_wire_version=number("maxWireVersion", default.max_wire_version),
            logical_session_timeout_minutes=number("logicalSessionTimeoutMinutes", None),
        )


DEFAULT_LIMITS = UpstreamLimits()


def hello_reply(
    command: Mapping[str, Any],
    *,
    limits: UpstreamLimits,
    connection_id: int,
    sasl_supported_mechs: list[str] | None = None,
    speculative_authenticate: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the reply to a client's ``hello``/``isMaster`` (``command`` is its decoded document).

    ``sasl_supported_mechs`` answers a ``saslSupportedMechs`` request (None leaves the field out, as a
    server does for an unknown user); ``speculative_authenticate`` is the SCRAM server-first reply to
    include when the client started authenticating inside the hello.
    """
    refused = hello_error(command)
    if refused is not None:
        return refused
    name = next(iter(command), "hello")
    reply: dict[str, Any] = {}
    if command.get("helloOk"):
        reply["helloOk"] = True
    reply["isWritablePrimary" if name == "hello" else "ismaster"] = True
    if limits.topology == MONGOS:
        reply["msg"] = "isdbgrid"
    reply.update(
        {
            "maxBsonObjectSize": limits.max_bson_object_size,
            "maxMessageSizeBytes": limits.max_message_size_bytes,
            "maxWriteBatchSize": limits.max_write_batch_size,
            "localTime": datetime.datetime.now(datetime.UTC),
        }
    )
    if limits.logical_session_timeout_minutes is not None:
        reply["logicalSessionTimeoutMinutes"] = limits.logical_session_timeout_minutes
    reply.update(
        {
            "connectionId": connection_id,
            "minWireVersion": limits.min_wire_version,
            "maxWireVersion": limits.max_wire_version,
            "readOnly": False,
        }
    )
    if sasl_supported_mechs is not None:
        reply["saslSupportedMechs"] = list(sasl_supported_mechs)
    if speculative_authenticate is not None:
        reply["speculativeAuthenticate"] = dict(speculative_authenticate)
    reply["ok"] = 1.0
    return reply


def hello_error(command: Mapping[str, Any]) -> dict[str, Any] | None:
    """The error a server answers a malformed hello with, else None: ``saslSupportedMechs`` given as a string
    without the ``.`` of ``"db.user"`` is BadValue, as on MongoDB and FerretDB."""
    value = command.get("saslSupportedMechs")
    if isinstance(value, str) and "." not in value:
        return {
            "ok": 0.0,
            "errmsg": "UserName must contain a '.' separated database.user pair",
            "code": 2,
            "codeName": "BadValue",
        }
    return None


def build_info_reply(limits: UpstreamLimits) -> dict[str, Any]:
    """A minimal ``buildInfo`` for a client that asks before logging in (the real one is relayed after)."""
    version = "7.0.0"
    for wire_version, name in sorted(_VERSION_BY_WIRE.items(), reverse=True):
        if limits.max_wire_version >= wire_version:
            version = name
            break
    numbers = [int(part) for part in version.split(".")] + [0]
    return {
        "version": version,
        "versionArray": numbers,
        "gitVersion": "",
        "maxBsonObjectSize": limits.max_bson_object_size,
        "ok": 1.0,
    }


def sasl_supported_mechs_user(command: Mapping[str, Any]) -> tuple[str, str] | None:
    """The ``(db, user)`` a hello asks mechanisms for with ``saslSupportedMechs: "db.user"``."""
    value = command.get("saslSupportedMechs")
    if not isinstance(value, str) or "." not in value:
        return None
    database, _, user = value.partition(".")
    return (database, user) if database and user else None
