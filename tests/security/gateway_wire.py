"""Helpers of the gateway attack tests: a raw wire client, hand-made messages a driver would never send, and a
gateway process with tuned pre-login limits.

`RawClient` logs in through the gateway with SCRAM like a driver, then sends whatever bytes the test built:
`document(pairs)` encodes a BSON document from (name, value) pairs, so a name may appear twice (a Python dict
cannot hold that); `op_msg(body, sequences=...)` frames it with kind-1 sections; `op_msg_sections(raw_sections)`
lays sections out by hand (two bodies...).
"""

from __future__ import annotations

import socket
import struct
import time
import urllib.request

import bson

from gatewayproxy.wire import codec, scram
from tests.gateway_fixtures import GatewayProcess


class Raw:
    """Already-encoded BSON to nest in `document`: an embedded document (0x03) or an array (0x04)."""

    def __init__(self, data: bytes, kind: int = 0x03) -> None:
        self.data = data
        self.kind = kind


def array(*items: bytes) -> Raw:
    """An array of already-encoded documents."""
    return Raw(document([(str(index), Raw(item)) for index, item in enumerate(items)]), 0x04)


def document(pairs: list[tuple[str, object]]) -> bytes:
    """A BSON document with these fields in this order; a name may repeat (values: Python, or `Raw` BSON)."""

    def element(name: str, value: object) -> bytes:
        if isinstance(value, Raw):
            return bytes([value.kind]) + name.encode() + b"\x00" + value.data
        return bson.encode({name: value})[4:-1]

    elements = b"".join(element(name, value) for name, value in pairs)
    return struct.pack("<i", len(elements) + 5) + elements + b"\x00"


def op_msg_sections(sections: list[bytes], *, request_id: int = 1, flags: int = 0) -> bytes:
    """An OP_MSG from already-framed sections (each starting with its kind byte)."""
    payload = struct.pack("<I", flags) + b"".join(sections)
    return codec.HEADER.pack(16 + len(payload), request_id, 0, codec.OP_MSG) + payload


def body_section(body: bytes | dict) -> bytes:
    return b"\x00" + (body if isinstance(body, bytes) else bson.encode(body))


def sequence_section(identifier: str, documents: list[dict]) -> bytes:
    name = identifier.encode() + b"\x00"
    docs = b"".join(bson.encode(doc) for doc in documents)
    return b"\x01" + struct.pack("<i", 4 + len(name) + len(docs)) + name + docs


def op_msg(body: bytes | dict, *, sequences: list[tuple[str, list[dict]]] = (), request_id: int = 1) -> bytes:
    """An OP_MSG with this body and these kind-1 document sequences."""
    return op_msg_sections(
        [body_section(body), *(sequence_section(name, docs) for name, docs in sequences)], request_id=request_id
    )


class RawClient:
    """A socket to the gateway that logs in with SCRAM and sends hand-made messages."""

    def __init__(self, port: int, *, source: str = "127.0.0.1", timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        self.request_id = 0

    def send(self, message: bytes) -> None:
        self.sock.sendall(message)

    def receive(self) -> bytes:
        header = self._exactly(16)
        return header + self._exactly(struct.unpack("<i", header[:4])[0] - 16)

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise EOFError("the gateway closed the connection")
            data += chunk
        return data

    def raw(self, message: bytes) -> dict:
        """Send a whole message; return the reply's body."""
        self.send(message)
        return codec.parse_op_msg(self.receive()).body

    def command(self, document: dict | bytes, *, sequences: list[tuple[str, list[dict]]] = ()) -> dict:
        """Send one command (a dict, or BSON bytes built by `document`); return the reply's body."""
        self.request_id += 1
        return self.raw(op_msg(document, sequences=sequences, request_id=self.request_id))

    def login(self, username: str, secret: str, mechanism: str = "SCRAM-SHA-256") -> None:
        """Log in as a driver does; a refusal raises `scram.ScramError` with the gateway's message."""
        scram.authenticate(self.command, mechanism=mechanism, username=username, password=secret)

    def closed_within(self, seconds: float) -> float | None:
        """Seconds until the gateway closed the connection (EOF or reset), or None if it stayed open."""
        started = time.monotonic()
        self.sock.settimeout(seconds)
        try:
            while True:
                if not self.sock.recv(65536):
                    return time.monotonic() - started
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
        except TimeoutError:
            return None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def refused(reply: dict, *words: str) -> bool:
    """The gateway refused the command (Unauthorized) with a message holding every one of `words`."""
    message = str(reply.get("errmsg", ""))
    return reply.get("ok") == 0 and reply.get("code") == 13 and all(word in message for word in words)


class TunedGateway(GatewayProcess):
    """`runproxy` with some `PAM_GATEWAY_*` settings of the test's own (pre-login limits...)."""

    def __init__(self, log_path, settings: dict[str, str], name: str = "tuned-gateway") -> None:
        super().__init__(log_path, name=name)
        self.settings = settings

    def environment(self) -> dict[str, str]:
        return {**super().environment(), **self.settings}

    def metrics(self) -> dict[str, float]:
        """The gateway's Prometheus counters, by name."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, _, value = line.partition(" ")
                values[name] = float(value)
        return values
