"""Recording audit events on the hash chain, inside the caller's transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone

from access import context
from access.models import AuditAction, AuditEvent
from access.models.audit import GENESIS_HASH

_SECRET_KEYS = ("password", "pwd", "secret", "private_key", "token", "payload")
_CHAIN_LOCK_ID = 0x50414D41  # "PAMA": the PostgreSQL advisory lock that serialises chain appends
REDACTED = "[redacted]"
_HEAD_SQL = f"SELECT seq, hash FROM {AuditEvent._meta.db_table} ORDER BY seq DESC LIMIT 1"  # noqa: S608 - a model constant


def _scrub(value: Any) -> Any:
    """Replace the values of secret-looking keys, at any depth: audit rows never carry secrets."""
    if isinstance(value, dict):
        return {
            key: REDACTED if any(part in str(key).lower() for part in _SECRET_KEYS) else _scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def _lock_chain() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_ID])
    # SQLite runs IMMEDIATE transactions (see settings): the write lock is already held.


@dataclass(frozen=True)
class AuditEntry:
    """One event to append with `audit_record_many`: the same fields `audit_record` takes."""

    action: AuditAction
    actor: Any = None
    target: Any = None
    target_name: str | None = None
    data: dict | None = field(default=None)


def _event(entry: AuditEntry, *, seq: int, prev_hash: str, now, request) -> AuditEvent:
    actor, target, target_name, data = entry.actor, entry.target, entry.target_name, entry.data
    if request.client:  # a call made with a `pam login` token: the row says so
        data = {**(data or {}), "via": request.client}
    actor_user = actor if getattr(actor, "is_authenticated", False) else None
    event = AuditEvent(
        seq=seq,
        created_at=now,
        actor=actor_user,
        actor_name=actor_user.get_username() if actor_user else (actor if isinstance(actor, str) else "system"),
        action=AuditAction(entry.action).value,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_name=(target_name if target_name is not None else str(target) if target is not None else "")[:255],
        data=json.loads(json.dumps(_scrub(data or {}), cls=DjangoJSONEncoder)),
        ip=request.ip,
        request_id=request.request_id,
        prev_hash=prev_hash,
    )
    event.hash = event.compute_hash()
    return event


def audit_record(
    *,
    action: AuditAction,
    actor=None,
    target=None,
    target_name: str | None = None,
    data: dict | None = None,
) -> AuditEvent:
    """Append one event to the audit chain, in the current transaction (or a new one).

    `action` is an AuditAction (or its exact value); any other name raises ValueError before anything is written.
    """
    return audit_record_many(
        entries=[AuditEntry(action=AuditAction(action), actor=actor, target=target, target_name=target_name, data=data)]
    )[0]


def audit_record_many(*, entries: list[AuditEntry]) -> list[AuditEvent]:
    """Append several events to the audit chain at once, in order, in the current transaction (or a new one).

    The same chain as one `audit_record` call per entry (consecutive sequence numbers, each hash covering the
    previous one), for one lock, one read of the chain's head and one INSERT: a batch of revocations holds the
    chain (and, on SQLite, the database's write lock) for a moment instead of one round trip per event.
    """
    entries = [AuditEntry(AuditAction(e.action), e.actor, e.target, e.target_name, e.data) for e in entries]
    if not entries:
        return []
    request = context.current()
    # No savepoint inside the caller's transaction: the event and the change it records commit or fail together.
    with transaction.atomic(savepoint=False):
        _lock_chain()
        with connection.cursor() as cursor:  # the chain's head: the hottest read of the trail, kept to one statement
            cursor.execute(_HEAD_SQL)
            last = cursor.fetchone()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        now = timezone.now()
        events = []
        for entry in entries:
            event = _event(entry, seq=seq, prev_hash=prev_hash, now=now, request=request)
            events.append(event)
            seq, prev_hash = seq + 1, event.hash
        if len(events) == 1:
            events[0].save(force_insert=True)
        else:
            AuditEvent.objects.bulk_create(events)
    return events
