"""Faults in the production profile (PostgreSQL, Redis, several qclusters and gateways): nothing is lost.

Every test here runs real processes on the PostgreSQL test database: `manage.py qcluster` (Redis broker),
`manage.py runproxy`, daphne. Redis is a private `redis-server` per test on a free port (so a restart
disturbs nobody else and no task queued by another test reaches these workers); MongoDB is a private wire
server whose `users.drop` is counted per user (`wire.drops`), so "revoked once" is checked on the server.

Time knobs, to keep CI short (each says what production does instead):
- qclusters run with the lease claim timeout at 10 s (production: 120 s) and the sweeper lock TTL at 5 s
  (production: 15 s): a killed worker's leases are taken over sooner; the mechanism is the same.
- The MongoDB outage lasts `PAM_FAULT_OUTAGE_SECONDS` (default 60 s, the issue's minute; set less for a quick
  local run). The revocation backoff (2, 4, 8, 16, 32 s…) retries within 32 s of the server's return either way.
- The 200-client load runs `PAM_FAULT_LOAD_SECONDS` (default 60 s, the issue's minute).

Skipped with the reason unless DATABASE_URL is PostgreSQL and REDIS_URL is set; `.ci/run`'s production run
sets PAM_PROFILE=production, which turns the skip into a failure.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pymongo
import pytest
from django.utils import timezone

from tests.gateway_fixtures import GatewayProcess, free_port, session_on, wait_for
from tests.helpers import session_cookie
from tests.mongo.wireserver import WireServer
from tests.profile import require_production_profile, subprocess_env

ROOT = Path(__file__).resolve().parent.parent
OUTAGE_SECONDS = float(os.environ.get("PAM_FAULT_OUTAGE_SECONDS", "60"))
LOAD_SECONDS = float(os.environ.get("PAM_FAULT_LOAD_SECONDS", "60"))
LOAD_CLIENTS = int(os.environ.get("PAM_FAULT_LOAD_CLIENTS", "200"))

pytestmark = [pytest.mark.production, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

QCLUSTER = """
import os
from datetime import timedelta
import django
django.setup()
import access.services.leases as leases
import access.services.sweeper as sweeper
leases.CLAIM_TIMEOUT = timedelta(seconds=10)
sweeper.LOCK_TTL = timedelta(seconds=5)
from django.core.management import call_command
call_command("qcluster")
"""


@pytest.fixture(autouse=True)
def _production_profile():
    require_production_profile()


@pytest.fixture
def figure(capsys):
    """Print a measured figure on the terminal even though pytest captures output (CI logs keep it)."""

    def show(text: str) -> None:
        with capsys.disabled():
            print(f"\n[production figure] {text}", flush=True)

    return show


# -- processes -------------------------------------------------------------------------------------------------
class RedisServer:
    """A private redis-server on a free loopback port, without persistence (a restart loses everything)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing (tests/services/production.sh installs it)"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_for(lambda: _port_open(self.port), timeout=10), "redis-server did not start"
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def restart(self, down_for: float = 1.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Processes:
    """The portal processes of one test, each with its log; all are killed at the end."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.started: list[subprocess.Popen] = []

    def spawn(self, name: str, args: list[str], **extra_env: str) -> subprocess.Popen:
        log = (self.workdir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**self.env, **extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.started.append(process)
        return process

    def qcluster(self, name: str = "qcluster") -> subprocess.Popen:
        return self.spawn(name, [sys.executable, "-c", QCLUSTER], DJANGO_SETTINGS_MODULE="portal.settings")

    def manage(self, *args: str) -> None:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr[-2000:]

    def daphne(self, name: str = "daphne") -> str:
        """daphne with a bounded connection pool, as deploy/systemd/pam-daphne@.service runs it."""
        port = free_port()
        process = self.spawn(
            name,
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "portal.asgi:application"],
            DATABASE_POOL_MAX_SIZE="20",
        )
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert process.poll() is None, self.log(name)[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        assert wait_for(answers, timeout=60, interval=0.2), self.log(name)[-3000:]
        return url

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("*.log")))

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        for process in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def processes(tmp_path, redis_server) -> Iterator[Processes]:
    env = subprocess_env(REDIS_URL=redis_server.url, PAM_LOG_LEVEL="WARNING", PAM_Q_WORKERS="2")
    group = Processes(tmp_path, env)
    yield group
    group.stop_all()


@pytest.fixture
def wire() -> Iterator[WireServer]:
    """A private wire server counting dropUser per user in ``wire.drops``."""
    server = WireServer().start()
    server.drops = Counter()
    drop = server.users.drop

    def counted_drop(name: str, db: str) -> None:
        server.drops[name] += 1
        drop(name, db)

    server.users.drop = counted_drop
    yield server
    server.stop()


# -- domain helpers ------------------------------------------------------------------------------------------
def _role_on(wire_server: WireServer, *, name: str = "app"):
    from access.models import DynamicRole
    from tests.factories import resource_on

    resource = resource_on(wire_server, name=f"wire{wire_server.port}")
    return DynamicRole.objects.create(resource=resource, name=name, db="app", roles=["read"])


def _issue(role, count: int, ttl: timedelta, holder=None):
    from django.contrib.auth import get_user_model

    from access.services.leases import lease_issue

    holder = holder or get_user_model().objects.get_or_create(username="fault-holder")[0]
    return [lease_issue(role=role, holder=holder, ttl=ttl)[0] for _ in range(count)]


def _revoke_audit(leases) -> Counter:
    from access.models import AuditEvent

    ids = {lease.lease_id for lease in leases}
    rows = AuditEvent.objects.filter(action__in=["lease.revoke", "lease.revoke_failed"])
    return Counter((row.data.get("lease_id"), row.action) for row in rows if row.data.get("lease_id") in ids)


def _states(leases) -> Counter:
    from access.models import Lease

    return Counter(Lease.objects.filter(pk__in=[lease.pk for lease in leases]).values_list("state", flat=True))


def _start_workers(processes: Processes, count: int = 1) -> None:
    for index in range(count):
        processes.qcluster(f"qcluster{index}")
    processes.manage("setup_schedules")  # also enqueues a first sweeper run on this Redis broker


def _sweeper_holder() -> str:
    """`host:pid:run` of the sweeper run holding its lock now, or ""."""
    from access.models import BackgroundLock

    lock = BackgroundLock.objects.filter(name="lease-sweeper", expires_at__gt=timezone.now()).first()
    return lock.holder if lock is not None else ""


def _sweeper_pid() -> int | None:
    holder = _sweeper_holder()
    return int(holder.split(":")[1]) if holder else None


# -- faults --------------------------------------------------------------------------------------------------
def test_a_worker_killed_mid_revocation_loses_no_lease(processes, wire, figure):
    from access.models import Lease

    role = _role_on(wire)
    _start_workers(processes)
    assert wait_for(_sweeper_pid, timeout=60, interval=0.2), processes.logs()[-3000:]
    wire.delay(3000, command="dropUser")  # each drop answers after 3 s: the worker is caught mid-revocation
    leases = _issue(role, 12, timedelta(seconds=2))
    in_flight = wait_for(lambda: _states(leases)["revoking"] >= 6, timeout=30, interval=0.05)
    assert in_flight, (_states(leases), processes.logs()[-3000:])
    victim = _sweeper_pid()
    started = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    killed_states = _states(leases)
    wire.clear_faults()

    done = wait_for(lambda: _states(leases)["expired"] == len(leases), timeout=150, interval=0.5)
    recovery = time.monotonic() - started
    figure(f"worker SIGKILL with {killed_states} -> all {len(leases)} revoked {recovery:.1f} s later")
    assert done, (_states(leases), processes.logs()[-3000:])
    audit = _revoke_audit(leases)
    for lease in leases:
        assert audit[(lease.lease_id, "lease.revoke")] == 1, audit  # one success per lease, never two
        assert 1 <= wire.drops[lease.username] <= 2, wire.drops  # a second drop only for a claim taken over
    assert all(lease.revoked_at for lease in Lease.objects.filter(pk__in=[x.pk for x in leases]))
    with pymongo.MongoClient(wire.uri) as admin:
        names = {user["user"] for user in admin.admin.command("usersInfo", {"forAllDBs": True})["users"]}
    assert not names & {lease.username for lease in leases}


def test_leases_expiring_while_mongodb_is_down_are_revoked_after_it_returns(processes, wire, figure):
    from access.services.reconcile import users_reconcile

    role = _role_on(wire)
    _start_workers(processes)
    assert wait_for(_sweeper_pid, timeout=60, interval=0.2), processes.logs()[-3000:]
    leases = _issue(role, 10, timedelta(seconds=2))
    down_at = time.monotonic()
    wire.refuse_connections("stop")  # connection refused, as a stopped mongod
    try:
        failed = wait_for(lambda: _states(leases)["revoke_failed"] == len(leases), timeout=OUTAGE_SECONDS)
        assert failed, _states(leases)
        time.sleep(max(0.0, down_at + OUTAGE_SECONDS - time.monotonic()))
    finally:
        wire.refuse_connections("off")
    back = time.monotonic()
    done = wait_for(lambda: _states(leases)["expired"] == len(leases), timeout=60, interval=0.5)
    lag = time.monotonic() - back
    audit = _revoke_audit(leases)
    figure(f"MongoDB down ~{OUTAGE_SECONDS:.0f} s: all {len(leases)} revoked {lag:.1f} s after its return")
    assert done, (_states(leases), processes.logs()[-3000:])
    assert lag < 60
    for lease in leases:
        assert audit[(lease.lease_id, "lease.revoke_failed")] >= 2, audit  # failed, and retried while down
        assert audit[(lease.lease_id, "lease.revoke")] == 1, audit
    report = users_reconcile(actor="fault-test", dry_run=True)
    assert report.found == [] and not report.errors, report


def _gateway(tmp_path: Path, name: str, redis_url: str) -> GatewayProcess:
    process = GatewayProcess(tmp_path / f"{name}.log", name=name)
    base_environment = process.environment

    def environment() -> dict[str, str]:
        return {**base_environment(), "REDIS_URL": redis_url, "PAM_LOG_LEVEL": "WARNING"}

    process.environment = environment
    return process.start()


def _open_session(gateway_process: GatewayProcess, account, *, owner: str):
    from access.models import Gateway
    from tests.factories import UserFactory

    gateway = Gateway.objects.get(pk=gateway_process.gateway_id)
    session, secret = session_on(gateway, account, user=UserFactory(username=owner))
    client = pymongo.MongoClient(gateway_process.uri(session.username, secret), serverSelectionTimeoutMS=10000)
    client.app.items.insert_one({"owner": owner})
    return session, client


def test_a_killed_gateways_sessions_are_ended_by_the_survivors(tmp_path, redis_server, wire, figure):
    from access.models import Session
    from tests.gateway_fixtures import account_on

    account = account_on(wire)
    gateway_a = _gateway(tmp_path, "gw-a", redis_server.url)
    gateway_b = _gateway(tmp_path, "gw-b", redis_server.url)
    clients = []
    try:
        opened = [_open_session(gateway_a, account, owner=f"owner-a{i}") for i in range(3)]
        survivor, survivor_client = _open_session(gateway_b, account, owner="owner-b")
        clients = [client for _, client in opened] + [survivor_client]
        started = time.monotonic()
        gateway_a.process.send_signal(signal.SIGKILL)
        gateway_a.process.wait(10)
        ids = [session.pk for session, _ in opened]
        ended = wait_for(
            lambda: not Session.objects.filter(pk__in=ids, state="open").exists(), timeout=75, interval=0.5
        )
        took = time.monotonic() - started
        figure(f"gateway SIGKILL: its {len(ids)} sessions ended as gateway_lost {took:.1f} s later")
        assert ended, gateway_b.log_text()[-3000:]
        assert took < 60
        assert set(Session.objects.filter(pk__in=ids).values_list("end_reason", flat=True)) == {"gateway_lost"}
        assert Session.objects.get(pk=survivor.pk).state == "open"
        assert survivor_client.app.items.count_documents({}) >= 1  # the survivor's client is untouched
    finally:
        for client in clients:
            client.close()
        gateway_a.stop()
        gateway_b.stop()


# -- a minimal websocket client (RFC 6455 text frames), reconnecting like the portal page --------------------
class LiveViewer:
    """Follows ws/sessions/<id>/ like portal.js: on close it reconnects; commands are deduplicated by id."""

    def __init__(self, base_url: str, path: str, cookies: str) -> None:
        self.host, self.port = base_url.removeprefix("http://").split(":")
        self.path = path
        self.cookies = cookies
        self.commands: dict[int, dict] = {}
        self.connects = 0
        self.ended: dict | None = None
        self._stop = threading.Event()
        self._socket: socket.socket | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> LiveViewer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._socket is not None:
            self._socket.close()
        self.thread.join(5)

    def _run(self) -> None:
        retries = 0
        while not self._stop.is_set() and self.ended is None:
            try:
                self._follow()
                retries = 0
            except OSError:
                pass
            retries += 1
            self._stop.wait(min(10, 0.5 * retries))

    def _follow(self) -> None:
        sock = socket.create_connection((self.host, int(self.port)), timeout=5)
        self._socket = sock
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: http://{self.host}:{self.port}\r\nCookie: {self.cookies}\r\n\r\n"
            ).encode()
        )
        stream = sock.makefile("rb")
        status = stream.readline()
        if b" 101 " not in status:
            raise OSError(f"no upgrade: {status!r}")
        while stream.readline() not in (b"\r\n", b""):
            pass
        self.connects += 1
        sock.settimeout(None)
        while not self._stop.is_set():
            header = stream.read(2)
            if len(header) < 2:
                raise OSError("closed")
            opcode, length = header[0] & 0x0F, header[1] & 0x7F
            if length == 126:
                length = int.from_bytes(stream.read(2), "big")
            elif length == 127:
                length = int.from_bytes(stream.read(8), "big")
            payload = stream.read(length)
            if opcode == 8:
                raise OSError("close frame")
            if opcode != 1:
                continue
            event = json.loads(payload)
            if event["type"] == "snapshot":
                for command in event["commands"]:
                    self.commands[command["id"]] = command
            elif event["type"] == "command":
                self.commands[event["id"]] = event
            elif event["type"] == "ended":
                self.ended = event
                return


def test_live_session_pages_continue_across_a_redis_restart(tmp_path, processes, redis_server, wire, figure):
    from access.models import Lease, Session
    from tests.gateway_fixtures import account_on

    account = account_on(wire)
    role = _role_on(wire, name="redis-role")
    leases = _issue(role, 3, timedelta(hours=1))
    _start_workers(processes)
    portal = processes.daphne()
    gateway = _gateway(tmp_path, "gw-redis", redis_server.url)
    try:
        session, client = _open_session(gateway, account, owner="redis-owner")
        viewer = LiveViewer(portal, f"/ws/sessions/{session.public_id}/", session_cookie(session.user)).start()
        assert wait_for(lambda: viewer.connects >= 1, timeout=15), processes.logs()[-3000:]

        def commands_seen(n: int) -> bool:
            return sum(1 for c in viewer.commands.values() if c["command"] == "find") >= n

        client.app.items.find_one({"before": True})
        assert wait_for(lambda: commands_seen(1), timeout=15), (viewer.commands, processes.logs()[-3000:])
        assert wait_for(_sweeper_pid, timeout=60, interval=0.2), processes.logs()[-3000:]
        expiring = _issue(role, 4, timedelta(seconds=6))  # they expire after Redis came back
        holder_before = _sweeper_holder()
        redis_server.restart(down_for=2.0)
        restarted = time.monotonic()
        client.app.items.find_one({"after": True})
        # The page either keeps its socket or reconnects (and gets the snapshot); either way the command arrives.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not commands_seen(2):
            client.app.items.find_one({"again": True})
            time.sleep(1)
        figure(
            f"Redis restart: live view continued {time.monotonic() - restarted:.1f} s later "
            f"({viewer.connects} websocket connections in all)"
        )
        assert commands_seen(2), (viewer.connects, list(viewer.commands.values())[-3:], gateway.log_text()[-2000:])
        assert Session.objects.get(pk=session.pk).state == "open"
        assert _states(leases) == Counter({"active": 3})
        assert Lease.objects.filter(pk__in=[lease.pk for lease in leases], state="active").count() == 3
        # The background work survives too: leases that expire after the restart are revoked.
        revoked = wait_for(lambda: _states(expiring)["expired"] == len(expiring), timeout=120, interval=0.5)
        figure(f"Redis restart: leases expiring after it were revoked {time.monotonic() - restarted:.1f} s after it")
        assert revoked, (_states(expiring), processes.logs()[-3000:])
        assert all(count == 1 for (_, action), count in _revoke_audit(expiring).items() if action == "lease.revoke")
        # And the sweeper's chain of runs (each run enqueues the next through Redis) outlives the restart.
        next_run = wait_for(lambda: _sweeper_holder() not in ("", holder_before), timeout=120, interval=0.5)
        assert next_run, processes.logs()[-3000:]
        later = _issue(role, 2, timedelta(seconds=2))
        assert wait_for(lambda: _states(later)["expired"] == 2, timeout=30, interval=0.5), _states(later)
        figure(f"Redis restart: a new sweeper run took over {time.monotonic() - restarted:.1f} s after the restart")
        client.close()
        viewer.stop()
    finally:
        gateway.stop()


def test_two_gateways_and_two_workers_kill_reaches_the_right_gateway_and_revoke_once(
    tmp_path, processes, redis_server, wire, figure
):
    from access.models import Session
    from access.services.sessions import session_end
    from tests.gateway_fixtures import account_on

    account = account_on(wire)
    role = _role_on(wire)
    _start_workers(processes, count=2)
    gateway_a = _gateway(tmp_path, "gw-a", redis_server.url)
    gateway_b = _gateway(tmp_path, "gw-b", redis_server.url)
    try:
        on_a, client_a = _open_session(gateway_a, account, owner="owner-on-a")
        on_b, client_b = _open_session(gateway_b, account, owner="owner-on-b")
        leases = _issue(role, 20, timedelta(seconds=3))
        session_end(session=Session.objects.get(pk=on_a.pk), reason="killed", actor="admin")
        killed_at = time.monotonic()

        def cut() -> bool:
            try:
                client_a.app.items.find_one({}, max_time_ms=2000)
            except pymongo.errors.PyMongoError:
                return True
            return False

        assert wait_for(cut, timeout=15, interval=0.5), gateway_a.log_text()[-2000:]
        figure(f"two gateways: the admin's kill cut the client on gateway A {time.monotonic() - killed_at:.1f} s later")
        assert client_b.app.items.find_one({"owner": "owner-on-b"}) is not None
        assert Session.objects.get(pk=on_b.pk).state == "open"
        assert wait_for(lambda: _states(leases)["expired"] == len(leases), timeout=90, interval=0.5), (
            _states(leases),
            processes.logs()[-3000:],
        )
        figure(f"two workers: {len(leases)} expiries revoked, dropUser per user {Counter(wire.drops.values())}")
        audit = _revoke_audit(leases)
        assert {lease.username: wire.drops[lease.username] for lease in leases} == {
            lease.username: 1 for lease in leases
        }
        assert all(audit[(lease.lease_id, "lease.revoke")] == 1 for lease in leases), audit
        client_a.close()
        client_b.close()
    finally:
        gateway_a.stop()
        gateway_b.stop()


def test_200_api_clients_issue_and_revoke_leases(tmp_path, processes, figure):
    from access.models import AccessPolicy, Lease
    from access.services.tokens import api_token_create
    from tests.factories import UserFactory

    wire_process = subprocess.Popen(
        [sys.executable, "-m", "tests.mongo", "wireserver", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = wire_process.stdout.readline().strip()
        admin_uri = line.removeprefix("MONGODB_URI=")
        from portal.demo import split_admin_uri

        target = split_admin_uri(admin_uri)
        from access.models import DynamicRole, Resource

        resource = Resource.objects.create(
            name="load",
            uri=target.uri,
            tls=False,
            admin_username=target.username,
            admin_password=target.password,
        )
        role = DynamicRole.objects.create(resource=resource, name="app", db="app", roles=["read"])
        user = UserFactory(username="load-client")
        AccessPolicy.objects.create(name="load", user=user, role=role, approval_required=False)
        _token, raw = api_token_create(user=user)
        urls = [processes.daphne("daphne-1"), processes.daphne("daphne-2")]  # each with a pool of 20 connections
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + LOAD_SECONDS

        def call(url: str, method: str, body: dict | None = None) -> dict | None:
            request = urllib.request.Request(
                url,
                method=method,
                data=json.dumps(body).encode() if body is not None else None,
                headers={"Authorization": f"Bearer {raw}", "Content-Type": "application/json"},
            )
            started = time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    payload = response.read()
                    status = response.status
            except urllib.error.HTTPError as exc:
                with lock:
                    errors.append(f"{method} {exc.code} {exc.headers.get('Content-Type')}")
                return None
            except OSError as exc:
                with lock:
                    errors.append(f"{method} {type(exc).__name__}")
                return None
            with lock:
                latencies.append(time.monotonic() - started)
            return json.loads(payload) if payload and status == 200 else {}

        def client(index: int) -> int:
            base = urls[index % len(urls)]
            done = 0
            while time.monotonic() < stop_at:
                issued = call(f"{base}/api/v1/mongodb/load/creds/app", "GET")
                if not issued:
                    continue
                call(f"{base}/api/v1/sys/leases/revoke", "PUT", {"lease_id": issued["lease_id"]})
                done += 1
            return done

        with concurrent.futures.ThreadPoolExecutor(LOAD_CLIENTS) as pool:
            cycles = sum(pool.map(client, range(LOAD_CLIENTS)))
        latencies.sort()
        p50 = statistics.median(latencies) if latencies else float("nan")
        p95 = latencies[int(len(latencies) * 0.95) - 1] if latencies else float("nan")
        figure(
            f"{LOAD_CLIENTS} API clients for {LOAD_SECONDS:.0f} s on 2 daphne processes: {cycles} issue+revoke "
            f"cycles, {len(latencies)} requests ({len(latencies) / LOAD_SECONDS:.1f}/s), errors {len(errors)}, "
            f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"
        )
        server_errors = [line for line in processes.logs().splitlines() if "Error" in line and not line.startswith(" ")]
        assert not errors, (Counter(errors).most_common(3), Counter(server_errors).most_common(5))
        assert cycles > 0
        assert Lease.objects.filter(resource=resource).exclude(state="revoked").count() == 0
    finally:
        wire_process.terminate()
        wire_process.wait(10)
