"""The session's policy at the wire: which commands a session may send, and where.

Three rules, checked in this order on every command after login, from the command name and database the
relay's :class:`~gatewayproxy.wire.codec.Request` already read (no BSON decoding, except an ``aggregate``
or ``explain`` in a read-only session, whose body decides):

1. the resource's deny list (``Resource.command_deny_list``), for every session;
2. read-only sessions may only run commands that read: an allow-list, so an unknown or new write
   command is refused rather than let through;
3. the session's database allow-list, when it has one (a few harmless commands on ``admin`` stay open).

A refusal is a :class:`Refusal` whose message names the command, sent back as MongoDB's Unauthorized
(code 13); the command never reaches the upstream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gatewayproxy.wire.codec import Request

UNAUTHORIZED = 13

#: Commands a read-only session may run. Everything else (writes, DDL, user and role management,
#: server administration) is refused.
READ_COMMANDS = frozenset(
    {
        "find",
        "getMore",
        "killCursors",
        "aggregate",
        "count",
        "distinct",
        "explain",
        "listCollections",
        "listIndexes",
        "listDatabases",
        "dbStats",
        "collStats",
        "dataSize",
        "hello",
        "isMaster",
        "ismaster",
        "ping",
        "buildInfo",
        "buildinfo",
        "hostInfo",
        "serverStatus",
        "connectionStatus",
        "getParameter",
        "getCmdLineOpts",
        "endSessions",
        "startSession",
        "refreshSessions",
        "commitTransaction",
        "abortTransaction",
        "getLastError",
        "whatsmyuri",
        "usersInfo",
        "rolesInfo",
        "getLog",
        "listCommands",
        "getFreeMonitoringStatus",
        "atlasVersion",
        "dbHash",
        "validate",
    }
)

#: Commands allowed on ``admin`` even when the session's database allow-list does not name it:
#: drivers send them there for their own bookkeeping.
ADMIN_BOOKKEEPING = frozenset(
    {
        "hello",
        "isMaster",
        "ismaster",
        "ping",
        "buildInfo",
        "buildinfo",
        "endSessions",
        "killCursors",
        "commitTransaction",
        "abortTransaction",
        "listDatabases",
        "connectionStatus",
        "getParameter",
        "getCmdLineOpts",
        "hostInfo",
        "atlasVersion",
        "getLog",
        "whatsmyuri",
    }
)

#: Aggregation stages that write.
WRITE_STAGES = frozenset({"$out", "$merge"})


@dataclass(frozen=True)
class Refusal:
    """Why a command was refused; ``message`` names the command and goes to the client."""

    code: int
    message: str


@dataclass(frozen=True)
class SessionPolicy:
    """The rules of one session, built once at login from its ``SessionLogin``."""

    read_only: bool = False
    deny: frozenset[str] = frozenset()
    databases: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls, *, read_only: bool, command_deny_list: Iterable[str] | None, database_allow_list: Iterable[str] | None
    ) -> SessionPolicy:
        """Normalise the stored lists (the deny list matches command names in any letter case)."""
        deny = frozenset(str(name).lower() for name in (command_deny_list or ()) if name)
        databases = frozenset(str(name) for name in (database_allow_list or ()) if name)
        return cls(read_only=bool(read_only), deny=deny, databases=databases)

    def check(self, command: str, database: str, body: Mapping[str, Any] | None = None) -> Refusal | None:
        """Return why ``command`` on ``database`` is refused, or None when it may go upstream.

        ``body`` (the decoded command) is only looked at for ``aggregate`` in a read-only session.
        """
        if command.lower() in self.deny:
            return Refusal(UNAUTHORIZED, f"{command} is denied on this resource by the gateway's policy")
        if self.read_only:
            if command not in READ_COMMANDS:
                return Refusal(UNAUTHORIZED, f"{command} is not allowed in a read-only session")
            if command == "aggregate" and body is not None and _pipeline_writes(body):
                return Refusal(UNAUTHORIZED, "aggregate with $out or $merge is not allowed in a read-only session")
            if command == "explain" and body is not None:
                inner = body.get("explain")
                if isinstance(inner, Mapping):
                    inner_name = next(iter(inner), "")
                    if inner_name not in READ_COMMANDS:
                        return Refusal(UNAUTHORIZED, f"explain of {inner_name} is not allowed in a read-only session")
        bookkeeping = database == "admin" and command in ADMIN_BOOKKEEPING
        if self.databases and database not in self.databases and not bookkeeping:
            return Refusal(UNAUTHORIZED, f"{command} on database {database!r} is outside this session's databases")
        return None

    def check_request(self, request: Request) -> Refusal | None:
        """:meth:`check` a client's request, decoding its body only when a rule needs it."""
        body = request.body if self._needs_body(request.command) else None
        return self.check(request.command, request.database, body)

    def _needs_body(self, command: str) -> bool:
        return self.read_only and command in ("aggregate", "explain")


def _pipeline_writes(body: Mapping[str, Any]) -> bool:
    pipeline = body.get("pipeline")
    if not isinstance(pipeline, list):
        return False
    return any(isinstance(stage, Mapping) and WRITE_STAGES.intersection(stage) for stage in pipeline)
