"""The connection handshake and login: hello/isMaster, saslStart/saslContinue, logout.

hello answers as a standalone or, with ``replica_set``, as the single primary of that set
(``setName``, ``hosts``, ``me``, ``primary``, ``setVersion``, ``electionId``), or as a member of a
two-member set (``replset.WireReplicaSet``: primary or secondary, with ``topologyVersion``), advertising
``maxWireVersion`` 21 so drivers use OP_MSG. It honours ``saslSupportedMechs: "db.user"`` and runs
a ``speculativeAuthenticate`` saslStart in place. SCRAM itself is ``gatewayproxy.wire.scram``'s
:class:`ScramServer`; after the proof checks out, the user's ``authenticationRestrictions``
(clientSource / serverAddress CIDRs) are enforced and a miss fails the login with code 18.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import bson

from gatewayproxy.wire import scram

from .errors import CommandError
from .users import restrictions_allow

log = logging.getLogger("tests.mongo.wireserver")

MAX_BSON_OBJECT_SIZE = 16 * 1024 * 1024
MAX_MESSAGE_SIZE = 48_000_000
MAX_WRITE_BATCH_SIZE = 100_000
MAX_WIRE_VERSION = 21
ELECTION_ID = bson.ObjectId("7fffffff0000000000000001")


def auth_failed() -> CommandError:
    return CommandError(18, scram.AUTH_FAILED)


@dataclass
class Conversation:
    """One SCRAM conversation on a connection."""

    server: scram.ScramServer
    db: str
    skip_empty: bool
    step: int = 1


def hello(server, conn, db: str, cmd: dict) -> dict:
    """Reply to hello / isMaster / ismaster."""
    if "client" in cmd:
        if conn.client_metadata is not None:
            raise CommandError(
                186, "The client metadata document may only be sent in the first hello", "ClientMetadataCannotBeMutated"
            )
        conn.client_metadata = cmd["client"] if isinstance(cmd["client"], Mapping) else {}
    name = next(iter(cmd))
    reply: dict[str, Any] = {}
    if cmd.get("helloOk"):
        reply["helloOk"] = True
    replset = getattr(server, "replset", None)
    writable = replset is None or replset.is_primary(server)
    reply["isWritablePrimary" if name == "hello" else "ismaster"] = writable
    if replset is not None:  # a member of a two-member set (replset.py), with topologyVersion as mongod sends it
        reply.update(replset.hello_fields(server))
    elif server.replica_set:
        me = server.host_port
        # No topologyVersion: drivers would then stream hellos, which tests do not need.
        reply.update(
            {
                "hosts": [me],
                "setName": server.replica_set,
                "setVersion": 1,
                "secondary": False,
                "primary": me,
                "me": me,
                "electionId": ELECTION_ID,
            }
        )
    reply.update(
        {
            "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
            "maxMessageSizeBytes": MAX_MESSAGE_SIZE,
            "maxWriteBatchSize": MAX_WRITE_BATCH_SIZE,
            "localTime": datetime.datetime.now(datetime.UTC),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": conn.id,
            "minWireVersion": 0,
            "maxWireVersion": MAX_WIRE_VERSION,
            "readOnly": False,
        }
    )
    mechs_for = cmd.get("saslSupportedMechs")
    if isinstance(mechs_for, str) and "." in mechs_for:
        user_db, _, user_name = mechs_for.partition(".")
        user = server.users.get(user_name, user_db)
        if user is not None:
            reply["saslSupportedMechs"] = user.mechanisms
    speculative = cmd.get("speculativeAuthenticate")
    if isinstance(speculative, Mapping) and speculative.get("saslStart"):
        spec_db = speculative.get("db", db)
        try:
            started = sasl_start(server, conn, spec_db if isinstance(spec_db, str) else db, dict(speculative))
        except CommandError:
            started = None  # mongod leaves the field out; the driver then authenticates normally
        if started is not None:
            started.pop("ok", None)
            reply["speculativeAuthenticate"] = started
    reply["ok"] = 1.0
    return reply


def _payload(cmd: dict) -> bytes:
    value = cmd.get("payload", b"")
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise CommandError(14, "payload must be BinData or a string")


def sasl_start(server, conn, db: str, cmd: dict) -> dict:
    mechanism = cmd.get("mechanism")
    if mechanism not in scram.MECHANISMS:
        raise CommandError(
            334, f"Received authentication for mechanism {mechanism} which is not enabled", "MechanismUnavailable"
        )
    options = cmd.get("options") if isinstance(cmd.get("options"), Mapping) else {}
    server_side = scram.ScramServer(mechanism, lambda name: server.users.credentials(name, db, mechanism))
    try:
        first = server_side.server_first(_payload(cmd))
    except scram.ScramError:
        raise auth_failed() from None
    conn.conversation_seq += 1
    conversation_id = conn.conversation_seq
    conn.sasl[conversation_id] = Conversation(server_side, db, bool(options.get("skipEmptyExchange")))
    return {"conversationId": conversation_id, "done": False, "payload": bson.Binary(first), "ok": 1.0}


def sasl_continue(server, conn, db: str, cmd: dict) -> dict:
    conversation_id = cmd.get("conversationId")
    conversation = conn.sasl.get(conversation_id) if isinstance(conversation_id, int) else None
    if conversation is None:
        raise CommandError(17, "No SASL session state found", "ProtocolError")
    if conversation.step == 2:
        del conn.sasl[conversation_id]
        return {"conversationId": conversation_id, "done": True, "payload": bson.Binary(b""), "ok": 1.0}
    try:
        final = conversation.server.server_final(_payload(cmd))
    except scram.ScramError:
        del conn.sasl[conversation_id]
        log.info(
            "connection %s: authentication failed for %s@%s", conn.id, conversation.server.username, conversation.db
        )
        raise auth_failed() from None
    name = conversation.server.username or ""
    user = server.users.get(name, conversation.db)
    if user is None or not restrictions_allow(user.restrictions, conn.peer_ip, conn.local_ip):
        del conn.sasl[conversation_id]
        log.info("connection %s: %s@%s refused by authenticationRestrictions", conn.id, name, conversation.db)
        raise auth_failed()
    conn.users = [(name, conversation.db)]
    if conversation.skip_empty:
        del conn.sasl[conversation_id]
        done = True
    else:
        conversation.step = 2
        done = False
    return {"conversationId": conversation_id, "done": done, "payload": bson.Binary(final), "ok": 1.0}


def logout(server, conn, db: str, cmd: dict) -> dict:
    conn.users = []
    conn.sasl.clear()
    return {"ok": 1.0}


HANDLERS = {
    "hello": hello,
    "isMaster": hello,
    "ismaster": hello,
    "saslStart": sasl_start,
    "saslContinue": sasl_continue,
    "logout": logout,
}
