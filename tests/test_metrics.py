"""Prometheus metrics: who may scrape, what the numbers say, and that the deploy files only use metrics that exist.

The last test scrapes a real daphne (the portal as deployed) over HTTP in both profiles: SQLite with the ORM broker,
and PostgreSQL with the Redis broker (`production` marker), and checks it reports what this process reads.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from access.generators import new_token
from access.models import AuditAction, SessionCommand
from access.models.sessions import SessionState
from access.services.audit import audit_record
from access.services.sinks import sink_create
from tests.factories import GatewayFactory, LeaseFactory, SessionFactory
from tests.helpers import daphne_start, process_stop
from tests.profile import require_production_profile, subprocess_env
from tests.sink_receivers import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent


def _families(text: str) -> dict[str, dict[tuple, float]]:
    """{family name: {sorted label items: value}} of an exposition (counters keep their `_total` samples)."""
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


@pytest.mark.django_db
def test_metrics_need_the_bearer_token_or_a_loopback_client(client, settings):
    settings.PAM_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 200  # the test client comes from 127.0.0.1
    assert client.get("/metrics", REMOTE_ADDR="10.0.0.7").status_code == 403
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 403  # through the proxy

    settings.PAM_METRICS_TOKEN = token = new_token(nbytes=24)
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("Bearer")
    assert b"pam_" not in refused.content
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    allowed = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}", REMOTE_ADDR="10.0.0.7")
    assert allowed.status_code == 200 and allowed["Content-Type"].startswith("text/plain")
    assert b"pam_leases{" in allowed.content


@pytest.mark.django_db
def test_metrics_report_leases_sweeper_lag_sessions_queue_and_sink_lag(client, settings, tmp_path):
    from django_q.tasks import async_task

    settings.PAM_METRICS_TOKEN, settings.PAM_SINK_FILE_DIR = "", str(tmp_path)
    now = timezone.now()
    LeaseFactory.create_batch(2)
    LeaseFactory(issued_at=now - timedelta(hours=1), expires_at=now - timedelta(seconds=90))  # the sweeper is 90 s late
    LeaseFactory(state="revoke_failed", attempts=3)
    LeaseFactory(
        state="expired",
        attempts=1,
        issued_at=now - timedelta(hours=1),
        expires_at=now - timedelta(seconds=10),
        revoked_at=now - timedelta(seconds=8),
    )
    for ms in (100, 200, 300):
        audit_record(action=AuditAction.LEASE_REVOKE, actor="t", data={"duration_ms": ms})
    audit_record(action=AuditAction.LEASE_REVOKE_FAILED, actor="t", data={"duration_ms": 900})
    gateway = GatewayFactory(name="gw-east", last_heartbeat=now - timedelta(seconds=300))
    SessionFactory.create_batch(2, gateway=gateway)
    SessionFactory(gateway=gateway, state=SessionState.ENDED, ended_at=now, end_reason="expired")
    session = SessionFactory(gateway=gateway)
    SessionCommand.objects.bulk_create([SessionCommand(session=session, command="find") for _ in range(7)])
    sink_create(actor="t", name="siem", kind="file", path="x.jsonl", stream_commands=True)
    async_task("math.floor", 1.5)

    metrics = _families(client.get("/metrics").content.decode())
    leases = {dict(labels)["state"]: value for labels, value in metrics["pam_leases"].items()}
    assert leases == {"active": 3, "revoking": 0, "revoked": 0, "expired": 1, "revoke_failed": 1, "failed": 0}
    assert 89 <= metrics["pam_sweeper_lag_seconds"][()] < 120
    assert metrics["pam_lease_revoke_retries_total"][()] == 2
    assert metrics["pam_lease_revoke_failures_total"][()] == 1 and metrics["pam_lease_revocations_total"][()] == 3
    assert metrics["pam_lease_revoke_duration_seconds"][(("quantile", "0.5"),)] == pytest.approx(0.25)
    assert metrics["pam_lease_revoke_duration_window_count"][()] == 4
    assert metrics["pam_lease_expiry_revoke_lag_seconds"][(("quantile", "0.5"),)] == pytest.approx(2, abs=0.1)
    assert metrics["pam_sessions_open"][(("gateway", "gw-east"),)] == 3
    assert 299 <= metrics["pam_gateway_heartbeat_age_seconds"][(("gateway", "gw-east"),)] < 330
    assert metrics["pam_task_queue_depth"][()] >= 1
    audit_lag = metrics["pam_sink_lag_records"][(("sink", "siem"), ("stream", "audit"))]
    assert audit_lag == audit_record(action=AuditAction.SCHEDULES_SETUP).seq - 1  # every event so far waits
    assert metrics["pam_sink_lag_records"][(("sink", "siem"), ("stream", "commands"))] == 7
    assert metrics["pam_sink_stuck"][(("sink", "siem"), ("stream", "audit"))] == 0
    assert metrics["pam_audit_events_total"][(("action", "lease.revoke"),)] == 3


@pytest.mark.django_db
def test_alert_rules_and_dashboard_use_only_metrics_the_portal_exports(client, settings):
    settings.PAM_METRICS_TOKEN = ""
    exported = set()
    for family in text_string_to_metric_families(client.get("/metrics").content.decode()):
        exported.add(family.name)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [])
        exported.update(family.name + suffix for suffix in suffixes)
    rules = yaml.safe_load((ROOT / "deploy/prometheus/pam-alerts.yml").read_text())
    alerts = {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}
    assert {"PamRevocationsFailing", "PamSweeperLagging", "PamGatewaySilent", "PamSinkStuck"} <= set(alerts)
    dashboard = json.loads((ROOT / "deploy/grafana/pam-dashboard.json").read_text())
    exprs = list(alerts.values()) + [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bpam_[a-z_]+", expr)}
    assert used - exported == set()
    assert len(dashboard["panels"]) >= 10 and all(panel["targets"] for panel in dashboard["panels"])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("profile", ["embedded", pytest.param("production", marks=pytest.mark.production)])
def test_a_running_portal_serves_the_same_numbers_to_prometheus(profile, tmp_path, client, settings):
    if profile == "production":
        require_production_profile()
    token = new_token(nbytes=24)
    LeaseFactory.create_batch(3)
    LeaseFactory(state="revoke_failed", attempts=2)
    SessionFactory(gateway=GatewayFactory(name="gw-1", last_heartbeat=timezone.now()))
    port = free_port()
    log = tmp_path / "daphne.log"
    daphne = daphne_start(port=port, env=subprocess_env(PAM_METRICS_TOKEN=token), log_path=log, timeout=60)
    url = f"http://127.0.0.1:{port}/metrics"

    def scrape(bearer: str | None) -> tuple[int, str]:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {bearer}"} if bearer else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            return 0, ""

    try:
        assert wait_for(lambda: scrape(None)[0] == 401, timeout=60, interval=0.3), log.read_text()[-3000:]
        status, text = scrape(token)
    finally:
        process_stop(daphne)
    assert status == 200
    served = _families(text)
    settings.PAM_METRICS_TOKEN = ""
    here = _families(client.get("/metrics").content.decode())
    for name in ("pam_leases", "pam_sessions_open", "pam_lease_revoke_retries_total", "pam_task_failures"):
        assert served[name] == here[name], name
    assert served["pam_leases"][(("state", "active"),)] == 3
    assert served["pam_sessions_open"][(("gateway", "gw-1"),)] == 1
    assert "pam_task_queue_depth" in served  # from the ORM broker or Redis, whichever the profile uses
