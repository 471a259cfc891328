"""Telling the gateways at once that a session ended: one row per end, read by cursor, plus NOTIFY on PostgreSQL.

Whatever ends a session (its user, an administrator's kill, expiry, a deactivated user, a removed grant, a revoked
lease) goes through `access.services.sessions`, which writes a `SessionRevocation` here in the same transaction.
Gateways poll `gateway_ended_sessions_since(cursor=...)` about every 200 ms and close the connections of the
sessions named, telling their clients why (`description`); on PostgreSQL a `NOTIFY pam_session_ended, '<row id>'`
follows each commit, so a gateway that LISTENs may poll at once instead of waiting for its next tick.

Delivery is at least once, in id order: a poll returns every row after the cursor, and the cursor it hands back
only passes rows older than `REDELIVERY_WINDOW`, so a row whose transaction committed after a higher id was read
(PostgreSQL allocates ids before commit) is still delivered. Closing an already closed session is a no-op, so
repeats cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from access.models import Session, SessionRevocation
from access.models.sessions import SessionEndReason, session_end_words

NOTIFY_CHANNEL = "pam_session_ended"
REDELIVERY_WINDOW = timedelta(seconds=5)
KEEP_FOR = timedelta(days=1)


@dataclass(frozen=True)
class EndedSession:
    """A session a gateway must close now, and what to tell its clients."""

    id: int  # the revocation row: the cursor's unit
    session_id: int | None
    username: str
    gateway_id: int | None
    reason: str
    description: str


def _actor_name(actor) -> str:
    if getattr(actor, "is_authenticated", False):
        return actor.get_username()
    return actor if isinstance(actor, str) and actor not in ("system", "gateway") else ""


def session_revocation_record(*, session: Session, reason: SessionEndReason | str, actor=None) -> SessionRevocation:
    """Record that `session` ended, for the gateways (called by the session services inside their transaction)."""
    reason = SessionEndReason(reason)
    row = SessionRevocation.objects.create(
        session=session,
        session_username=session.username,
        gateway_id=session.gateway_id,
        reason=reason.value,
        description=session_end_words(reason, _actor_name(actor))[:255],
    )
    if connection.vendor == "postgresql":
        transaction.on_commit(lambda: _notify(row.pk))
    return row


def _notify(row_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, str(row_id)])


def gateway_ended_sessions_since(*, cursor: int | None, limit: int = 1000) -> tuple[list[EndedSession], int]:
    """The sessions ended after `cursor`, and the cursor for the next poll.

    `cursor=None` (a gateway starting) returns the ends of the last `REDELIVERY_WINDOW`. Rows may come again on
    the next polls while they are younger than the window (see the module's docstring): close by `session_id`.
    """
    now = timezone.now()
    rows = SessionRevocation.objects.order_by("id")
    rows = rows.filter(created_at__gte=now - REDELIVERY_WINDOW) if cursor is None else rows.filter(id__gt=cursor)
    batch = list(
        rows.values_list("id", "session_id", "session_username", "gateway_id", "reason", "description", "created_at")[
            :limit
        ]
    )
    ended = [EndedSession(*row[:6]) for row in batch]
    next_cursor = cursor if cursor is not None else _settled_cursor(now)
    for row in batch:  # the cursor passes the leading rows old enough that no earlier id can still commit
        if row[6] >= now - REDELIVERY_WINDOW:
            break
        next_cursor = row[0]
    if len(batch) == limit:
        next_cursor = batch[-1][0]  # a backlog: move on, the rest comes with the next poll
    return ended, next_cursor


def _settled_cursor(now) -> int:
    """The last row older than the redelivery window (0 when none): where a starting gateway's cursor begins."""
    last = (
        SessionRevocation.objects.filter(created_at__lt=now - REDELIVERY_WINDOW)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    )
    return last or 0


def session_revocations_prune(*, older_than: timedelta = KEEP_FOR) -> int:
    """Delete rows older than `older_than` (a gateway away for longer reloads its sessions); return how many."""
    deleted, _ = SessionRevocation.objects.filter(created_at__lt=timezone.now() - older_than).delete()
    return deleted
