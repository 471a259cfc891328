"""The client side of benchmarks/proxy.py, run in its own venv with pymongo 4.10.x (stdlib and pymongo only).

``proxy.py`` runs this file with the interpreter of ``var/bench/driver-venv`` so that every column (direct, the
gateway, mongobetween) is driven by the same pymongo, one old enough for mongobetween v0.1.0. Commands:

- ``run WORKLOAD CLIENTS DURATION``: spread CLIENTS threads over up to 4 processes, each with its own
  MongoClient; warm up (every thread runs the workload until all have), then print ``start <epoch>`` and run
  for DURATION seconds from that moment; print one JSON line ``{"ops": N, "samples": [ns, ...]}``.
- ``populate``: load the collections the workloads read, for a real upstream (the fast upstream needs none).
- ``idle HOST PORT COUNT``: open COUNT connections, each running hello, a SCRAM-SHA-256 login when
  ``BENCH_USER`` is set, and ping; print ``ready OPENED FAILED SECONDS`` and keep them open; each ``check``
  line on stdin pings every one (``checked ANSWERED OPENED``); any other line closes them.

Secrets come from the environment, never the command line: ``BENCH_URI`` (run, populate), ``BENCH_USER`` and
``BENCH_PASSWORD`` (idle).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import resource
import struct
import sys
import threading
import time

import bson
from bson.binary import Binary
from pymongo import MongoClient

WORKLOADS = ("find_1kb", "insert_1kb", "find_1mb", "getmore_16kb")
DOCS_1KB = 1000
DOCS_1MB = 8
STREAM_BATCHES = 100
PROCESSES = 4


def _op(database, workload: str, rng: int) -> None:
    if workload == "find_1kb":
        database.small.find_one({"_id": f"k{rng % DOCS_1KB:04d}"})
    elif workload == "insert_1kb":
        database.inserts.insert_one({"payload": "z" * 1000})
    elif workload == "find_1mb":
        database.big.find_one({"_id": f"k{rng % DOCS_1MB:04d}"})
    elif workload == "getmore_16kb":
        batches = sum(1 for _ in database.stream.find({}, batch_size=1))
        if batches != STREAM_BATCHES:
            raise RuntimeError(f"the stream had {batches} batches, not {STREAM_BATCHES}")
    else:
        raise ValueError(workload)


def _worker(uri: str, workload: str, threads: int, duration: float, ready, start_at, results) -> None:
    client = MongoClient(uri, maxPoolSize=threads, minPoolSize=threads, directConnection=True)
    database = client.bench
    samples: list[list[int]] = [[] for _ in range(threads)]
    counts = [0] * threads
    warm = threading.Barrier(threads + 1)

    def run(index: int) -> None:
        rng = index * 7919 + os.getpid()
        # Warm up together; the pool opens (and logs in) a connection per thread before the clock starts.
        deadline = time.monotonic() + 0.3
        done = False
        while not done or time.monotonic() < deadline:
            _op(database, workload, rng)
            done = True
        warm.wait()
        while start_at.value == 0.0:
            time.sleep(0.001)
        while time.time() < start_at.value:
            time.sleep(0.0005)
        stop = start_at.value + duration
        local, n = samples[index], 0
        while True:
            began = time.perf_counter_ns()
            if time.time() >= stop:
                break
            rng = (rng * 1103515245 + 12345) & 0x7FFFFFFF
            _op(database, workload, rng)
            local.append(time.perf_counter_ns() - began)
            n += 1
        counts[index] = n

    pool = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    warm.wait()
    # The pool may still be short of one connection per thread (a thread may have reused another's): let the
    # driver open the rest (minPoolSize) now, so that no login happens while the clock runs.
    deadline = time.monotonic() + 30
    while (_pool_size(client) or threads) < threads and time.monotonic() < deadline:
        time.sleep(0.05)
    ready.release()
    for thread in pool:
        thread.join()
    client.close()
    merged = [value for local in samples for value in local]
    results.put((sum(counts), merged[:: max(1, len(merged) // 20000)]))


def _pool_size(client: MongoClient) -> int | None:
    """Connections in the client's pool (idle and checked out), read from pymongo 4.10's internals; None if unknown."""
    try:
        pools = [server.pool for server in client._topology._servers.values()]
        return sum(len(pool.conns) + pool.active_sockets for pool in pools)
    except Exception:
        return None


def command_run(uri: str, workload: str, clients: int, duration: float) -> int:
    processes = min(clients, PROCESSES)
    per_process = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    context = multiprocessing.get_context("fork")
    ready, results = context.Semaphore(0), context.Queue()
    start_at = context.Value("d", 0.0)
    workers = [
        context.Process(target=_worker, args=(uri, workload, threads, duration, ready, start_at, results))
        for threads in per_process
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        if not ready.acquire(timeout=300):
            raise SystemExit("the clients did not warm up within 300 s")
    start_at.value = time.time() + 0.3
    print(f"start {start_at.value!r}", flush=True)
    total, samples = 0, []
    for _ in workers:
        count, part = results.get(timeout=duration + 300)
        total += count
        samples.extend(part)
    for worker in workers:
        worker.join()
    print(json.dumps({"ops": total, "samples": samples}), flush=True)
    return 0


def command_populate(uri: str) -> int:
    with MongoClient(uri, directConnection=True) as client:
        database = client.bench
        for name in ("small", "big", "stream", "inserts"):
            database[name].drop()
        database.small.insert_many([{"_id": f"k{n:04d}", "payload": "x" * 1000} for n in range(DOCS_1KB)])
        for n in range(DOCS_1MB):
            database.big.insert_one({"_id": f"k{n:04d}", "payload": "y" * (1024 * 1024 - 30)})
        database.stream.insert_many([{"_id": f"k{n:04d}", "payload": "z" * (16 * 1024 - 30)} for n in range(100)])
    return 0


# --- idle connections: a raw OP_MSG client with its own SCRAM-SHA-256 --------------------------------------


def _op_msg(document: dict, request_id: int) -> bytes:
    body = struct.pack("<IB", 0, 0) + bson.encode(document)
    return struct.pack("<iiii", 16 + len(body), request_id, 0, 2013) + body


def _scram_sha256(username: str, password: str, salted_cache: dict):
    """A generator of the login's commands; send it each reply."""
    user = username.replace("=", "=3D").replace(",", "=2C")
    nonce = base64.b64encode(os.urandom(24)).decode()
    first_bare = f"n={user},r={nonce}"
    reply = yield {
        "saslStart": 1,
        "mechanism": "SCRAM-SHA-256",
        "payload": Binary(b"n,," + first_bare.encode()),
        "options": {"skipEmptyExchange": True},
        "$db": "admin",
    }
    server_first = bytes(reply["payload"]).decode()
    fields = dict(item.split("=", 1) for item in server_first.split(","))
    if not fields["r"].startswith(nonce):
        raise RuntimeError("the server's nonce does not extend ours")
    salt, iterations = base64.b64decode(fields["s"]), int(fields["i"])
    key = (salt, iterations)
    if key not in salted_cache:
        salted_cache[key] = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted_cache[key], b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(stored_key, auth_message, "sha256")
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True))).decode()
    conversation = reply["conversationId"]
    payload = Binary(f"{without_proof},p={proof}".encode())
    reply = yield {"saslContinue": 1, "conversationId": conversation, "payload": payload, "$db": "admin"}
    while not reply.get("done"):
        reply = yield {"saslContinue": 1, "conversationId": conversation, "payload": Binary(b""), "$db": "admin"}


async def _idle(host: str, port: int, count: int, username: str | None, password: str | None) -> int:
    salted_cache: dict = {}

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(host, port)
        request_id = 0

        async def command(document: dict) -> dict:
            nonlocal request_id
            request_id += 1
            writer.write(_op_msg(document, request_id))
            header = await reader.readexactly(16)
            body = await reader.readexactly(struct.unpack("<i", header[:4])[0] - 16)
            opcode = struct.unpack("<i", header[12:16])[0]
            reply = bson.decode(body[5:] if opcode == 2013 else body[20:])
            if not reply.get("ok"):
                raise RuntimeError(f"{next(iter(document))} failed: {reply.get('errmsg')}")
            return reply

        await command({"isMaster": 1, "$db": "admin"})
        if username:
            steps = _scram_sha256(username, password or "", salted_cache)
            document = next(steps)
            while True:
                reply = await command(document)
                try:
                    document = steps.send(reply)
                except StopIteration:
                    break
        await command({"ping": 1, "$db": "admin"})
        return reader, writer

    # Fifty at a time; a connection that fails is counted, not fatal: the report says how many opened.
    started = time.monotonic()
    opened, errors = [], []
    for start in range(0, count, 50):
        for outcome in await asyncio.gather(
            *(connect() for _ in range(start, min(count, start + 50))), return_exceptions=True
        ):
            (errors if isinstance(outcome, BaseException) else opened).append(outcome)
    print(f"ready {len(opened)} {len(errors)} {time.monotonic() - started:.1f}", flush=True)
    if errors:
        print(f"first error: {type(errors[0]).__name__}: {errors[0]}", file=sys.stderr, flush=True)
    while (await asyncio.to_thread(sys.stdin.readline)).strip() == "check":
        # Every connection still answers: a ping on each, all at once.
        answered = await asyncio.gather(*(_ping(*pair) for pair in opened), return_exceptions=True)
        print(f"checked {sum(1 for item in answered if item is True)} {len(opened)}", flush=True)
    for _reader, writer in opened:
        writer.close()
    return 0


async def _ping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(_op_msg({"ping": 1, "$db": "admin"}, 1_000_000))
    header = await reader.readexactly(16)
    body = await reader.readexactly(struct.unpack("<i", header[:4])[0] - 16)
    return bool(bson.decode(body[5:]).get("ok"))


def main(argv: list[str]) -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    command, args = argv[0], argv[1:]
    if command == "run":
        workload, clients, duration = args
        return command_run(os.environ["BENCH_URI"], workload, int(clients), float(duration))
    if command == "populate":
        return command_populate(os.environ["BENCH_URI"])
    if command == "idle":
        host, port, count = args
        username, password = os.environ.get("BENCH_USER"), os.environ.get("BENCH_PASSWORD")
        return asyncio.run(_idle(host, int(port), int(count), username, password))
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
