"""Benchmark the gateway side by side with direct access and with a peer proxy (coinbase/mongobetween).

Run: ``.venv/bin/python benchmarks/proxy.py [--duration 3] [--rounds 3] [--levels 1,16,64,256]
[--levels-for find_1kb=1,16,64,256] [--workloads find_1kb,insert_1kb,find_1mb,getmore_16kb]
[--columns direct,relay,relay-c,gateway,mongobetween] [--upstream fast|wire|ferretdb] [--idle 1000]``

Needs Go (it builds three programs into ``var/bench/``), gcc (``relay-c``) and the Go module proxy (mongobetween's
source). Pieces:

- **Upstream** (``--upstream``): ``fast`` (default) is ``benchmarks/fastmongo``, a canned-reply server in Go built
  here with ``go build``; it answers faster than any proxy in front of it, so the proxies' cost shows. ``wire`` is
  the in-repo wire server, ``ferretdb`` FerretDB on SQLite (both slower than the proxies, so they hide them).
- **Columns**: ``direct`` (the upstream itself), ``gateway`` (``manage.py runproxy`` on a throw-away SQLite
  database, logging in with a session's one-time secret, command log on) and ``mongobetween`` v0.1.0, downloaded
  with ``go mod download`` and built with ``GOFLAGS=-mod=mod`` (``go install`` of it is refused here); its
  clients do not log in, it holds the upstream login itself; its statsd metrics go to a UDP socket nobody reads.
- **Relay columns**, the floor: what a proxy that does nothing but forward bytes costs on this machine, so that the
  gateway's CPU per operation reads against what any proxy must pay (per request/reply two reads, two writes and
  the wakeups for them), not only against mongobetween. All in ``benchmarks/barerelay``, no parsing, no login of
  their own: the client logs in to the upstream through them with the direct column's URI. ``relay`` is a Go
  program (standard library) that per client connection dials the upstream and runs ``io.Copy`` both ways in two
  goroutines (between two TCP sockets on Linux, Go's ``io.Copy`` moves the bytes with ``splice(2)``);
  ``relay-buf`` is the same program copying through a user-space buffer (plain read/write); ``relay-c`` is C
  (``gcc -O2``): one thread, epoll, read and write, no runtime at all. ``relay-buf`` is not in the default
  columns. ``gw/rl``, ``gw/rlb``, ``gw/rlc`` divide the gateway's CPU µs/op by a relay's: how far above the floor.
- **Clients**: pymongo 4.10.1 (pymongo 4.20 refuses mongobetween v0.1.0) in ``var/bench/driver-venv``, created on
  first use; ``benchmarks/proxy_load.py`` spreads the clients over up to 4 processes of threads.
- **Workloads**: ``find_1kb`` (find_one of a 1 KB document by ``_id``), ``insert_1kb`` (insert_one of a 1 KB
  document), ``find_1mb`` (find_one of a 1 MB document), ``getmore_16kb`` (one operation = reading a cursor of
  100 batches of one 16 KB document: a find and 99 getMores).

Each workload and client count runs ``--rounds`` alternating rounds (the columns' order rotates each round, so a
burst of load from elsewhere hits all alike); throughput is the median of the rounds. Latencies are percentiles
over all rounds' samples; ``+p50``/``+p99`` are a proxy's minus direct's. CPU µs/op is the CPU time (utime+stime
from /proc/<pid>/stat, summed over the process and all its descendants: the gateway's command-log writer child
counts) spent during the measured seconds, divided by the operations completed then, summed over the rounds;
``up`` is the upstream's own CPU per operation in the direct column. ``load`` is the 1-minute load average when
the row was printed. Before the workloads it opens ``--idle`` connections through each proxy (logged in through
the gateway and the relays; hello and ping through mongobetween) and reports the proxy's RSS growth per connection.

Goals (issue 14): CPU per 1 KB request/reply ≤ 30 µs and ≤ 0.5 x mongobetween's on every workload; throughput
≥ mongobetween's at every concurrency and ≥ 0.8 x direct at 16 clients; ≤ 16 KiB RSS per idle connection.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote_plus

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORKLOADS = ("find_1kb", "insert_1kb", "find_1mb", "getmore_16kb")
COLUMNS = ("direct", "relay", "relay-buf", "relay-c", "gateway", "mongobetween")
DEFAULT_COLUMNS = ("direct", "relay", "relay-c", "gateway", "mongobetween")
RELAYS = ("relay", "relay-buf", "relay-c")
BENCH_DIR = ROOT / "var" / "bench"
DRIVER_VENV = BENCH_DIR / "driver-venv"
DRIVER_PYMONGO = "4.10.1"
LOAD_SCRIPT = Path(__file__).resolve().parent / "proxy_load.py"
FASTMONGO_SOURCE = Path(__file__).resolve().parent / "fastmongo"
BARERELAY_SOURCE = Path(__file__).resolve().parent / "barerelay"
MONGOBETWEEN_MODULE = "github.com/coinbase/mongobetween"
MONGOBETWEEN_VERSION = "v0.1.0"
BENCH_USER = "bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PY_SPY = Path(sys.executable).parent / "py-spy"


# --- building and installing -----------------------------------------------------------------------------


def go_build_fastmongo() -> Path:
    binary = BENCH_DIR / "fastmongo"
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=FASTMONGO_SOURCE, check=True)
    return binary


def go_build_barerelay() -> Path:
    """Built from main.go by name: go refuses a package folder that also holds C (relay.c) without cgo."""
    binary = BENCH_DIR / "barerelay"
    subprocess.run(["go", "build", "-o", str(binary), "main.go"], cwd=BARERELAY_SOURCE, check=True)
    return binary


def gcc_build_relay_c() -> Path:
    binary = BENCH_DIR / "relay-c"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), "relay.c"], cwd=BARERELAY_SOURCE, check=True)
    return binary


def go_build_mongobetween() -> Path:
    """``go mod download`` the module (checksum-verified by the Go toolchain), then ``go build`` it in place."""
    found = subprocess.run(
        ["go", "mod", "download", "-json", f"{MONGOBETWEEN_MODULE}@{MONGOBETWEEN_VERSION}"],
        capture_output=True,
        text=True,
        check=True,
    )
    module_dir = json.loads(found.stdout)["Dir"]
    binary = BENCH_DIR / "mongobetween"
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=module_dir, env=env, check=True)
    return binary


def driver_python() -> Path:
    """The interpreter of a venv with pymongo ``DRIVER_PYMONGO``, created on first use."""
    python = DRIVER_VENV / "bin" / "python"
    probe = f"import pymongo, sys; sys.exit(pymongo.version != {DRIVER_PYMONGO!r})"
    if python.exists() and subprocess.run([python, "-c", probe], check=False).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(DRIVER_VENV)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", f"pymongo=={DRIVER_PYMONGO}"], check=True)
    return python


# --- /proc -------------------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        tree.append(current)
        queue.extend(children.get(current, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of the processes, with their waited-for children's (fields 14-17 of /proc/<pid>/stat)."""
    ticks = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLOCK_TICKS


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in lines if line.startswith("VmRSS:")), 0)
    return total


def machine_busy_seconds() -> float:
    """CPU time all CPUs spent on anything but idle and iowait, from the first line of /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


# --- processes ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with code {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port} within {timeout:.0f} s")


def drain(stream) -> None:
    """Read a child's pipe to its end in a thread, so that the child never blocks on a full pipe."""
    threading.Thread(target=lambda: stream.read(), daemon=True).start()


@dataclass
class Upstream:
    process: subprocess.Popen
    address: str  # host:port
    password: str
    admin_uri: str  # a URI that may create users (wire server, FerretDB) or the bench user's (fast)
    populate: bool


def start_fast_upstream(binary: Path) -> Upstream:
    password = secrets.token_hex(16)
    process = subprocess.Popen(
        [str(binary), "-listen", "127.0.0.1:0", "-user", BENCH_USER, "-password", password],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    if not line.startswith("listening "):
        process.kill()
        raise SystemExit(f"fastmongo did not start: {line!r}")
    address = line.split()[1]
    uri = f"mongodb://{BENCH_USER}:{password}@{address}/?authSource=admin"
    return Upstream(process, address, password, uri, populate=False)


def start_python_upstream(kind: str) -> Upstream:
    """The in-repo wire server or FerretDB through ``python -m tests.mongo``; a ``bench`` user is created."""
    from pymongo import MongoClient

    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mongo", "wireserver" if kind == "wire" else "ferretdb"]
        + (["--port", "0"] if kind == "wire" else []),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    match = re.search(r"MONGODB_URI=(\S+)", line)
    if not match:
        process.kill()
        raise SystemExit(f"the {kind} upstream did not start: {line!r}")
    drain(process.stdout)
    admin_uri = match.group(1)
    address = admin_uri.split("@", 1)[1].split("/", 1)[0]
    password = secrets.token_hex(16)
    roles = [{"role": "root", "db": "admin"}] if kind == "wire" else []  # FerretDB v1 has no roles
    try:
        with MongoClient(admin_uri) as admin:
            admin.admin.command("createUser", BENCH_USER, pwd=password, roles=roles)
    except BaseException:
        stop(process)
        raise
    return Upstream(process, address, password, admin_uri, populate=True)


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


def open_session(upstream: Upstream) -> tuple[str, str]:
    """Create the resource, the account (the upstream's bench user) and a session; return (username, secret)."""
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from access.models import AccessPolicy, Account, Resource, Session
    from access.services.sessions import session_username_new, session_verifiers

    resource_row = Resource.objects.create(name="bench", uri=f"mongodb://{upstream.address}", tls=False)
    account = Account.objects.create(
        resource=resource_row, name="bench", username=BENCH_USER, password=upstream.password
    )
    username, secret = session_username_new(), secrets.token_urlsafe(32)
    # The gateway checks the session's user and grant at every login: the session belongs to a granted user.
    owner = get_user_model().objects.create_user(username="bench", password=None)
    AccessPolicy.objects.create(
        name="bench", user=owner, account=account, approval_required=False, max_duration=timedelta(hours=6)
    )
    Session.objects.create(
        user=owner,
        account=account,
        username=username,
        verifiers=session_verifiers(username=username, secret=secret),
        expires_at=timezone.now() + timedelta(hours=6),
    )
    return username, secret


def raise_fd_limit(wanted: int = 262_144) -> int:
    """Raise RLIMIT_NOFILE for this process and the ones it starts: 10,000 idle connections through the gateway
    take 20,000 descriptors there (client and upstream sides) and 10,000 in the client and in the upstream.
    Root may raise the hard limit too; otherwise the soft limit goes up to the hard one."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def start_gateway(port: int, log: Path, workers: int | None = None) -> subprocess.Popen:
    command = [sys.executable, "manage.py", "runproxy", "--listen", f"127.0.0.1:{port}"]
    if workers:
        command += ["--workers", str(workers)]
    process = subprocess.Popen(
        [*command, "--gateway", "bench", "--log-level", "WARNING"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log.open("ab"),
        text=True,
        env={**os.environ},
    )
    line = process.stdout.readline()
    if "listening" not in line:
        process.kill()
        raise SystemExit(f"runproxy did not start: {line!r}; see {log}")
    drain(process.stdout)
    return process


def start_mongobetween(binary: Path, port: int, upstream: Upstream, statsd_port: int, log: Path) -> subprocess.Popen:
    uri = f"mongodb://{BENCH_USER}:{upstream.password}@{upstream.address}/?authSource=admin"
    process = subprocess.Popen(
        [str(binary), "-loglevel", "warn", "-statsd", f"127.0.0.1:{statsd_port}", "-ping", f"127.0.0.1:{port}={uri}"],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, process, "mongobetween")
    return process


def start_relay(command: list[str]) -> tuple[subprocess.Popen, int]:
    """A bare relay (``benchmarks/barerelay``) and the port it listens on, from its "listening HOST:PORT" line."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line.startswith("listening "):
        process.kill()
        raise SystemExit(f"{command[0]} did not start: {line!r}")
    return process, int(line.split()[1].rpartition(":")[2])


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


# --- measuring ---------------------------------------------------------------------------------------------


@dataclass
class Column:
    name: str
    uri: str
    pid: int | None  # the proxy's process (None: direct)
    port: int = 0


@dataclass
class Result:
    rates: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    ops: int = 0
    proxy_cpu: float = 0.0
    upstream_cpu: float = 0.0
    others: list[float] = field(default_factory=list)  # the share of all CPUs busy with other processes


def measure(
    python: Path,
    column: Column,
    upstream_pid: int,
    workload: str,
    clients: int,
    duration: float,
    result: Result,
    profile: Path | None = None,
) -> None:
    """One round of one column: run the clients, read the CPU counters over exactly the measured seconds.

    With ``profile``, py-spy samples the proxy (and its children) during those seconds into that file.
    """
    driver = subprocess.Popen(
        [str(python), str(LOAD_SCRIPT), "run", workload, str(clients), str(duration)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "BENCH_URI": column.uri},
    )
    try:
        line = driver.stdout.readline()
        if not line.startswith("start "):
            raise SystemExit(f"the clients did not start ({column.name}, {workload}, {clients}): {line!r}")
        start_at = float(line.split()[1])
        proxy_pids = process_tree(column.pid) if column.pid else []
        time.sleep(max(0.0, start_at - time.time()))
        spy = None
        if profile is not None and column.pid:
            record = [str(PY_SPY), "record", "--pid", str(column.pid), "--subprocesses", "--nonblocking"]
            options = ["--rate", "200", "--duration", str(max(1, int(duration))), "--format", "raw"]
            spy = subprocess.Popen(
                [*record, *options, "-o", str(profile)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        upstream_pids = process_tree(upstream_pid)
        ours = [*proxy_pids, *upstream_pids, *process_tree(driver.pid)]
        proxy_before, upstream_before = cpu_seconds(proxy_pids), cpu_seconds(upstream_pids)
        ours_before, busy_before = cpu_seconds(ours), machine_busy_seconds()
        time.sleep(max(0.0, start_at + duration - time.time()))
        proxy_after, upstream_after = cpu_seconds(proxy_pids), cpu_seconds(upstream_pids)
        ours_after, busy_after = cpu_seconds(ours), machine_busy_seconds()
        report = json.loads(driver.stdout.readline())
        if spy is not None:
            spy.wait(60)
    finally:
        driver.wait(60)
    if driver.returncode:
        raise SystemExit(f"the clients failed ({column.name}, {workload}, {clients}): exit {driver.returncode}")
    result.rates.append(report["ops"] / duration)
    result.samples += report["samples"]
    result.ops += report["ops"]
    result.proxy_cpu += proxy_after - proxy_before
    result.upstream_cpu += upstream_after - upstream_before
    others = (busy_after - busy_before) - (ours_after - ours_before)
    result.others.append(max(0.0, others) / (duration * (os.cpu_count() or 1)))


def print_profile(profile: Path, top: int = 15) -> None:
    """The frames with the most own samples (the innermost frame of each stack), by function and file."""
    own: dict[str, int] = {}
    by_process: dict[str, int] = {}
    total = 0
    for line in profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        depth = sum(1 for frame in frames if frame.startswith("process "))
        process = "gateway process" if depth <= 1 else "its child " + frames[depth - 1].split(":", 1)[0][8:]
        by_process[process] = by_process.get(process, 0) + int(count)
        leaf = re.sub(r":\d+\)$", ")", frames[-1])
        leaf = re.sub(r"\(/[^ ]*/(site-packages|lib/python3\.\d+|wt-[^/]+|main)/", "(", leaf)
        own[leaf] = own.get(leaf, 0) + int(count)
        total += int(count)
    if not total:
        print(f"py-spy: no samples in {profile}")
        return
    shares = ", ".join(f"{name} {100 * count / total:.0f}%" for name, count in sorted(by_process.items()))
    print(f"py-spy: {total} samples of the gateway and its children ({shares}); raw stacks in {profile}")
    print(f"  top {top} frames by own time:")
    for leaf, count in sorted(own.items(), key=lambda item: -item[1])[:top]:
        print(f"  {100 * count / total:5.1f}%  {leaf}")


def percentile(values: list[int], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000 if ordered else float("nan")


@dataclass
class Idle:
    """What opening ``count`` idle connections through a proxy gave: how many opened and failed, in how many
    seconds, how many answered a ping afterwards, and the proxy's RSS (KiB, with its child processes)."""

    count: int
    opened: int = 0
    failed: int = 0
    seconds: float = 0.0
    answered: int = 0
    rss_before: int = 0
    rss_after: int = 0


def idle_rss(python: Path, pid: int, port: int, count: int, credentials: tuple[str, str] | None) -> Idle:
    """Open ``count`` idle connections through a proxy (logging in when given credentials), all held at once;
    then ping each. RSS before and after (the proxy's process tree)."""
    result = Idle(count, rss_before=rss_kib(process_tree(pid)))
    env = dict(os.environ)
    if credentials:
        env["BENCH_USER"], env["BENCH_PASSWORD"] = credentials
    driver = subprocess.Popen(
        [str(python), str(LOAD_SCRIPT), "idle", "127.0.0.1", str(port), str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = driver.stdout.readline().split()
        if not line or line[0] != "ready":
            raise SystemExit(f"the idle connections failed: {line!r}")
        result.opened, result.failed, result.seconds = int(line[1]), int(line[2]), float(line[3])
        time.sleep(1.0)
        result.rss_after = rss_kib(process_tree(pid))
        driver.stdin.write("check\n")
        driver.stdin.flush()
        result.answered = int(driver.stdout.readline().split()[1])
        driver.stdin.write("close\n")
        driver.stdin.flush()
    finally:
        driver.wait(120)
    return result


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if denominator and numerator == numerator else "-"


def per_op_us(cpu: float, ops: int) -> float:
    return cpu / ops * 1e6 if ops else float("nan")


SHORT = {"direct": "direct", "relay": "rl", "relay-buf": "rlb", "relay-c": "rlc", "gateway": "gw", "mongobetween": "mb"}


def number(value: float) -> str:
    return "-" if value != value else f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def row_cells(workload: str, clients: int, columns: list[str], results: dict[str, Result] | None) -> list[tuple]:
    """(header, value, width) cells of one table row; ``results`` None gives the header's cells only."""
    proxies = [name for name in columns if name != "direct"]
    both = {"gateway", "mongobetween"} <= set(columns)
    has_direct = "direct" in columns
    cells: list[tuple] = [("workload", workload, -12), ("cl", str(clients), 3), ("|", "|", 1)]
    if results is None:
        results = {name: Result(rates=[float("nan")], ops=0) for name in columns}
    rate = {name: statistics.median(results[name].rates) for name in columns}
    p50 = {name: percentile(results[name].samples, 0.5) for name in columns}
    p99 = {name: percentile(results[name].samples, 0.99) for name in columns}
    cpu = {name: per_op_us(results[name].proxy_cpu, results[name].ops) for name in proxies}
    cells += [(f"{SHORT[name]}/s", f"{rate[name]:.0f}" if rate[name] == rate[name] else "-", 8) for name in columns]
    cells.append(("|", "|", 1))
    if has_direct:
        cells += [(f"{SHORT[name]}/d", ratio(rate[name], rate["direct"]), 5) for name in proxies]
    if both:
        cells.append(("gw/mb", ratio(rate["gateway"], rate["mongobetween"]), 5))
    for label, values in (("p50", p50), ("p99", p99)):
        cells.append(("|", "|", 1))
        base = values.get("direct", 0.0)
        for name in columns:
            if name == "direct":
                cells.append((f"{label} d", f"{values[name]:.0f}" if values[name] == values[name] else "-", 7))
            else:
                added = values[name] - base
                cells.append((f"+{SHORT[name]}", f"{added:+.0f}" if added == added else "-", 7))
    cells.append(("|", "|", 1))
    if has_direct:
        cells.append(("µs up", number(per_op_us(results["direct"].upstream_cpu, results["direct"].ops)), 7))
    cells += [(f"µs {SHORT[name]}", number(cpu[name]), 7) for name in proxies]
    if both:
        cells.append(("gw/mb", ratio(cpu["gateway"], cpu["mongobetween"]), 5))
    if "gateway" in columns:
        cells += [(f"gw/{SHORT[name]}", ratio(cpu["gateway"], cpu[name]), 6) for name in columns if name in RELAYS]
    others = [share for name in columns for share in results[name].others]
    cells.append(("|", "|", 1))
    cells.append(("load", load_average() if others else "", 5))
    cells.append(("other", f"{100 * statistics.mean(others):.0f}%" if others else "", 5))
    return cells


def format_cells(cells: list[tuple], index: int) -> str:
    return " ".join(f"{cell[index]:<{-cell[2]}}" if cell[2] < 0 else f"{cell[index]:>{cell[2]}}" for cell in cells)


def print_header(columns: list[str]) -> None:
    print(format_cells(row_cells("", 0, columns, None), 0), flush=True)


def print_row(workload: str, clients: int, columns: list[str], results: dict[str, Result]) -> None:
    print(format_cells(row_cells(workload, clients, columns, results), 1), flush=True)


def parse_plan(args: argparse.Namespace) -> list[tuple[str, list[int]]]:
    levels = [int(level) for level in args.levels.split(",")]
    overrides: dict[str, list[int]] = {}
    for item in args.levels_for:
        workload, _, values = item.partition("=")
        overrides[workload] = [int(level) for level in values.split(",")]
    plan = []
    for workload in args.workloads.split(","):
        if workload not in WORKLOADS:
            raise SystemExit(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")
        plan.append((workload, overrides.get(workload, levels)))
    return plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per row (median throughput)")
    parser.add_argument("--levels", default="1,16,64,256", help="concurrent clients, comma-separated")
    parser.add_argument(
        "--levels-for", action="append", default=[], metavar="WORKLOAD=N,N", help="levels for one workload"
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"from {', '.join(WORKLOADS)}")
    parser.add_argument(
        "--columns", default=",".join(DEFAULT_COLUMNS), help=f"from {', '.join(COLUMNS)} (shown in this order)"
    )
    parser.add_argument("--upstream", choices=("fast", "wire", "ferretdb"), default="fast", help="what answers")
    parser.add_argument(
        "--py-spy",
        metavar="WORKLOAD=N",
        default=None,
        help="after that row, one more gateway round under py-spy (needs py-spy beside this Python)",
    )
    parser.add_argument(
        "--idle", type=int, default=1000, help="idle connections held at once per proxy (0: skip; 10000: the check)"
    )
    parser.add_argument(
        "--gateway-workers", type=int, default=None, help="runproxy --workers (default: its own, one per core)"
    )
    args = parser.parse_args()
    plan = parse_plan(args)
    columns = [name for name in COLUMNS if name in args.columns.split(",")]
    unknown = set(args.columns.split(",")) - set(COLUMNS)
    if unknown:
        raise SystemExit(f"unknown column(s) {', '.join(sorted(unknown))}; choose from {', '.join(COLUMNS)}")
    open_files = raise_fd_limit()

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="pam-bench-"))
    python = driver_python()
    fastmongo = go_build_fastmongo() if args.upstream == "fast" else None
    mongobetween = go_build_mongobetween() if "mongobetween" in columns else None
    barerelay = go_build_barerelay() if {"relay", "relay-buf"} & set(columns) else None
    relay_c = gcc_build_relay_c() if "relay-c" in columns else None
    go_version = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()

    upstream = start_fast_upstream(fastmongo) if fastmongo else start_python_upstream(args.upstream)
    gateway = mb = None
    relays: list[subprocess.Popen] = []
    statsd_sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # mongobetween's metrics land here, unread
    try:
        statsd_sink.bind(("127.0.0.1", 0))
        direct_uri = f"mongodb://{BENCH_USER}:{upstream.password}@{upstream.address}/?authSource=admin"
        if upstream.populate:
            subprocess.run(
                [str(python), str(LOAD_SCRIPT), "populate"], env={**os.environ, "BENCH_URI": direct_uri}, check=True
            )
        table: dict[str, Column] = {"direct": Column("direct", direct_uri, None)}
        credentials = None
        for name in (name for name in RELAYS if name in columns):
            if name == "relay-c":
                command = [str(relay_c), "127.0.0.1:0", upstream.address]
            else:
                copy = "buffer" if name == "relay-buf" else "splice"
                command = [str(barerelay), "-listen", "127.0.0.1:0", "-upstream", upstream.address, "-copy", copy]
            relay, port = start_relay(command)
            relays.append(relay)
            uri = f"mongodb://{BENCH_USER}:{upstream.password}@127.0.0.1:{port}/?authSource=admin"
            table[name] = Column(name, uri, relay.pid, port)
        if "gateway" in columns:
            setup_django(workdir / "bench.sqlite3")
            username, secret = open_session(upstream)
            credentials = (username, secret)
            port = free_port()
            gateway = start_gateway(port, workdir / "gateway.log", args.gateway_workers)
            uri = f"mongodb://{quote_plus(username)}:{quote_plus(secret)}@127.0.0.1:{port}/?authSource=admin"
            table["gateway"] = Column("gateway", uri, gateway.pid, port)
        if mongobetween is not None:
            port = free_port()
            mb = start_mongobetween(mongobetween, port, upstream, statsd_sink.getsockname()[1], workdir / "mb.log")
            table["mongobetween"] = Column("mongobetween", f"mongodb://127.0.0.1:{port}/", mb.pid, port)

        print(f"command: {' '.join(shlex.quote(part) for part in sys.argv)}")
        print(
            f"upstream: {args.upstream}; clients: pymongo {DRIVER_PYMONGO}; mongobetween {MONGOBETWEEN_VERSION} "
            f"({go_version}); {os.cpu_count()} CPUs; {args.rounds} rounds x {args.duration:g} s; "
            f"open files {open_files}; logs in {workdir}"
        )
        for name in ("gateway", "mongobetween", *RELAYS):
            if args.idle and name in table:
                column = table[name]
                login = (
                    credentials if name == "gateway" else (BENCH_USER, upstream.password) if name in RELAYS else None
                )
                idle = idle_rss(python, column.pid, column.port, args.idle, login)
                how = "hello + ping" if name == "mongobetween" else "logged in, each with its own upstream connection"
                print(
                    f"idle {name}: {idle.opened} of {args.idle} connections open at once ({how}) in "
                    f"{idle.seconds:.1f} s, {idle.failed} failed, {idle.answered} answered a ping afterwards; "
                    f"RSS {idle.rss_before} -> {idle.rss_after} KiB, "
                    f"{(idle.rss_after - idle.rss_before) / max(idle.opened, 1):.1f} KiB per connection",
                    flush=True,
                )
        print_header(columns)
        for workload, levels in plan:
            for clients in levels:
                results = {name: Result() for name in columns}
                for round_index in range(args.rounds):
                    shift = round_index % len(columns)
                    for name in columns[shift:] + columns[:shift]:
                        measure(
                            python,
                            table[name],
                            upstream.process.pid,
                            workload,
                            clients,
                            args.duration,
                            results[name],
                        )
                print_row(workload, clients, columns, results)
                if args.py_spy == f"{workload}={clients}" and "gateway" in table:
                    profile = workdir / f"py-spy-{workload}-{clients}.txt"
                    spied = Result()
                    gateway_column = table["gateway"]
                    measure(
                        python, gateway_column, upstream.process.pid, workload, clients, args.duration, spied, profile
                    )
                    print_profile(profile)
    finally:
        stop(gateway)
        stop(mb)
        for relay in relays:
            stop(relay)
        stop(upstream.process)
        statsd_sink.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
