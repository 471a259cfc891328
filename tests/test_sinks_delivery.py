"""Sinks against real receivers: nothing lost across receiver and worker restarts, each stream in order.

The receivers are real: Debian's rsyslogd listening on loopback with TLS syslog (RFC 5425, octet counting) and with
RELP over TLS (imrelp), and an HTTP server that checks the Splunk token or the webhook's HMAC signature as a
receiver would. The delivery worker is `manage.py deliver_sinks`, a real process on the test database. While records
keep coming, the tests stop and start the receivers and kill (SIGKILL) and stop (SIGTERM) the worker, then compare
every id in the database with every id each receiver got: none missing, duplicates allowed, and the first arrival of
each id in stream order.

The RELP receiver is restarted (SIGTERM) and killed (SIGKILL) while batches are in flight: RELP acknowledges each
message, so nothing is lost. The TLS syslog receiver stays up through the worker's crash and restarts: plain syslog
has no acknowledgement, and rsyslogd stopped by either signal between reading a batch and writing it drops the rest
of that batch while the connection still closes cleanly (seen here with SIGTERM: the 41 commands after the first
16 KiB TLS record of a 100-record batch). That is the blind spot in access/transports.py; README, Integrations,
recommends RELP for rsyslog relays.

Time knob: the worker runs with PAM_SINK_LOCK_SECONDS=5 (production: 30), so a killed worker's sinks are taken over
after 5 s rather than 30; the mechanism is the same.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.utils import timezone

from access.generators import new_token
from access.models import AuditAction, AuditEvent, SessionCommand, Sink, SinkCursor
from access.models.sinks import SinkKind, SinkStream, SyslogProtocol
from access.selectors.sinks import stream_head
from access.services.audit import audit_record
from access.services.gateway import session_commands_record
from access.services.sinks import sink_create, sink_rewind, sink_stream_deliver, sink_transport, sinks_deliver_run
from access.transports import SinkRecord, syslog_frame
from tests.factories import SessionFactory
from tests.profile import subprocess_env
from tests.sink_receivers import HttpReceiver, RelpRefuser, Rsyslog, first_seen_order, make_pki, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sink_dir(tmp_path, settings):
    settings.PAM_SINK_FILE_DIR = str(tmp_path / "sinks")
    return tmp_path / "sinks"


class Worker:
    """`manage.py deliver_sinks` as a subprocess on the test database; its output goes to a log under tmp."""

    def __init__(self, tmp_path: Path, sink_dir: Path):
        self.log = tmp_path / "deliver_sinks.log"
        self.env = subprocess_env(PAM_SINK_LOCK_SECONDS="5", PAM_SINK_FILE_DIR=str(sink_dir))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "deliver_sinks", "--interval", "0.2"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parent.parent,
            )

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        self.process = None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _produce(session, seconds: float, counter: list[int]) -> None:
    """Write audit events and gateway commands for `seconds` (the commands through the gateway's own service)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        counter[0] += 1
        audit_record(action=AuditAction.SCHEDULES_SETUP, actor="producer", data={"n": counter[0]})
        session_commands_record(
            commands=[
                {
                    "session_id": session.pk,
                    "command": "find",
                    "database": "app",
                    "collection": "items",
                    "summary": {"filter": {"n": "[redacted]"}, "password": "never-sent"},
                    "ok": True,
                    "latency_us": 120,
                }
                for _ in range(3)
            ]
        )
        time.sleep(0.005)


def _caught_up() -> bool:
    heads = {stream.value: stream_head(stream) for stream in SinkStream}
    return all(cursor.position >= heads[cursor.stream] for cursor in SinkCursor.objects.all())


def _check(received: list[str], stream: str, expected: set[int], where: str) -> int:
    prefix = "audit:" if stream == "audit" else "cmd:"
    ids = [record_id for record_id in received if record_id.startswith(prefix)]
    got = {int(record_id.split(":")[1]) for record_id in ids}
    missing = sorted(expected - got)
    assert not missing, f"{where}: {len(missing)} {stream} record(s) lost, e.g. {missing[:10]}"
    assert got <= expected, f"{where}: ids never written: {sorted(got - expected)[:10]}"
    order = first_seen_order(ids)
    assert order == sorted(order), f"{where}: {stream} records arrived out of order"
    return len(ids) - len(got)  # duplicates


def test_every_record_reaches_every_sink_across_receiver_and_worker_restarts(tmp_path, sink_dir):
    pki = make_pki(tmp_path / "pki")
    rsyslog = Rsyslog(tmp_path / "rsyslog", pki).start()
    relp = Rsyslog(tmp_path / "relp", pki, protocol="relp").start()
    hec_token, hmac_key = new_token(nbytes=24), new_token(nbytes=32)
    hec = HttpReceiver(hec_token=hec_token).start()
    webhook = HttpReceiver(hmac_key=hmac_key).start()
    common = {"stream_audit": True, "stream_commands": True, "batch_size": 100, "timeout_seconds": 1}
    syslog = {"kind": SinkKind.SYSLOG, "host": "127.0.0.1", "ca_certificate": pki["ca"].read_text(), **common}
    sink_create(actor="test", name="siem-syslog", port=rsyslog.port, **syslog)
    sink_create(actor="test", name="siem-relp", syslog_protocol=SyslogProtocol.RELP, port=relp.port, **syslog)
    sink_create(
        actor="test",
        name="splunk",
        kind=SinkKind.HEC,
        url=f"{hec.url}/services/collector/event",
        hec_token=hec_token,
        **common,
    )
    sink_create(actor="test", name="hook", kind=SinkKind.WEBHOOK, url=f"{webhook.url}/pam", hmac_key=hmac_key, **common)
    sink_create(actor="test", name="shipper", kind=SinkKind.FILE, path="pam.jsonl", **common)
    session = SessionFactory()
    worker = Worker(tmp_path, sink_dir)
    counter = [0]
    try:
        worker.start()
        _produce(session, 2.0, counter)
        assert wait_for(relp.messages, timeout=30), worker.text()[-2000:]
        relp.stop()  # SIGTERM, as `systemctl restart rsyslog` does, while the worker is delivering
        hec.stop()
        webhook.stop()
        _produce(session, 2.5, counter)
        relp.start()
        hec.start()
        webhook.fail_with = 503  # up, but refusing for a while
        webhook.start()
        _produce(session, 1.0, counter)
        assert wait_for(lambda: webhook.rejected, timeout=60), worker.text()[-2000:]  # retried, and refused
        webhook.fail_with = None
        worker.stop(signal.SIGKILL)  # a crash: locks held, a batch maybe sent and not recorded
        _produce(session, 1.5, counter)
        before = len(relp.messages())
        worker.start()  # takes the sinks over once the dead worker's locks expire (5 s here)
        _produce(session, 2.0, counter)
        # The RELP receiver crashes while the new worker sends it the backlog: batches are in flight.
        assert wait_for(lambda: len(relp.messages()) > before, timeout=30), worker.text()[-2000:]
        relp.stop(signal.SIGKILL)
        _produce(session, 1.0, counter)
        relp.start()
        worker.stop(signal.SIGTERM)  # a clean restart of the worker
        worker.start()
        _produce(session, 1.0, counter)
        assert wait_for(_caught_up, timeout=120, interval=0.5), (
            [str(c) for c in SinkCursor.objects.all()],
            worker.text()[-3000:],
        )
    finally:
        worker.stop()
        rsyslog.stop()
        relp.stop()
        hec.stop()
        webhook.stop()

    audit_ids = set(AuditEvent.objects.values_list("seq", flat=True))
    command_ids = set(SessionCommand.objects.values_list("pk", flat=True))
    assert len(audit_ids) > 30 and len(command_ids) > 90, (len(audit_ids), len(command_ids))  # written throughout
    file_ids = [json.loads(line)["id"] for line in (sink_dir / "pam.jsonl").read_text().splitlines()]
    duplicates = {}
    for where, received in (
        ("rsyslog (TLS syslog)", rsyslog.ids()),
        ("rsyslog (RELP)", relp.ids()),
        ("HEC", hec.ids),
        ("webhook", webhook.ids),
        ("file", file_ids),
    ):
        duplicates[where] = _check(received, "audit", audit_ids, where) + _check(
            received, "commands", command_ids, where
        )
    assert webhook.rejected and not [r for r in webhook.rejected if r != "told to fail"]
    assert "never-sent" not in (sink_dir / "pam.jsonl").read_text()  # the stored summary was already scrubbed
    assert rsyslog.starts == 1 and relp.starts == 3
    print(f"records: {len(audit_ids)} audit, {len(command_ids)} commands; duplicates per receiver: {duplicates}")


def test_syslog_message_is_rfc5424_with_octet_counting():
    at = timezone.now()
    record = SinkRecord("audit", 7, "audit:7", at, {"id": "audit:7", "action": "lease.issue"}, severity=5)
    frame = syslog_frame(record, facility=13, hostname="gw 1", app_name="mongo-pam", system='pam"1]')
    length, _, message = frame.partition(b" ")
    assert int(length) == len(message)
    header, _, body = message.decode().partition(" {")
    assert header.startswith(f"<109>1 {at.isoformat().replace('+00:00', 'Z')} gw1 mongo-pam - audit ")
    assert header.endswith('[pam@32473 id="audit:7" system="pam\\"1\\]"]')
    assert json.loads("{" + body) == {"id": "audit:7", "action": "lease.issue"}


def test_a_receiver_refusing_the_signature_keeps_the_cursor_and_shows_the_error(tmp_path, sink_dir, otp_admin_client):
    receiver = HttpReceiver(hmac_key=new_token(nbytes=32)).start()
    try:
        sink = sink_create(
            actor="test", name="hook", kind=SinkKind.WEBHOOK, url=f"{receiver.url}/x", hmac_key=new_token(nbytes=32)
        )  # not the receiver's key
        transport = sink_transport(sink)
        outcome = sink_stream_deliver(sink=sink, stream="audit", transport=transport)
        transport.close()
    finally:
        receiver.stop()
    assert outcome.failed and receiver.rejected == ["bad signature"] and receiver.ids == []
    cursor = SinkCursor.objects.get(sink=sink, stream="audit")
    assert cursor.position == 0 and cursor.failures == 1
    assert cursor.last_error == f"webhook at 127.0.0.1:{receiver.port} answered HTTP 401"
    assert cursor.next_attempt_at > timezone.now()
    page = otp_admin_client.get("/admin/access/sink/").content.decode()
    assert "retrying" in page and "answered HTTP 401" in page
    detail = otp_admin_client.get(f"/admin/access/sink/{sink.pk}/change/").content.decode()
    assert "answered HTTP 401" in detail and "hmac_key" in detail
    assert sink.hmac_key.reveal() not in detail


def test_a_relp_receiver_refusing_messages_keeps_the_cursor_and_shows_the_error(tmp_path, sink_dir, otp_admin_client):
    pki = make_pki(tmp_path / "pki")
    receiver = RelpRefuser(pki).start()
    try:
        response = otp_admin_client.post(
            "/admin/access/sink/add/",
            {
                "name": "relay",
                "kind": "syslog",
                "enabled": "on",
                "stream_audit": "on",
                "syslog_protocol": "relp",
                "host": "127.0.0.1",
                "port": str(receiver.port),
                "syslog_facility": "13",
                "ca_certificate": pki["ca"].read_text(),
                "tls_verify": "on",
                "batch_size": "500",
                "timeout_seconds": "5",
            },
        )
        assert response.status_code == 302, response.content.decode()[:3000]
        sink = Sink.objects.get(name="relay")
        assert sink.syslog_protocol == "relp"
        assert AuditEvent.objects.get(action=AuditAction.SINK_CREATE).data["changed"]["syslog_protocol"] == "relp"
        transport = sink_transport(sink)
        outcome = sink_stream_deliver(sink=sink, stream="audit", transport=transport)
        transport.close()
    finally:
        receiver.stop()
    assert outcome.failed and receiver.refused >= 1
    cursor = SinkCursor.objects.get(sink=sink, stream="audit")
    assert cursor.position == 0 and cursor.failures == 1
    expected = f"RELP receiver at 127.0.0.1:{receiver.port} refused a message: 500 {RelpRefuser.REASON}"
    assert cursor.last_error == expected
    page = otp_admin_client.get("/admin/access/sink/").content.decode()
    assert "retrying" in page and expected in page


def test_a_receiver_that_never_acknowledges_relp_keeps_the_cursor(tmp_path, sink_dir):
    """A RELP sink pointed at a plain TLS syslog port: rsyslogd takes the bytes and never answers; nothing counts."""
    pki = make_pki(tmp_path / "pki")
    rsyslog = Rsyslog(tmp_path / "rsyslog", pki).start()
    for n in range(3):
        audit_record(action=AuditAction.SCHEDULES_SETUP, actor="t", data={"n": n})
    sink = sink_create(
        actor="test",
        name="misdirected",
        kind=SinkKind.SYSLOG,
        syslog_protocol=SyslogProtocol.RELP,
        host="127.0.0.1",
        port=rsyslog.port,
        ca_certificate=pki["ca"].read_text(),
        timeout_seconds=1,
    )
    try:
        transport = sink_transport(sink)
        started = time.monotonic()
        outcome = sink_stream_deliver(sink=sink, stream="audit", transport=transport)
        transport.close()
    finally:
        rsyslog.stop()
    assert outcome.failed and outcome.delivered == 0 and time.monotonic() - started < 10
    cursor = SinkCursor.objects.get(sink=sink, stream="audit")
    assert cursor.position == 0 and cursor.failures == 1
    assert cursor.last_error == f"timed out talking to 127.0.0.1:{rsyslog.port}", cursor.last_error


def test_a_stuck_sink_raises_an_alert_on_the_admin_index_and_a_metric(settings, sink_dir, otp_admin_client):
    settings.PAM_METRICS_TOKEN = ""
    sink = sink_create(actor="test", name="siem", kind=SinkKind.SYSLOG, host="127.0.0.1", port=9)  # nothing listens
    report = sinks_deliver_run(run_for=0.5, interval=0.1)
    assert report.failures >= 1 and report.delivered == 0
    # Records have waited seconds, not PAM_SINK_STUCK_MINUTES: retrying, not stuck.
    assert "is stuck" not in otp_admin_client.get("/admin/").content.decode()
    assert 'pam_sink_stuck{sink="siem",stream="audit"} 0.0' in otp_admin_client.get("/metrics").content.decode()

    settings.PAM_SINK_STUCK_MINUTES = 0  # as if they had waited the whole while
    index = otp_admin_client.get("/admin/").content.decode()
    assert "Sink siem is stuck" in index and "connection refused by 127.0.0.1:9" in index
    assert f"/admin/access/sink/{sink.pk}/change/" in index
    metrics = otp_admin_client.get("/metrics").content.decode()
    assert 'pam_sink_stuck{sink="siem",stream="audit"} 1.0' in metrics
    assert 'pam_sink_lag_records{sink="siem",stream="audit"}' in metrics


def test_a_file_sink_stays_inside_its_directory(sink_dir):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as raised:
        sink_create(actor="test", name="escape", kind=SinkKind.FILE, path="../../etc/cron.d/x")
    assert "must be inside" in str(raised.value)


def test_rewinding_a_cursor_resends_from_there_and_is_audited(sink_dir):
    sink = sink_create(actor="test", name="shipper", kind=SinkKind.FILE, path="a.jsonl")
    for n in range(5):
        audit_record(action=AuditAction.SCHEDULES_SETUP, actor="t", data={"n": n})
    sinks_deliver_run(run_for=1.0, interval=0.1)
    head = stream_head("audit")
    assert SinkCursor.objects.get(sink=sink, stream="audit").position == head
    sink_rewind(actor="test", sink=sink, stream="audit", position=head - 2)
    assert AuditEvent.objects.filter(action=AuditAction.SINK_REWIND, target_id=str(sink.pk)).exists()
    sinks_deliver_run(run_for=1.0, interval=0.1)
    ids = [json.loads(line)["id"] for line in (sink_dir / "a.jsonl").read_text().splitlines()]
    assert ids[-3:] == [f"audit:{head - 1}", f"audit:{head}", f"audit:{head + 1}"]  # resent, then the rewind's row
    assert first_seen_order(ids) == sorted(first_seen_order(ids))


def test_a_missing_command_id_is_waited_for_on_postgresql_then_passed_over(monkeypatch):
    """PostgreSQL may commit command ids out of order: a hole just after the cursor is waited for, not skipped."""
    from types import SimpleNamespace

    from access.services import sinks as sink_services

    monkeypatch.setattr(sink_services, "connection", SimpleNamespace(vendor="postgresql"))
    now = timezone.now()
    records = [SinkRecord("commands", n, f"cmd:{n}", now, {}) for n in (11, 12, 14, 15)]
    cursor = SinkCursor(position=10)
    ready, gap = sink_services._gap_free(records, cursor, now)
    assert [r.position for r in ready] == [11, 12] and gap  # 13 may still be in flight
    cursor.position, cursor.gap_since = 12, now
    assert sink_services._gap_free(records[2:], cursor, now) == ([], True)  # still waiting for 13
    later = now + sink_services.GAP_GRACE
    ready, gap = sink_services._gap_free(records[2:], cursor, later)
    assert [r.position for r in ready] == [14, 15] and not gap  # 13 was rolled back or deleted


def test_sinks_are_configured_in_the_admin_with_write_only_secrets(otp_admin_client, sink_dir):
    token = new_token(nbytes=24)
    response = otp_admin_client.post(
        "/admin/access/sink/add/",
        {
            "name": "splunk",
            "kind": "hec",
            "enabled": "on",
            "stream_audit": "on",
            "stream_commands": "on",
            "url": "https://splunk.example.test:8088/services/collector/event",
            "hec_token": token,
            "syslog_facility": "13",
            "syslog_protocol": "tls",
            "tls_verify": "on",
            "batch_size": "500",
            "timeout_seconds": "10",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    created = AuditEvent.objects.get(action=AuditAction.SINK_CREATE)
    assert created.actor_name == "sec-admin" and created.data["write_only_changed"] == ["hec_token"]
    sink_id = created.target_id
    page = otp_admin_client.get(f"/admin/access/sink/{sink_id}/change/").content.decode()
    assert token not in page and "lag" in page and "Move a cursor" in page
    assert set(SinkCursor.objects.filter(sink_id=sink_id).values_list("stream", flat=True)) == {"audit", "commands"}
    refused = otp_admin_client.post(
        "/admin/access/sink/add/",
        {
            "name": "bad",
            "kind": "webhook",
            "stream_audit": "on",
            "url": "https://x.test/",
            "hmac_key": "short",
            "syslog_facility": "13",
            "syslog_protocol": "tls",
            "batch_size": "500",
            "timeout_seconds": "10",
        },
    )
    assert refused.status_code == 200 and "at least 16 characters" in refused.content.decode()


def test_notification_targets_are_configured_in_the_admin(otp_admin_client):
    url = f"https://hooks.slack.test/services/{new_token(nbytes=18)}"
    response = otp_admin_client.post(
        "/admin/access/notificationtarget/add/",
        {
            "name": "secops",
            "kind": "slack",
            "webhook_url": url,
            "events": ["request.create", "request.break_glass"],
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    created = AuditEvent.objects.get(action=AuditAction.NOTIFICATIONTARGET_CREATE)
    assert created.data["write_only_changed"] == ["webhook_url"]
    assert created.data["changed"]["events"] == ["request.create", "request.break_glass"]
    listing = otp_admin_client.get("/admin/access/notificationtarget/").content.decode()
    assert "secops" in listing and "everything" in listing and url not in listing


def test_the_delivery_task_frees_its_worker_without_sinks_and_chains_itself_with_them(monkeypatch, sink_dir):
    from access import tasks_sinks

    queued = []
    monkeypatch.setattr(tasks_sinks, "async_task", lambda *args, **kwargs: queued.append(args))
    started = time.monotonic()
    assert tasks_sinks.deliver_sinks(run_for=5)["sinks"] == []
    assert time.monotonic() - started < 1 and queued == []  # no sink: the qcluster worker is free at once
    sink = sink_create(actor="test", name="shipper", kind=SinkKind.FILE, path="t.jsonl")
    result = tasks_sinks.deliver_sinks(run_for=0.5)
    assert result["sinks"] == [sink.pk] and result["delivered"] >= 1
    assert queued == [(tasks_sinks.DELIVER_TASK, 0.5)]  # its successor, so delivery never waits for the schedule
