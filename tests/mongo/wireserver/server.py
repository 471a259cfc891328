"""The asyncio wire server: listening, one task per connection, message framing and replies.

:class:`WireServer` runs either in its own thread with a private event loop (``start()``/``stop()``,
for pytest fixtures) or in the caller's loop (``serve_forever()``, for the command line). Each
connection reads one framed message at a time with ``gatewayproxy.wire.codec``; a malformed, oversized or
truncated message closes only that connection, with the reason logged at INFO on the
``tests.mongo.wireserver`` logger. Commands run on the loop thread, so the state they touch (users,
mongomock, cursors, the connection table) needs no further locking against each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
import threading
import time
import traceback
from collections import Counter
from urllib.parse import quote_plus

import pymongo.errors

from gatewayproxy.wire import codec as wire

from . import commands
from .engine import Engine
from .errors import CommandError
from .faults import UNCOUNTED, CommandFailure, Faults
from .handshake import MAX_MESSAGE_SIZE, Conversation
from .privileges import Grants, parse_privileges
from .render import render
from .roles import RoleStore
from .users import UserStore

log = logging.getLogger("tests.mongo.wireserver")

_OP_QUERY_COMMANDS = frozenset({"hello", "isMaster", "ismaster"})


def _raised_in_mongomock(exc: BaseException) -> bool:
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and f"{os.sep}mongomock{os.sep}" in frames[-1].filename


def _unexpected_error(conn_id: int, name: str, exc: Exception) -> CommandError:
    """Map an exception from mongomock (or a server bug) to the error reply mongod would give."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return CommandError(code, str(exc))
    if isinstance(exc, pymongo.errors.OperationFailure):  # mongomock's query/update errors carry no code
        return CommandError(2, str(exc))
    if isinstance(exc, ValueError | TypeError):  # pymongo/mongomock argument checks on odd input
        log.debug("connection %s: command %s refused by mongomock", conn_id, name, exc_info=True)
        return CommandError(2 if isinstance(exc, ValueError) else 14, str(exc))
    if isinstance(exc, NotImplementedError):
        return CommandError(238, f"not supported by the wire server (mongomock): {exc}", "NotImplemented")
    if _raised_in_mongomock(exc):  # odd arguments that mongomock does not validate
        log.debug("connection %s: command %s failed in mongomock", conn_id, name, exc_info=True)
        return CommandError(2, f"{type(exc).__name__}: {exc}")
    log.exception("connection %s: command %s failed", conn_id, name)
    return CommandError(1, f"{type(exc).__name__}: {exc}")


class Connection:
    """One client connection: its socket, login state and the operation it is running."""

    def __init__(
        self, server: WireServer, conn_id: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.id = conn_id
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("", 0)
        local = writer.get_extra_info("sockname") or ("", 0)
        self.peer_ip, self.peer_port = peer[0], peer[1]
        self.local_ip = local[0]
        self.users: list[tuple[str, str]] = []
        self.sasl: dict[int, Conversation] = {}
        self.conversation_seq = 0
        self.client_metadata: dict | None = None
        self.opid = server.next_opid()
        self.active = False
        self.op_started = 0.0
        self.op_ns = ""
        self.op_command: dict = {}
        self.counted_messages = 0
        self.closed = False

    def effective_roles(self) -> list[dict[str, str]]:
        """Roles of the logged-in user, read live so grants, revokes and drops apply at once."""
        roles: list[dict[str, str]] = []
        for name, db in self.users:
            roles.extend(self.server.users.roles_of(name, db))
        return roles

    def grants(self) -> Grants:
        """What the logged-in user may do now: its roles' privileges, built-in and user-defined."""
        return self.server.roles.grants_for(self.effective_roles())

    @staticmethod
    def render(cmd: dict) -> str:
        return render(cmd)

    def close(self, reason: str) -> None:
        """Close the socket now; the client's next read or write fails."""
        if not self.closed:
            self.closed = True
            log.info("connection %s from %s:%s closed: %s", self.id, self.peer_ip, self.peer_port, reason)
        self.writer.transport.abort()

    async def run(self) -> None:
        try:
            while not self.closed:
                try:
                    raw = await wire.read_message(self.reader, max_size=self.server.max_message_size)
                except EOFError:
                    break
                await self.handle(raw)
        except wire.WireError as exc:
            self.close(f"bad message: {exc}")
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
            if not self.closed:
                log.debug("connection %s ended: %r", self.id, exc)
        except asyncio.CancelledError:  # server shutdown: the task ends quietly
            self.close("server shutting down")
        except Exception:  # a server bug: drop this client, keep serving the others
            log.exception("connection %s: unexpected error", self.id)
            self.close("internal error")
        finally:
            self.server.connections.pop(self.id, None)
            self.closed = True
            self.writer.transport.abort()

    async def handle(self, raw: bytes) -> None:
        message = wire.parse_message(raw, max_size=self.server.max_message_size)
        if isinstance(message, wire.OpReply):
            raise wire.WireError("clients may not send OP_REPLY", 12)
        reply = self._command_of(message)
        if isinstance(reply, dict):  # refused before running
            await self._send(message, reply)
            return
        db, name, cmd = reply
        self.server.command_counts[name] += 1
        faults = self.server.faults
        if name not in UNCOUNTED:
            self.counted_messages += 1
            if faults.should_close(self.counted_messages):
                self.close(f"fault: closeAfter {faults.close_after} messages")
                return
        failure = faults.take_failure(name)
        awaitable = self.server.replset is not None and name in _OP_QUERY_COMMANDS and "maxAwaitTimeMS" in cmd
        if failure is None and awaitable:
            await self._awaitable_hello(message, db, name, cmd)
            return
        document = self._failure_reply(failure) if failure else self._run(db, name, cmd)
        if self.closed:
            return
        delay = faults.delay_for(name)
        if delay:  # the operation stays active meanwhile, so currentOp shows it and killOp can end it
            self.active = True
            try:
                await asyncio.sleep(delay)
            finally:
                self.active = False
            if self.closed:
                return
        if isinstance(message, wire.OpMsg) and message.more_to_come:
            return
        await self._send(message, document)

    async def _awaitable_hello(self, message: wire.OpMsg | wire.OpQuery, db: str, name: str, cmd: dict) -> None:
        """An awaitable hello (a member of a set): answer when the state changes or ``maxAwaitTimeMS`` passes;
        with ``exhaustAllowed``, keep streaming replies flagged ``moreToCome``, each after the next change or wait."""
        replset = self.server.replset
        wait = cmd.get("maxAwaitTimeMS")
        wait_s = max(0.0, float(wait) / 1000) if isinstance(wait, int | float) else 0.0
        known = cmd.get("topologyVersion")
        streaming = isinstance(message, wire.OpMsg) and message.exhaust_allowed
        response_to = message.request_id
        while not self.closed:
            await replset.wait_for_change(self.server, known, wait_s)
            if self.closed:
                return
            document = self._run(db, name, {k: v for k, v in cmd.items() if k != "client"})
            request_id = self.server.next_request_id()
            if not streaming:
                await self._send(message, document)
                return
            data = wire.build_op_msg(document, flags=wire.MORE_TO_COME, request_id=request_id, response_to=response_to)
            self.writer.write(data)
            await self.writer.drain()
            response_to = request_id
            known = document.get("topologyVersion")

    def _failure_reply(self, failure: CommandFailure) -> dict:
        if failure.close_connection:
            self.close("fault: failCommand with closeConnection")
        return CommandError(failure.code, failure.errmsg, failure.code_name or None).to_document()

    def _command_of(self, message: wire.OpMsg | wire.OpQuery) -> tuple[str, str, dict] | dict:
        if isinstance(message, wire.OpQuery):
            query = message.query
            first = next(iter(query), "")
            if first in ("$query", "query") and isinstance(query[first], dict):
                query = query[first]
            name = next(iter(query), "")
            if message.collection != "$cmd" or name not in _OP_QUERY_COMMANDS:
                return CommandError(
                    352,
                    f"Unsupported OP_QUERY command: {name}. The client driver may require an upgrade. "
                    "For more details see https://dochub.mongodb.org/core/legacy-opcode-removal",
                ).to_document()
            return message.database, name, dict(query)
        cmd = dict(message.body)
        for identifier, docs in message.sequences:
            cmd[identifier] = docs
        name = next(iter(cmd), "")
        db = cmd.get("$db")
        if not name:
            return CommandError(2, "OP_MSG body is empty").to_document()
        if not isinstance(db, str) or not db:
            error = CommandError(40571, "OP_MSG requests require a $db argument", "Location40571")
            return error.to_document()
        return db, name, cmd

    def _run(self, db: str, name: str, cmd: dict) -> dict:
        self.opid = self.server.next_opid()
        self.active = True
        self.op_started = time.monotonic()
        self.op_ns = f"{db}.$cmd"
        self.op_command = {name: cmd[name] if not isinstance(cmd[name], bytes) else "...", "$db": db}
        try:
            if self.server.replset is not None:
                self.server.replset.check_command(self.server, name, cmd)
            return commands.dispatch(self.server, self, db, name, cmd)
        except CommandError as exc:
            return exc.to_document()
        except Exception as exc:  # mongomock raises many kinds; report, keep the connection
            return _unexpected_error(self.id, name, exc).to_document()
        finally:
            self.active = False

    async def _send(self, message: wire.OpMsg | wire.OpQuery, document: dict) -> None:
        request_id = self.server.next_request_id()
        try:
            data = wire.reply_for(message, document, request_id=request_id)
        except wire.WireError as exc:
            error = CommandError(10334, f"reply could not be encoded: {exc}", "BSONObjectTooLarge")
            data = wire.reply_for(message, error.to_document(), request_id=request_id)
        self.writer.write(data)
        await self.writer.drain()


class WireServer:
    """An in-memory MongoDB-compatible server speaking the wire protocol, for tests.

    ``WireServer(port=0).start()`` listens on a free port in a background thread; ``.uri`` is a
    connection string for the root user made at start. ``replica_set="rs0"`` makes it answer as
    the primary of a one-member replica set. Fault setters are safe to call from any thread.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        replica_set: str | None = None,
        admin_user: str = "admin",
        admin_password: str | None = None,
        *,
        max_message_size: int = MAX_MESSAGE_SIZE,
    ) -> None:
        self.host = host
        self.port = port
        self.replica_set = replica_set
        #: The set's state when this server is a member of a ``replset.WireReplicaSet`` (None otherwise).
        self.replset = None
        self.admin_user = admin_user
        self.admin_password = admin_password or secrets.token_hex(12)
        self.max_message_size = max_message_size
        self.roles = RoleStore()
        self.users = UserStore(roles=self.roles)
        self.users.create(admin_user, "admin", self.admin_password, [{"role": "root", "db": "admin"}])
        self.engine = Engine()
        self.faults = Faults()
        self.connections: dict[int, Connection] = {}
        self.connections_created = 0
        #: How many times each command arrived (all connections); tests may read or clear it.
        self.command_counts: Counter[str] = Counter()
        self.started_monotonic = time.monotonic()
        self._conn_ids = itertools.count(1)
        self._opids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()
        self._stopped: asyncio.Event | None = None

    # -- addresses -----------------------------------------------------------------------------
    @property
    def host_port(self) -> str:
        """The address clients use (a wildcard listen address is advertised as 127.0.0.1)."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def uri(self) -> str:
        """Connection string for the root user (``directConnection=true`` or ``replicaSet=NAME``)."""
        return self.uri_for(self.admin_user, self.admin_password)

    def uri_for(self, user: str | None = None, password: str | None = None, auth_source: str = "admin") -> str:
        """Connection string for any user (no credentials when ``user`` is None)."""
        creds = f"{quote_plus(user)}:{quote_plus(password or '')}@" if user else ""
        options = f"authSource={auth_source}&" if user else ""
        options += f"replicaSet={self.replica_set}" if self.replica_set else "directConnection=true"
        return f"mongodb://{creds}{self.host_port}/?{options}"

    def next_opid(self) -> int:
        return next(self._opids)

    def next_request_id(self) -> int:
        return next(self._request_ids)

    # -- serving -------------------------------------------------------------------------------
    async def listen(self) -> None:
        """Start listening in the running loop (``port`` 0 picks a free port, then stays fixed)."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(
            self._accept,
            self.host,
            self.port,
            reuse_address=True,
            limit=2**16,
            backlog=1024,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("wire server listening on %s (replica set: %s)", self.host_port, self.replica_set)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.faults.refuse == "close":
            writer.transport.abort()
            return
        with contextlib.suppress(OSError):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(self, next(self._conn_ids), reader, writer)
        self.connections[conn.id] = conn
        self.connections_created += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await conn.run()
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.connections.values()):
            conn.close("server shutting down")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._stopped is not None:
            self._stopped.set()

    async def serve_forever(self) -> None:
        """Listen and serve until :meth:`close` (or cancellation)."""
        if self._server is None:
            await self.listen()
        self._stopped = asyncio.Event()
        try:
            await self._stopped.wait()
        finally:
            await self.close()

    def start(self, timeout: float = 10.0) -> WireServer:
        """Run the server in a daemon thread with its own event loop; returns once it listens."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.listen())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_until_complete(self.serve_forever())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"wireserver-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("wire server did not start in time")
        if failure:
            raise failure[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop a server started with :meth:`start` and wait for its thread."""
        if self._loop is None or self._thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self.close(), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> WireServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, fn, *args):
        """Run ``fn(*args)`` on the server loop and return its result (directly when already there)."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return fn(*args)
        try:
            if asyncio.get_running_loop() is loop:
                return fn(*args)
        except RuntimeError:
            pass

        async def call():
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(call(), loop).result(10)

    # -- fault injection (thread-safe) -----------------------------------------------------------
    def refuse_connections(self, mode: str = "close") -> None:
        """``"close"``: accept and close at once; ``"stop"``: stop listening; ``"off"``: normal."""
        self.faults.set_refuse(mode)
        self._call(self._apply_listening)

    def _apply_listening(self):
        if self.faults.refuse == "stop" and self._server is not None:
            self._server.close()
            self._server = None
            return None
        if self.faults.refuse != "stop" and self._server is None and self._loop is not None:
            return self._loop.create_task(self.listen())
        return None

    def close_after(self, messages: int | None) -> None:
        """Close each connection when it sends its (N+1)th command after login (handshake not counted)."""
        self.faults.set_close_after(messages)

    def delay(self, ms: float, command: str | None = None) -> None:
        """Hold every reply (or only ``command``'s) for ``ms`` milliseconds; 0 turns it off."""
        self.faults.set_delay(ms, command)

    def fail_command(
        self,
        command: str,
        code: int,
        errmsg: str = "injected failure",
        *,
        times: int | None = None,
        close_connection: bool = False,
        code_name: str = "",
    ) -> None:
        """Fail ``command`` with ``code``/``errmsg`` ``times`` times (None: until cleared)."""
        self.faults.set_failure(command, CommandFailure(code, errmsg, times, close_connection, code_name))

    def clear_faults(self) -> None:
        """Remove every fault and listen again if listening was stopped."""
        self.faults.clear()
        self._call(self._apply_listening)

    # -- test helpers ----------------------------------------------------------------------------
    def create_user(self, name: str, password: str, roles: list, db: str = "admin", **options) -> None:
        """Create a user directly (same rules as the createUser command)."""
        self.users.create(name, db, password, roles, **options)

    def create_role(self, name: str, privileges: list[dict], roles: list | None = None, db: str = "admin") -> None:
        """Create a user-defined role directly (same rules as the createRole command)."""
        self.roles.create(name, db, parse_privileges(privileges, "createRole"), roles or [])

    def kill_connections(self, user: str | None = None, db: str = "admin") -> int:
        """Close every connection (of ``user``@``db`` when given); returns how many."""

        def kill() -> int:
            victims = [c for c in self.connections.values() if user is None or (user, db) in c.users]
            for conn in victims:
                conn.close("killed by the test API")
            return len(victims)

        return self._call(kill)

    def connection_count(self) -> int:
        return len(self.connections)
