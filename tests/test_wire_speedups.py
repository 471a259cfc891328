"""The C readers (gatewayproxy/wire/_speedups.c) answer exactly as the Python ones they accelerate.

Each C function returns None where it leaves the decision to Python; wherever it answers, the answer must be
the Python reference's, on ordinary messages and on thousands of corrupted ones. The summary cache must give
every request the summary the Python redaction gives it. The cursor table shared by gateway workers is
checked against a set.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import uuid

import bson
import pytest

from gatewayproxy.commandlog import SummaryCache
from gatewayproxy.wire import codec, redact

_speedups = pytest.importorskip("gatewayproxy.wire._speedups")

REPLIES = [
    {"cursor": {"firstBatch": [{"_id": 1, "x": "a" * 100}], "id": bson.Int64(0), "ns": "a.b"}, "ok": 1.0},
    {"cursor": {"nextBatch": [{"_id": n} for n in range(101)], "id": bson.Int64(5), "ns": "a.b"}, "ok": 1},
    {"n": 1, "ok": 1.0},
    {"ok": 0.0, "errmsg": "E11000 dup key: { _id: 1 }", "code": 11000, "codeName": "DuplicateKey"},
    {"n": 0, "writeErrors": [{"index": 0, "code": 11000, "errmsg": "dup"}], "ok": 1},
    {"n": 0, "writeErrors": [{"index": 0, "code": "11", "errmsg": 5}], "ok": 1},
    {"n": 0, "writeErrors": [{"index": 0, "code": True, "errmsg": ""}], "ok": 1},
    {"writeConcernError": {"code": 64}, "ok": 1, "n": 2.5},
    {"ok": float("nan"), "n": float("nan")},
    {"ok": "", "errmsg": "\u00e9t\u00e9"},
    {"ok": 1, "x": bson.Regex("a.*", "i"), "code": bson.Int64(7), "cursor": {"id": 12, "firstBatch": []}},
]


def _python_outcome(message: bytes) -> tuple:
    try:
        outcome = redact.reply_outcome(message)
    except Exception as exc:  # the reference raises on a few odd values: C must then leave it to Python
        return ("raises", type(exc).__name__)
    return (outcome.ok, outcome.n, outcome.error_code, outcome.error_message, outcome.cursor_id)


def _corrupted(messages: list[bytes], per_message: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    for base in messages:
        for _ in range(per_message):
            data = bytearray(base)
            for _ in range(rnd.randint(1, 3)):
                data[rnd.randrange(len(data))] = rnd.randrange(256)
            if rnd.random() < 0.2:
                data = data[: rnd.randrange(len(data))]
            out.append(bytes(data))
    return out


def test_reply_outcome_in_c_is_the_python_one_whole_and_in_chunks():
    messages = []
    for reply in REPLIES:
        messages.append(codec.build_op_msg(reply, request_id=1, response_to=2))
        messages.append(codec.build_op_reply([reply], request_id=1, response_to=2))
        messages.append(codec.build_op_reply([reply], response_flags=codec.QUERY_FAILURE, response_to=2))
    messages += _corrupted(messages, 200, seed=1)
    rnd, answered = random.Random(2), 0
    for message in messages:
        found = _speedups.reply_outcome(message)
        if found is None:
            continue
        answered += 1
        assert found == _python_outcome(message), message
        cuts = sorted(rnd.sample(range(1, len(message)), min(5, len(message) - 1))) if len(message) > 2 else []
        chunks = [message[a:b] for a, b in zip([0, *cuts], [*cuts, len(message)], strict=True)]
        assert _speedups.reply_outcome(chunks) == found
        assert _speedups.reply_outcome([memoryview(bytearray(chunk)) for chunk in chunks]) == found
        assert redact.reply_outcome_of(chunks) == redact.reply_outcome(message)
    assert answered > len(messages) // 2


def _requests(count: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)

    def value():
        return rnd.choice(
            [rnd.randint(-5, 5), "s" * rnd.randint(0, 3), rnd.random(), True, None, bson.ObjectId(), {"a": 1}, [1, 2]]
        )

    out = []
    for _ in range(count):
        lsid = {"id": bson.Binary(uuid.uuid4().bytes, 4)}
        kind = rnd.randrange(7)
        sequences = []
        if kind == 0:
            body = {"find": "c", "filter": {"_id": value(), "x": {"$gt": value()}}, "limit": 1, "lsid": lsid}
        elif kind == 1:
            body = {"insert": "c", "ordered": True, "txnNumber": bson.Int64(rnd.randint(0, 99)), "lsid": lsid}
            sequences = [("documents", [{"_id": value(), "p": value()} for _ in range(rnd.randint(1, 25))])]
        elif kind == 2:
            updates = [
                {"q": {"a": value()}, "u": {"$set": {"b": value()}}, "multi": rnd.random() < 0.5, "upsert": value()}
                for _ in range(rnd.randint(1, 22))
            ]
            body = {"update": "c", "updates": updates}
        elif kind == 3:
            body = {"aggregate": "c", "pipeline": [{"$match": {"a": value()}}], "cursor": {"batchSize": 2}}
        elif kind == 4:
            body = {"getMore": bson.Int64(rnd.randint(1, 1 << 40)), "collection": "c", "batchSize": 3}
        elif kind == 5:
            body = {"lsid": lsid, "find": "c", "filter": {}}
        else:
            body = {"count": rnd.choice([1.5, float("nan"), 3, "c"]), "query": {"a": value()}, "maxTimeMS": 2.5}
        out.append(codec.build_op_msg({**body, "$db": "app"}, sequences=sequences, request_id=rnd.randint(1, 99)))
    return out


def _python_summary(message: bytes) -> str:
    try:
        return json.dumps(redact.summarize_request(message, full=False)[3], default=str)
    except Exception:
        return json.dumps({"unreadable": True})


def test_the_summary_cache_gives_every_request_the_python_redaction():
    requests = _requests(1500, seed=3)
    requests += _corrupted(requests[:300], 10, seed=4)
    cache = SummaryCache()
    for message in requests:
        assert json.dumps(cache.summary(message, full=False), default=str) == _python_summary(message), message
    assert cache.hits > 500  # requests that differ only in values share a summary


def test_the_request_scan_in_c_is_the_python_one():
    requests = _requests(1500, seed=5)
    requests += _corrupted(requests[:500], 10, seed=6)
    answered = 0
    for message in requests:
        found = _speedups.read_op_msg(message, codec.DEFAULT_MAX_MESSAGE_SIZE)
        saved, codec._speedups = codec._speedups, None
        try:
            reference = codec.Request.read(message)
        except codec.WireError:
            reference = None
        finally:
            codec._speedups = saved
        if found is None:
            continue
        answered += 1
        assert reference is not None, message
        fields = (reference.request_id, reference.flags, reference.command, reference.database)
        assert found[:4] == fields and found[4:] == (
            reference.collection,
            reference.ambiguity,
            reference.sequences,
            reference._body_at,
        )
    assert answered > 1000


def test_the_shared_cursor_table_matches_a_set_and_crosses_a_fork():
    table = mmap.mmap(-1, 16 + 16 * 1024)
    assert _speedups.cursor_table(table, "init") == 1024
    reference: set[tuple[int, int]] = set()
    rnd = random.Random(7)
    for _ in range(50_000):
        op, session, cursor = rnd.random(), rnd.randint(1, 20), rnd.randint(-50, 50)
        if op < 0.45:
            if _speedups.cursor_table(table, "add", session, cursor):
                reference.add((session, cursor))
            else:
                assert len(reference) * 4 >= 1024 * 3  # only a full table refuses
        elif op < 0.8:
            assert _speedups.cursor_table(table, "remove", session, cursor) == ((session, cursor) in reference)
            reference.discard((session, cursor))
        elif op < 0.995:
            assert _speedups.cursor_table(table, "has", session, cursor) == ((session, cursor) in reference)
        else:
            removed = {item for item in reference if item[0] == session}
            assert _speedups.cursor_table(table, "purge", session) == len(removed)
            reference -= removed
        assert _speedups.cursor_table(table, "count") == len(reference)
    pid = os.fork()
    if pid == 0:  # a worker adds; the others see it
        _speedups.cursor_table(table, "add", 99, 12345)
        os._exit(0)
    os.waitpid(pid, 0)
    assert _speedups.cursor_table(table, "has", 99, 12345)
