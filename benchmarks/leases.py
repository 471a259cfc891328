"""Lease throughput, expiry lag and a 10,000-lease expiry storm, against the wire server and FerretDB.

Run: ``.venv/bin/python benchmarks/leases.py`` (wire server: about 6 minutes; ``--ferretdb`` adds FerretDB,
``--no-wire --ferretdb`` runs FerretDB alone, ``--storm 0`` skips the storm). FerretDB v1 on SQLite serves user
commands and SCRAM logins slowly and times out under the sweeper's 16 parallel revocations, so its storm is
smaller by default (``--ferretdb-storm``) and its failed attempts show up as retries. It prints one table per server:

- issue and revoke rates through the API (Django test client, bearer token, ``creds`` and ``sys/leases/revoke``)
  next to raw pymongo ``createUser`` + ``dropUser`` on the same server, and their ratio;
- expiry-to-revoked lag p50/p99/max: N leases with staggered expiries, revoked by the real sweeper running in
  a ``manage.py qcluster`` process;
- the storm: STORM leases expiring within the same minute (users created with raw pymongo, lease rows
  bulk-inserted: the issue path is measured above), the time from the minute's start until every one is
  revoked, and API latency p50/p99 (lease lookups and new creds) measured meanwhile.

The portal runs on a throwaway SQLite file under a temporary directory; the wire server runs in a process of
its own with mongod's SCRAM iteration counts (10000/15000), so that server, sweeper and API share the machine as
they would in production.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORKDIR = Path(tempfile.gettempdir())  # replaced by a fresh directory in main()


def _bootstrap() -> None:
    """Point Django at a throwaway SQLite file and set it up; only when run as a script, never on import."""
    global WORKDIR, pymongo, get_user_model, call_command, timezone, APIClient, DynamicRole, Lease, Resource
    global LeaseState, lease_id_for, lease_issue, password_generate, system_tag, api_token_create
    WORKDIR = Path(tempfile.mkdtemp(prefix="pam-bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ["DATABASE_URL"] = f"sqlite:///{WORKDIR / 'bench.sqlite3'}"
    os.environ["PAM_VAR_DIR"] = str(WORKDIR)
    os.environ["PAM_EMBEDDED"] = "true"  # secrets generated into WORKDIR
    os.environ.setdefault("PAM_LOG_LEVEL", "WARNING")
    import logging

    import django

    django.setup()
    logging.getLogger("connectors.mongodb").setLevel(logging.ERROR)  # FerretDB: "customData not stored", per user
    import pymongo
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import timezone
    from rest_framework.test import APIClient

    from access.models import DynamicRole, Lease, Resource
    from access.models.leases import LeaseState
    from access.services.leases import lease_id_for, lease_issue, password_generate, system_tag
    from access.services.tokens import api_token_create


WIRE_SERVER_SCRIPT = """
import asyncio, sys
from tests.mongo.wireserver import WireServer
server = WireServer(admin_password=sys.argv[1])
async def main():
    await server.listen()
    print(server.port, flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


# -- servers ---------------------------------------------------------------------------------------------------
class Server:
    """A MongoDB-compatible server for the benchmark: host:port, admin credentials, whether it has roles."""

    def __init__(self, name: str, host_port: str, admin: str, password: str, roles: bool, stop):
        self.name, self.host_port, self.admin, self.password, self.roles, self.stop = (
            name,
            host_port,
            admin,
            password,
            roles,
            stop,
        )

    def client(self) -> pymongo.MongoClient:
        return pymongo.MongoClient(
            f"mongodb://{self.host_port}/?directConnection=true",
            username=self.admin,
            password=self.password,
            authSource="admin",
        )


def start_wire_server() -> Server:
    password = secrets.token_urlsafe(16)
    process = subprocess.Popen(
        [sys.executable, "-c", WIRE_SERVER_SCRIPT, password],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    port = int(process.stdout.readline())

    def stop():
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)

    return Server("wire server", f"127.0.0.1:{port}", "admin", password, True, stop)


def start_ferretdb() -> Server:
    from tests.mongo.ferretdb import FerretDB

    ferret = FerretDB(WORKDIR / "ferretdb").start()
    return Server("FerretDB", f"127.0.0.1:{ferret.port}", ferret.username, ferret.password, False, ferret.stop)


# -- the portal side -------------------------------------------------------------------------------------------
def portal_setup(server: Server, tag: str) -> tuple[Resource, DynamicRole, APIClient]:
    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    resource = Resource.objects.create(
        name=f"bench-{tag}",
        uri=f"mongodb://{server.host_port}/?directConnection=true",
        tls=False,
        admin_username=server.admin,
        admin_password=server.password,
        max_ttl=timedelta(days=2),
    )
    role = DynamicRole.objects.create(
        resource=resource,
        name="app",
        db="app" if server.roles else "admin",
        roles=["readWrite"] if server.roles else [],
    )
    _token, raw = api_token_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return resource, role, client


def start_qcluster() -> subprocess.Popen:
    with open(os.devnull, "w") as quiet:
        call_command("setup_schedules", stdout=quiet)
    log = open(WORKDIR / "qcluster.log", "w")  # noqa: SIM115 - the qcluster process writes it until stopped
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env={**os.environ, "PAM_Q_WORKERS": "2"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_qcluster(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# -- measurements ----------------------------------------------------------------------------------------------
def measure_api(role: DynamicRole, client: APIClient, n: int) -> tuple[float, float]:
    path = f"/api/v1/mongodb/{role.resource.name}/creds/{role.name}"
    started = time.perf_counter()
    lease_ids = []
    for _ in range(n):
        response = client.get(path)
        assert response.status_code == 200, response.content
        lease_ids.append(response.json()["lease_id"])
    issue_rate = n / (time.perf_counter() - started)
    started = time.perf_counter()
    for lease_id in lease_ids:
        response = client.put("/api/v1/sys/leases/revoke", {"lease_id": lease_id}, format="json")
        assert response.status_code == 204, response.content
    revoke_rate = n / (time.perf_counter() - started)
    return issue_rate, revoke_rate


def measure_raw(server: Server, role: DynamicRole, n: int) -> tuple[float, float]:
    with server.client() as client:
        db = client[role.db]
        names = [f"raw-{secrets.token_hex(6)}" for _ in range(n)]
        started = time.perf_counter()
        for name in names:
            db.command(
                "createUser", name, pwd=password_generate(), roles=list(role.roles), writeConcern={"w": "majority"}
            )
        create_rate = n / (time.perf_counter() - started)
        started = time.perf_counter()
        for name in names[: n // 2]:
            db.command("dropUser", name, writeConcern={"w": "majority"})
        drop_rate = (n // 2) / (time.perf_counter() - started)
        # What a verified revocation does, by hand: drop, end sessions, look the user up, try its password.
        started = time.perf_counter()
        for name in names[n // 2 :]:
            db.command("dropUser", name, writeConcern={"w": "majority"})
            with contextlib.suppress(pymongo.errors.OperationFailure):  # FerretDB has no killAllSessions
                client.admin.command("killAllSessions", [{"user": name, "db": role.db}])
            db.command("usersInfo", {"user": name, "db": role.db})
            probe = pymongo.MongoClient(
                f"mongodb://{server.host_port}/?directConnection=true",
                username=name,
                password="wrong-password-123456",
                authSource=role.db,
            )
            try:
                probe[role.db].command("ping")
            except pymongo.errors.OperationFailure:
                pass
            finally:
                probe.close()
        verified_rate = (n - n // 2) / (time.perf_counter() - started)
    return create_rate, drop_rate, verified_rate


def wait_for(predicate, timeout: float, step: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def measure_lag(role: DynamicRole, n: int, spread: float) -> list[float]:
    holder = get_user_model().objects.get(username="bench")
    leases = []
    for index in range(n):
        lease, _ = lease_issue(role=role, holder=holder, ttl=timedelta(seconds=4 + spread * index / n))
        leases.append(lease.pk)
    done = wait_for(
        lambda: not Lease.objects.filter(pk__in=leases, state__in=[LeaseState.ACTIVE, LeaseState.REVOKING]).exists(),
        timeout=spread + 60,
    )
    assert done, "the sweeper did not revoke every lease"
    rows = Lease.objects.filter(pk__in=leases).values_list("expires_at", "revoked_at", "state")
    failed = [state for _, _, state in rows if state != LeaseState.EXPIRED]
    assert not failed, f"not revoked: {failed[:5]}"
    return [(revoked - expires).total_seconds() for expires, revoked, _ in rows]


def storm_prepare(server: Server, role: DynamicRole, n: int, window_start) -> list[int]:
    """Create n tagged users with raw pymongo (in threads) and their lease rows, expiring within one minute."""
    from concurrent.futures import ThreadPoolExecutor

    holder = get_user_model().objects.get(username="bench")
    rows = []
    for index in range(n):
        username = f"v-bench-storm-{index:05d}-{secrets.token_hex(4)}"
        expires = window_start + timedelta(seconds=60 * index / n)
        rows.append(
            Lease(
                lease_id=lease_id_for(role=role),
                role=role,
                resource=role.resource,
                holder=holder,
                holder_name="bench",
                db=role.db,
                username=username,
                password=password_generate(),
                issued_at=timezone.now(),
                expires_at=expires,
                max_expires_at=expires,
            )
        )
    Lease.objects.bulk_create(rows, batch_size=500)
    created = list(Lease.objects.filter(role=role, username__startswith="v-bench-storm-"))
    with server.client() as client:
        db = client[role.db]

        def create(lease: Lease) -> None:
            db.command(
                "createUser",
                lease.username,
                pwd=lease.password.reveal(),
                roles=list(role.roles),
                mechanisms=["SCRAM-SHA-256"],
                **(
                    {"customData": {"pam": {"lease_id": lease.lease_id, "system": system_tag()}}}
                    if server.roles
                    else {}
                ),
            )

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, created))
    return [lease.pk for lease in created]


def storm_run(role: DynamicRole, client: APIClient, ids: list[int], window_start) -> dict:
    latencies: list[float] = []
    errors = [0]
    stop = threading.Event()
    probe_lease = Lease.objects.filter(pk__in=ids).order_by("-expires_at").values_list("lease_id", flat=True).first()

    def probe() -> None:
        from django.db import connection

        path = f"/api/v1/mongodb/{role.resource.name}/creds/{role.name}"
        turn = 0
        try:
            while not stop.is_set():
                started = time.perf_counter()
                if turn % 2:
                    response = client.get(path)
                    ok = response.status_code == 200
                else:
                    response = client.put("/api/v1/sys/leases/lookup", {"lease_id": probe_lease}, format="json")
                    ok = response.status_code == 200
                latencies.append(time.perf_counter() - started)
                errors[0] += 0 if ok else 1
                turn += 1
                time.sleep(0.05)
        finally:
            connection.close()

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    done = wait_for(lambda: not Lease.objects.filter(pk__in=ids).exclude(state=LeaseState.EXPIRED).exists(), 600, 0.5)
    finished = timezone.now()
    stop.set()
    thread.join()
    last = max(Lease.objects.filter(pk__in=ids).values_list("revoked_at", flat=True), default=finished)
    return {
        "all_revoked": done,
        "seconds_from_minute_start": (last - window_start).total_seconds(),
        "left": Lease.objects.filter(pk__in=ids).exclude(state=LeaseState.EXPIRED).count(),
        "api_p50_ms": percentile(latencies, 50) * 1000,
        "api_p99_ms": percentile(latencies, 99) * 1000,
        "api_requests": len(latencies),
        "api_errors": errors[0],
    }


def run(server: Server, tag: str, args) -> list[tuple[str, str]]:
    _resource, role, client = portal_setup(server, tag)
    table: list[tuple[str, str]] = []
    issue_rate, revoke_rate = measure_api(role, client, args.n)
    create_rate, drop_rate, verified_rate = measure_raw(server, role, args.n)
    table += [
        (
            "API issue (creds) /s",
            f"{issue_rate:8.1f}   raw createUser /s {create_rate:8.1f}   ratio {issue_rate / create_rate:5.2f}",
        ),
        (
            "API revoke /s",
            f"{revoke_rate:8.1f}   raw dropUser /s   {drop_rate:8.1f}   ratio {revoke_rate / drop_rate:5.2f}",
        ),
        (
            "  (raw drop+kill+lookup+login try /s)",
            f"{verified_rate:8.1f}   the same checks by hand; API ratio {revoke_rate / verified_rate:5.2f}",
        ),
    ]
    cluster = start_qcluster()
    try:
        lags = measure_lag(role, args.lag_n, args.lag_spread)
        table.append(
            (
                f"expiry lag, {len(lags)} leases",
                f"p50 {percentile(lags, 50):.2f} s   p99 {percentile(lags, 99):.2f} s   max {max(lags):.2f} s",
            )
        )
        if args.storm:
            window_start = timezone.now() + timedelta(seconds=args.storm_lead)
            prepare_started = time.perf_counter()
            ids = storm_prepare(server, role, args.storm, window_start)
            prepared = time.perf_counter() - prepare_started
            slack = (window_start - timezone.now()).total_seconds()
            storm = storm_run(role, client, ids, window_start)
            table += [
                (
                    f"storm: {len(ids)} leases in one minute",
                    f"all revoked {storm['seconds_from_minute_start']:.1f} s after the minute began"
                    f" ({'OK' if storm['all_revoked'] else str(storm['left']) + ' left'}; setup {prepared:.0f} s,"
                    f" {slack:+.0f} s before the minute)",
                ),
                (
                    "storm: API meanwhile",
                    f"p50 {storm['api_p50_ms']:.0f} ms   p99 {storm['api_p99_ms']:.0f} ms   "
                    f"{storm['api_requests']} requests, {storm['api_errors']} errors",
                ),
            ]
    finally:
        stop_qcluster(cluster)
    return table


def print_table(name: str, table: list[tuple[str, str]]) -> None:
    print(f"\n== {name} ==")
    for label, value in table:
        print(f"{label:<38} {value}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="leases issued and revoked through the API")
    parser.add_argument("--lag-n", type=int, default=200, help="leases with staggered expiries")
    parser.add_argument("--lag-spread", type=float, default=20.0, help="seconds over which they expire")
    parser.add_argument("--storm", type=int, default=10_000, help="storm size (0: skip)")
    parser.add_argument("--storm-lead", type=float, default=150.0, help="seconds until the storm minute begins")
    parser.add_argument("--ferretdb", action="store_true", help="also run against FerretDB")
    parser.add_argument("--no-wire", action="store_true", help="skip the wire server (with --ferretdb)")
    parser.add_argument("--ferretdb-storm", type=int, default=200, help="storm size on FerretDB (slow: see docstring)")
    args = parser.parse_args()

    _bootstrap()
    call_command("migrate", verbosity=0)
    results = []
    if not args.no_wire:
        wire = start_wire_server()
        try:
            results.append((wire.name, run(wire, "wire", args)))
            print_table(*results[-1])
        finally:
            wire.stop()
    if args.ferretdb:
        ferret = start_ferretdb()
        try:
            args.storm = args.ferretdb_storm
            results.append((ferret.name, run(ferret, "ferret", args)))
            print_table(*results[-1])
        finally:
            ferret.stop()
    print(f"\n(portal database and logs: {WORKDIR})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
