"""Lease throughput, expiry lag and an expiry storm against the wire server (and FerretDB), beside raw baselines.

Run: ``.venv/bin/python benchmarks/leases.py`` (wire server: about 10 minutes; ``--ferretdb`` adds FerretDB,
``--no-wire --ferretdb`` runs FerretDB alone, ``--storm 0`` skips the storm; ``--storm 100000 --storm-window 600``
is the ten-minute storm). FerretDB v1 on SQLite serves user commands and SCRAM logins slowly and times out under
the sweeper's 16 parallel revocations, so its storm is smaller by default (``--ferretdb-storm``) and its failed
attempts show up as retries. Every row ends with the 1-minute load average when it was measured: this machine
is shared, so compare ratios taken in the same run rather than absolute rates across runs. It prints one table
per server:

- issue and revoke rates through the API (Django test client, bearer token, ``creds`` and ``sys/leases/revoke``)
  beside the same server operations done raw with pymongo, interleaved in ``--rounds`` rounds so that both sides
  see the same load: ``createUser`` for an issue; for a verified revocation the same steps the portal takes
  (dropUser, currentOp, killAllSessions, usersInfo, a SCRAM login try with the old password on a kept
  connection) — and, for comparison with earlier runs, those steps with a new client per login try;
- the portal's own time per issue: the API's wall time per lease minus the time the driver waited for the
  server's ``createUser`` (pymongo command monitoring), so what is left is Django, DRF, the database, encryption,
  the audit chain and the connector;
- expiry-to-revoked lag p50/p99/max: N leases with staggered expiries, revoked by the real sweeper running in
  a ``manage.py qcluster`` process;
- the storm: STORM leases expiring within one window (users created with raw pymongo, lease rows bulk-inserted:
  the issue path is measured above), the time until every one is revoked (from the window's start and after
  its end), the lag curve (expiry to revoked, per tenth of the window), and API latency p50/p99 (lease lookups
  and new creds) measured meanwhile.

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

from pymongo import monitoring

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORKDIR = Path(tempfile.gettempdir())  # replaced by a fresh directory in main()


def _bootstrap() -> None:
    """Point Django at a throwaway SQLite file and set it up; only when run as a script, never on import."""
    global WORKDIR, pymongo, get_user_model, call_command, timezone, APIClient, DynamicRole, Lease, Resource
    global LeaseState, lease_id_for, lease_issue, password_generate, system_tag, api_token_create, scram
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

    monitoring.register(DRIVER_TIME)  # before any client is made: every client reports its commands
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import timezone
    from rest_framework.test import APIClient

    from access.models import DynamicRole, Lease, Resource
    from access.models.leases import LeaseState
    from access.services.leases import lease_id_for, lease_issue, password_generate, system_tag
    from access.services.tokens import api_token_create
    from gatewayproxy.wire import scram


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


class DriverTime(monitoring.CommandListener):
    """Sums the time pymongo waited for each command name (send to reply), while `active`: the server's share."""

    def __init__(self) -> None:
        self.active = False
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def started(self, event) -> None:
        pass

    def succeeded(self, event) -> None:
        self._add(event)

    def failed(self, event) -> None:
        self._add(event)

    def _add(self, event) -> None:
        if self.active:
            with self._lock:
                self.seconds[event.command_name] = (
                    self.seconds.get(event.command_name, 0.0) + event.duration_micros / 1e6
                )

    def take(self, name: str) -> float:
        with self._lock:
            return self.seconds.pop(name, 0.0)


DRIVER_TIME = DriverTime()


def load() -> str:
    """The 1-minute load average now, for the end of a row (others share this machine)."""
    return f"[load {os.getloadavg()[0]:.1f}]"


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
def _raw_login_refused(probe: pymongo.MongoClient, db: str, username: str, password: str) -> None:
    """A SCRAM login try on the kept connection of `probe` (one connection, no credentials); it must be refused.

    First the mechanisms the server holds for the user (hello with saslSupportedMechs), as a driver and the portal
    ask: the same steps the portal takes."""
    probe.admin.command({"hello": 1, "saslSupportedMechs": f"{db}.{username}"})
    try:
        scram.authenticate(
            lambda command: probe[db].command({k: v for k, v in command.items() if k != "$db"}),
            mechanism="SCRAM-SHA-256",
            username=username,
            password=password,
            source=db,
        )
    except pymongo.errors.OperationFailure as exc:
        if exc.code != 18:
            raise
        return
    raise AssertionError("the dropped user still logs in")


def _raw_verified_revoke(server: Server, client, probe, role: DynamicRole, name: str, password: str) -> None:
    """The portal's verified revocation done raw: drop, list and end its connections, look it up, try its login."""
    db = client[role.db]
    db.command("dropUser", name, writeConcern={"w": "majority"})
    with contextlib.suppress(pymongo.errors.OperationFailure):  # FerretDB has neither currentOp nor killAllSessions
        client.admin.command(
            {
                "currentOp": 1,
                "$all": True,
                "$ownOps": False,
                "effectiveUsers": {"$elemMatch": {"user": name, "db": role.db}},
            }
        )
        client.admin.command("killAllSessions", [{"user": name, "db": role.db}])
    assert not db.command("usersInfo", {"user": name, "db": role.db})["users"]
    if probe is not None:
        _raw_login_refused(probe, role.db, name, password)
        return
    fresh = pymongo.MongoClient(
        f"mongodb://{server.host_port}/?directConnection=true", username=name, password=password, authSource=role.db
    )
    try:
        fresh[role.db].command("ping")
        raise AssertionError("the dropped user still logs in")
    except pymongo.errors.OperationFailure:
        pass
    finally:
        fresh.close()


def measure_side_by_side(server: Server, role: DynamicRole, client: APIClient, n: int, rounds: int) -> dict:
    """API issue and revoke beside the same operations done raw, in `rounds` interleaved rounds of n/rounds each."""
    path = f"/api/v1/mongodb/{role.resource.name}/creds/{role.name}"
    per_round = max(1, n // rounds)
    totals = dict.fromkeys(
        ("api_issue", "api_create_wait", "raw_create", "api_revoke", "raw_verified", "raw_verified_new_client"), 0.0
    )
    count = 0
    response = client.get(path)  # warm up: imports, the connector's client and login
    client.put("/api/v1/sys/leases/revoke", {"lease_id": response.json()["lease_id"]}, format="json")
    loads = []
    with (
        server.client() as raw,
        pymongo.MongoClient(
            f"mongodb://{server.host_port}/?directConnection=true", maxPoolSize=1, retryReads=False
        ) as probe,
    ):
        db = raw[role.db]
        for _ in range(rounds):
            loads.append(os.getloadavg()[0])
            lease_ids = []
            DRIVER_TIME.take("createUser")
            DRIVER_TIME.active = True
            started = time.perf_counter()
            for _ in range(per_round):
                response = client.get(path)
                assert response.status_code == 200, response.content
                lease_ids.append(response.json()["lease_id"])
            totals["api_issue"] += time.perf_counter() - started
            DRIVER_TIME.active = False
            totals["api_create_wait"] += DRIVER_TIME.take("createUser")

            users = [(f"raw-{secrets.token_hex(6)}", password_generate()) for _ in range(2 * per_round)]
            started = time.perf_counter()
            for name, password in users[:per_round]:
                db.command("createUser", name, pwd=password, roles=list(role.roles), writeConcern={"w": "majority"})
            totals["raw_create"] += time.perf_counter() - started
            for name, password in users[per_round:]:  # for the new-client variant (not timed)
                db.command("createUser", name, pwd=password, roles=list(role.roles), writeConcern={"w": "majority"})

            started = time.perf_counter()
            for lease_id in lease_ids:
                response = client.put("/api/v1/sys/leases/revoke", {"lease_id": lease_id}, format="json")
                assert response.status_code == 204, response.content
            totals["api_revoke"] += time.perf_counter() - started

            started = time.perf_counter()
            for name, password in users[:per_round]:
                _raw_verified_revoke(server, raw, probe, role, name, password)
            totals["raw_verified"] += time.perf_counter() - started
            started = time.perf_counter()
            for name, password in users[per_round:]:
                _raw_verified_revoke(server, raw, None, role, name, password)
            totals["raw_verified_new_client"] += time.perf_counter() - started
            count += per_round
    return {
        "n": count,
        "load": loads,
        "issue_per_s": count / totals["api_issue"],
        "create_per_s": count / totals["raw_create"],
        "portal_ms_per_issue": (totals["api_issue"] - totals["api_create_wait"]) / count * 1000,
        "create_wait_ms": totals["api_create_wait"] / count * 1000,
        "revoke_per_s": count / totals["api_revoke"],
        "verified_per_s": count / totals["raw_verified"],
        "verified_new_client_per_s": count / totals["raw_verified_new_client"],
    }


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


def storm_prepare(server: Server, role: DynamicRole, n: int, window_start, window: float = 60.0) -> list[int]:
    """Create n tagged users with raw pymongo (in threads) and their lease rows, expiring within `window` seconds."""
    from concurrent.futures import ThreadPoolExecutor

    holder = get_user_model().objects.get(username="bench")
    rows = []
    for index in range(n):
        username = f"v-bench-storm-{index:05d}-{secrets.token_hex(4)}"
        expires = window_start + timedelta(seconds=window * index / n)
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
                issued_at=min(timezone.now(), expires),
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


def storm_run(role: DynamicRole, client: APIClient, ids: list[int], window_start, window: float) -> dict:
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
    loads = []

    def all_done() -> bool:
        loads.append(os.getloadavg()[0])
        return not Lease.objects.filter(pk__in=ids).exclude(state=LeaseState.EXPIRED).exists()

    done = wait_for(all_done, window + 900, 0.5)
    finished = timezone.now()
    stop.set()
    thread.join()
    rows = list(Lease.objects.filter(pk__in=ids).values_list("expires_at", "revoked_at"))
    last = max((revoked for _, revoked in rows if revoked), default=finished)
    window_end = window_start + timedelta(seconds=window)
    curve = []
    for tenth in range(10):
        low = window_start + timedelta(seconds=window * tenth / 10)
        high = window_start + timedelta(seconds=window * (tenth + 1) / 10)
        lags = [(revoked - expires).total_seconds() for expires, revoked in rows if revoked and low <= expires < high]
        curve.append((window * tenth / 10, window * (tenth + 1) / 10, lags))
    every_lag = [(revoked - expires).total_seconds() for expires, revoked in rows if revoked]
    return {
        "all_revoked": done,
        "seconds_from_window_start": (last - window_start).total_seconds(),
        "seconds_after_window_end": (last - window_end).total_seconds(),
        "left": Lease.objects.filter(pk__in=ids).exclude(state=LeaseState.EXPIRED).count(),
        "lag_p50": percentile(every_lag, 50),
        "lag_p99": percentile(every_lag, 99),
        "lag_max": max(every_lag, default=float("nan")),
        "curve": curve,
        "load_max": max(loads, default=0.0),
        "api_p50_ms": percentile(latencies, 50) * 1000,
        "api_p99_ms": percentile(latencies, 99) * 1000,
        "api_requests": len(latencies),
        "api_errors": errors[0],
    }


def run(server: Server, tag: str, args) -> list[tuple[str, str]]:
    _resource, role, client = portal_setup(server, tag)
    table: list[tuple[str, str]] = []
    if args.n:
        m = measure_side_by_side(server, role, client, args.n, args.rounds)
        rounds_load = f"[load {min(m['load']):.1f}-{max(m['load']):.1f}]"
        table += [
            (
                f"API issue (creds) /s, {m['n']} leases",
                f"{m['issue_per_s']:8.1f}   raw createUser /s {m['create_per_s']:8.1f}   ratio "
                f"{m['issue_per_s'] / m['create_per_s']:5.2f}   (target >= 0.60) {rounds_load}",
            ),
            (
                "  portal's own time per issue",
                f"{m['portal_ms_per_issue']:8.2f} ms (API wall time per lease minus the driver's wait for createUser, "
                f"{m['create_wait_ms']:.2f} ms)   (target <= 2 ms)",
            ),
            (
                "API revoke (verified) /s",
                f"{m['revoke_per_s']:8.1f}   raw same steps /s {m['verified_per_s']:8.1f}   ratio "
                f"{m['revoke_per_s'] / m['verified_per_s']:5.2f}   (target >= 0.60) {rounds_load}",
            ),
            (
                "  (raw, new client per login try /s)",
                f"{m['verified_new_client_per_s']:8.1f}   the old baseline; API ratio "
                f"{m['revoke_per_s'] / m['verified_new_client_per_s']:5.2f}",
            ),
        ]
    cluster = start_qcluster()
    try:
        if args.lag_n:
            lags = measure_lag(role, args.lag_n, args.lag_spread)
            table.append(
                (
                    f"expiry lag, {len(lags)} leases",
                    f"p50 {percentile(lags, 50):.2f} s   p99 {percentile(lags, 99):.2f} s   max {max(lags):.2f} s "
                    f"{load()}",
                )
            )
        if args.storm:
            window_start = timezone.now() + timedelta(seconds=args.storm_lead)
            prepare_started = time.perf_counter()
            ids = storm_prepare(server, role, args.storm, window_start, args.storm_window)
            prepared = time.perf_counter() - prepare_started
            slack = (window_start - timezone.now()).total_seconds()
            storm = storm_run(role, client, ids, window_start, args.storm_window)
            window = f"{args.storm_window:.0f} s"
            table += [
                (
                    f"storm: {len(ids)} leases in {window}",
                    f"all revoked {storm['seconds_after_window_end']:.1f} s after the window's end "
                    f"({storm['seconds_from_window_start']:.1f} s after its start; "
                    f"{'OK' if storm['all_revoked'] else str(storm['left']) + ' left'}; setup {prepared:.0f} s, "
                    f"{slack:+.0f} s before the window) [load max {storm['load_max']:.1f}]",
                ),
                (
                    "storm: expiry-to-revoked lag",
                    f"p50 {storm['lag_p50']:.2f} s   p99 {storm['lag_p99']:.2f} s   max {storm['lag_max']:.2f} s",
                ),
                (
                    "storm: API meanwhile",
                    f"p50 {storm['api_p50_ms']:.0f} ms   p99 {storm['api_p99_ms']:.0f} ms   "
                    f"{storm['api_requests']} requests, {storm['api_errors']} errors   (target p99 < 500 ms)",
                ),
            ]
            for low, high, lags in storm["curve"]:
                table.append(
                    (
                        f"  lag curve, expiring {low:5.0f}-{high:.0f} s",
                        f"{len(lags):6d} leases   p50 {percentile(lags, 50):6.2f} s   p99 {percentile(lags, 99):6.2f} s"
                        f"   max {max(lags, default=float('nan')):6.2f} s",
                    )
                )
    finally:
        stop_qcluster(cluster)
    return table


def print_table(name: str, table: list[tuple[str, str]]) -> None:
    print(f"\n== {name} ==")
    for label, value in table:
        print(f"{label:<40} {value}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, default=200, help="leases issued and revoked through the API (and raw); 0 skips"
    )
    parser.add_argument("--rounds", type=int, default=4, help="interleaved API/raw rounds the n are split into")
    parser.add_argument("--lag-n", type=int, default=200, help="leases with staggered expiries; 0 skips")
    parser.add_argument("--lag-spread", type=float, default=20.0, help="seconds over which they expire")
    parser.add_argument("--storm", type=int, default=10_000, help="storm size (0: skip)")
    parser.add_argument("--storm-window", type=float, default=60.0, help="seconds over which the storm expires")
    parser.add_argument("--storm-lead", type=float, default=150.0, help="seconds until the storm window begins")
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
