"""The command log: every relayed or refused command, queued on the hot path and written in batches.

A command has one shape from the relay to the table, :class:`CommandRecord`. On the hot path the relay
queues a record's fields as a plain tuple in the record's field order (:data:`ROW_FIELDS`), with the
request's raw bytes and the time as a float: building a tuple costs a fraction of building an object, and
a batch of tuples pickles in a fraction of a microsecond per record. :meth:`CommandLog.add` never blocks;
a flusher hands the batch on every ``interval`` seconds or as soon as ``batch_size`` records wait.

Under ``manage.py runproxy`` the batches go, length-prefixed, over a pipe to one writer process
(:class:`WriterProcess`, forked before any event loop; with several gateway workers each has its own pipe
to the same writer). The writer rebuilds :class:`CommandRecord` objects, :meth:`completes
<CommandRecord.complete>` them — decodes and redacts each request (:mod:`gatewayproxy.wire.redact`), with a
cache that gives requests differing only in values the summary leaves out one summary
(:class:`SummaryCache`) — and hands everything that arrived together to ``write`` (the domain's
``record_commands``, which maps records to SessionCommand rows in one transaction). Without a writer
process (unit tests), ``write`` runs in one long-lived thread. A failed write is logged and dropped, and the
queue is bounded, so a database outage never stalls the relay or grows memory without bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import fcntl
import json
import logging
import multiprocessing
import os
import pickle
import selectors
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from gatewayproxy.wire import codec, redact

try:
    from gatewayproxy.wire import _speedups
except ImportError:  # built by `pip install -e .`; without a compiler the cache is bypassed
    _speedups = None

log = logging.getLogger("gatewayproxy.commandlog")

MAX_QUEUED = 50_000
#: The writer gathers rows for up to this many seconds (or WRITER_BATCH rows) before a transaction.
WRITER_LINGER = 0.25
WRITER_BATCH = 10_000
#: Bytes a producer may have queued for the writer before it drops records (the writer is stuck).
MAX_UNSENT = 64 * 1024 * 1024
_FRAME = struct.Struct("<I")
_PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = 1031


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(slots=True)
class CommandRecord:
    """One command the gateway relayed or refused, as a SessionCommand row will hold it.

    The relay fills the row's fields it knows and carries the ``request`` it read (a
    :class:`~gatewayproxy.wire.codec.Request` or its raw bytes, with ``full``: whether the resource allows
    values in the log) to the writer, where :meth:`complete` turns it into the redacted ``summary``.
    ``at`` is a datetime or a POSIX timestamp. ``bytes_in``/``bytes_out`` add to the session's counters, not
    to the row. The Django side maps a record to SessionCommand in one place
    (``access.services.gateway.session_commands_record``), which is also where values are cut to the
    columns' widths.
    """

    session_id: int
    command: str
    connection_id: int = 0
    at: datetime.datetime | float = field(default_factory=_now)
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
    request: codec.Request | bytes | None = field(default=None, repr=False)
    full: bool = False

    def complete(self, summaries: SummaryCache | None = None) -> CommandRecord:
        """Redact what the relay carried: the summary from the request (then dropped), the error message.

        Idempotent: the relay completes a large request at once, and the writer completes every record.
        """
        if self.request is not None:
            self.summary = (summaries or SUMMARIES).summary(self.request, full=self.full)
            self.request = None
        if self.summary is None:
            self.summary = {}
        if self.error_message:
            self.error_message = redact.redact_error_message(self.error_message, full=self.full)
        return self


#: The order of a queued record's fields (a tuple on the hot path): CommandRecord's own.
ROW_FIELDS = tuple(item.name for item in fields(CommandRecord))


class SummaryCache:
    """Redacted summaries of requests, shared by requests that differ only in values the summary leaves out.

    The key (``_speedups.summary_key``, in C) holds everything :func:`redact.summarize_request` reads of a
    request when values are redacted — field names and types at every depth, array lengths, the values it
    keeps — except the top-level numbers it copies (``limit``, ``getMore``'s cursor id, ``txnNumber``...),
    which come back apart and are set into a copy of the cached summary. A request the key cannot describe,
    a full-logging resource, or a request the summary truncates is summarised from scratch.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._items: dict[bytes, dict[str, Any]] = {}
        self._options = frozenset(redact.OPTION_FIELDS)
        self._dropped = frozenset(redact.DROPPED_FIELDS)
        self.hits = 0
        self.misses = 0

    def summary(self, request: codec.Request | bytes, *, full: bool) -> dict[str, Any]:
        """The redacted summary of ``request`` (a Request or its raw bytes)."""
        raw = request.raw if isinstance(request, codec.Request) else request
        found = None
        if _speedups is not None and not full and len(raw) <= redact.FULL_DECODE_LIMIT:
            found = _speedups.summary_key(raw, self._options, self._dropped)
        if found is None:
            return self._summarize(request, full)
        key, patches = found
        template = self._items.get(key)
        if template is None:
            self.misses += 1
            summary = self._summarize(raw, full)
            if self._cacheable(summary):
                if len(self._items) >= self.size:
                    self._items.clear()
                self._items[key] = summary
            return summary
        self.hits += 1
        for name, value in patches:
            held = template.get(name)
            if held != value or type(held) is not type(value):
                break
        else:
            return template  # the same summary object: the writer's batch scrubs and encodes it once
        summary = dict(template)
        for name, value in patches:
            summary[name] = value
        return summary

    @staticmethod
    def _summarize(request: codec.Request | bytes, full: bool) -> dict[str, Any]:
        try:
            return redact.summarize_request(request, full=full)[3]
        except Exception:  # a request the upstream accepted but we cannot read: keep what we know
            return {"unreadable": True}

    @staticmethod
    def _cacheable(summary: dict[str, Any]) -> bool:
        if "unreadable" in summary or "truncated" in summary:
            return False
        # Numbers set into a copy change its length a little; stay clear of the summary's truncation limit.
        return len(json.dumps(summary, default=str)) <= redact.MAX_SUMMARY_CHARS - 2048


SUMMARIES = SummaryCache()


class WriterProcess:
    """Builds and writes command records in one child process, so no relay's interpreter waits for it.

    Redaction and the database insert cost tens of microseconds per command; in a thread they would
    contend for the GIL with the relay. ``inputs`` pipes are made at construction, one per producer (a
    gateway worker process): :meth:`start` forks the child, which must happen before any event loop or
    thread exists (``manage.py runproxy`` does it first, after closing its database connections); a
    producer takes its pipe with :meth:`input`. The child reads every pipe and writes what arrived within
    ``WRITER_LINGER`` seconds as one batch (one transaction); it ignores SIGINT/SIGTERM and finishes, after
    writing what it holds, when every pipe is closed (its producers stopped or died).
    """

    def __init__(self, write: Callable[[list[CommandRecord]], None], *, inputs: int = 1) -> None:
        self._write = write
        self._pipes = [os.pipe() for _ in range(inputs)]
        for _read_end, write_end in self._pipes:
            with contextlib.suppress(OSError):  # a larger pipe: fewer wake-ups of the writer (Linux only)
                fcntl.fcntl(write_end, _F_SETPIPE_SZ, _PIPE_SIZE)
        self._process: multiprocessing.process.BaseProcess | None = None

    def start(self) -> None:
        """Fork the writer."""
        context = multiprocessing.get_context("fork")
        reads = [read_end for read_end, _write_end in self._pipes]
        writes = [write_end for _read_end, write_end in self._pipes]
        self._process = context.Process(
            target=_writer_main, args=(reads, writes, self._write), name="commandlog-writer"
        )
        self._process.daemon = False
        self._process.start()
        for read_end in reads:
            os.close(read_end)

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def input(self, index: int = 0) -> int:
        """Take the file descriptor producer ``index`` writes its batches to; this process closes the others'."""
        taken = self._pipes[index][1]
        self._pipes[index] = (self._pipes[index][0], -1)
        self.close_inputs()
        return taken

    def close_inputs(self) -> None:
        """Close this process's write ends (the supervisor's, once its workers hold their own)."""
        for index, (read_end, write_end) in enumerate(self._pipes):
            if write_end >= 0:
                with contextlib.suppress(OSError):
                    os.close(write_end)
            self._pipes[index] = (read_end, -1)

    def close(self, timeout: float = 3.0) -> None:
        """Close the inputs this process holds and wait up to ``timeout`` seconds for the child to finish."""
        self.close_inputs()
        if self._process is None:
            return
        self._process.join(timeout)
        if self._process.is_alive():
            log.warning("event=commandlog_writer_slow action=terminate")
            self._process.terminate()
            self._process.join(1.0)
        self._process = None


def _writer_main(reads: list[int], writes: list[int], write: Callable[[list[CommandRecord]], None]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for fd in writes:  # the producers' ends: holding them, the child would never see its inputs close
        with contextlib.suppress(OSError):
            os.close(fd)
    selector = selectors.DefaultSelector()
    pending: dict[int, bytearray] = {}
    for fd in reads:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
        pending[fd] = bytearray()
    rows: list[tuple] = []
    since = 0.0  # when the oldest unwritten row arrived
    while pending:
        wait = 1.0 if not rows else max(0.0, since + WRITER_LINGER - time.monotonic())
        for key, _events in selector.select(timeout=wait):
            fd = key.fd
            try:
                data = os.read(fd, 4 * _PIPE_SIZE)
            except BlockingIOError:
                continue
            if not data:  # this producer is gone
                selector.unregister(fd)
                os.close(fd)
                del pending[fd]
                continue
            buffer = pending[fd]
            buffer += data
            position = 0
            while len(buffer) - position >= 4:
                size = _FRAME.unpack_from(buffer, position)[0]
                if len(buffer) - position - 4 < size:
                    break
                # Only this gateway's own processes hold these pipes (made before the fork, never inherited further).
                if not rows:
                    since = time.monotonic()
                rows.extend(pickle.loads(memoryview(buffer)[position + 4 : position + 4 + size]))  # noqa: S301
                position += 4 + size
            del buffer[:position]
        # One transaction per WRITER_LINGER seconds at most (each costs a few milliseconds whatever its size).
        if rows and (len(rows) >= WRITER_BATCH or not pending or time.monotonic() - since >= WRITER_LINGER):
            _write_rows(rows, write)
            rows = []


def _write_rows(rows: list[tuple], write: Callable[[list[CommandRecord]], None]) -> None:
    try:
        records = [CommandRecord(*row).complete() for row in rows]
        write(records)
    except Exception as exc:
        log.warning("event=commandlog_write_failed records=%d error=%s", len(rows), type(exc).__name__)


class _PipeProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class CommandLog:
    """The queue of one relay process, with a flusher task.

    Rows go to the pipe ``output`` (a file descriptor from :meth:`WriterProcess.input`) when there is one,
    else ``write(records)`` runs in a worker thread of this process.
    """

    def __init__(
        self,
        write: Callable[[list[CommandRecord]], None],
        *,
        interval: float = 0.1,
        batch_size: int = 500,
        output: int | None = None,
    ) -> None:
        self._write = write
        self._output = output
        self.interval = interval
        self.batch_size = batch_size
        self._pending: list[tuple] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._transport: asyncio.WriteTransport | None = None
        self._protocol: _PipeProtocol | None = None
        self.dropped = 0
        self.written = 0
        # One long-lived writer thread: its database connection is reused from batch to batch.
        self._writer: concurrent.futures.ThreadPoolExecutor | None = None

    def add(self, row: tuple) -> None:
        """Queue one command, as a tuple in ROW_FIELDS order (never blocks; drops beyond the limit)."""
        pending = self._pending
        if len(pending) >= MAX_QUEUED:
            self.dropped += 1
            return
        pending.append(row)
        if len(pending) == self.batch_size and self._wake is not None:
            self._wake.set()

    def add_record(self, record: CommandRecord) -> None:
        """Queue a CommandRecord (tests and scripts; the relay queues tuples)."""
        self.add(tuple(getattr(record, name) for name in ROW_FIELDS))

    async def start(self) -> None:
        """Open the output and start the flusher task in the running loop."""
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self._output is not None:
            pipe = os.fdopen(self._output, "wb", buffering=0)
            self._transport, self._protocol = await loop.connect_write_pipe(_PipeProtocol, pipe)
        else:
            self._writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="commandlog")
        self._task = loop.create_task(self._run(), name="commandlog-flusher")

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Hand everything queued now to the writer."""
        while self._pending:
            batch, self._pending = self._pending[:5000], self._pending[5000:]
            try:
                if self._transport is not None:
                    self._send(batch)
                elif self._writer is not None:
                    await asyncio.get_running_loop().run_in_executor(self._writer, self._complete_and_write, batch)
                else:
                    self._complete_and_write(batch)
                self.written += len(batch)
            except Exception as exc:
                log.warning("event=commandlog_write_failed records=%d error=%s", len(batch), type(exc).__name__)

    def _send(self, batch: list[tuple]) -> None:
        assert self._transport is not None
        if self._transport.is_closing():
            raise ConnectionError("the command log writer is gone")
        if self._transport.get_write_buffer_size() > MAX_UNSENT:
            self.dropped += len(batch)
            raise BufferError("the command log writer is not keeping up")
        data = pickle.dumps(batch, protocol=5)
        self._transport.writelines((_FRAME.pack(len(data)), data))

    def _complete_and_write(self, batch: list[tuple]) -> None:
        self._write([CommandRecord(*row).complete() for row in batch])

    async def close(self) -> None:
        """Stop the flusher, hand on what is left, and close the output."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self._transport is not None and self._protocol is not None:
            self._transport.close()  # sends what is buffered first
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._protocol.closed, 3.0)
        if self._writer is not None:
            self._writer.shutdown(wait=True)
