"""The relay's hot path: asyncio protocols that move framed messages between a client and its upstream.

After login a connection stops using streams and coroutines per message: both sockets get a protocol whose
``data_received`` cuts the byte stream into messages (16-byte header, declared length checked against the
limit before the body is awaited) and hands each client request to the connection's ``on_request``, which
reads it once into a :class:`~gatewayproxy.wire.codec.Request` and either returns it to be forwarded or
answers it locally. Replies from upstream are forwarded as their bytes arrive — a
16 MB batch starts reaching the client before its end has left the server — while a copy is kept to read
the outcome once the message is complete. Replies are matched to requests in order; exhaust replies
(``moreToCome``) all belong to the request before them; a reply to a ``moreToCome`` request, which some
servers send anyway, is dropped. Each side pauses the other's reading while its own write buffer is full.

Nothing here decodes BSON or knows about sessions: see :mod:`gatewayproxy.relay`. Replies are only framed
(their header and OP_MSG flag bits are read); the relay reads their outcome once they are complete.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gatewayproxy.wire import codec

log = logging.getLogger("gatewayproxy.pipe")

#: Bytes a socket may hold unsent before the other side stops reading (back-pressure).
WRITE_BUFFER_HIGH = 4 * 1024 * 1024


@dataclass(slots=True)
class InFlight:
    """A request sent upstream, waiting for its reply (or the last reply of an exhaust stream)."""

    request: codec.Request
    started: float = 0.0
    reply: bytes | None = None
    bytes_out: int = 0


class Pipe:
    """Moves messages between ``client`` and ``upstream`` transports until either closes.

    ``on_request(frame)`` returns an :class:`InFlight` to forward the frame upstream (a ``moreToCome``
    request expects no reply), or None when it answered (or dropped) the frame itself;
    ``on_reply(in_flight)`` runs when a request's last reply has been forwarded; ``on_close(reason)`` runs
    once when the pipe stops.
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
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.max_request = max_request
        self.max_reply = max_reply
        self.on_request = on_request
        self.on_reply = on_reply
        self.on_close = on_close
        self.in_flight: collections.deque[InFlight] = collections.deque()
        self.unacknowledged: collections.deque[int] = collections.deque(maxlen=64)
        self.closed = False
        self._requests = bytearray()
        self._reply_head = bytearray()
        self._reply_remaining = 0
        self._reply_forward = True
        self._reply_chunks: list[bytes] = []
        self._reply_head_unsent = b""

    def start(self, client_buffered: bytes = b"", upstream_buffered: bytes = b"") -> None:
        """Take over both transports, then process whatever the streams had already buffered."""
        for transport in (self.client, self.upstream):
            transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self.client.set_protocol(_Side(self, self.client_data, self.upstream, "client"))
        self.upstream.set_protocol(_Side(self, self.upstream_data, self.client, "upstream"))
        if upstream_buffered:
            self.upstream_data(upstream_buffered)
        if client_buffered:
            self.client_data(client_buffered)

    def close(self, reason: str) -> None:
        """Close both sockets now (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.client.abort()
        self.upstream.abort()
        self.on_close(reason)

    def send_to_client(self, data: bytes) -> None:
        """Write a reply the gateway made itself."""
        self.client.write(data)

    @property
    def between_replies(self) -> bool:
        """No reply is half forwarded to the client: the gateway may write one of its own (a session's end)."""
        return not self._reply_remaining and not self._reply_head

    # -- client -> upstream ---------------------------------------------------------------------------------

    def client_data(self, data: bytes) -> None:
        if self.closed:
            return
        buffer = self._requests
        if not buffer and len(data) >= 16:
            length = codec.HEADER.unpack_from(data)[0]
            if length == len(data) and 16 <= length <= self.max_request:
                self._request(data, time.perf_counter())  # the usual case: exactly one whole message
                return
        buffer += data
        while len(buffer) >= 16 and not self.closed:
            length = codec.HEADER.unpack_from(buffer)[0]
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
        self.upstream.write(frame)
        if in_flight.request.more_to_come:
            self.unacknowledged.append(in_flight.request.request_id)
            self.on_reply(in_flight)
        else:
            self.in_flight.append(in_flight)

    # -- upstream -> client ---------------------------------------------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        if self.closed:
            return
        position, size = 0, len(data)
        while position < size and not self.closed:
            if self._reply_remaining == 0:
                if not self._reply_head and size - position >= 16:
                    length = codec.HEADER.unpack_from(data, position)[0]
                    if 16 <= length <= size - position and length <= self.max_reply:
                        frame = data if (position == 0 and length == size) else data[position : position + length]
                        position += length
                        self._whole_reply(frame)
                        continue
                take = min(16 - len(self._reply_head), size - position)
                self._reply_head += data[position : position + take]
                position += take
                if len(self._reply_head) == 16:
                    self._reply_started(bytes(self._reply_head))
                    self._reply_head.clear()
                continue
            take = min(self._reply_remaining, size - position)
            chunk = data if (position == 0 and take == size) else data[position : position + take]
            position += take
            self._reply_remaining -= take
            if self._reply_forward:
                if self._reply_head_unsent:
                    # One send for the header and the start (uvloop's writelines does not copy).
                    self.client.writelines((self._reply_head_unsent, chunk))
                    self._reply_head_unsent = b""
                else:
                    self.client.write(chunk)
                self._reply_chunks.append(chunk)  # kept by reference: joined once, when complete
                if self._reply_remaining == 0:
                    self._reply_done(b"".join(self._reply_chunks))
            if self._reply_remaining == 0:
                self._reply_chunks = []

    def _is_stray(self, response_to: int) -> bool:
        if response_to in self.unacknowledged and not (
            self.in_flight and self.in_flight[0].request.request_id == response_to
        ):
            self.unacknowledged.remove(response_to)
            return True
        return False

    def _whole_reply(self, frame: bytes) -> None:
        if self.unacknowledged and self._is_stray(codec.HEADER.unpack_from(frame)[2]):
            return
        self.client.write(frame)
        self._reply_done(frame)

    def _reply_started(self, head: bytes) -> None:
        length, _request_id, response_to, _op = codec.HEADER.unpack(head)
        if length < 16 or length > self.max_reply:
            self.close(f"bad reply from upstream: declared length {length} is outside 16..{self.max_reply}")
            return
        self._reply_remaining = length - 16
        self._reply_forward = not (self.unacknowledged and self._is_stray(response_to))
        if self._reply_forward:
            self._reply_chunks = [head]
            if self._reply_remaining == 0:
                self.client.write(head)
                self._reply_done(head)
            else:
                self._reply_head_unsent = head

    def _reply_done(self, frame: bytes) -> None:
        if not self.in_flight:
            return  # nothing asked for it (e.g. a stray exhaust message): forwarded, not logged
        in_flight = self.in_flight[0]
        if in_flight.reply is None:
            in_flight.reply = frame
        in_flight.bytes_out += len(frame)
        is_msg = len(frame) >= 20 and codec.HEADER.unpack_from(frame)[3] == codec.OP_MSG
        if is_msg and codec.UINT32.unpack_from(frame, 16)[0] & codec.MORE_TO_COME:
            return  # exhaust: more replies to this request follow
        self.in_flight.popleft()
        self.on_reply(in_flight)


class _Side(asyncio.Protocol):
    """One socket of a pipe: feeds data to the pipe and applies back-pressure to the other socket."""

    def __init__(self, pipe: Pipe, receive: Callable[[bytes], None], other: asyncio.Transport, name: str) -> None:
        self.pipe = pipe
        self.receive = receive
        self.other = other
        self.name = name

    def data_received(self, data: bytes) -> None:
        self.receive(data)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        who = "client closed the connection" if self.name == "client" else "upstream closed the connection"
        self.pipe.close(who if exc is None else f"{who}: {type(exc).__name__}")

    def pause_writing(self) -> None:
        self.other.pause_reading()

    def resume_writing(self) -> None:
        if not self.other.is_closing():
            self.other.resume_reading()
