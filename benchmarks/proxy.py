"""Benchmark the gateway against the same server directly: throughput ratio, added latency, memory per connection.

Run: ``.venv/bin/python benchmarks/proxy.py [--duration 2] [--rounds 3] [--levels 1,16,64] [--idle 1000]``

It starts the in-repo wire server (``python -m tests.mongo wireserver``) and ``manage.py runproxy`` as separate
processes, on a throw-away SQLite database, opens a session, and runs each workload — find by ``_id`` of 1 KB
documents, insert of 1 KB documents, find of a 1 MB document — at each concurrency level, once directly and once
through the gateway, with pymongo clients spread over worker processes. It prints throughput both ways, their
ratio (medians over alternating rounds) and the added p50/p99 latency in µs; then it opens ``--idle``
logged-in idle connections through the gateway and reports the gateway's RSS growth per connection.

Goals (issue 5): ratio ≥ 0.85 at 16 clients on 1 KB finds, added p50 ≤ 150 µs, ≤ 64 KiB per idle connection.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import resource
import secrets
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote_plus

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORKLOADS = ("find_1kb", "insert_1kb", "find_1mb")
DOCS_1KB = 1000
DOCS_1MB = 8


def start_wire_server() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mongo", "wireserver", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    match = re.search(r"MONGODB_URI=(\S+)", line)
    if not match:
        process.kill()
        raise SystemExit(f"the wire server did not start: {line!r}")
    return process, match.group(1)


def setup_django(database: Path) -> None:
    """Production-like settings (DEBUG off, so no per-query bookkeeping) on a throw-away database."""
    from cryptography.fernet import Fernet

    os.environ["DATABASE_URL"] = f"sqlite:///{database}"
    os.environ["DJANGO_DEBUG"] = "false"
    os.environ["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)
    os.environ["PAM_ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def open_session(admin_uri: str, server_address: str) -> tuple[str, str]:
    """Create the upstream user, resource, account and a session; return (session username, secret)."""
    from datetime import timedelta

    from django.utils import timezone
    from pymongo import MongoClient

    from access.models import Account, Resource, Session
    from access.services.sessions import session_username_new, session_verifiers

    password = secrets.token_hex(16)
    with MongoClient(admin_uri) as admin:
        admin.admin.command("createUser", "bench", pwd=password, roles=[{"role": "root", "db": "admin"}])
    resource_row = Resource.objects.create(name="bench", uri=f"mongodb://{server_address}", tls=False)
    account = Account.objects.create(resource=resource_row, name="bench", username="bench", password=password)
    username, secret = session_username_new(), secrets.token_urlsafe(32)
    Session.objects.create(
        account=account,
        username=username,
        verifiers=session_verifiers(username=username, secret=secret),
        expires_at=timezone.now() + timedelta(hours=2),
    )
    return username, secret


def start_gateway(port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "runproxy",
            "--listen",
            f"127.0.0.1:{port}",
            "--gateway",
            "bench",
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    line = process.stdout.readline()
    if "listening" not in line:
        process.kill()
        raise SystemExit(f"runproxy did not start: {line!r}")
    return process


def populate(uri: str) -> None:
    from pymongo import MongoClient

    with MongoClient(uri) as client:
        database = client.bench
        database.small.drop()
        database.big.drop()
        database.small.insert_many([{"_id": n, "payload": "x" * 1000} for n in range(DOCS_1KB)])
        database.big.insert_many([{"_id": n, "payload": "y" * (1024 * 1024)} for n in range(DOCS_1MB)])


def _worker(uri: str, workload: str, threads: int, duration: float, start_at: float, results) -> None:
    from pymongo import MongoClient

    client = MongoClient(uri, maxPoolSize=threads, minPoolSize=threads)
    database = client.bench
    database.command("ping")
    samples: list[list[int]] = [[] for _ in range(threads)]
    counts = [0] * threads

    def run(index: int) -> None:
        rng = index * 7919
        small, big, inserts = database.small, database.big, database.inserts
        while time.time() < start_at:
            time.sleep(0.001)
        stop = start_at + duration
        local, n = samples[index], 0
        while True:
            began = time.perf_counter_ns()
            if time.time() >= stop:
                break
            rng = (rng * 1103515245 + 12345) & 0x7FFFFFFF
            if workload == "find_1kb":
                small.find_one({"_id": rng % DOCS_1KB})
            elif workload == "insert_1kb":
                inserts.insert_one({"payload": "z" * 1000})
            else:
                big.find_one({"_id": rng % DOCS_1MB})
            local.append(time.perf_counter_ns() - began)
            n += 1
        counts[index] = n

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    client.close()
    merged = [value for local in samples for value in local]
    results.put((sum(counts), merged[:: max(1, len(merged) // 20000)]))


def measure(uri: str, workload: str, clients: int, duration: float) -> tuple[float, list[int]]:
    """Run ``clients`` concurrent clients for ``duration`` seconds; return (ops/s, latency samples in ns)."""
    processes = min(clients, 4)
    per_process = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_at = time.time() + 1.5 + 0.1 * clients / 16
    workers = [
        context.Process(target=_worker, args=(uri, workload, threads, duration, start_at, results))
        for threads in per_process
    ]
    for worker in workers:
        worker.start()
    total, samples = 0, []
    for _ in workers:
        count, part = results.get(timeout=duration + 120)
        total += count
        samples.extend(part)
    for worker in workers:
        worker.join()
    return total / duration, samples


def percentile(values: list[int], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000 if ordered else float("nan")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _idle_connections(port: int, username: str, secret: str, count: int, pid: int) -> tuple[int, int]:
    from gatewayproxy.wire import codec as wire
    from gatewayproxy.wire import scram

    async def login() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request_id = 0

        async def command(document):
            nonlocal request_id
            request_id += 1
            writer.write(wire.build_op_msg(document, request_id=request_id))
            header = await reader.readexactly(16)
            body = await reader.readexactly(struct.unpack("<i", header[:4])[0] - 16)
            return wire.parse_op_msg(header + body).body

        await command({"hello": 1, "$db": "admin"})
        await scram.authenticate_async(command, mechanism="SCRAM-SHA-256", username=username, password=secret)
        return writer

    before = rss_kib(pid)
    writers = []
    for start in range(0, count, 50):
        writers += await asyncio.gather(*(login() for _ in range(start, min(count, start + 50))))
    await asyncio.sleep(1.0)
    after = rss_kib(pid)
    for writer in writers:
        writer.close()
    return before, after


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--levels", default="1,16,64", help="concurrent clients, comma-separated")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3, help="alternating direct/gateway rounds (median taken)")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections for the memory figure (0: skip)")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    workdir = Path(tempfile.mkdtemp(prefix="pam-bench-"))
    setup_django(workdir / "bench.sqlite3")
    wire_server, admin_uri = start_wire_server()
    gateway = None
    try:
        address = admin_uri.split("@", 1)[1].split("/", 1)[0]
        username, secret = open_session(admin_uri, address)
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        gateway = start_gateway(port)
        direct_uri = admin_uri
        gateway_uri = f"mongodb://{quote_plus(username)}:{quote_plus(secret)}@127.0.0.1:{port}/?authSource=admin&directConnection=true"
        populate(direct_uri)

        print(f"server: in-repo wire server (separate process); gateway: runproxy on 127.0.0.1:{port}")
        print(
            f"{'workload':<11} {'clients':>7} {'direct/s':>10} {'gateway/s':>10} {'ratio':>6} "
            f"{'p50 direct':>10} {'p50 gw':>8} {'+p50 µs':>8} {'p99 direct':>10} {'p99 gw':>8} {'+p99 µs':>8}"
        )
        for workload in args.workloads.split(","):
            for clients in (int(level) for level in args.levels.split(",")):
                # Alternate direct and gateway rounds so that a burst of load from elsewhere hits both alike.
                direct_rates, gateway_rates, direct_samples, gateway_samples = [], [], [], []
                for _round in range(args.rounds):
                    rate, samples = measure(direct_uri, workload, clients, args.duration)
                    direct_rates.append(rate)
                    direct_samples += samples
                    rate, samples = measure(gateway_uri, workload, clients, args.duration)
                    gateway_rates.append(rate)
                    gateway_samples += samples
                direct_rate, gateway_rate = statistics.median(direct_rates), statistics.median(gateway_rates)
                p50d, p50g = percentile(direct_samples, 0.5), percentile(gateway_samples, 0.5)
                p99d, p99g = percentile(direct_samples, 0.99), percentile(gateway_samples, 0.99)
                print(
                    f"{workload:<11} {clients:>7} {direct_rate:>10.0f} {gateway_rate:>10.0f} "
                    f"{gateway_rate / direct_rate:>6.2f} {p50d:>10.0f} {p50g:>8.0f} {p50g - p50d:>8.0f} "
                    f"{p99d:>10.0f} {p99g:>8.0f} {p99g - p99d:>8.0f}",
                    flush=True,
                )
        if args.idle:
            before, after = asyncio.run(_idle_connections(port, username, secret, args.idle, gateway.pid))
            per = (after - before) / args.idle
            print(
                f"idle: {args.idle} logged-in connections, gateway RSS {before} -> {after} KiB, "
                f"{per:.1f} KiB per connection (includes its upstream connection)"
            )
    finally:
        if gateway is not None:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(10)
        wire_server.send_signal(signal.SIGTERM)
        wire_server.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
