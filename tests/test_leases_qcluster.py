"""End to end with a real `manage.py qcluster`: schedules set up, a lease expires, the sweeper revokes it in seconds.

The portal runs in subprocesses against a database of its own (`tests.profile.ScratchDatabase`: a SQLite file,
or a fresh PostgreSQL database in the production profile, with the Redis broker on an emptied Redis database);
the test reads it directly. The wire server runs in this process and is reached over TCP like any MongoDB.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pymongo
import pytest
from django.conf import settings
from pymongo.errors import OperationFailure

from tests.profile import ScratchDatabase, embedded_env, scratch_redis_url

ROOT = Path(__file__).resolve().parent.parent

ISSUE_SCRIPT = """
import json, os
from datetime import timedelta
from django.contrib.auth import get_user_model
from access.models import DynamicRole, Resource
from access.services.leases import lease_issue
resource, _ = Resource.objects.get_or_create(name="wire", defaults=dict(
    uri=os.environ["E2E_URI"], tls=False, admin_username=os.environ["E2E_ADMIN"],
    admin_password=os.environ["E2E_ADMIN_PASSWORD"]))
role, _ = DynamicRole.objects.get_or_create(resource=resource, name="app", defaults=dict(db="app", roles=["read"]))
user, _ = get_user_model().objects.get_or_create(username="e2e")
out = []
for seconds in (2, 3, 4):
    lease, password = lease_issue(role=role, holder=user, ttl=timedelta(seconds=seconds))
    out.append({"lease_id": lease.lease_id, "username": lease.username, "password": password})
with open(os.environ["E2E_OUT"], "w") as handle:
    json.dump(out, handle)
"""


def _manage(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _parse(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value.replace(" ", "T"))


@pytest.mark.slow
def test_a_real_qcluster_revokes_expired_leases_within_seconds(tmp_path, wire_server):
    with ScratchDatabase(tmp_path) as database:
        _qcluster_revokes_expired_leases(tmp_path, wire_server, database)


def _qcluster_revokes_expired_leases(tmp_path, wire_server, database: ScratchDatabase) -> None:
    _rows = database.rows
    env = {
        **embedded_env(),
        "DATABASE_URL": database.url,
        "PAM_VAR_DIR": str(tmp_path),
        "PAM_ENCRYPTION_KEYS": ",".join(settings.PAM_ENCRYPTION_KEYS),
        "DJANGO_SECRET_KEY": "e2e-test-secret-key-not-for-production-0123456789",
        "PAM_Q_WORKERS": "2",
        "PAM_LOG_LEVEL": "WARNING",
    }
    broker = scratch_redis_url()
    if broker:
        env["REDIS_URL"] = broker
    assert _manage(env, "migrate", "--no-input", "-v0").returncode == 0
    setup = _manage(env, "setup_schedules")
    assert setup.returncode == 0, setup.stderr
    assert _manage(env, "setup_schedules").returncode == 0  # idempotent
    names = [r[0] for r in _rows("SELECT name FROM django_q_schedule")]
    assert {"pam: lease sweeper", "pam: reconcile users"} <= set(names) and len(names) == len(set(names))

    log_file = (tmp_path / "qcluster.log").open("w")
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            held = _rows("SELECT holder FROM access_backgroundlock WHERE holder != ''")
            if held:
                break
            time.sleep(0.2)
        else:
            pytest.fail(
                "the sweeper did not start within 60 s of qcluster: " + (tmp_path / "qcluster.log").read_text()[-3000:]
            )

        secrets_file = tmp_path / "issued.json"
        uri = f"mongodb://{wire_server.host_port}/?directConnection=true"
        issue_env = {
            **env,
            "E2E_URI": uri,
            "E2E_ADMIN": wire_server.admin_user,
            "E2E_ADMIN_PASSWORD": wire_server.admin_password,
            "E2E_OUT": str(secrets_file),
        }
        issued = _manage(issue_env, "shell", "-c", ISSUE_SCRIPT)
        assert issued.returncode == 0, issued.stderr[-2000:]
        leases = json.loads(secrets_file.read_text())

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = _rows("SELECT state FROM access_lease")
            if states and all(state == "expired" for (state,) in states):
                break
            time.sleep(0.2)
        rows = _rows("SELECT lease_id, state, expires_at, revoked_at FROM access_lease")
        assert all(state == "expired" for _, state, _, _ in rows), rows
        lags = [(_parse(revoked) - _parse(expires)).total_seconds() for _, _, expires, revoked in rows]
        assert max(lags) < 5, lags

        for lease in leases:
            client = pymongo.MongoClient(
                wire_server.uri_for(lease["username"], lease["password"], auth_source="app"),
                serverSelectionTimeoutMS=3000,
            )
            with pytest.raises(OperationFailure):
                client.app.command("ping")
            client.close()
        audit = _rows("SELECT action FROM access_auditevent WHERE action = 'lease.revoke'")
        assert len(audit) == 3
    finally:
        # A sweeper run holds its worker for up to its run time; the database is thrown away, so do not wait.
        os.killpg(cluster.pid, signal.SIGTERM)
        try:
            cluster.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()
