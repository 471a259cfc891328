"""Sinks: configuring them (audited) and delivering the audit trail and the command log to them, at least once.

Delivery, per sink and stream: read the records after the cursor's position in stream order (audit `seq`,
SessionCommand pk), send them as one batch, and only once the destination accepted it move the cursor to the last
one, in the same short transaction that records the progress. A crash between the two resends the batch, so a
receiver sees every record at least once and each stream in order (duplicates carry the same `id`). A failure
leaves the cursor where it was and schedules the next attempt with exponential backoff (1 s doubling to 60 s).

One worker delivers a sink at a time: the loop (`sinks_deliver_run`, run by the django-q2 task
access.tasks_sinks.deliver_sinks or by `manage.py deliver_sinks`) holds the BackgroundLock `sink:<pk>` of each sink
it serves and renews it every round; a worker that dies lets its locks expire and another takes the sinks over
where their cursors stand.

Gaps: audit `seq` has none (appends are serialised by the chain lock). SessionCommand ids come from a sequence that
concurrent gateway transactions on PostgreSQL may commit out of order, so a missing id just after the cursor is
waited for (`GAP_GRACE`) before it is taken for a rolled-back or deleted row and passed over; SQLite commits one
writer at a time, so there a missing id is never in flight.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from access.events import COMMAND_FIELDS
from access.models import AuditAction, AuditEvent, SessionCommand, Sink, SinkCursor
from access.models.sinks import SinkKind, SinkStream, SyslogProtocol, sink_file_path
from access.services.audit import audit_record
from access.services.changes import changes_apply, changes_audit_data, changes_refuse_unknown
from access.services.locks import background_lock_acquire, background_lock_release, background_lock_renew
from access.transports import (
    DeliveryError,
    FileTransport,
    HecTransport,
    RelpTlsTransport,
    SinkRecord,
    SyslogTlsTransport,
    Transport,
    WebhookTransport,
)

log = logging.getLogger(__name__)

SINK_FIELDS = frozenset(
    {
        "name",
        "kind",
        "enabled",
        "stream_audit",
        "stream_commands",
        "host",
        "port",
        "syslog_facility",
        "syslog_protocol",
        "url",
        "hec_token",
        "hec_index",
        "hec_sourcetype",
        "hmac_key",
        "ca_certificate",
        "tls_verify",
        "path",
        "batch_size",
        "timeout_seconds",
    }
)
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
GAP_GRACE = timedelta(seconds=10)
"""How long a missing command id is waited for (a concurrent transaction not yet committed) before it is skipped."""
ROUND_BUDGET_SECONDS = 2.0
"""How long one sink is served in a round before the loop renews its locks and moves to the next sink."""


# -- configuration ------------------------------------------------------------------------------------------------
def _refuse_unknown(fields: dict[str, Any]) -> None:
    changes_refuse_unknown(fields, allowed=SINK_FIELDS, noun="a sink")


def _ensure_cursors(sink: Sink) -> None:
    now = timezone.now()
    for stream in SinkStream:
        SinkCursor.objects.get_or_create(sink=sink, stream=stream, defaults={"progress_at": now})


def sink_create(*, actor, **fields: Any) -> Sink:
    """Add a destination; its cursors start at the beginning of each stream (the whole history is sent)."""
    _refuse_unknown(fields)
    with transaction.atomic():
        sink = Sink()
        changed = changes_apply(sink, fields)
        sink.full_clean()
        sink.save()
        _ensure_cursors(sink)
        audit_record(action=AuditAction.SINK_CREATE, actor=actor, target=sink, data=changes_audit_data(sink, changed))
    return sink


def sink_update(*, actor, sink: Sink, **fields: Any) -> Sink:
    """Change a sink's destination or settings; its cursors stay where they are (nothing is resent or skipped)."""
    _refuse_unknown(fields)
    with transaction.atomic():
        changed = changes_apply(sink, fields)
        sink.full_clean()
        sink.save()
        _ensure_cursors(sink)
        if changed:
            # A changed destination gets a fresh chance at once rather than after the old one's backoff.
            SinkCursor.objects.filter(sink=sink).update(next_attempt_at=None)
        audit_record(action=AuditAction.SINK_UPDATE, actor=actor, target=sink, data=changes_audit_data(sink, changed))
    return sink


def sink_delete(*, actor, sink: Sink) -> None:
    """Remove a sink and its cursors; the audit row keeps its name, kind and where each stream stood."""
    with transaction.atomic():
        positions = dict(SinkCursor.objects.filter(sink=sink).values_list("stream", "position"))
        audit_record(
            action=AuditAction.SINK_DELETE,
            actor=actor,
            target=sink,
            data={"kind": sink.kind, "positions": positions},
        )
        sink.delete()


def sink_rewind(*, actor, sink: Sink, stream: str, position: int) -> SinkCursor:
    """Move a stream's cursor (back to resend from there, or forward to skip a backlog); audited."""
    stream = SinkStream(stream)
    if position < 0:
        raise ValidationError({"position": "A position is 0 or more."})
    with transaction.atomic():
        _ensure_cursors(sink)
        cursor = SinkCursor.objects.select_for_update().get(sink=sink, stream=stream)
        before = cursor.position
        cursor.position = position
        cursor.progress_at = timezone.now()
        cursor.failures, cursor.next_attempt_at, cursor.gap_since = 0, None, None
        cursor.save()
        audit_record(
            action=AuditAction.SINK_REWIND,
            actor=actor,
            target=sink,
            data={"stream": stream.value, "from": before, "to": position},
        )
    return cursor


# -- records ------------------------------------------------------------------------------------------------------
def _system() -> str:
    return settings.PAM_SYSTEM_ID


def _audit_records(position: int, limit: int) -> list[SinkRecord]:
    system = _system()
    rows = (
        AuditEvent.objects.filter(seq__gt=position)
        .order_by("seq")
        .values(
            "seq",
            "created_at",
            "actor_name",
            "action",
            "target_type",
            "target_id",
            "target_name",
            "data",
            "ip",
            "request_id",
            "hash",
            "prev_hash",
        )[:limit]
    )
    records = []
    for row in rows:
        record_id = f"audit:{row['seq']}"
        body = {
            "id": record_id,
            "system": system,
            "stream": SinkStream.AUDIT.value,
            "seq": row["seq"],
            "time": row["created_at"].isoformat(),
            "actor": row["actor_name"],
            "action": row["action"],
            "target": {"type": row["target_type"], "id": row["target_id"], "name": row["target_name"]},
            "data": row["data"],
            "ip": row["ip"],
            "request_id": row["request_id"],
            "hash": row["hash"],
            "prev_hash": row["prev_hash"],
        }
        severity = 4 if row["action"].endswith("failed") else 5
        records.append(SinkRecord(SinkStream.AUDIT.value, row["seq"], record_id, row["created_at"], body, severity))
    return records


def _command_records(position: int, limit: int) -> list[SinkRecord]:
    system = _system()
    rows = (
        SessionCommand.objects.filter(pk__gt=position)
        .order_by("pk")
        .values(
            *COMMAND_FIELDS,
            "session__public_id",
            "session__username",
            "session__user_name",
            "session__account__name",
            "session__gateway__name",
        )[:limit]
    )
    records = []
    for row in rows:
        record_id = f"cmd:{row['id']}"
        body = {
            "id": record_id,
            "system": system,
            "stream": SinkStream.COMMANDS.value,
            "time": row["at"].isoformat(),
            "session": str(row["session__public_id"]),
            "session_username": row["session__username"],
            "user": row["session__user_name"],
            "account": row["session__account__name"],
            "gateway": row["session__gateway__name"],
            # What a live event carries (connection_id to latency_us); the summary was redacted by the gateway
            # and scrubbed again when it was stored.
            **{name: row[name] for name in COMMAND_FIELDS if name not in ("id", "at")},
        }
        severity = 4 if row["refused"] or not row["ok"] else 6
        records.append(SinkRecord(SinkStream.COMMANDS.value, row["id"], record_id, row["at"], body, severity))
    return records


def stream_records(*, stream: str, position: int, limit: int) -> list[SinkRecord]:
    """Up to `limit` records of `stream` after `position`, in stream order."""
    if stream == SinkStream.AUDIT:
        return _audit_records(position, limit)
    return _command_records(position, limit)


def _gap_free(records: list[SinkRecord], cursor: SinkCursor, now: datetime) -> tuple[list[SinkRecord], bool]:
    """The records up to the first missing id (waited for `GAP_GRACE`); and whether a gap holds the rest back."""
    if connection.vendor == "sqlite" or not records:
        return records, False
    expected = cursor.position + 1
    for index, record in enumerate(records):
        if record.position != expected:
            if index == 0 and cursor.gap_since is not None and now - cursor.gap_since >= GAP_GRACE:
                return records, False  # waited long enough: a rolled-back or deleted row, not one in flight
            return records[:index], True
        expected += 1
    return records, False


# -- transports ---------------------------------------------------------------------------------------------------
def sink_transport(sink: Sink) -> Transport:
    """The transport for a sink's kind and settings (secrets revealed here, kept inside the transport)."""
    timeout = float(sink.timeout_seconds)
    system = _system()
    if sink.kind == SinkKind.SYSLOG:
        syslog = RelpTlsTransport if sink.syslog_protocol == SyslogProtocol.RELP else SyslogTlsTransport
        return syslog(
            host=sink.host,
            port=int(sink.port or 6514),
            ca_certificate=sink.ca_certificate,
            tls_verify=sink.tls_verify,
            facility=sink.syslog_facility,
            app_name=system,
            system=system,
            timeout=timeout,
        )
    if sink.kind == SinkKind.HEC:
        return HecTransport(
            url=sink.url,
            token=sink.hec_token.reveal() if sink.hec_token else "",
            index=sink.hec_index,
            sourcetype=sink.hec_sourcetype,
            system=system,
            ca_certificate=sink.ca_certificate,
            tls_verify=sink.tls_verify,
            timeout=timeout,
        )
    if sink.kind == SinkKind.WEBHOOK:
        return WebhookTransport(
            url=sink.url,
            hmac_key=sink.hmac_key.reveal() if sink.hmac_key else "",
            system=system,
            ca_certificate=sink.ca_certificate,
            tls_verify=sink.tls_verify,
            timeout=timeout,
        )
    return FileTransport(path=sink_file_path(sink.path))


def sink_backoff(failures: int) -> timedelta:
    """Wait before the next attempt after `failures` failures in a row: 1 s, 2 s, 4 s … capped at 60 s."""
    return timedelta(seconds=min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, failures - 1)))


# -- delivery -----------------------------------------------------------------------------------------------------
@dataclass
class StreamOutcome:
    """What one delivery attempt on one stream did: records confirmed, whether it failed, whether more wait."""

    delivered: int = 0
    failed: bool = False
    more: bool = False


def sink_stream_deliver(*, sink: Sink, stream: str, transport: Transport, now: datetime | None = None) -> StreamOutcome:
    """Send the next batch of `stream` to `sink` and move its cursor once the destination accepted it.

    Call it only while holding the sink's lock (see `sinks_deliver_run`). Never raises for a destination's
    failure: the cursor records it (error, failures, next attempt) and the outcome says so.
    """
    now = now or timezone.now()
    cursor, _ = SinkCursor.objects.get_or_create(sink=sink, stream=stream, defaults={"progress_at": now})
    if cursor.next_attempt_at is not None and cursor.next_attempt_at > now:
        return StreamOutcome(more=False)
    fetched = stream_records(stream=stream, position=cursor.position, limit=sink.batch_size)
    records, gap = _gap_free(fetched, cursor, now)
    if gap and cursor.gap_since is None:
        SinkCursor.objects.filter(pk=cursor.pk).update(gap_since=now)
    if not records:
        return StreamOutcome()
    try:
        transport.send(records)
    except DeliveryError as exc:
        failures = cursor.failures + 1
        SinkCursor.objects.filter(pk=cursor.pk, position=cursor.position).update(
            failures=failures,
            last_error=str(exc)[:500],
            last_error_at=now,
            next_attempt_at=timezone.now() + sink_backoff(failures),
        )
        log.warning("sink %s (%s): delivery failed (attempt %d): %s", sink.name, stream, failures, exc)
        return StreamOutcome(failed=True)
    except Exception:  # a bug: keep the loop and the other sinks going, retry later
        failures = cursor.failures + 1
        log.exception("sink %s (%s): unexpected delivery error", sink.name, stream)
        SinkCursor.objects.filter(pk=cursor.pk, position=cursor.position).update(
            failures=failures,
            last_error="internal error (see the worker's log)",
            last_error_at=now,
            next_attempt_at=timezone.now() + sink_backoff(failures),
        )
        return StreamOutcome(failed=True)
    last = records[-1]
    moved = SinkCursor.objects.filter(pk=cursor.pk, position=cursor.position).update(
        position=last.position,
        last_delivered_id=last.id,
        last_delivered_at=timezone.now(),
        progress_at=timezone.now(),
        delivered_total=F("delivered_total") + len(records),
        failures=0,
        last_error="",
        next_attempt_at=None,
        gap_since=None,
    )
    if not moved:  # someone rewound the cursor meanwhile: their position stands, the batch was a harmless resend
        return StreamOutcome(delivered=len(records))
    return StreamOutcome(delivered=len(records), more=len(fetched) >= sink.batch_size and not gap)


@dataclass
class DeliveryRunReport:
    """What one run of the delivery loop did."""

    holder: str
    sinks: set[int] = field(default_factory=set)
    delivered: int = 0
    failures: int = 0
    rounds: int = 0
    completed: bool = False


def _lock_name(sink_id: int) -> str:
    return f"sink:{sink_id}"


def _lock_ttl(sink: Sink) -> timedelta:
    """Longer than a round can take (a send may wait `timeout_seconds` on each of its steps)."""
    return timedelta(seconds=max(settings.PAM_SINK_LOCK_SECONDS, 3 * sink.timeout_seconds + ROUND_BUDGET_SECONDS))


def sinks_deliver_run(
    *,
    run_for: float = 25.0,
    interval: float = 1.0,
    holder: str | None = None,
    sink_ids: list[int] | None = None,
    stop=None,
    exit_when_idle: bool = True,
) -> DeliveryRunReport:
    """Deliver to every enabled sink whose lock is free, for `run_for` seconds (0: until `stop()` says so).

        Each round takes the free sinks' locks, renews those held, and serves each held sink's streams batch after
        batch until it is caught up or its round budget is spent; an idle round sleeps `interval`. The run ends at
        once when it holds no sink (none enabled, or other workers hold them all), unless `exit_when_idle` is False
    (a dedicated worker waits for sinks instead); `completed` is then True.
    """
    holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    report = DeliveryRunReport(holder=holder)
    transports: dict[int, tuple[datetime, Transport]] = {}
    held: dict[int, Sink] = {}
    deadline = time.monotonic() + run_for if run_for else None
    try:
        while deadline is None or time.monotonic() < deadline:
            if stop is not None and stop():
                break
            report.rounds += 1
            sinks = Sink.objects.filter(enabled=True)
            if sink_ids is not None:
                sinks = sinks.filter(pk__in=sink_ids)
            wanted = {sink.pk: sink for sink in sinks}
            for sink_id in list(held):
                if sink_id not in wanted:
                    background_lock_release(name=_lock_name(sink_id), holder=holder)
                    held.pop(sink_id)
            for sink_id, sink in wanted.items():
                ttl = _lock_ttl(sink)
                if sink_id in held:
                    if not background_lock_renew(name=_lock_name(sink_id), holder=holder, ttl=ttl):
                        log.warning("sink %s: lock lost to another worker", sink.name)
                        held.pop(sink_id)
                        continue
                elif not background_lock_acquire(name=_lock_name(sink_id), holder=holder, ttl=ttl):
                    continue
                held[sink_id] = sink
            report.sinks |= set(held)
            if not held and exit_when_idle:
                break  # no enabled sink, or another worker serves them all: leave the qcluster worker free
            busy = False
            for sink in held.values():
                transport = _transport_for(transports, sink)
                delivered, failed = _serve(sink, transport)
                report.delivered += delivered
                report.failures += failed
                busy = busy or delivered > 0
            for sink_id in set(transports) - set(held):
                transports.pop(sink_id)[1].close()
            if not busy:
                remaining = interval if deadline is None else min(interval, deadline - time.monotonic())
                time.sleep(max(0.0, remaining))
        report.completed = True
    finally:
        for _, transport in transports.values():
            transport.close()
        for sink_id in held:
            background_lock_release(name=_lock_name(sink_id), holder=holder)
    return report


def _transport_for(transports: dict[int, tuple[datetime, Transport]], sink: Sink) -> Transport:
    cached = transports.get(sink.pk)
    if cached is not None and cached[0] == sink.updated_at:
        return cached[1]
    if cached is not None:
        cached[1].close()
    transport = sink_transport(sink)
    transports[sink.pk] = (sink.updated_at, transport)
    return transport


def _serve(sink: Sink, transport: Transport) -> tuple[int, int]:
    """Serve a sink's streams for at most the round budget; return (records delivered, failed attempts)."""
    started = time.monotonic()
    delivered = failed = 0
    pending = list(sink.streams())
    while pending and time.monotonic() - started < ROUND_BUDGET_SECONDS:
        for stream in list(pending):
            outcome = sink_stream_deliver(sink=sink, stream=stream, transport=transport)
            delivered += outcome.delivered
            failed += int(outcome.failed)
            if not outcome.more:
                pending.remove(stream)
    return delivered, failed
