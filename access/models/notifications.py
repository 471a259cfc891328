"""Chat and webhook notifications: where they go (`NotificationTarget`) and each one sent (`Notification`).

A target is a Slack or Microsoft Teams incoming webhook, or a generic signed webhook, scoped to one access
policy, one resource, or everything, for a chosen set of events. Each event that matches a target becomes a
`Notification` row in the transaction that caused it; a django-q2 task posts it after the commit and retries it
with backoff, so a slow or failing webhook never blocks the request that caused it.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from access.fields import EncryptedTextField
from access.models.policies import AccessPolicy
from access.models.resources import Resource


class NotificationKind(models.TextChoices):
    SLACK = "slack", "Slack incoming webhook"
    TEAMS = "teams", "Microsoft Teams (Workflows webhook, Adaptive Card)"
    TEAMS_MESSAGECARD = "teams_messagecard", "Microsoft Teams (Office 365 connector, MessageCard)"
    WEBHOOK = "webhook", "Webhook (JSON, HMAC-SHA256 signed)"


class NotificationEvent(models.TextChoices):
    REQUEST_CREATE = "request.create", "access requested"
    REQUEST_APPROVE = "request.approve", "request approved"
    REQUEST_DENY = "request.deny", "request denied"
    BREAK_GLASS = "request.break_glass", "break-glass access used"
    REVOKE_FAILED = "lease.revoke_failed", "lease revocation failed"


def all_notification_events() -> list[str]:
    return [event.value for event in NotificationEvent]


class NotificationTargetQuerySet(models.QuerySet):
    def matching(self, *, event: str, policy: AccessPolicy | None = None, resource: Resource | None = None):
        """Enabled targets that want `event` and whose scope (a policy, a resource, or none: everything) matches."""
        scope = Q(policy__isnull=True, resource__isnull=True)
        if policy is not None:
            scope |= Q(policy=policy)
        if resource is not None:
            scope |= Q(resource=resource)
        return [target for target in self.filter(enabled=True).filter(scope) if event in (target.events or [])]


class NotificationTarget(models.Model):
    """A chat channel or webhook told about access events, for one policy, one resource, or all of them.

    The webhook URL is a secret for Slack and Teams (whoever has it can post), so it is encrypted at rest like
    the generic webhook's HMAC key, and neither is shown again once saved.
    """

    name = models.CharField(max_length=120, unique=True)
    kind = models.CharField(max_length=24, choices=NotificationKind.choices)
    webhook_url = EncryptedTextField("webhook URL", help_text="The incoming webhook URL. Write-only once saved.")
    hmac_key = EncryptedTextField(
        "HMAC key", help_text="Generic webhooks: signs each body (X-PAM-Signature: sha256=...). At least 16 characters."
    )
    events = models.JSONField(default=all_notification_events, help_text="Which events are sent.")
    policy = models.ForeignKey(
        AccessPolicy, null=True, blank=True, on_delete=models.CASCADE, related_name="notification_targets"
    )
    resource = models.ForeignKey(
        Resource, null=True, blank=True, on_delete=models.CASCADE, related_name="notification_targets"
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = NotificationTargetQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(policy__isnull=True) | Q(resource__isnull=True), name="notificationtarget_one_scope"
            )
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        url = self.webhook_url.reveal() if self.webhook_url else ""
        if not url.startswith(("https://", "http://")):
            errors["webhook_url"] = "Enter the webhook's http(s) URL."
        if self.kind == NotificationKind.WEBHOOK and len(self.hmac_key.reveal() if self.hmac_key else "") < 16:
            errors["hmac_key"] = "A generic webhook needs an HMAC key of at least 16 characters."
        unknown = set(self.events or []) - set(all_notification_events())
        if not isinstance(self.events, list) or unknown:
            errors["events"] = f"Choose among: {', '.join(all_notification_events())}."
        if self.policy_id and self.resource_id:
            errors["resource"] = "Scope a target to a policy or to a resource, not both."
        if errors:
            raise ValidationError(errors)

    @property
    def scope(self) -> str:
        if self.policy_id:
            return f"policy {self.policy}"
        if self.resource_id:
            return f"resource {self.resource}"
        return "everything"


class NotificationState(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed (gave up)"


class NotificationQuerySet(models.QuerySet):
    def due(self, now=None):
        """Pending notifications whose next attempt time has come."""
        now = now or timezone.now()
        return self.filter(state=NotificationState.PENDING, next_attempt_at__lte=now)


class Notification(models.Model):
    """One message for one target: its rendered body (no secrets), and how sending it went."""

    target = models.ForeignKey(NotificationTarget, on_delete=models.CASCADE, related_name="notifications")
    event = models.CharField(max_length=32, choices=NotificationEvent.choices)
    title = models.CharField(max_length=255)
    payload = models.JSONField(help_text="The body posted, as the target's kind wants it.")
    state = models.CharField(max_length=16, choices=NotificationState.choices, default=NotificationState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_event_display()} → {self.target}"
