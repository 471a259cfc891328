"""The tamper-evident audit trail: append-only events linked by a SHA-256 hash chain.

Each event carries a sequence number and the hash of the previous event, and its own hash covers
both and every recorded field, so `manage.py verify_audit` can name the first event that was
altered, inserted or removed. Names of actors and targets are copied so rows outlive deletions.
"""

from __future__ import annotations

import hashlib
import json

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

GENESIS_HASH = "0" * 64


class AuditEventIsAppendOnly(Exception):
    """Raised when code tries to change or delete an audit event."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AuditEventIsAppendOnly("Audit events cannot be updated.")

    def delete(self):
        raise AuditEventIsAppendOnly("Audit events cannot be deleted.")

    def for_target(self, obj):
        return self.filter(target_type=obj._meta.label_lower, target_id=str(obj.pk))


class AuditEvent(models.Model):
    """One recorded action: who did what to which object, when, from where, with what outcome."""

    seq = models.BigIntegerField(unique=True, editable=False)
    created_at = models.DateTimeField(db_index=True, editable=False)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_events",
        db_constraint=False,
    )
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_name = models.CharField(max_length=255, blank=True)
    data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    ip = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    prev_hash = models.CharField(max_length=64, editable=False)
    hash = models.CharField(max_length=64, unique=True, editable=False)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-seq"]
        indexes = [
            models.Index(fields=["target_type", "target_id"], name="audit_target"),
            # The admin's list filtered by action, newest first, over millions of events: an index range, no sort.
            models.Index(fields=["action", "created_at"], name="audit_action_time"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.actor_name or 'system'} {self.action} {self.target_name}".strip()

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AuditEventIsAppendOnly("Audit events cannot be changed once written.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditEventIsAppendOnly("Audit events cannot be deleted.")

    def compute_hash(self) -> str:
        """SHA-256 over the previous hash and a canonical JSON of every recorded field.

        The actor's foreign key is left out on purpose: it becomes NULL when the user is deleted,
        while the copied `actor_name` (covered) keeps the record.
        """
        payload = {
            "seq": self.seq,
            "created_at": self.created_at.isoformat(),
            "actor_name": self.actor_name,
            "action": self.action,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "target_name": self.target_name,
            "data": self.data,
            "ip": self.ip,
            "request_id": self.request_id,
            "prev_hash": self.prev_hash,
        }
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)
        return hashlib.sha256(canonical.encode()).hexdigest()
