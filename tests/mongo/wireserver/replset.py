"""A two-member replica set of wire servers: one data store, one primary, ``replSetStepDown``.

:class:`WireReplicaSet` runs two :class:`~tests.mongo.wireserver.server.WireServer` members in one thread and
one event loop. They share the users, the roles and the data (one mongomock client); each keeps its own
cursors, connections and faults, as each mongod does. :class:`ReplicaSetState` decides who is primary and
answers what a member of a real set answers:

- hello: ``setName``, ``hosts`` (both members), ``primary``, ``me``, ``isWritablePrimary``/``secondary``,
  ``setVersion``, ``electionId`` (the primary's, growing with each election) and ``topologyVersion``
  (``processId`` per member, ``counter`` growing with each change). A hello carrying ``topologyVersion`` and
  ``maxAwaitTimeMS`` is awaitable: the member answers when its state changes or the time passes, and with
  ``exhaustAllowed`` it keeps streaming replies (``moreToCome``), as drivers' streaming monitors expect.
- ``replSetStepDown`` (admin, action ``replSetStateChange`` on the cluster: clusterManager, root) on the
  primary: it becomes a secondary and the other member the primary at once (a real set holds an election;
  here the other member always wins). On a secondary it fails with 10107 NotWritablePrimary.
- On a secondary, writes fail with 10107 NotWritablePrimary (with ``errorLabels: ["RetryableWriteError"]``
  when the write carries a ``txnNumber`` outside a transaction, as mongod ≥ 4.4 labels retryable writes)
  and reads whose ``$readPreference`` is primary (or absent) fail with 13435 NotPrimaryNoSecondaryOk.
  ``getMore``/``killCursors`` run on the member that holds the cursor; user and role reads, diagnostics
  and the handshake run anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote_plus

import bson

from .errors import CommandError
from .server import WireServer

#: Commands that read data: on a secondary they need a read preference other than primary.
READ_COMMANDS = frozenset(
    {"find", "count", "distinct", "aggregate", "listCollections", "listIndexes", "listDatabases", "dbStats"}
)
#: Commands any member runs whatever its state.
ANY_MEMBER = frozenset(
    {
        "hello",
        "isMaster",
        "ismaster",
        "saslStart",
        "saslContinue",
        "logout",
        "ping",
        "buildInfo",
        "buildinfo",
        "connectionStatus",
        "endSessions",
        "getMore",
        "killCursors",
        "usersInfo",
        "rolesInfo",
        "currentOp",
        "killOp",
        "killAllSessions",
        "serverStatus",
        "getLog",
        "getParameter",
        "wireserverFault",
        "replSetGetStatus",
    }
)
_WRITE_STAGES = ("$out", "$merge")
#: Error codes mongod marks as retryable for a retryable write (the retryable writes specification's list).
_RETRYABLE_WRITE_CODES = frozenset({10107, 13435, 11600, 11602, 189, 91})


def _secondary_ok(cmd: Mapping[str, Any]) -> bool:
    preference = cmd.get("$readPreference")
    mode = preference.get("mode") if isinstance(preference, Mapping) else None
    return isinstance(mode, str) and mode != "primary"


def _writes(name: str, cmd: Mapping[str, Any]) -> bool:
    if name == "aggregate":
        pipeline = cmd.get("pipeline")
        return isinstance(pipeline, list) and any(
            isinstance(stage, Mapping) and any(key in stage for key in _WRITE_STAGES) for stage in pipeline
        )
    return name not in READ_COMMANDS and name not in ANY_MEMBER


def _retryable_write(cmd: Mapping[str, Any]) -> bool:
    return "txnNumber" in cmd and cmd.get("autocommit") is not False


class ReplicaSetState:
    """Who is primary in a set of wire servers, and what each member says about it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: list[WireServer] = []
        self.primary_index = 0
        self.term = 1
        self.set_version = 1
        self.counter = 0
        self.process_ids: dict[int, bson.ObjectId] = {}
        self._changed: asyncio.Event | None = None

    # -- state -----------------------------------------------------------------------------------
    def join(self, member: WireServer) -> None:
        self.members.append(member)
        self.process_ids[id(member)] = bson.ObjectId()

    @property
    def primary(self) -> WireServer:
        return self.members[self.primary_index]

    def is_primary(self, member: WireServer) -> bool:
        return self.primary is member

    def topology_version(self, member: WireServer) -> dict:
        return {"processId": self.process_ids[id(member)], "counter": bson.Int64(self.counter)}

    def election_id(self) -> bson.ObjectId:
        return bson.ObjectId(f"7fffffff{self.term:016x}")

    def step_down(self, member: WireServer) -> None:
        """``member`` steps down: the next member becomes primary (a new term), every awaiting hello answers."""
        if not self.is_primary(member):
            raise CommandError(10107, "not primary so can't step down", **self._error_fields(member))
        self.primary_index = (self.primary_index + 1) % len(self.members)
        self.term += 1
        self.counter += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_for_change(self, member: WireServer, known: Any, timeout: float) -> None:
        """Wait until the state changes or ``timeout`` passes, unless ``known`` is already out of date."""
        if not isinstance(known, Mapping) or known.get("processId") != self.process_ids[id(member)]:
            return
        if known.get("counter") != self.counter:
            return
        if self._changed is None:
            self._changed = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    # -- what members answer -----------------------------------------------------------------------
    def hello_fields(self, member: WireServer) -> dict:
        primary = self.is_primary(member)
        fields: dict[str, Any] = {
            "topologyVersion": self.topology_version(member),
            "hosts": [m.host_port for m in self.members],
            "setName": self.name,
            "setVersion": self.set_version,
            "secondary": not primary,
            "primary": self.primary.host_port,
            "me": member.host_port,
        }
        if primary:
            fields["electionId"] = self.election_id()
        return fields

    def _error_fields(self, member: WireServer) -> dict:
        return {"topologyVersion": self.topology_version(member)}

    def check_command(self, member: WireServer, name: str, cmd: Mapping[str, Any]) -> None:
        """Refuse what a secondary refuses (NotWritablePrimary, NotPrimaryNoSecondaryOk), as mongod does."""
        if self.is_primary(member):
            return
        if _writes(name, cmd):
            labels = ["RetryableWriteError"] if _retryable_write(cmd) else None
            raise CommandError(10107, "not primary", labels=labels, **self._error_fields(member))
        if name in READ_COMMANDS and not _secondary_ok(cmd):
            raise CommandError(13435, "not primary and secondaryOk=false", **self._error_fields(member))


class WireReplicaSet:
    """Two wire servers forming replica set ``name``, sharing users, roles and data, on one thread.

    ``with WireReplicaSet() as rs:`` starts both; ``rs.uri`` names both members with ``replicaSet``;
    ``rs.primary``/``rs.secondary`` are the members by current state; ``rs.step_down()`` does what
    ``replSetStepDown`` on the primary does.
    """

    def __init__(self, name: str = "rs0", *, admin_user: str = "admin", admin_password: str | None = None) -> None:
        self.state = ReplicaSetState(name)
        first = WireServer(replica_set=name, admin_user=admin_user, admin_password=admin_password)
        second = WireServer(replica_set=name, admin_user=admin_user, admin_password=first.admin_password)
        second.users, second.roles = first.users, first.roles
        second.engine.client = first.engine.client  # one data store; cursors stay per member
        for member in (first, second):
            member.replset = self.state
            self.state.join(member)
        self.members = [first, second]
        self.admin_user = admin_user
        self.admin_password = first.admin_password
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __iter__(self) -> Iterator[WireServer]:
        return iter(self.members)

    @property
    def primary(self) -> WireServer:
        return self.state.primary

    @property
    def secondary(self) -> WireServer:
        return next(m for m in self.members if m is not self.state.primary)

    @property
    def hosts(self) -> str:
        return ",".join(m.host_port for m in self.members)

    @property
    def uri(self) -> str:
        return self.uri_for(self.admin_user, self.admin_password)

    def uri_for(self, user: str | None = None, password: str | None = None, auth_source: str = "admin") -> str:
        """A ``replicaSet`` connection string naming both members (no credentials when ``user`` is None)."""
        creds = f"{quote_plus(user)}:{quote_plus(password or '')}@" if user else ""
        options = f"authSource={auth_source}&" if user else ""
        return f"mongodb://{creds}{self.hosts}/?{options}replicaSet={self.state.name}"

    def create_user(self, name: str, password: str, roles: list, db: str = "admin", **options) -> None:
        self.members[0].create_user(name, password, roles, db, **options)

    def step_down(self) -> None:
        """Step the primary down (thread-safe): the other member becomes primary."""
        primary = self.primary
        primary._call(self.state.step_down, primary)

    # -- running -----------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> WireReplicaSet:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                for member in self.members:
                    loop.run_until_complete(member.listen())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_until_complete(asyncio.gather(*(m.serve_forever() for m in self.members)))
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="wireserver-rs", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("wire replica set did not start in time")
        if failure:
            raise failure[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is None or self._thread is None:
            return

        async def close_all() -> None:
            await asyncio.gather(*(m.close() for m in self.members), return_exceptions=True)

        future = asyncio.run_coroutine_threadsafe(close_all(), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> WireReplicaSet:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
