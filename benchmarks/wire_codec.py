"""Throughput of gatewayproxy.wire.codec against pymongo's bson on the same documents.

Run: ``.venv/bin/python benchmarks/wire_codec.py`` (about 20 s). For a 1 KB and a 1 MB OP_MSG it prints
encode and decode throughput of our codec (whole message: header, sections, BSON) next to
``bson.encode``/``bson.decode`` of the same documents, and their ratio. Extra rows show what the relay's
cheap path (:func:`peek_command`) and CRC-32C checksums cost (pure Python, so about 20 MB/s).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import bson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gatewayproxy.wire import codec as wire

SECONDS_PER_CELL = float(os.environ.get("BENCH_SECONDS", "0.7"))


def _document(index: int) -> dict:
    """About 1 KB of a typical application document."""
    return {
        "_id": bson.ObjectId(),
        "index": index,
        "name": f"customer-{index:06d}",
        "email": f"customer{index}@example.com",
        "active": index % 2 == 0,
        "balance": index * 1.25,
        "tags": ["alpha", "beta", "gamma", "delta"],
        "address": {"street": "1 Main Street", "city": "Springfield", "zip": "12345", "country": "US"},
        "notes": "x" * 700,
    }


def _workload(count: int) -> tuple[dict, list[dict]]:
    """An insert command whose documents travel in a kind-1 sequence (as drivers send them)."""
    return {"insert": "customers", "ordered": True, "$db": "shop"}, [_document(i) for i in range(count)]


def _rate(function: Callable[[], object]) -> float:
    """Calls per second of ``function``, measured for about SECONDS_PER_CELL."""
    function()
    calls, start = 0, time.perf_counter()
    deadline = start + SECONDS_PER_CELL
    while True:
        function()
        calls += 1
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - start)


def _row(label: str, size: int, ours: Callable[[], object], theirs: Callable[[], object] | None) -> str:
    ours_rate = _rate(ours)
    ours_cells = f"{ours_rate * size / 1e6:9.1f} {ours_rate:10.0f}"
    if theirs is None:
        return f"{label:<34} {ours_cells} {'-':>9} {'-':>10} {'-':>7}"
    theirs_rate = _rate(theirs)
    theirs_cells = f"{theirs_rate * size / 1e6:9.1f} {theirs_rate:10.0f}"
    return f"{label:<34} {ours_cells} {theirs_cells} {ours_rate / theirs_rate:7.2f}"


def bench(name: str, count: int) -> list[str]:
    """Rows for one message size."""
    body, documents = _workload(count)
    message = wire.build_op_msg(body, sequences=[("documents", documents)])
    with_checksum = wire.build_op_msg(body, sequences=[("documents", documents)], checksum=True)
    raw = [bson.encode(body)] + [bson.encode(doc) for doc in documents]
    size = len(message)
    label = f"{name} ({size:,} B)"
    return [
        _row(
            f"{label} encode",
            size,
            lambda: wire.build_op_msg(body, sequences=[("documents", documents)]),
            lambda: [bson.encode(body)] + [bson.encode(doc) for doc in documents],
        ),
        _row(f"{label} decode", size, lambda: wire.parse_op_msg(message), lambda: [bson.decode(r) for r in raw]),
        _row(f"{label} peek_command", size, lambda: wire.peek_command(message), None),
        _row(
            f"{label} encode+crc32c",
            size,
            lambda: wire.build_op_msg(body, sequences=[("documents", documents)], checksum=True),
            None,
        ),
        _row(f"{label} decode+crc32c", size, lambda: wire.parse_op_msg(with_checksum), None),
    ]


def main() -> None:
    """Print the table."""
    columns = ("ours MB/s", "ours msg/s", "bson MB/s", "bson msg/s", "ratio")
    widths = (9, 10, 9, 10, 7)
    header = f"{'message / operation':<34} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))
    print(f"Python {sys.version.split()[0]}, pymongo bson C extension: {bson.has_c()}")
    print(header)
    print("-" * len(header))
    for name, count in (("1 KB", 1), ("1 MB", 1_048_576 // 987)):
        for line in bench(name, count):
            print(line, flush=True)
    print("ratio = ours / bson on the same documents (1.00 = no codec overhead); MB are 10^6 bytes.")


if __name__ == "__main__":
    main()
