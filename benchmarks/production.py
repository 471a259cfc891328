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
"""

from __future__ import annotations

import argparse
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
        f"--leases={args.leases}",
        f"--lag-leases={args.lag_leases}",
        f"--lag-spread={args.lag_spread}",
        f"--bulk-leases={args.bulk_leases}",
        f"--bulk-audit={args.bulk_audit}",
        f"--repeat={args.repeat}",
    ]


ROWS = [
    ("API issue (creds), leases/s", "issue_per_s", "{:.1f}"),
    ("API revoke, leases/s", "revoke_per_s", "{:.1f}"),
    ("API issue latency p50 / p99, ms", ("issue_p50_ms", "issue_p99_ms"), "{:.0f} / {:.0f}"),
    ("expiry to revoked lag p50, s", "lag_p50_s", "{:.2f}"),
    ("expiry to revoked lag p99, s", "lag_p99_s", "{:.2f}"),
    ("bulk load (leases + audit), s", "bulk_load_s", "{:.0f}"),
    ("admin leases changelist, ms", "lease_changelist_ms", "{:.0f}"),
    ("  … filtered state=active, ms", "lease_filtered_ms", "{:.0f}"),
    ("  … date drill-down (year), ms", "lease_drilldown_ms", "{:.0f}"),
    ("admin audit changelist, ms", "audit_changelist_ms", "{:.0f}"),
    ("  … filtered by action, ms", "audit_filtered_ms", "{:.0f}"),
    ("  … date drill-down (year), ms", "audit_drilldown_ms", "{:.0f}"),
]


def print_table(results: dict[str, dict | str], args) -> None:
    width = 34
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
    path = f"/api/v1/mongodb/{role.resource.name}/creds/{role.name}"
    client.get(path)  # warm up: connection pools, imports
    latencies, lease_ids = [], []
    started = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        response = client.get(path)
        latencies.append(time.perf_counter() - t0)
        assert response.status_code == 200, response.status_code
        lease_ids.append(response.json()["lease_id"])
    issue_elapsed = time.perf_counter() - started
    started = time.perf_counter()
    for lease_id in lease_ids:
        response = client.put("/api/v1/sys/leases/revoke", {"lease_id": lease_id}, format="json")
        assert response.status_code == 204, response.status_code
    revoke_elapsed = time.perf_counter() - started
    return {
        "issue_per_s": n / issue_elapsed,
        "revoke_per_s": n / revoke_elapsed,
        "issue_p50_ms": percentile(latencies, 50) * 1000,
        "issue_p99_ms": percentile(latencies, 99) * 1000,
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


def run_child(args) -> int:
    workdir = Path(os.environ["PAM_VAR_DIR"])
    child_bootstrap(args.child)
    result: dict = {}
    wire, uri, password = start_wire_server(workdir)
    try:
        user, role, client = portal_setup(uri, password)
        result |= measure_api(role, client, args.leases)
        print(f"   API: {result['issue_per_s']:.1f} issued/s, {result['revoke_per_s']:.1f} revoked/s", flush=True)
        result |= measure_lag(role, user, workdir, args.lag_leases, args.lag_spread)
        print(f"   lag: p50 {result['lag_p50_s']:.2f} s, p99 {result['lag_p99_s']:.2f} s", flush=True)
    finally:
        stop_process_group(wire)
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
    parser.add_argument("--child", choices=PROFILES, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    return run_child(args) if args.child else run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
