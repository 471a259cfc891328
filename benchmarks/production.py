"""The embedded profile (SQLite + django-q2's ORM broker) next to the production one (PostgreSQL + Redis).

Run: ``eval "$(tests/services/production.sh start)"; .venv/bin/python benchmarks/production.py``
(about 5 minutes per profile; ``--profiles sqlite`` runs one). Without a PostgreSQL ``DATABASE_URL`` and a
``REDIS_URL`` in the environment the production column says so instead of a figure.

Each profile runs in a child process of its own, on a fresh database (a SQLite file in a temporary directory, or
a ``pam_bench`` database on the PostgreSQL server and Redis database 7, both emptied first), and measures:

- leases per second through the API: ``GET /api/v1/mongodb/<resource>/creds/<role>`` (bearer token, Django
  test client, so no HTTP parsing) against the in-repo wire server (``python -m tests.mongo wireserver``), then
  ``PUT /api/v1/sys/leases/revoke`` for each;
- expiry-to-revoked lag p50/p99: leases with staggered expiries, revoked by the real sweeper in a
  ``manage.py qcluster`` process (``setup_schedules`` first);
- admin changelist time for leases and audit events after bulk-loading 100,000 leases and 1,000,000 audit
  events (COPY on PostgreSQL, executemany on SQLite; the audit hashes are a precomputed chain of SHA-256 values,
  not verified): the median of several ``GET /admin/access/lease/`` and ``/admin/access/auditevent/`` through
  the test client of a superuser whose session passed OTP, timed around Django's request handler (server time).
  Also one filtered view each (state=active; one action) and the first date-hierarchy drill-down. Goal: under
  300 ms with the default filters.
- the audit chain: audit events/s appended by 1, 4 and 16 concurrent writers (processes, one database connection
  each, one event per transaction through ``audit_record``), and the API's throughput and p95 (``--audit-clients``
  clients issuing and revoking on two daphne processes) with auditing and with ``audit_record`` replaced by a no-op
  in the daphne processes, to show whether the chain serialises the system;
- concurrency: ``--clients`` (200) API clients for ``--load-seconds`` against two daphne processes (each with a
  pool of 20 database connections), each client issuing a lease and revoking it in a loop (HTTP/1.1 keep-alive),
  then the same mix of raw operations at the same concurrency (``createUser``; then dropUser, currentOp,
  killAllSessions, usersInfo and a login try on a kept connection): p50/p95/p99 of each side and the portal's
  share of the p95, (API p95 - raw p95) / API p95 (goal: at most 20 %).
Every figure comes with the 1-minute load average measured beside it: the machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROFILES = ("sqlite", "postgres")
SECTIONS = ("api", "lag", "audit", "concurrency", "changelists")
TITLES = {"sqlite": "SQLite + ORM broker", "postgres": "PostgreSQL + Redis"}
BENCH_DATABASE = "pam_bench"
BENCH_REDIS_DB = 7
ACTIONS = [
    "lease.issue",
    "lease.revoke",
    "lease.renew",
    "lease.reveal",
    "session.open",
    "session.end",
    "session.connect",
    "resource.update",
    "account.rotate",
    "request.create",
    "request.approve",
    "policy.update",
    "api_token.create",
    "mfa.verify",
    "user.login",
]
TARGET_TYPES = [
    "access.lease",
    "access.session",
    "access.resource",
    "access.account",
    "access.accessrequest",
    "auth.user",
]


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


# == the parent: one child per profile, then the table =====================================================
def profile_env(profile: str, workdir: Path) -> dict[str, str] | str:
    """The child's environment for a profile, or the reason it cannot run."""
    env = {**os.environ, "PAM_VAR_DIR": str(workdir), "PAM_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    env["PAM_EMBEDDED"] = "true"  # secrets generated into workdir; the database and Redis are set below
    env.pop("PAM_PROFILE", None)
    if profile == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
        env.pop("REDIS_URL", None)
        return env
    database_url, redis_url = os.environ.get("DATABASE_URL", ""), os.environ.get("REDIS_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")) or not redis_url.startswith("redis://"):
        return 'needs DATABASE_URL=postgres://… and REDIS_URL=redis://… (eval "$(tests/services/production.sh start)")'
    parts = urlsplit(database_url)
    env["DATABASE_URL"] = urlunsplit(parts._replace(path="/" + BENCH_DATABASE))
    env["BENCH_ADMIN_DATABASE_URL"] = database_url
    redis = urlsplit(redis_url)
    env["REDIS_URL"] = urlunsplit(redis._replace(path=f"/{BENCH_REDIS_DB}"))
    return env


def run_parent(args) -> int:
    results: dict[str, dict | str] = {}
    for profile in args.profiles:
        workdir = Path(tempfile.mkdtemp(prefix=f"pam-bench-{profile}-"))
        env = profile_env(profile, workdir)
        if isinstance(env, str):
            results[profile] = env
            continue
        out = workdir / "result.json"
        command = [sys.executable, __file__, "--child", profile, "--out", str(out), *child_options(args)]
        print(f"== {TITLES[profile]}: running (logs in {workdir}) …", flush=True)
        started = time.monotonic()
        finished = subprocess.run(command, cwd=ROOT, env=env)
        if finished.returncode != 0 or not out.exists():
            results[profile] = f"failed (exit {finished.returncode}; see {workdir})"
        else:
            results[profile] = json.loads(out.read_text())
        print(f"   done in {time.monotonic() - started:.0f} s", flush=True)
    print_table(results, args)
    return 0 if all(isinstance(r, dict) for r in results.values()) else 1


def child_options(args) -> list[str]:
    return [
        f"--sections={','.join(args.sections)}",
        f"--clients={args.clients}",
        f"--load-seconds={args.load_seconds}",
        f"--audit-seconds={args.audit_seconds}",
        f"--audit-clients={args.audit_clients}",
        f"--leases={args.leases}",
        f"--lag-leases={args.lag_leases}",
        f"--lag-spread={args.lag_spread}",
        f"--bulk-leases={args.bulk_leases}",
        f"--bulk-audit={args.bulk_audit}",
        f"--repeat={args.repeat}",
    ]


ROWS = [
    ("load average during the API rows", "api_load", "{:.1f}"),
    ("API issue (creds), leases/s", "issue_per_s", "{:.1f}"),
    ("API revoke, leases/s", "revoke_per_s", "{:.1f}"),
    ("API issue latency p50 / p99, ms", ("issue_p50_ms", "issue_p99_ms"), "{:.0f} / {:.0f}"),
    ("handler CPU per issue / revoke, ms", ("issue_cpu_ms", "revoke_cpu_ms"), "{:.1f} / {:.1f}"),
    ("expiry to revoked lag p50, s", "lag_p50_s", "{:.2f}"),
    ("expiry to revoked lag p99, s", "lag_p99_s", "{:.2f}"),
    ("audit events/s, 1 writer", "audit_1_per_s", "{:.0f}"),
    ("audit events/s, 4 writers", "audit_4_per_s", "{:.0f}"),
    ("audit events/s, 16 writers", "audit_16_per_s", "{:.0f}"),
    ("  load average meanwhile", "audit_load", "{:.1f}"),
    ("API ops/s (p95 ms), audited", ("api_audited_per_s", "api_audited_p95"), "{:.0f} ({:.0f})"),
    ("API ops/s (p95 ms), audit_record no-op", ("api_unaudited_per_s", "api_unaudited_p95"), "{:.0f} ({:.0f})"),
    ("  load average audited / no-op", ("api_audited_load", "api_unaudited_load"), "{:.1f} / {:.1f}"),
    ("concurrency: clients x seconds", ("clients", "load_seconds"), "{:.0f} x {:.0f}"),
    ("  API issue p50/p95/p99, ms", ("api_issue_p50", "api_issue_p95", "api_issue_p99"), "{:.0f}/{:.0f}/{:.0f}"),
    ("  raw createUser p50/p95/p99, ms", ("raw_issue_p50", "raw_issue_p95", "raw_issue_p99"), "{:.0f}/{:.0f}/{:.0f}"),
    ("  API revoke p50/p95/p99, ms", ("api_revoke_p50", "api_revoke_p95", "api_revoke_p99"), "{:.0f}/{:.0f}/{:.0f}"),
    ("  raw revoke p50/p95/p99, ms", ("raw_revoke_p50", "raw_revoke_p95", "raw_revoke_p99"), "{:.0f}/{:.0f}/{:.0f}"),
    ("  API all p50/p95/p99, ms", ("api_all_p50", "api_all_p95", "api_all_p99"), "{:.0f}/{:.0f}/{:.0f}"),
    ("  raw all p50/p95/p99, ms", ("raw_all_p50", "raw_all_p95", "raw_all_p99"), "{:.0f}/{:.0f}/{:.0f}"),
    ("  API / raw operations per s", ("api_ops_per_s", "raw_ops_per_s"), "{:.0f} / {:.0f}"),
    ("  API errors / raw errors", ("api_errors", "raw_errors"), "{:.0f} / {:.0f}"),
    ("  portal share of p95 (goal <= 20 %)", "portal_p95_share_pct", "{:.0f} %"),
    ("  load average API / raw", ("api_run_load", "raw_run_load"), "{:.1f} / {:.1f}"),
    ("  daphne CPU per API request, ms", "daphne_cpu_ms_per_request", "{:.1f}"),
    (
        "  server CPU per API request / raw op, ms",
        ("wire_cpu_ms_per_api_request", "wire_cpu_ms_per_raw_operation"),
        "{:.1f} / {:.1f}",
    ),
    ("  raw client CPU per operation, ms", "raw_client_cpu_ms_per_operation", "{:.1f}"),
    ("bulk load (leases + audit), s", "bulk_load_s", "{:.0f}"),
    ("admin leases changelist, ms", "lease_changelist_ms", "{:.0f}"),
    ("  … filtered state=active, ms", "lease_filtered_ms", "{:.0f}"),
    ("  … date drill-down (year), ms", "lease_drilldown_ms", "{:.0f}"),
    ("admin audit changelist, ms", "audit_changelist_ms", "{:.0f}"),
    ("  … filtered by action, ms", "audit_filtered_ms", "{:.0f}"),
    ("  … date drill-down (year), ms", "audit_drilldown_ms", "{:.0f}"),
]


def print_table(results: dict[str, dict | str], args) -> None:
    width = 38
    print()
    print(
        f"{args.leases} leases through the API, {args.lag_leases} expiring over {args.lag_spread:.0f} s; "
        f"changelists over {args.bulk_leases:,} leases and {args.bulk_audit:,} audit events "
        f"(median of {args.repeat}, server time)"
    )
    print(f"{'':<{width}}" + "".join(f"{TITLES[p]:>24}" for p in results))
    for label, keys, fmt in ROWS:
        cells = []
        for result in results.values():
            if isinstance(result, str):
                cells.append("-")
                continue
            values = [result.get(k) for k in (keys if isinstance(keys, tuple) else (keys,))]
            cells.append("-" if None in values else fmt.format(*values))
        print(f"{label:<{width}}" + "".join(f"{cell:>24}" for cell in cells))
    for profile, result in results.items():
        if isinstance(result, str):
            print(f"{TITLES[profile]}: {result}")
    goal = [
        f"{TITLES[p]} {k.split('_')[0]}"
        for p, r in results.items()
        if isinstance(r, dict)
        for k in ("lease_changelist_ms", "audit_changelist_ms")
        if r.get(k, 0) >= 300
    ]
    if "changelists" in args.sections:
        print("changelist goal (< 300 ms): " + ("met" if not goal else "MISSED by " + ", ".join(goal)))


# == the child: one profile ================================================================================
def child_bootstrap(profile: str) -> None:
    if profile == "postgres":
        import psycopg
        import redis

        with psycopg.connect(os.environ["BENCH_ADMIN_DATABASE_URL"], autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {BENCH_DATABASE}")
        redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def start_wire_server(workdir: Path) -> tuple[subprocess.Popen, str, str]:
    password = secrets.token_urlsafe(16)
    log = (workdir / "wireserver.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mongo", "wireserver", "--admin-password", password],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
    )
    line = process.stdout.readline().strip()
    if not line.startswith("MONGODB_URI="):
        raise RuntimeError(f"the wire server did not start: {line!r}")
    return process, line.split("=", 1)[1], password


def stop_process_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def portal_setup(uri: str, password: str):
    from urllib.parse import urlsplit as split

    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    from access.models import DynamicRole, Resource
    from access.services.tokens import api_token_create

    user = get_user_model().objects.create_superuser("bench", "bench@example.com", secrets.token_urlsafe(16))
    host = split(uri).netloc.rsplit("@", 1)[-1]
    resource = Resource.objects.create(
        name="bench",
        uri=f"mongodb://{host}/?directConnection=true",
        tls=False,
        admin_username="admin",
        admin_password=password,
        max_ttl=timedelta(days=2),
    )
    role = DynamicRole.objects.create(resource=resource, name="app", db="app", roles=["readWrite"])
    _token, raw = api_token_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return user, role, client


def measure_api(role, client, n: int) -> dict:
    """Sequential issue then revoke through the test client; also the CPU Django's handler spends per request."""
    from django.core.handlers.base import BaseHandler

    path = f"/api/v1/mongodb/{role.resource.name}/creds/{role.name}"
    client.get(path)  # warm up: connection pools, imports
    cpu = [0.0]
    original = BaseHandler.get_response

    def timed(handler, request):
        started = time.thread_time()
        try:
            return original(handler, request)
        finally:
            cpu[0] += time.thread_time() - started

    BaseHandler.get_response = timed
    try:
        latencies, lease_ids = [], []
        started = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            response = client.get(path)
            latencies.append(time.perf_counter() - t0)
            assert response.status_code == 200, response.status_code
            lease_ids.append(response.json()["lease_id"])
        issue_elapsed, issue_cpu = time.perf_counter() - started, cpu[0]
        cpu[0] = 0.0
        started = time.perf_counter()
        for lease_id in lease_ids:
            response = client.put("/api/v1/sys/leases/revoke", {"lease_id": lease_id}, format="json")
            assert response.status_code == 204, response.status_code
        revoke_elapsed, revoke_cpu = time.perf_counter() - started, cpu[0]
    finally:
        BaseHandler.get_response = original
    return {
        "issue_per_s": n / issue_elapsed,
        "revoke_per_s": n / revoke_elapsed,
        "issue_p50_ms": percentile(latencies, 50) * 1000,
        "issue_p99_ms": percentile(latencies, 99) * 1000,
        "issue_cpu_ms": issue_cpu / n * 1000,
        "revoke_cpu_ms": revoke_cpu / n * 1000,
    }


def measure_lag(role, user, workdir: Path, n: int, spread: float) -> dict:
    from django.core.management import call_command

    from access.models import Lease
    from access.models.leases import LeaseState
    from access.services.leases import lease_issue

    with open(os.devnull, "w") as quiet:
        call_command("setup_schedules", stdout=quiet)
    log = (workdir / "qcluster.log").open("w")
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env={**os.environ, "PAM_Q_WORKERS": "2"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        ids = []
        for index in range(n):
            lease, _password = lease_issue(role=role, holder=user, ttl=timedelta(seconds=5 + spread * index / n))
            ids.append(lease.pk)
        deadline = time.monotonic() + spread + 120
        pending = Lease.objects.filter(pk__in=ids, state__in=[LeaseState.ACTIVE, LeaseState.REVOKING])
        while pending.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        rows = list(Lease.objects.filter(pk__in=ids).values_list("expires_at", "revoked_at", "state"))
    finally:
        stop_process_group(cluster)
    lags = [(revoked - expires).total_seconds() for expires, revoked, state in rows if revoked is not None]
    return {
        "lag_p50_s": percentile(lags, 50),
        "lag_p99_s": percentile(lags, 99),
        "lag_revoked": len(lags),
        "lag_not_revoked": len(rows) - len(lags),
    }


# -- bulk load -----------------------------------------------------------------------------------------------
def bulk_load(role, user, n_leases: int, n_audit: int) -> float:
    from django.db import connection, transaction

    from access.crypto import encrypt

    started = time.perf_counter()
    now = datetime.now(UTC)
    ciphertext = encrypt("bench-password-not-used-0123456789")  # one value for all: never revealed here
    adapt = connection.ops.adapt_datetimefield_value  # SQLite stores text, PostgreSQL takes datetimes
    states = ["expired"] * 70 + ["revoked"] * 24 + ["active"] * 5 + ["revoke_failed"]
    lease_rows = []
    for i in range(n_leases):
        issued = now - timedelta(seconds=i * 180 * 86400 / n_leases)
        state = states[i % len(states)]
        expires = issued + timedelta(hours=1) if state != "active" else now + timedelta(hours=1)
        issued = min(issued, expires)
        revoked = expires if state in ("expired", "revoked") else None
        lease_rows.append(
            (
                f"mongodb/bench/creds/app/bulk{i:08d}",
                role.pk,
                role.resource_id,
                user.pk,
                "bench",
                "app",
                f"v-bench-app-bulk{i:08d}",
                ciphertext,
                adapt(issued),
                adapt(issued),
                adapt(expires),
                adapt(expires),
                state,
                0,
                "",
                None,
                adapt(revoked) if revoked else None,
                "expired" if state == "expired" else ("revoked" if state == "revoked" else ""),
            )
        )
    lease_columns = (
        "lease_id, role_id, resource_id, holder_id, holder_name, db, username, password, revealed_at, issued_at, "
        "expires_at, max_expires_at, state, attempts, last_error, next_attempt_at, revoked_at, revoke_reason"
    )
    audit_columns = (
        "seq, created_at, actor_id, actor_name, action, target_type, target_id, target_name, data, ip, "
        "request_id, prev_hash, hash"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(MAX(seq), 0) FROM access_auditevent")
        first_seq = cursor.fetchone()[0] + 1
        cursor.execute("SELECT hash FROM access_auditevent ORDER BY seq DESC LIMIT 1")
        row = cursor.fetchone()
        prev = row[0] if row else "0" * 64

        def audit_rows():
            nonlocal prev
            for i in range(n_audit):
                seq = first_seq + i
                created = now - timedelta(seconds=(n_audit - i) * 400 * 86400 / n_audit)
                digest = hashlib.sha256(f"{prev}{seq}".encode()).hexdigest()
                yield (
                    seq,
                    adapt(created),
                    user.pk if i % 3 else None,
                    "bench" if i % 3 else "system",
                    ACTIONS[i % len(ACTIONS)],
                    TARGET_TYPES[i % len(TARGET_TYPES)],
                    str(i),
                    f"target {i}",
                    '{"bulk": true}',
                    "127.0.0.1" if i % 2 else None,
                    "",
                    prev,
                    digest,
                )
                prev = digest

        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY access_lease ({lease_columns}) FROM STDIN") as copy:
                for lease_row in lease_rows:
                    copy.write_row(lease_row)
            with cursor.cursor.copy(f"COPY access_auditevent ({audit_columns}) FROM STDIN") as copy:
                for audit_row in audit_rows():
                    copy.write_row(audit_row)
        else:
            marks = ", ".join(["%s"] * 18)
            cursor.executemany(f"INSERT INTO access_lease ({lease_columns}) VALUES ({marks})", lease_rows)
            marks = ", ".join(["%s"] * 13)
            batch: list[tuple] = []
            for audit_row in audit_rows():
                batch.append(audit_row)
                if len(batch) == 20_000:
                    cursor.executemany(f"INSERT INTO access_auditevent ({audit_columns}) VALUES ({marks})", batch)
                    batch.clear()
            if batch:
                cursor.executemany(f"INSERT INTO access_auditevent ({audit_columns}) VALUES ({marks})", batch)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return time.perf_counter() - started


# -- changelists ---------------------------------------------------------------------------------------------
class HandlerTimer:
    """Times Django's request handler (what the server spends on a request, without the test client)."""

    def __init__(self) -> None:
        from django.core.handlers.base import BaseHandler

        self.last = 0.0
        original = BaseHandler.get_response

        def timed(handler, request):
            started = time.perf_counter()
            try:
                return original(handler, request)
            finally:
                self.last = time.perf_counter() - started

        BaseHandler.get_response = timed


def admin_client(user):
    from django.test import Client
    from django_otp import DEVICE_ID_SESSION_KEY

    from access.otp import totp_device_create

    device = totp_device_create(user=user)
    client = Client()
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


def time_page(client, timer: HandlerTimer, path: str, repeat: int) -> float:
    response = client.get(path)  # warm up (and check)
    assert response.status_code == 200, (path, response.status_code)
    times = []
    for _ in range(repeat):
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        times.append(timer.last)
    return statistics.median(times) * 1000


def measure_changelists(user, repeat: int) -> dict:
    from access.models import AuditEvent, Lease

    timer = HandlerTimer()
    client = admin_client(user)
    lease_year = Lease.objects.order_by("-issued_at").values_list("issued_at", flat=True).first().year
    audit_year = AuditEvent.objects.order_by("-seq").values_list("created_at", flat=True).first().year
    return {
        "lease_changelist_ms": time_page(client, timer, "/admin/access/lease/", repeat),
        "lease_filtered_ms": time_page(client, timer, "/admin/access/lease/?state__exact=active", repeat),
        "lease_drilldown_ms": time_page(client, timer, f"/admin/access/lease/?issued_at__year={lease_year}", repeat),
        "audit_changelist_ms": time_page(client, timer, "/admin/access/auditevent/", repeat),
        "audit_filtered_ms": time_page(client, timer, "/admin/access/auditevent/?action=session.open", repeat),
        "audit_drilldown_ms": time_page(
            client, timer, f"/admin/access/auditevent/?created_at__year={audit_year}", repeat
        ),
    }


# -- the audit chain ------------------------------------------------------------------------------------------
def load_now() -> float:
    return os.getloadavg()[0]


AUDIT_WRITER = """
import os, sys, time
from pathlib import Path
import django
django.setup()
from access.models import AuditAction
from access.services.audit import audit_record
start, seconds, index = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
(start.parent / f"ready-{index}").touch()
while not start.exists():
    time.sleep(0.005)
stop_at, count = time.monotonic() + seconds, 0
while time.monotonic() < stop_at:
    audit_record(action=AuditAction.SCHEDULES_SETUP, actor="bench-writer", data={"w": index, "n": count})
    count += 1
print(count)
"""


def _audit_writers_run(writers: int, seconds: float) -> float:
    """Events/s appended by `writers` processes at once for `seconds`, one event per transaction each.

    Processes, not threads: each has its own database connection and its own interpreter, so what limits the rate
    is the chain (its lock and its head read) and the database, not one process's GIL.
    """
    gate = Path(tempfile.mkdtemp(prefix="pam-audit-writers-"))
    start = gate / "start"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", AUDIT_WRITER, str(start), str(seconds), str(index)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for index in range(writers)
    ]
    deadline = time.monotonic() + 120
    while len(list(gate.glob("ready-*"))) < writers and time.monotonic() < deadline:
        time.sleep(0.05)
    start.touch()
    counts = []
    for process in processes:
        output, _ = process.communicate(timeout=seconds + 120)
        assert process.returncode == 0, f"an audit writer failed (exit {process.returncode})"
        counts.append(int(output.strip().splitlines()[-1]))
    return sum(counts) / seconds


def measure_audit_writers(seconds: float) -> dict:
    """Audit events/s appended by 1, 4 and 16 processes at once; the chain must hold afterwards."""
    from access.selectors import audit_chain_verify

    result: dict = {}
    loads = []
    for writers in (1, 4, 16):
        result[f"audit_{writers}_per_s"] = _audit_writers_run(writers, seconds)
        loads.append(load_now())
        print(f"   audit: {writers} writers {result[f'audit_{writers}_per_s']:.0f} events/s", flush=True)
    report = audit_chain_verify()
    assert report.ok, report.problem
    result["audit_load"] = max(loads)
    return result


def _audit_switched_off():
    """Replace audit_record and audit_record_many by no-ops wherever they were imported; returns the undo."""
    import access.services.audit as audit_module

    originals = {"audit_record": audit_module.audit_record, "audit_record_many": audit_module.audit_record_many}
    fakes = {"audit_record": lambda **_: None, "audit_record_many": lambda **_: []}
    patched = [(audit_module, name, original) for name, original in originals.items()]
    for name in originals:  # modules imported from now on take the no-ops
        setattr(audit_module, name, fakes[name])
    for module in list(sys.modules.values()):
        for name, original in originals.items():
            if getattr(module, name, None) is original:
                setattr(module, name, fakes[name])
                patched.append((module, name, original))

    def undo() -> None:
        for module, name, original in patched:
            setattr(module, name, original)

    return undo


def measure_audit_cost(role, raw_token: str, workdir: Path, args, wire_pid: int) -> dict:
    """The API's throughput with auditing and with audit_record a no-op: `--audit-clients` on two daphne each."""
    result = {}
    for audit in (True, False):
        run = api_load_run(
            role,
            raw_token,
            workdir,
            clients=args.audit_clients,
            seconds=args.audit_seconds * 2,
            wire_pid=wire_pid,
            audit=audit,
        )
        side = "audited" if audit else "unaudited"
        every = run["times"]["issue"] + run["times"]["revoke"]
        result |= {
            f"api_{side}_per_s": run["ops"],
            f"api_{side}_p95": percentile(every, 95) * 1000,
            f"api_{side}_errors": run["errors"],
            f"api_{side}_load": run["load"],
        }
        print(f"   API {side}: {run['ops']} operations/s, p95 {result[f'api_{side}_p95']:.0f} ms", flush=True)
    return result


# -- 200 clients ---------------------------------------------------------------------------------------------
DAPHNE_WITHOUT_AUDIT = """
import sys
import django
django.setup()
sys.path.insert(0, "benchmarks")
from production import _audit_switched_off
_audit_switched_off()
from daphne.cli import CommandLineInterface
CommandLineInterface().run(sys.argv[1:])
"""


def start_daphne(workdir: Path, name: str, *, audit: bool = True) -> tuple[subprocess.Popen, int]:
    """daphne serving the portal on a free port; with `audit` False, audit_record is a no-op in it (to compare)."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (workdir / f"{name}.log").open("w")
    launch = [sys.executable, "-m", "daphne"] if audit else [sys.executable, "-c", DAPHNE_WITHOUT_AUDIT]
    process = subprocess.Popen(
        [*launch, "-b", "127.0.0.1", "-p", str(port), "portal.asgi:application"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_POOL_MAX_SIZE": "20"},  # as deploy/systemd/pam-daphne@.service runs it
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited; see {workdir / (name + '.log')}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return process, port
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("daphne did not answer")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentiles(prefix: str, values: list[float]) -> dict:
    return {f"{prefix}_p{p}": percentile(values, p) * 1000 for p in (50, 95, 99)}


def _run_clients(clients: int, seconds: float, cycle) -> tuple[dict[str, list[float]], int, int]:
    """Run `cycle(state, record)` in `clients` threads for `seconds`; each records (kind, seconds) or an error."""
    import threading

    times: dict[str, list[float]] = {"issue": [], "revoke": []}
    errors = [0]
    lock = threading.Lock()
    stop_at = [0.0]
    # The clock starts once every client is warm: the barrier's action runs before any of them is released.
    gate = threading.Barrier(clients + 1, action=lambda: stop_at.__setitem__(0, time.monotonic() + seconds))

    def record(kind: str, elapsed: float | None) -> None:
        with lock:
            if elapsed is None:
                errors[0] += 1
            else:
                times[kind].append(elapsed)

    def client(index: int) -> None:
        state: dict = {"index": index}
        with contextlib.suppress(Exception):  # one untimed cycle: connections made, caches warm
            cycle(state, None)
        gate.wait()
        while time.monotonic() < stop_at[0]:
            try:
                cycle(state, record)
            except Exception:
                record("issue", None)
        state.get("close", lambda: None)()

    threads = [threading.Thread(target=client, args=(index,), daemon=True) for index in range(clients)]
    for thread in threads:
        thread.start()
    gate.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join(timeout=seconds + 180)
    elapsed = time.monotonic() - started
    return times, errors[0], int(sum(len(v) for v in times.values()) / elapsed)


def api_load_run(role, raw_token: str, workdir: Path, *, clients: int, seconds: float, wire_pid: int, audit=True):
    """`clients` API clients (issue, then revoke, in a loop; HTTP/1.1 keep-alive) on two fresh daphne processes."""
    import http.client

    daphnes = [start_daphne(workdir, f"daphne-{index}{'' if audit else '-unaudited'}", audit=audit) for index in (1, 2)]
    path = f"/api/v1/mongodb/{role.resource.name}/creds/{role.name}"
    headers = {"Authorization": f"Bearer {raw_token}", "Content-Type": "application/json"}

    def api_cycle(state: dict, record) -> None:
        if "conn" not in state:
            port = daphnes[state["index"] % 2][1]
            state["conn"] = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            state["close"] = state["conn"].close

        def call(method: str, url: str, body: bytes | None) -> tuple[int, bytes, float]:
            started = time.monotonic()
            try:
                state["conn"].request(method, url, body=body, headers=headers)
                response = state["conn"].getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                state["conn"].close()
                raise
            return response.status, payload, time.monotonic() - started

        status, payload, elapsed = call("GET", path, None)
        if status != 200:
            if record:
                record("issue", None)
            return
        if record:
            record("issue", elapsed)
        lease_id = json.loads(payload)["lease_id"]
        body = json.dumps({"lease_id": lease_id}).encode()
        status, _payload, elapsed = call("PUT", "/api/v1/sys/leases/revoke", body)
        if record:
            record("revoke", elapsed if status == 204 else None)

    try:
        load = load_now()
        cpu_before = [process_cpu(process.pid) for process, _port in daphnes] + [process_cpu(wire_pid)]
        times, errors, ops = _run_clients(clients, seconds, api_cycle)
        cpu_after = [process_cpu(process.pid) for process, _port in daphnes] + [process_cpu(wire_pid)]
        load = max(load, load_now())
    finally:
        for process, _port in daphnes:
            stop_process_group(process)
    requests = max(1, sum(len(v) for v in times.values()))
    return {
        "times": times,
        "errors": errors,
        "ops": ops,
        "load": load,
        "daphne_cpu_ms_per_request": (sum(cpu_after[:2]) - sum(cpu_before[:2])) * 1000 / requests,
        "wire_cpu_ms_per_request": (cpu_after[2] - cpu_before[2]) * 1000 / requests,
    }


def measure_concurrency(role, raw_token: str, uri: str, password: str, workdir: Path, args, wire_pid: int) -> dict:
    """`args.clients` API clients on two daphne processes, then the same mix raw at the same concurrency."""
    import queue
    from urllib.parse import urlsplit as split

    import pymongo

    from gatewayproxy.wire import scram

    api = api_load_run(role, raw_token, workdir, clients=args.clients, seconds=args.load_seconds, wire_pid=wire_pid)
    api_times, api_errors, api_ops, api_load = api["times"], api["errors"], api["ops"], api["load"]
    print(f"   API: {api_ops} operations/s, {api_errors} errors", flush=True)

    host = split(uri).netloc.rsplit("@", 1)[-1]
    address = f"mongodb://{host}/?directConnection=true"
    admin = pymongo.MongoClient(address, username="admin", password=password, maxPoolSize=args.clients)
    probes: queue.Queue = queue.Queue()
    for _ in range(16):  # as many login-check clients as the two daphne processes keep (8 each)
        probes.put(pymongo.MongoClient(address, maxPoolSize=1, retryReads=False))
    db = admin[role.db]

    def raw_cycle(state: dict, record) -> None:
        name, pwd = f"raw-{secrets.token_hex(8)}", secrets.token_urlsafe(24)
        started = time.monotonic()
        db.command("createUser", name, pwd=pwd, roles=list(role.roles), writeConcern={"w": "majority"})
        if record:
            record("issue", time.monotonic() - started)
        started = time.monotonic()
        db.command("dropUser", name, writeConcern={"w": "majority"})
        mine = {"$elemMatch": {"user": name, "db": role.db}}
        admin.admin.command({"currentOp": 1, "$all": True, "$ownOps": False, "effectiveUsers": mine})
        admin.admin.command("killAllSessions", [{"user": name, "db": role.db}])
        assert not db.command("usersInfo", {"user": name, "db": role.db})["users"]
        probe = probes.get()
        try:
            probe.admin.command({"hello": 1, "saslSupportedMechs": f"{role.db}.{name}"})  # as the portal asks
            scram.authenticate(
                lambda command: probe[role.db].command({k: v for k, v in command.items() if k != "$db"}),
                mechanism="SCRAM-SHA-256",
                username=name,
                password=pwd,
                source=role.db,
            )
            raise AssertionError("a dropped user logged in")
        except pymongo.errors.OperationFailure as exc:
            if exc.code != 18:
                raise
        finally:
            probes.put(probe)
        if record:
            record("revoke", time.monotonic() - started)

    try:
        raw_load = load_now()
        wire_before, own_before = process_cpu(wire_pid), process_cpu(os.getpid())
        raw_times, raw_errors, raw_ops = _run_clients(args.clients, args.load_seconds, raw_cycle)
        wire_cpu_raw, own_cpu_raw = process_cpu(wire_pid) - wire_before, process_cpu(os.getpid()) - own_before
        raw_load = max(raw_load, load_now())
        raw_requests = sum(len(v) for v in raw_times.values())
    finally:
        admin.close()
        while not probes.empty():
            probes.get().close()
    print(f"   raw: {raw_ops} operations/s, {raw_errors} errors", flush=True)

    result = {"clients": args.clients, "load_seconds": args.load_seconds}
    for side, times in (("api", api_times), ("raw", raw_times)):
        result |= _percentiles(f"{side}_issue", times["issue"])
        result |= _percentiles(f"{side}_revoke", times["revoke"])
        result |= _percentiles(f"{side}_all", times["issue"] + times["revoke"])
    result |= {
        "api_ops_per_s": api_ops,
        "raw_ops_per_s": raw_ops,
        "api_errors": api_errors,
        "raw_errors": raw_errors,
        "api_run_load": api_load,
        "raw_run_load": raw_load,
        "daphne_cpu_ms_per_request": api["daphne_cpu_ms_per_request"],
        "wire_cpu_ms_per_api_request": api["wire_cpu_ms_per_request"],
        "wire_cpu_ms_per_raw_operation": wire_cpu_raw * 1000 / max(1, raw_requests),
        "raw_client_cpu_ms_per_operation": own_cpu_raw * 1000 / max(1, raw_requests),
        "portal_p95_share_pct": max(0.0, (result["api_all_p95"] - result["raw_all_p95"]) / result["api_all_p95"] * 100),
    }
    return result


def load_user(role):
    """A person (not a superuser) whose policy grants the role without approval, and their API token."""
    from django.contrib.auth import get_user_model

    from access.models import AccessPolicy
    from access.services.tokens import api_token_create

    user = get_user_model().objects.create_user("load", "load@example.com", secrets.token_urlsafe(16))
    AccessPolicy.objects.create(name="load", user=user, role=role, approval_required=False)
    _token, raw = api_token_create(user=user)
    return raw


def run_child(args) -> int:
    workdir = Path(os.environ["PAM_VAR_DIR"])
    child_bootstrap(args.child)
    result: dict = {}
    sections = set(args.sections)
    wire, uri, password = start_wire_server(workdir)
    try:
        user, role, client = portal_setup(uri, password)
        if "api" in sections:
            result["api_load"] = load_now()
            result |= measure_api(role, client, args.leases)
            print(f"   API: {result['issue_per_s']:.1f} issued/s, {result['revoke_per_s']:.1f} revoked/s", flush=True)
        if "lag" in sections:
            result |= measure_lag(role, user, workdir, args.lag_leases, args.lag_spread)
            print(f"   lag: p50 {result['lag_p50_s']:.2f} s, p99 {result['lag_p99_s']:.2f} s", flush=True)
        if "audit" in sections:
            result |= measure_audit_writers(args.audit_seconds)
            result |= measure_audit_cost(role, load_user(role), workdir, args, wire.pid)
        if "concurrency" in sections:
            from access.models import AccessPolicy

            token = load_user(role) if not AccessPolicy.objects.filter(name="load").exists() else None
            if token is None:
                from access.services.tokens import api_token_create

                _token, token = api_token_create(user=AccessPolicy.objects.get(name="load").user)
            result |= measure_concurrency(role, token, uri, password, workdir, args, wire.pid)
    finally:
        stop_process_group(wire)
    if "changelists" in sections:
        result["bulk_load_s"] = bulk_load(role, user, args.bulk_leases, args.bulk_audit)
        print(f"   bulk load: {result['bulk_load_s']:.0f} s", flush=True)
        result |= measure_changelists(user, args.repeat)
    Path(args.out).write_text(json.dumps(result))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", choices=PROFILES, default=list(PROFILES))
    parser.add_argument("--leases", type=int, default=200, help="leases issued and revoked through the API")
    parser.add_argument("--lag-leases", type=int, default=100, help="leases with staggered expiries")
    parser.add_argument("--lag-spread", type=float, default=20.0, help="seconds over which they expire")
    parser.add_argument("--bulk-leases", type=int, default=100_000)
    parser.add_argument("--bulk-audit", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="timed GETs per changelist")
    parser.add_argument(
        "--sections",
        type=lambda text: text.split(","),
        default=list(SECTIONS),
        help=f"comma-separated, from {','.join(SECTIONS)}",
    )
    parser.add_argument("--clients", type=int, default=200, help="concurrent API clients (and raw ones)")
    parser.add_argument("--load-seconds", type=float, default=60.0, help="seconds each concurrency side runs")
    parser.add_argument("--audit-seconds", type=float, default=10.0, help="seconds per audit measurement")
    parser.add_argument("--audit-clients", type=int, default=50, help="API clients for the with/without audit runs")
    parser.add_argument("--child", choices=PROFILES, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    return run_child(args) if args.child else run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
