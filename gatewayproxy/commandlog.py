"""The command log: every relayed or refused command, queued on the hot path and written in batches.

The relay calls :meth:`CommandLog.add` with what it already has (the raw request when it is small, the
outcome it read from the reply, the latency); nothing is decoded there. A background task flushes the
queue every ``interval`` seconds or as soon as ``batch_size`` records wait: in a worker thread it
decodes and redacts each request (:mod:`gatewayproxy.wire.redact`) and hands the resulting dicts to
``write`` (``access.services.gateway.session_commands_record``). It is one long-lived thread, not
``sync_to_async``'s per-call context, so its database connection is kept from batch to batch. A failed
write is logged and dropped, so a database outage never stalls the relay or grows memory without bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gatewayproxy.wire import codec, redact

log = logging.getLogger("gatewayproxy.commandlog")

MAX_QUEUED = 50_000


@dataclass(slots=True)
class PendingCommand:
    """A command as the relay saw it, before decoding and redaction."""

    session_id: int
    connection_id: int
    at: datetime.datetime
    request: codec.Request | None  # the request as the relay read it, or None when ``summary`` was made on the spot
    command: str
    database: str
    outcome: redact.Outcome
    latency_us: int
    full: bool
    refused: bool = False
    summary: dict | None = None
    collection: str = ""
    bytes_in: int = 0
    bytes_out: int = 0


def build_record(pending: PendingCommand) -> dict[str, Any]:
    """The dict handed to ``session_commands_record``: SessionCommand's fields plus ``session_id``."""
    command, database, collection, summary = pending.command, pending.database, pending.collection, pending.summary
    if pending.request is not None:
        try:
            command, database, collection, summary = redact.summarize_request(pending.request, full=pending.full)
        except Exception:  # a request the upstream accepted but we cannot read: keep what we know
            summary = {"unreadable": True}
    return {
        "session_id": pending.session_id,
        "connection_id": pending.connection_id,
        "at": pending.at,
        "database": (database or pending.database)[:128],
        "collection": (collection or "")[:255],
        "command": (command or pending.command)[:64],
        "summary": summary or {},
        "ok": pending.outcome.ok,
        "n": pending.outcome.n,
        "error_code": pending.outcome.error_code,
        "error_message": redact.redact_error_message(pending.outcome.error_message or "", full=pending.full),
        "refused": pending.refused,
        "latency_us": max(0, min(pending.latency_us, 2**31 - 1)),
        "bytes_in": pending.bytes_in,
        "bytes_out": pending.bytes_out,
    }


class WriterProcess:
    """Builds and writes command records in a child process, so the relay's interpreter never waits for it.

    Redaction and the database insert cost tens of microseconds per command; in a thread they contend for
    the GIL with the relay and stretch its latency. :meth:`start` forks the child and must run before any
    event loop or thread exists (``manage.py runproxy`` calls it first, after closing its database
    connections); :meth:`submit` hands a batch over a pipe; :meth:`close` waits for the child to write
    what it has. The child ignores SIGINT/SIGTERM (the parent decides when to stop) and exits when the
    parent goes away.
    """

    def __init__(self, write: Callable[[list[dict[str, Any]]], None]) -> None:
        self._write = write
        self._context = multiprocessing.get_context("fork")
        self._queue = self._context.Queue()
        self._process: multiprocessing.process.BaseProcess | None = None

    def start(self) -> None:
        """Fork the writer."""
        self._process = self._context.Process(
            target=_writer_main, args=(self._queue, self._write), name="commandlog-writer", daemon=True
        )
        self._process.start()

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def submit(self, batch: list[PendingCommand]) -> None:
        """Queue a batch for the child (pickled by the queue's feeder thread)."""
        if not self.alive:
            raise RuntimeError("the command log writer process is not running")
        self._queue.put(batch)

    def close(self, timeout: float = 3.0) -> None:
        """Ask the child to finish and wait up to ``timeout`` seconds for it."""
        if self._process is None:
            return
        with contextlib.suppress(Exception):
            self._queue.put(None)
            self._queue.close()
            self._queue.join_thread()
        self._process.join(timeout)
        if self._process.is_alive():
            log.warning("event=commandlog_writer_slow action=terminate")
            self._process.terminate()
        self._process = None


def _writer_main(queue, write: Callable[[list[dict[str, Any]]], None]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()
    while True:
        try:
            batch = queue.get(timeout=1.0)
        except Exception:  # queue.Empty: check the parent is still there
            if os.getppid() != parent:
                return
            continue
        if batch is None:
            return
        try:
            write([build_record(pending) for pending in batch])
        except Exception as exc:
            log.warning("event=commandlog_write_failed records=%d error=%s", len(batch), type(exc).__name__)


class CommandLog:
    """A queue of pending commands with a flusher task.

    Batches go to ``process`` (a started :class:`WriterProcess`) when there is one, else ``write(records)``
    runs in a worker thread of this process.
    """

    def __init__(
        self,
        write: Callable[[list[dict[str, Any]]], None],
        *,
        interval: float = 0.2,
        batch_size: int = 100,
        process: WriterProcess | None = None,
    ) -> None:
        self._write = write
        self._process = process
        self.interval = interval
        self.batch_size = batch_size
        self._pending: list[PendingCommand] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.dropped = 0
        self.written = 0
        # One long-lived writer thread: its database connection is reused from batch to batch.
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="commandlog")

    def add(self, pending: PendingCommand) -> None:
        """Queue one command (never blocks; drops the oldest-beyond-limit when the database is stuck)."""
        if len(self._pending) >= MAX_QUEUED:
            self.dropped += 1
            return
        self._pending.append(pending)
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    def start(self) -> None:
        """Start the flusher task in the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="commandlog-flusher")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything queued now."""
        while self._pending:
            batch, self._pending = self._pending[:1000], self._pending[1000:]
            try:
                if self._process is not None and self._process.alive:
                    self._process.submit(batch)
                else:
                    await asyncio.get_running_loop().run_in_executor(self._writer, self._convert_and_write, batch)
                self.written += len(batch)
            except Exception as exc:
                log.warning("event=commandlog_write_failed records=%d error=%s", len(batch), type(exc).__name__)

    def _convert_and_write(self, batch: list[PendingCommand]) -> None:
        self._write([build_record(pending) for pending in batch])

    async def close(self) -> None:
        """Stop the flusher and write what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self._process is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._process.close)
        self._writer.shutdown(wait=False)
