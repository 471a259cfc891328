"""Recording audit events on the hash chain, inside the caller's transaction."""

from __future__ import annotations

import json
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
    action = AuditAction(action)
    request = context.current()
    if request.client:
        data = {**(data or {}), "via": request.client}
    with transaction.atomic():
        _lock_chain()
        last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        actor_user = actor if getattr(actor, "is_authenticated", False) else None
        event = AuditEvent(
            seq=seq,
            created_at=timezone.now(),
            actor=actor_user,
            actor_name=actor_user.get_username() if actor_user else (actor if isinstance(actor, str) else "system"),
            action=action.value,
            target_type=target._meta.label_lower if target is not None else "",
            target_id=str(target.pk) if target is not None else "",
            target_name=(target_name if target_name is not None else str(target) if target is not None else "")[:255],
            data=json.loads(json.dumps(_scrub(data or {}), cls=DjangoJSONEncoder)),
            ip=request.ip,
            request_id=request.request_id,
            prev_hash=prev_hash,
        )
        event.hash = event.compute_hash()
        event.save(force_insert=True)
    return event
