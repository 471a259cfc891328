"""A wire-protocol fuzzer: many connections, each sending one malformed or truncated message.

``python -m tests.mongo.wireserver.fuzz --port N --count 100000`` (or :func:`run`) opens ``count``
connections to a server, ``concurrency`` at a time, sends one bad message on each, half-closes and
waits for the server to close. It reports how each kind of input was treated: ``closed`` (no reply,
the expected outcome), ``answered`` (the server replied: only possible when a mutation happens to
leave a valid message) and ``hung`` (the server neither replied nor closed within the timeout: a bug).
Runs in its own process in the tests so the fuzzer does not compete with the server for the GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import struct
import sys
import time
from collections import Counter

import bson

_HEADER = struct.Struct("<iiii")
OP_QUERY, OP_COMPRESSED, OP_MSG = 2004, 2012, 2013


def _valid_op_msg(rng: random.Random) -> bytes:
    body = bson.encode({"insert": "fuzz", "documents": [{"x": rng.random()}], "$db": "fuzz"})
    payload = struct.pack("<I", 0) + b"\x00" + body
    return _HEADER.pack(16 + len(payload), rng.randrange(1 << 30), 0, OP_MSG) + payload


def _framed(op_code: int, payload: bytes, rng: random.Random) -> bytes:
    return _HEADER.pack(16 + len(payload), rng.randrange(1 << 30), 0, op_code) + payload


def bad_message(kind: int, rng: random.Random) -> bytes:
    """One bad message of ``kind`` (0..9)."""
    if kind == 0:  # random bytes, often shorter than a header
        return rng.randbytes(rng.randrange(1, 64))
    if kind == 1:  # a header promising more than follows
        return _HEADER.pack(rng.randrange(32, 1 << 20), 1, 0, OP_MSG) + rng.randbytes(rng.randrange(0, 16))
    if kind == 2:  # over maxMessageSizeBytes
        return _HEADER.pack(rng.randrange(48_000_001, 1 << 31), 1, 0, OP_MSG)
    if kind == 3:  # a valid message cut short
        valid = _valid_op_msg(rng)
        return valid[: rng.randrange(1, len(valid))]
    if kind == 4:  # right length, random OP_MSG body
        return _framed(OP_MSG, rng.randbytes(rng.randrange(0, 200)), rng)
    if kind == 5:  # a valid message with one byte changed (may stay valid: then it is answered)
        data = bytearray(_valid_op_msg(rng))
        pos = rng.randrange(16, len(data))
        data[pos] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == 6:  # unknown opcode
        return _framed(rng.choice([0, 1, 2001, 2002, 2005, 2006, 2007, 9999]), rng.randbytes(20), rng)
    if kind == 7:  # OP_QUERY with garbage after the header
        return _framed(OP_QUERY, rng.randbytes(rng.randrange(0, 100)), rng)
    if kind == 8:  # OP_COMPRESSED claiming zlib with garbage data
        return _framed(OP_COMPRESSED, struct.pack("<iiB", OP_MSG, 100, 2) + rng.randbytes(40), rng)
    return _HEADER.pack(-rng.randrange(1, 1 << 31), 1, 0, OP_MSG)  # negative length


KINDS = 10


async def _one(host: str, port: int, data: bytes, timeout: float) -> str:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return "connect_failed"
    try:
        writer.write(data)
        if writer.can_write_eof():
            writer.write_eof()
        await writer.drain()
        received = await asyncio.wait_for(reader.read(), timeout)
        return "answered" if received else "closed"
    except TimeoutError:
        return "hung"
    except OSError:
        return "closed"  # reset by the server: also a close
    finally:
        writer.transport.abort()


async def fuzz(
    host: str, port: int, count: int, *, concurrency: int = 64, seed: int = 0, timeout: float = 10.0
) -> dict:
    """Send ``count`` bad messages; return outcome counts per kind and the elapsed time."""
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    by_kind: dict[int, Counter[str]] = {k: Counter() for k in range(KINDS)}
    next_index = iter(range(count))
    started = time.monotonic()

    async def worker() -> None:
        for index in next_index:
            kind = index % KINDS
            outcome = await _one(host, port, bad_message(kind, rng), timeout)
            outcomes[outcome] += 1
            by_kind[kind][outcome] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "count": count,
        "seconds": round(time.monotonic() - started, 2),
        "outcomes": dict(outcomes),
        "by_kind": {str(k): dict(v) for k, v in by_kind.items()},
    }


def run(host: str, port: int, count: int, **options) -> dict:
    """Blocking wrapper around :func:`fuzz`."""
    return asyncio.run(fuzz(host, port, count, **options))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mongo.wireserver.fuzz")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = run(args.host, args.port, args.count, concurrency=args.concurrency, seed=args.seed)
    print(json.dumps(report), flush=True)
    return 0 if not report["outcomes"].get("hung") and not report["outcomes"].get("connect_failed") else 1


if __name__ == "__main__":
    sys.exit(main())
