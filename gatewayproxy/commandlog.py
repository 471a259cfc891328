"""The command log: every relayed or refused command, queued on the hot path and written in batches.

A command has one shape from the relay to the table, :class:`CommandRecord`. The relay makes it with what it
already has (the request it read, the outcome it read from the reply, the latency, the traffic) and calls
:meth:`CommandLog.add`; nothing is decoded there. A background task flushes the queue every ``interval``
seconds or as soon as ``batch_size`` records wait, to a writer (a child process under ``manage.py
runproxy``, else one long-lived thread, so its database connection is kept from batch to batch) that
:meth:`completes <CommandRecord.complete>` each record — decodes and redacts its request
(:mod:`gatewayproxy.wire.redact`) — and hands the batch to ``write`` (the domain's ``record_commands``,
which maps records to SessionCommand rows). A failed write is logged and dropped, so a database outage
never stalls the relay or grows memory without bound.
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
from dataclasses import dataclass, field
from typing import Any

from gatewayproxy.wire import codec, redact

log = logging.getLogger("gatewayproxy.commandlog")

MAX_QUEUED = 50_000


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(slots=True)
class CommandRecord:
    """One command the gateway relayed or refused, as a SessionCommand row will hold it.

    The relay fills the row's fields it knows and carries the ``request`` it read (with ``full``, whether
    the resource allows values in the log) to the writer, where :meth:`complete` turns it into the redacted
    ``summary``. ``bytes_in``/``bytes_out`` add to the session's counters, not to the row. The Django side
    maps a record to SessionCommand in one place (``access.services.gateway.session_commands_record``),
    which is also where values are cut to the columns' widths.
    """

    session_id: int
    command: str
    connection_id: int = 0
    at: datetime.datetime = field(default_factory=_now)
    database: str = ""
    collection: str = ""
    summary: dict[str, Any] | None = None
    ok: bool = True
    n: int | None = None
    error_code: int | None = None
    error_message: str = ""
    refused: bool = False
    latency_us: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    request: codec.Request | None = field(default=None, repr=False)
    full: bool = False

    def complete(self) -> CommandRecord:
        """Redact what the relay carried: the summary from the request (then dropped), the error message.

        Idempotent: the relay completes a large request at once, and the writer completes every record.
        """
        if self.request is not None:
            try:
                self.summary = redact.summarize_request(self.request, full=self.full)[3]
            except Exception:  # a request the upstream accepted but we cannot read: keep what we know
                self.summary = {"unreadable": True}
            self.request = None
        if self.summary is None:
            self.summary = {}
        self.error_message = redact.redact_error_message(self.error_message, full=self.full)
        return self


class WriterProcess:
    """Builds and writes command records in a child process, so the relay's interpreter never waits for it.

    Redaction and the database insert cost tens of microseconds per command; in a thread they contend for
    the GIL with the relay and stretch its latency. :meth:`start` forks the child and must run before any
    event loop or thread exists (``manage.py runproxy`` calls it first, after closing its database
    connections); :meth:`submit` hands a batch over a pipe; :meth:`close` waits for the child to write
    what it has. The child ignores SIGINT/SIGTERM (the parent decides when to stop) and exits when the
    parent goes away.
    """

    def __init__(self, write: Callable[[list[CommandRecord]], None]) -> None:
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

    def submit(self, batch: list[CommandRecord]) -> None:
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


def _writer_main(queue, write: Callable[[list[CommandRecord]], None]) -> None:
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
            write([record.complete() for record in batch])
        except Exception as exc:
            log.warning("event=commandlog_write_failed records=%d error=%s", len(batch), type(exc).__name__)


class CommandLog:
    """A queue of command records with a flusher task.

    Batches go to ``process`` (a started :class:`WriterProcess`) when there is one, else ``write(records)``
    runs in a worker thread of this process.
    """

    def __init__(
        self,
        write: Callable[[list[CommandRecord]], None],
        *,
        interval: float = 0.2,
        batch_size: int = 100,
        process: WriterProcess | None = None,
    ) -> None:
        self._write = write
        self._process = process
        self.interval = interval
        self.batch_size = batch_size
        self._pending: list[CommandRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.dropped = 0
        self.written = 0
        # One long-lived writer thread: its database connection is reused from batch to batch.
        self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="commandlog")

    def add(self, record: CommandRecord) -> None:
        """Queue one command (never blocks; drops the newest beyond the limit when the database is stuck)."""
        if len(self._pending) >= MAX_QUEUED:
            self.dropped += 1
            return
        self._pending.append(record)
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
                    await asyncio.get_running_loop().run_in_executor(self._writer, self._complete_and_write, batch)
                self.written += len(batch)
            except Exception as exc:
                log.warning("event=commandlog_write_failed records=%d error=%s", len(batch), type(exc).__name__)

    def _complete_and_write(self, batch: list[CommandRecord]) -> None:
        self._write([record.complete() for record in batch])

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
