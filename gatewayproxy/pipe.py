"""The relay's hot path: asyncio protocols that move framed messages between a client and its upstream.

After login a connection stops using streams and coroutines per message: both sockets get a protocol that
cuts the byte stream into messages (16-byte header, declared length checked against the limit before the
body is awaited). Each client request goes to the connection's ``on_request``, which reads it once into a
:class:`~gatewayproxy.wire.codec.Request` and either returns it to be forwarded or answers it locally.

Replies are read into one buffer that every connection of the event loop shares (:class:`ReadBuffer`) and
forwarded from there as memoryviews, without a copy: the kernel takes them straight from that buffer. A
16 MB batch starts reaching the client before its end has left the server. The buffer is read into again
as long as nothing still refers to it; when a client is slow (its transport keeps part of a reply to send
later) or a reply spans several reads (its chunks are kept for ``read_outcome``), the loop takes a fresh
buffer and the old one lives as long as those references. So an idle connection holds no buffer at all.

Replies are matched to requests in order; exhaust replies (``moreToCome``) all belong to the request before
them; a reply to a ``moreToCome`` request, which some servers send anyway, is dropped. The first reply of a
request is handed, as its chunks, to ``read_outcome`` the moment it is complete (what the command log keeps
of it); ``on_reply`` runs with the last reply. Both run before the last bytes of their reply go to the
client, so whatever they record (the command log, the cursors a session may use) is known before the client
can act on the reply. Each side pauses the other's reading while its own write buffer is full.

Nothing here decodes BSON or knows about sessions: see :mod:`gatewayproxy.relay`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gatewayproxy.wire import codec

log = logging.getLogger("gatewayproxy.pipe")

#: Bytes a socket may hold unsent before the other side stops reading (back-pressure).
WRITE_BUFFER_HIGH = 4 * 1024 * 1024
#: The size of the shared reply buffer: one read takes up to this much of a reply.
READ_BUFFER_SIZE = 256 * 1024
_PREFIX = 20  # the header and OP_MSG's flag bits

_HEADER = codec.HEADER
_UINT32 = codec.UINT32
_OP_MSG = codec.OP_MSG
_MORE_TO_COME = codec.MORE_TO_COME


class ReadBuffer:
    """The buffer replies are read into, shared by the connections of one event loop (one per thread)."""

    __slots__ = ("size", "view")
    _local = threading.local()

    def __init__(self, size: int = READ_BUFFER_SIZE) -> None:
        self.size = size
        self.view = memoryview(bytearray(size))

    @classmethod
    def of_this_thread(cls) -> ReadBuffer:
        """The buffer of the calling thread's event loop."""
        buffer = getattr(cls._local, "buffer", None)
        if buffer is None:
            buffer = cls._local.buffer = cls()
        return buffer

    def replace(self) -> None:
        """Read into a new buffer from now on: the current one is still referred to (a pending write, kept chunks)."""
        self.view = memoryview(bytearray(self.size))


@dataclass(slots=True)
class InFlight:
    """A request sent upstream, waiting for its reply (or the last reply of an exhaust stream).

    ``outcome`` is what ``read_outcome`` made of the first reply; ``bytes_out`` counts every reply.
    """

    request: codec.Request
    started: float = 0.0
    outcome: Any = None
    bytes_out: int = 0
    replies: int = 0
    to_secondary: bool = False  # sent to the secondary upstream (a read the session may read from a secondary)


class Pipe:
    """Moves messages between ``client`` and ``upstream`` transports until either closes.

    ``on_request(frame)`` returns an :class:`InFlight` to forward the frame upstream (a ``moreToCome``
    request expects no reply), or None when it answered (or dropped) the frame itself;
    ``read_outcome(chunks)`` reads a request's first reply while its chunks (buffers, valid only during the
    call) are at hand; ``on_reply(in_flight)`` runs when a request's last reply is read, before its last bytes
    go out;
    ``on_close(reason)`` runs once when the pipe stops.
    """

    def __init__(
        self,
        *,
        client: asyncio.Transport,
        upstream: asyncio.Transport,
        max_request: int,
        max_reply: int,
        on_request: Callable[[bytes], InFlight | None],
        on_reply: Callable[[InFlight], None],
        on_close: Callable[[str], None],
        read_outcome: Callable[[Sequence[Any]], Any],
        read_buffer: ReadBuffer | None = None,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.max_request = max_request
        self.max_reply = max_reply
        self.on_request = on_request
        self.on_reply = on_reply
        self.on_close = on_close
        self.read_outcome = read_outcome
        self.read_buffer = read_buffer or ReadBuffer.of_this_thread()
        # Lists, not deques: they hold one or two items, and an idle connection should cost little memory.
        self.in_flight: list[InFlight] = []
        self.unacknowledged: list[int] = []  # requestIDs of recent moreToCome requests (the last 64)
        self.closed = False
        #: Requests wait in ``_requests`` while the upstream is being replaced (:meth:`hold`, :meth:`replace_upstream`).
        self.held = False
        #: A replica set secondary that reads may go to (:meth:`set_secondary`), else None.
        self.secondary: asyncio.Transport | None = None
        self._requests = bytearray()
        # A reply that spans reads: its prefix (copied), what is left to read, whether it goes to the client,
        # and its chunks when the request waits for its outcome.
        self._head = bytearray()
        self._head_unsent = False
        self._remaining = 0
        self._length = 0
        self._forward = True
        self._kept: list[Any] | None = None

    def start(self, client_buffered: bytes = b"", upstream_buffered: bytes = b"") -> None:
        """Take over both transports, then process whatever the streams had already buffered."""
        for transport in (self.client, self.upstream):
            transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self.client.set_protocol(_ClientSide(self))
        # Reading restarts so that the loop reads replies through get_buffer (uvloop picks its callbacks then).
        reading = self.upstream.is_reading()
        self.upstream.pause_reading()
        self.upstream.set_protocol(_UpstreamSide(self))
        if reading:
            self.upstream.resume_reading()
        if upstream_buffered:
            view = memoryview(upstream_buffered)
            self._replies(view, len(upstream_buffered))
        if client_buffered:
            self.client_data(client_buffered)

    def close(self, reason: str) -> None:
        """Close both sockets now (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.client.abort()
        self.upstream.abort()
        if self.secondary is not None:
            self.secondary.abort()
        self._kept = None
        self.on_close(reason)

    def send_to_client(self, data: bytes) -> None:
        """Write a reply the gateway made itself."""
        self.client.write(data)

    @property
    def between_replies(self) -> bool:
        """No reply is half forwarded to the client: the gateway may write one of its own (a session's end)."""
        return not self._remaining and not self._head

    # -- client -> upstream ---------------------------------------------------------------------------------

    def client_data(self, data: bytes) -> None:
        if self.closed:
            return
        buffer = self._requests
        if self.held:  # the upstream is being replaced: keep the requests for the new one
            buffer += data
            return
        if not buffer and len(data) >= 16:
            length = _HEADER.unpack_from(data)[0]
            if length == len(data) and 16 <= length <= self.max_request:
                self._request(data, time.perf_counter())  # the usual case: exactly one whole message
                return
        buffer += data
        while len(buffer) >= 16 and not self.closed and not self.held:
            length = _HEADER.unpack_from(buffer)[0]
            if length < 16 or length > self.max_request:
                self.close(f"bad message: declared message length {length} is outside 16..{self.max_request}")
                return
            if len(buffer) < length:
                return
            with memoryview(buffer) as view:
                frame = bytes(view[:length])
            del buffer[:length]
            self._request(frame, time.perf_counter())

    def _request(self, frame: bytes, started: float) -> None:
        try:
            in_flight = self.on_request(frame)
        except codec.WireError as exc:
            self.close(f"bad message: {exc}")
            return
        except Exception:  # a gateway bug: drop this connection only
            log.exception("event=request_failed")
            self.close("internal error")
            return
        if in_flight is None or self.closed:
            return
        in_flight.started = started
        (self.secondary if in_flight.to_secondary else self.upstream).write(frame)
        if in_flight.request.more_to_come:
            self.unacknowledged.append(in_flight.request.request_id)
            if len(self.unacknowledged) > 64:
                del self.unacknowledged[0]
            self.on_reply(in_flight)
        else:
            self.in_flight.append(in_flight)

    # -- replacing the upstream (a replica set's primary moved) ------------------------------------------------

    def hold(self) -> None:
        """Keep the client's next requests (nothing goes upstream) and ignore the current upstream from now on.

        The current upstream's reply that prompted this is still forwarded; its transport stays open (its
        protocol no longer reaches the pipe) until :meth:`replace_upstream` or :meth:`close`.
        """
        self.held = True
        self.upstream.pause_reading()  # paused first, so that the loop never reads into the new protocol
        self.upstream.set_protocol(_Detached())

    def wait_with(self, frame: bytes) -> None:
        """Keep ``frame`` (the request being decided) and the requests after it until :meth:`release`."""
        self.held = True
        self._requests[:0] = frame

    def release(self) -> None:
        """Go on with the requests kept by :meth:`wait_with`."""
        self.held = False
        if self._requests and not self.closed:
            self.client_data(b"")

    def set_secondary(self, secondary: asyncio.Transport) -> None:
        """Send reads marked ``to_secondary`` to ``secondary`` from now on (its replies are relayed like any)."""
        self.secondary = secondary
        _attach(secondary, _UpstreamSide(self))

    def drop_secondary(self) -> None:
        """Stop using the secondary (the primary moved: the set's roles changed) and close it."""
        secondary, self.secondary = self.secondary, None
        if secondary is not None:
            secondary.pause_reading()
            secondary.set_protocol(_Detached())
            secondary.abort()

    def replace_upstream(self, upstream: asyncio.Transport, buffered: bytes = b"") -> None:
        """Relay to ``upstream`` from now on (the old one is closed) and send it the requests kept meanwhile."""
        old, self.upstream = self.upstream, upstream
        old.abort()
        self.unacknowledged.clear()
        _attach(upstream, _UpstreamSide(self))
        if buffered:
            self._replies(memoryview(buffered), len(buffered))
        self.held = False
        if self._requests and not self.closed:
            self.client_data(b"")

    # -- upstream -> client ---------------------------------------------------------------------------------

    def _replies(self, view: memoryview, size: int) -> bool:
        """Forward what one read brought (``view[:size]``); True when something still refers to ``view``."""
        position = 0
        while position < size and not self.closed:
            if self._remaining:
                take = min(self._remaining, size - position)
                chunk = view[position : position + take]
                position += take
                self._remaining -= take
                if not self._forward:
                    if not self._remaining:
                        self._reply_complete()
                    continue
                head = bytes(self._head) if self._head_unsent else None
                self._head_unsent = False
                if self._kept is not None:
                    self._kept.append(chunk)
                if not self._remaining:
                    self._reply_complete()  # read and logged before the client can see the reply's end
                    if self.closed:
                        break
                if head is not None:  # one send for the prefix and what follows it
                    self.client.writelines((head, chunk))
                else:
                    self.client.write(chunk)
                continue
            if not self._head and size - position >= 16:
                length, _request_id, response_to, _op = _HEADER.unpack_from(view, position)
                if length < 16 or length > self.max_reply:
                    self.close(f"bad reply from upstream: declared length {length} is outside 16..{self.max_reply}")
                    break
                if length <= size - position:  # the usual case: the whole reply came in this read
                    frame = view[position : position + length]
                    position += length
                    if self.unacknowledged and self._is_stray(response_to):
                        continue
                    flags = _UINT32.unpack_from(frame, 16)[0] if length >= _PREFIX and _op == _OP_MSG else 0
                    self._reply_done((frame,), length, flags)  # read and logged before the client can see it
                    if not self.closed:
                        self.client.write(frame)
                    continue
            # A reply that does not end in this read: copy its prefix (the header, then the flag bits), read on.
            need = 16 if len(self._head) < 16 else min(_PREFIX, _HEADER.unpack_from(self._head)[0])
            take = min(need - len(self._head), size - position)
            self._head += view[position : position + take]
            position += take
            if len(self._head) >= 16 and not self._reply_started():
                break
        return self._kept is not None  # chunks of an unfinished reply are kept: the buffer is not free

    def _reply_started(self) -> bool:
        """A reply's prefix is complete (or as complete as this read allows): decide where it goes."""
        length, _request_id, response_to, _op = _HEADER.unpack_from(self._head)
        if length < 16 or length > self.max_reply:
            self.close(f"bad reply from upstream: declared length {length} is outside 16..{self.max_reply}")
            return False
        if len(self._head) < min(_PREFIX, length):
            return True  # the flag bits are still to come
        self._length = length
        self._remaining = length - len(self._head)
        self._forward = not (self.unacknowledged and self._is_stray(response_to))
        wanted = self._forward and self.in_flight and not self.in_flight[0].replies
        self._kept = [bytes(self._head)] if wanted else None
        self._head_unsent = self._forward
        if not self._remaining:  # a reply of 16 to 20 bytes: all of it is the prefix
            head = bytes(self._head)
            self._reply_complete()
            if self._forward and not self.closed:
                self.client.write(head)
        return True

    def _reply_complete(self) -> None:
        """The last bytes of a reply that spanned reads are here (and not yet sent): read it, log it."""
        head, kept = self._head, self._kept
        self._head, self._kept, self._head_unsent = bytearray(), None, False
        if not self._forward:
            return
        op = _HEADER.unpack_from(head)[3]
        flags = _UINT32.unpack_from(head, 16)[0] if len(head) >= _PREFIX and op == _OP_MSG else 0
        self._reply_done(kept or (), self._length, flags)

    def _is_stray(self, response_to: int) -> bool:
        if response_to in self.unacknowledged and not (
            self.in_flight and self.in_flight[0].request.request_id == response_to
        ):
            self.unacknowledged.remove(response_to)
            return True
        return False

    def _reply_done(self, chunks: Sequence[Any], length: int, flags: int) -> None:
        if not self.in_flight:
            return  # nothing asked for it (e.g. a stray exhaust message): forwarded, not logged
        in_flight = self.in_flight[0]
        if not in_flight.replies and chunks:
            in_flight.outcome = self.read_outcome(chunks)
        in_flight.replies += 1
        in_flight.bytes_out += length
        if flags & _MORE_TO_COME:
            return  # exhaust: more replies to this request follow
        del self.in_flight[0]
        self.on_reply(in_flight)


class _ClientSide(asyncio.Protocol):
    """The client's socket: requests arrive as bytes (each usually one whole message)."""

    __slots__ = ("pipe",)

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    def data_received(self, data: bytes) -> None:
        self.pipe.client_data(data)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        who = "client closed the connection"
        self.pipe.close(who if exc is None else f"{who}: {type(exc).__name__}")

    def pause_writing(self) -> None:
        self.pipe.upstream.pause_reading()
        if self.pipe.secondary is not None:
            self.pipe.secondary.pause_reading()

    def resume_writing(self) -> None:
        if not self.pipe.upstream.is_closing():
            self.pipe.upstream.resume_reading()
        if self.pipe.secondary is not None and not self.pipe.secondary.is_closing():
            self.pipe.secondary.resume_reading()


def _attach(transport: asyncio.Transport, protocol: asyncio.BaseProtocol) -> None:
    """Give an upstream transport the pipe's protocol, reading (restarted, so uvloop picks the buffered callbacks)."""
    transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
    transport.pause_reading()
    transport.set_protocol(protocol)
    transport.resume_reading()


class _Detached(asyncio.Protocol):
    """An upstream the pipe no longer relays to (a replica set member that stepped down): its bytes are dropped."""

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False


class _UpstreamSide(asyncio.BufferedProtocol):
    """The upstream's socket: replies are read into the loop's shared buffer and forwarded from it."""

    __slots__ = ("pipe", "view")

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self.view: memoryview | None = None

    def get_buffer(self, sizehint: int) -> memoryview:
        self.view = self.pipe.read_buffer.view
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        pipe, view = self.pipe, self.view
        self.view = None
        if pipe.closed or view is None:
            return
        kept = pipe._replies(view, nbytes)
        if (kept or pipe.client.get_write_buffer_size()) and view is pipe.read_buffer.view:
            pipe.read_buffer.replace()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        who = "upstream closed the connection"
        self.pipe.close(who if exc is None else f"{who}: {type(exc).__name__}")

    def pause_writing(self) -> None:
        self.pipe.client.pause_reading()

    def resume_writing(self) -> None:
        if not self.pipe.client.is_closing():
            self.pipe.client.resume_reading()
