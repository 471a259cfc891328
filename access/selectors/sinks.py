"""How far each sink got: lag per stream, last delivered id and error, and which sinks are stuck.

Read by the admin (the sink list, the alert line on the index) and by the metrics endpoint, from the database, so
every portal process and every worker agrees.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from access.models import AuditEvent, SessionCommand, Sink, SinkCursor
from access.models.sinks import SinkStream


@dataclass(frozen=True)
class StreamStatus:
    """One stream of one sink as it stands: position, records behind, last delivery and error, stuck or not."""

    sink: Sink
    stream: str
    position: int
    lag: int
    last_delivered_id: str
    last_delivered_at: datetime | None
    last_error: str
    failures: int
    oldest_waiting_at: datetime | None
    progress_at: datetime | None
    stuck: bool


def stream_head(stream: str) -> int:
    """The position of the newest record of `stream` (0 when there is none)."""
    if stream == SinkStream.AUDIT:
        return AuditEvent.objects.aggregate(head=Max("seq"))["head"] or 0
    return SessionCommand.objects.aggregate(head=Max("pk"))["head"] or 0


def stream_lag(stream: str, position: int) -> int:
    """How many records of `stream` come after `position` (audit seq has no gaps: a subtraction)."""
    if stream == SinkStream.AUDIT:
        return max(0, stream_head(stream) - position)
    return SessionCommand.objects.filter(pk__gt=position).count()


def _oldest_waiting(stream: str, position: int) -> datetime | None:
    if stream == SinkStream.AUDIT:
        return AuditEvent.objects.filter(seq__gt=position).order_by("seq").values_list("created_at", flat=True).first()
    return SessionCommand.objects.filter(pk__gt=position).order_by("pk").values_list("at", flat=True).first()


def stuck_after() -> timedelta:
    return timedelta(minutes=settings.PAM_SINK_STUCK_MINUTES)


def sink_statuses(*, sinks=None, now: datetime | None = None) -> list[StreamStatus]:
    """The status of every stream each sink sends (all sinks by default), in name and stream order.

    A stream is stuck when its sink is enabled, records have waited longer than PAM_SINK_STUCK_MINUTES, and its
    cursor has not moved for as long.
    """
    now = now or timezone.now()
    limit = now - stuck_after()
    sinks = list(Sink.objects.all() if sinks is None else sinks)
    cursors = {
        (cursor.sink_id, cursor.stream): cursor for cursor in SinkCursor.objects.filter(sink__in=[s.pk for s in sinks])
    }
    heads = {stream.value: stream_head(stream) for stream in SinkStream}
    statuses = []
    for sink in sinks:
        for stream in sink.streams():
            cursor = cursors.get((sink.pk, stream)) or SinkCursor(sink=sink, stream=stream, progress_at=sink.created_at)
            behind = heads[stream] > cursor.position
            lag = stream_lag(stream, cursor.position) if behind else 0
            oldest = _oldest_waiting(stream, cursor.position) if lag else None
            progress = cursor.progress_at or sink.created_at
            stuck = bool(sink.enabled and lag and oldest and oldest < limit and (progress is None or progress < limit))
            statuses.append(
                StreamStatus(
                    sink=sink,
                    stream=str(stream),
                    position=cursor.position,
                    lag=lag,
                    last_delivered_id=cursor.last_delivered_id,
                    last_delivered_at=cursor.last_delivered_at,
                    last_error=cursor.last_error,
                    failures=cursor.failures,
                    oldest_waiting_at=oldest,
                    progress_at=cursor.progress_at,
                    stuck=stuck,
                )
            )
    return statuses


def sinks_stuck(*, now: datetime | None = None) -> list[StreamStatus]:
    """The streams of enabled sinks that are stuck (for the admin index's alert line and the metric)."""
    return [status for status in sink_statuses(sinks=Sink.objects.filter(enabled=True), now=now) if status.stuck]
