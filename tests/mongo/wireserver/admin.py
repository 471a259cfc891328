"""Diagnostic and administrative commands: ping, buildInfo, getParameter, connectionStatus,
serverStatus, getLog, endSessions, currentOp (also as the ``$currentOp`` aggregation stage),
killOp, killAllSessions, replSetStepDown and replSetGetStatus (members of a ``replset.WireReplicaSet``) and the
fault-injection command ``wireserverFault``.

Kill commands really close other connections: ``killOp {op: N}`` closes the connection whose
current or last operation is ``N``, ``killAllSessions [{user, db}]`` closes every connection
authenticated as one of those users (all users for an empty list), sparing the caller's own.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Mapping
from typing import Any

import bson
import mongomock
from mongomock.filtering import filter_applies

from .engine import Caller
from .errors import CommandError, bad_value, type_mismatch
from .faults import REFUSE_MODES, CommandFailure
from .privileges import CLUSTER_RESOURCE

VERSION = "7.0.0"
_OPTION_KEYS = frozenset(
    {
        "currentOp",
        "$all",
        "$ownOps",
        "idleConnections",
        "allUsers",
        "lsid",
        "$clusterTime",
        "$readPreference",
        "comment",
        "apiVersion",
        "apiStrict",
        "apiDeprecationErrors",
    }
)


def ping(server, conn, db: str, cmd: dict) -> dict:
    return {"ok": 1.0}


def build_info(server, conn, db: str, cmd: dict) -> dict:
    return {
        "version": VERSION,
        "gitVersion": "wireserver",
        "modules": [],
        "allocator": "system",
        "javascriptEngine": "none",
        "sysInfo": "deprecated",
        "versionArray": [7, 0, 0, 0],
        "bits": 64,
        "debug": False,
        "maxBsonObjectSize": 16 * 1024 * 1024,
        "storageEngines": ["ephemeralForTest"],
        "ok": 1.0,
    }


def get_parameter(server, conn, db: str, cmd: dict) -> dict:
    known = {
        "featureCompatibilityVersion": {"version": "7.0"},
        "authenticationMechanisms": ["SCRAM-SHA-1", "SCRAM-SHA-256"],
        "maxBSONDepth": 100,
    }
    if cmd.get("getParameter") == "*":
        return {**known, "ok": 1.0}
    reply = {k: v for k, v in known.items() if k in cmd}
    if not reply:
        raise CommandError(72, "no option found to get", "InvalidOptions")
    return {**reply, "ok": 1.0}


def connection_status(server, conn, db: str, cmd: dict) -> dict:
    auth_info: dict[str, Any] = {
        "authenticatedUsers": [{"user": u, "db": d} for u, d in conn.users],
        "authenticatedUserRoles": conn.effective_roles(),
    }
    if cmd.get("showPrivileges") is True:
        auth_info["authenticatedUserPrivileges"] = [p.to_document() for p in conn.grants().privileges]
    return {"authInfo": auth_info, "ok": 1.0}


def server_status(server, conn, db: str, cmd: dict) -> dict:
    return {
        "host": server.host_port,
        "version": VERSION,
        "process": "mongod",
        "pid": bson.Int64(os.getpid()),
        "uptime": time.monotonic() - server.started_monotonic,
        "localTime": datetime.datetime.now(datetime.UTC),
        "connections": {
            "current": len(server.connections),
            "available": 1000,
            "totalCreated": server.connections_created,
        },
        "ok": 1.0,
    }


def get_log(server, conn, db: str, cmd: dict) -> dict:
    return {"totalLinesWritten": 0, "log": [], "ok": 1.0}


def end_sessions(server, conn, db: str, cmd: dict) -> dict:
    return {"ok": 1.0}


# -- currentOp and kills ------------------------------------------------------------------------
def _op_entry(server, other, now: float) -> dict:
    entry: dict[str, Any] = {
        "type": "op",
        "host": server.host_port,
        "desc": f"conn{other.id}",
        "connectionId": other.id,
        "client": f"{other.peer_ip}:{other.peer_port}",
        "active": other.active,
        "currentOpTime": datetime.datetime.now(datetime.UTC).isoformat(),
        "opid": other.opid,
        "effectiveUsers": [{"user": u, "db": d} for u, d in other.users],
    }
    if other.client_metadata is not None:
        entry["clientMetadata"] = other.client_metadata
    if other.active:
        elapsed = now - other.op_started
        entry.update(
            {
                "secs_running": bson.Int64(int(elapsed)),
                "microsecs_running": bson.Int64(int(elapsed * 1e6)),
                "op": "command",
                "ns": other.op_ns,
                "command": other.op_command,
                "numYields": 0,
                "waitingForLock": False,
            }
        )
    return entry


def current_op_entries(server, conn, options: Mapping[str, Any]) -> list[dict]:
    """In-progress operations visible to ``conn``; idle connections too with ``$all``/``idleConnections``."""
    own_only = bool(options.get("$ownOps"))
    if not own_only and not conn.grants().allows(CLUSTER_RESOURCE, ["inprog"]):
        raise CommandError(13, f"not authorized on admin to execute command {conn.render(dict(options))}")
    include_idle = bool(options.get("$all") or options.get("idleConnections"))
    now = time.monotonic()
    entries = []
    for other in list(server.connections.values()):
        if not (other.active or include_idle):
            continue
        if own_only and not set(other.users) & set(conn.users):
            continue
        entries.append(_op_entry(server, other, now))
    return entries


def current_op(server, conn, db: str, cmd: dict) -> dict:
    entries = current_op_entries(server, conn, cmd)
    query = {k: v for k, v in cmd.items() if k not in _OPTION_KEYS and not k.startswith("$")}
    if query:
        entries = [e for e in entries if filter_applies(query, e)]
    return {"inprog": entries, "ok": 1.0}


def current_op_aggregate(server, conn, db: str, cmd: dict) -> dict:
    """``aggregate: 1`` on admin whose first stage is ``$currentOp`` (how mongosh runs db.currentOp())."""
    if db != "admin":
        raise CommandError(73, "$currentOp must be run against the 'admin' database with {aggregate: 1}")
    pipeline = cmd["pipeline"]
    stage = pipeline[0]["$currentOp"] or {}
    if not isinstance(stage, Mapping):
        raise type_mismatch("$currentOp options must be a document")
    options = {
        "$all": stage.get("idleConnections"),
        "$ownOps": not stage.get("allUsers", False) and not conn.grants().allows(CLUSTER_RESOURCE, ["inprog"]),
    }
    docs = current_op_entries(server, conn, options)
    if len(pipeline) > 1:
        scratch = mongomock.MongoClient()["currentOp"]["inprog"]
        if docs:
            scratch.insert_many([dict(d, _id=i) for i, d in enumerate(docs)])
        docs = list(scratch.aggregate(pipeline[1:]))
        for doc in docs:
            if isinstance(doc.get("_id"), int):
                del doc["_id"]
    caller = Caller(conn.id, frozenset(conn.users))
    return server.engine.cursor_reply("admin.$cmd.aggregate", docs, cmd, caller)


def kill_op(server, conn, db: str, cmd: dict) -> dict:
    opid = cmd.get("op")
    if isinstance(opid, bool) or not isinstance(opid, int | float):
        raise type_mismatch('Did not provide "op" field')
    targets = [o for o in list(server.connections.values()) if o.opid == int(opid) and o is not conn]
    own = bool(targets) and all(set(o.users) & set(conn.users) for o in targets)
    if not own and not conn.grants().allows(CLUSTER_RESOURCE, ["killop"]):
        # mongod: without killop, only an operation of one's own (an unknown one is refused too)
        raise CommandError(13, "Unauthorized")
    for other in targets:
        other.close(f"killed by killOp {int(opid)} from connection {conn.id}")
    return {"info": "attempting to kill op", "ok": 1.0}


def kill_all_sessions(server, conn, db: str, cmd: dict) -> dict:
    patterns = cmd.get("killAllSessions")
    if not isinstance(patterns, list):
        raise type_mismatch("killAllSessions takes an array of {user, db} documents")
    targets: set[tuple[str, str]] = set()
    for item in patterns:
        if not isinstance(item, Mapping) or not isinstance(item.get("user"), str):
            raise bad_value("killAllSessions entries must be {user, db} documents")
        targets.add((item["user"], item.get("db", "admin")))
    for other in list(server.connections.values()):
        if other is conn or not other.users:
            continue
        if not targets or set(other.users) & targets:
            other.close(f"killed by killAllSessions from connection {conn.id}")
    return {"ok": 1.0}


# -- replication -----------------------------------------------------------------------------------
def _not_a_set() -> CommandError:
    return CommandError(76, "not running with --replSet", "NoReplicationEnabled")


def repl_set_step_down(server, conn, db: str, cmd: dict) -> dict:
    """``replSetStepDown``: the primary of a two-member set becomes secondary, the other member primary."""
    if server.replset is None:
        raise _not_a_set()
    server.replset.step_down(server)
    return {"ok": 1.0}


def repl_set_get_status(server, conn, db: str, cmd: dict) -> dict:
    """``replSetGetStatus``: each member's name and state (PRIMARY 1, SECONDARY 2)."""
    replset = server.replset
    if replset is None:
        raise _not_a_set()
    members = []
    for index, member in enumerate(replset.members):
        primary = replset.is_primary(member)
        members.append(
            {
                "_id": index,
                "name": member.host_port,
                "health": 1.0,
                "state": 1 if primary else 2,
                "stateStr": "PRIMARY" if primary else "SECONDARY",
                "self": member is server,
            }
        )
    primary = replset.is_primary(server)
    return {"set": replset.name, "myState": 1 if primary else 2, "term": replset.term, "members": members, "ok": 1.0}


# -- fault injection ----------------------------------------------------------------------------
def wireserver_fault(server, conn, db: str, cmd: dict) -> dict:
    """The admin command behind the fault-injection API (see ``faults.py`` for the forms)."""
    kind = cmd.get("wireserverFault")
    faults = server.faults
    try:
        if kind == "refuseConnections":
            mode = cmd.get("mode", "close")
            if mode not in REFUSE_MODES:
                raise bad_value(f"mode must be one of {', '.join(REFUSE_MODES)}")
            server.refuse_connections(mode)
        elif kind == "closeAfter":
            messages = cmd.get("messages")
            faults.set_close_after(None if messages is None else int(messages))
        elif kind == "delay":
            faults.set_delay(float(cmd.get("ms", 0)), cmd.get("command"))
        elif kind == "failCommand":
            command = cmd.get("command")
            if not isinstance(command, str):
                raise bad_value("failCommand needs a 'command' name")
            if cmd.get("off"):
                faults.set_failure(command, None)
            else:
                times = cmd.get("times")
                faults.set_failure(
                    command,
                    CommandFailure(
                        code=int(cmd.get("code", 1)),
                        errmsg=str(cmd.get("errmsg", "injected failure")),
                        times=None if times is None else int(times),
                        close_connection=bool(cmd.get("closeConnection", False)),
                        code_name=str(cmd.get("codeName", "")),
                    ),
                )
        elif kind == "clear":
            server.clear_faults()
        elif kind != "status":
            raise bad_value(
                "wireserverFault must be one of refuseConnections, closeAfter, delay, failCommand, clear, status"
            )
    except (TypeError, ValueError) as exc:
        raise bad_value(str(exc)) from None
    return {"faults": faults.status(), "ok": 1.0}


HANDLERS = {
    "ping": ping,
    "buildInfo": build_info,
    "buildinfo": build_info,
    "getParameter": get_parameter,
    "connectionStatus": connection_status,
    "serverStatus": server_status,
    "getLog": get_log,
    "endSessions": end_sessions,
    "currentOp": current_op,
    "killOp": kill_op,
    "killAllSessions": kill_all_sessions,
    "wireserverFault": wireserver_fault,
    "replSetStepDown": repl_set_step_down,
    "replSetGetStatus": repl_set_get_status,
}
