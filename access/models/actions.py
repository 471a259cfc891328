"""Connector actions: changes made to database users on a resource, with their before-image for rollback."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from access.models.resources import Account, Resource


class ActionKind(models.TextChoices):
    ROTATE_PASSWORD = "rotate_password", "Rotate user password"
    GRANT_ROLE = "grant_role", "Grant role to user"
    REVOKE_ROLE = "revoke_role", "Revoke role from user"
    CREATE_READ_ONLY_USER = "create_read_only_user", "Create read-only user"
    DROP_USER = "drop_user", "Drop user"
    LOCK_USER = "lock_user", "Lock user"
    UNLOCK_USER = "unlock_user", "Unlock user"


class ActionState(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    ROLLED_BACK = "rolled_back", "Rolled back"
    ROLLBACK_FAILED = "rollback_failed", "Rollback failed"


class ConnectorAction(models.Model):
    """One change to a database user (rotate, grant, revoke, create, drop, lock), recorded with its before-image.

    Rollback is possible where the before-image allows it (re-grant a revoked role, drop a created
    user, unlock a locked user); a rotated password cannot be rolled back because the old one is
    never stored.
    """

    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="actions")
    account = models.ForeignKey(Account, null=True, blank=True, on_delete=models.SET_NULL, related_name="actions")
    kind = models.CharField(max_length=32, choices=ActionKind.choices)
    db = models.CharField("database", max_length=64, default="admin")
    username = models.CharField(max_length=255)
    params = models.JSONField(default=dict, blank=True)
    before_image = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=ActionState.choices, default=ActionState.RUNNING)
    error = models.TextField(blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="connector_actions"
    )
    actor_name = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    rolled_back_at = models.DateTimeField(null=True, blank=True)
    rolled_back_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.username}@{self.db} on {self.resource}"

    @property
    def can_roll_back(self) -> bool:
        return self.state in (ActionState.SUCCEEDED, ActionState.ROLLBACK_FAILED) and self.kind in ROLLBACK_KINDS


ROLLBACK_KINDS = frozenset(
    {ActionKind.GRANT_ROLE, ActionKind.REVOKE_ROLE, ActionKind.CREATE_READ_ONLY_USER, ActionKind.LOCK_USER}
)
