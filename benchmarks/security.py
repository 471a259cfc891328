"""Measure what the gateway's security promises cost and how fast they act: the figures of the README's security table.

Run: ``.venv/bin/python benchmarks/security.py [--connections 1000] [--trials 50] [--deadline 20]``

It starts the in-repo wire server (tests/mongo/wireserver) as the upstream and ``manage.py runproxy`` (default
workers) on a throw-away SQLite database, then prints:

- **Before login** — the gateway's RSS (its process tree: workers, supervisor, command-log writer) before and after
  ``--connections`` unauthenticated connections, first only connected, then each having sent a hello and read the
  answer, all held at once (from several loopback addresses, since connections are capped per address); the RSS per
  connection; how many more than the gateway's total cap were refused at once; and how long until the login
  deadline (``PAM_GATEWAY_LOGIN_TIMEOUT``, raised to ``--deadline`` seconds here so the measurement fits in it)
  closed them all. No upstream connection is opened for any of them (the upstream's count is printed).
- **Ending a session** — ``--trials`` times: a session opened through the services, a client logged in through the
  gateway and idle, then ``session_end`` (an administrator's kill) in this process; the time until the client's
  socket reads end-of-file (p50, p99, max) and whether the next login was refused with the reason.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from proxy import process_tree, raise_fd_limit, rss_kib, setup_django  # noqa: E402  (a sibling script)

from gatewayproxy.wire import codec, scram  # noqa: E402

HELLO = codec.build_op_msg({"hello": 1, "client": {"application": {"name": "bench"}}, "$db": "admin"}, request_id=1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gateway(port: int, log: Path, deadline: float) -> subprocess.Popen:
    env = {**os.environ, "PAM_GATEWAY_LOGIN_TIMEOUT": str(deadline)}
    command = [sys.executable, "manage.py", "runproxy", "--listen", f"127.0.0.1:{port}", "--gateway", "bench-security"]
    process = subprocess.Popen(
        [*command, "--log-level", "WARNING"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log.open("ab"),
        text=True,
        env=env,
    )
    line = process.stdout.readline()
    if "listening" not in line:
        process.kill()
        raise SystemExit(f"runproxy did not start: {line!r}; see {log}")
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def receive(sock: socket.socket) -> bytes:
    header = sock.recv(16, socket.MSG_WAITALL)
    if len(header) < 16:
        raise EOFError("closed")
    return header + sock.recv(struct.unpack("<i", header[:4])[0] - 16, socket.MSG_WAITALL)


def connect(port: int, index: int, per_address: int) -> socket.socket:
    source = f"127.0.0.{2 + index // per_address}"
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def settle_rss(pid: int) -> int:
    time.sleep(1.0)
    return rss_kib(process_tree(pid))


def before_login(port: int, pid: int, count: int, upstream, deadline: float) -> dict:
    """RSS of `count` connected-only, then hello-answered, unauthenticated connections; refusals over the cap."""
    from django.conf import settings

    per_address = max(1, settings.PAM_GATEWAY_UNAUTHENTICATED_PER_ADDRESS // 2)
    upstream_before = upstream.connections_created
    base = settle_rss(pid)
    started = time.monotonic()
    held = [connect(port, n, per_address) for n in range(count)]
    connected = settle_rss(pid)
    for sock in held:
        sock.sendall(HELLO)
    answered = 0
    for sock in held:
        try:
            receive(sock)
            answered += 1
        except (OSError, EOFError):
            pass
    hello = settle_rss(pid)
    total = settings.PAM_GATEWAY_UNAUTHENTICATED_TOTAL
    extra, refused = [], 0
    if count < total:
        extra = [connect(port, count + n, per_address) for n in range(total - count + 200)]
        for sock in extra:
            sock.sendall(HELLO)
        for sock in extra:
            try:
                receive(sock)
            except (OSError, EOFError):
                refused += 1
    for sock in held:
        sock.settimeout(deadline + 10)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass
    closed_after = time.monotonic() - started
    for sock in held + extra:
        sock.close()
    return {
        "count": count,
        "answered": answered,
        "base": base,
        "connected": connected,
        "hello": hello,
        "total": total,
        "attempted_over": len(extra),
        "refused_over": refused,
        "closed_after": closed_after,
        "upstream_opened": upstream.connections_created - upstream_before,
    }


def login(port: int, username: str, secret: str, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    ids = iter(range(1, 1000))

    def command(doc: dict) -> dict:
        sock.sendall(codec.build_op_msg(doc, request_id=next(ids)))
        return codec.parse_op_msg(receive(sock)).body

    scram.authenticate(command, mechanism="SCRAM-SHA-256", username=username, password=secret)
    if command({"ping": 1, "$db": "admin"}).get("ok") != 1:
        raise RuntimeError("ping failed after login")
    return sock


def end_to_cut(port: int, account, owner, trials: int) -> dict:
    from access.models.sessions import SessionEndReason
    from access.services.sessions import session_end, session_open

    cuts, told = [], 0
    for trial in range(trials):
        session, secret = session_open(user=owner, account=account, duration=timedelta(minutes=30))
        sock = login(port, session.username, secret)
        sock.settimeout(5)
        started = time.monotonic()
        session_end(session=session, reason=SessionEndReason.KILLED, actor="bench-admin")
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass
        cuts.append(time.monotonic() - started)
        sock.close()
        try:  # from an address of its own: refused logins count towards an address's throttle
            login(port, session.username, secret, source=f"127.0.1.{1 + trial % 250}").close()
        except scram.ScramError as exc:
            told += "the session was killed by bench-admin" in str(exc)
    cuts.sort()
    return {
        "trials": trials,
        "p50": statistics.median(cuts),
        "p99": cuts[min(len(cuts) - 1, int(0.99 * len(cuts)))],
        "max": cuts[-1],
        "told": told,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--deadline", type=float, default=20.0, help="the login deadline during the measurement")
    args = parser.parse_args()
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="pam-bench-security-"))
    setup_django(workdir / "db.sqlite3")
    from django.contrib.auth import get_user_model

    from access.models import AccessPolicy, Account, Resource
    from tests.mongo.wireserver import WireServer

    upstream = WireServer().start()
    password = secrets.token_urlsafe(16)
    upstream.create_user("bench", password, [{"role": "root", "db": "admin"}])
    resource_row = Resource.objects.create(name="bench", uri=f"mongodb://{upstream.host_port}", tls=False)
    account = Account.objects.create(resource=resource_row, name="bench", username="bench", password=password)
    owner = get_user_model().objects.create_user(username="bench-owner", password=None)
    AccessPolicy.objects.create(
        name="bench", user=owner, account=account, approval_required=False, max_duration=timedelta(hours=1)
    )
    port = free_port()
    gateway = start_gateway(port, workdir / "runproxy.log", args.deadline)
    try:
        pre = before_login(port, gateway.pid, args.connections, upstream, args.deadline)
        cut = end_to_cut(port, account, owner, args.trials)
    finally:
        stop(gateway)
        upstream.stop()
    count = pre["count"]
    print("| figure | value |")
    print("|---|---|")
    print(f"| gateway RSS, idle (its process tree) | {pre['base'] / 1024:.1f} MiB |")
    print(
        f"| + {count} connections, connected only | +{(pre['connected'] - pre['base']) / 1024:.1f} MiB "
        f"({(pre['connected'] - pre['base']) / count:.1f} KiB each) |"
    )
    print(
        f"| + {count} connections, hello answered, not logged in | +{(pre['hello'] - pre['base']) / 1024:.1f} MiB "
        f"({(pre['hello'] - pre['base']) / count:.1f} KiB each; {pre['answered']} answered) |"
    )
    print(f"| upstream connections opened for them | {pre['upstream_opened']} |")
    print(
        f"| connections over the total cap ({pre['total']}) refused at once | "
        f"{pre['refused_over']} of {pre['attempted_over'] - (pre['total'] - count)} |"
    )
    print(f"| all closed by the login deadline ({args.deadline:g} s) after | {pre['closed_after']:.1f} s |")
    print(
        f"| session end to the client's socket closed, {cut['trials']} trials | "
        f"p50 {cut['p50'] * 1000:.0f} ms, p99 {cut['p99'] * 1000:.0f} ms, max {cut['max'] * 1000:.0f} ms |"
    )
    print(f"| next login refused with who ended it | {cut['told']} of {cut['trials']} |")


if __name__ == "__main__":
    main()
