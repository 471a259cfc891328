"""Gateway sessions and the commands the proxy saw in them."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from access.models.leases import Lease
from access.models.resources import Account, Gateway
from access.models.visibility import VisibleToQuerySet


class SessionState(models.TextChoices):
    OPEN = "open", "Open"
    ENDED = "ended", "Ended"


class SessionEndReason(models.TextChoices):
    EXPIRED = "expired", "Expired"
    ENDED_BY_USER = "ended_by_user", "Ended by its user"
    KILLED = "killed", "Killed by an administrator"
    ACCOUNT_REVOKED = "account_revoked", "Account or lease revoked"
    GATEWAY_STOPPED = "gateway_stopped", "Gateway stopped"
    GATEWAY_LOST = "gateway_lost", "Gateway lost"
    USER_DEACTIVATED = "user_deactivated", "User deactivated"
    USER_DELETED = "user_deleted", "User deleted"
    GRANT_REMOVED = "grant_removed", "Grant removed"


_END_WORDS = {
    SessionEndReason.EXPIRED: "the session expired",
    SessionEndReason.ENDED_BY_USER: "the session was ended by its user",
    SessionEndReason.KILLED: "the session was killed by {actor}",
    SessionEndReason.ACCOUNT_REVOKED: "the account or lease of the session was revoked",
    SessionEndReason.GATEWAY_STOPPED: "the gateway stopped",
    SessionEndReason.GATEWAY_LOST: "the gateway was lost",
    SessionEndReason.USER_DEACTIVATED: "the user was deactivated",
    SessionEndReason.USER_DELETED: "the user was deleted",
    SessionEndReason.GRANT_REMOVED: "the user's access grant was removed",
}


def session_end_words(reason: str, actor_name: str = "") -> str:
    """Why a session ended, in words a client can be told: "the session was killed by alice", ..."""
    words = _END_WORDS.get(reason, "the session ended")
    return words.format(actor=actor_name or "an administrator")


class SessionQuerySet(VisibleToQuerySet):
    owner_field = "user"  # visible_to(user, action): the user's own sessions, or all for staff with the permission

    def open(self):
        return self.filter(state=SessionState.OPEN)

    def live(self, now=None):
        """Open sessions that have not expired: their credentials still log in."""
        now = now or timezone.now()
        return self.open().filter(expires_at__gt=now)

    def due(self, now=None):
        """Open sessions past their expiry, to be ended."""
        now = now or timezone.now()
        return self.open().filter(expires_at__lte=now)


class Session(models.Model):
    """A gateway session: one person's time-boxed use of an account (or lease) through a gateway.

    The client logs in with `username` and a one-time secret; only SCRAM verifiers of the secret
    are stored (`verifiers`), so the database never holds something that logs in.
    """

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="gateway_sessions"
    )
    user_name = models.CharField(max_length=150, blank=True)
    account = models.ForeignKey(Account, null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions")
    lease = models.ForeignKey(Lease, null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions")
    gateway = models.ForeignKey(Gateway, null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions")
    username = models.CharField(max_length=100, unique=True)
    verifiers = models.JSONField(default=dict, editable=False)
    read_only = models.BooleanField(default=False)
    database_allow_list = models.JSONField(
        "databases", default=list, blank=True, help_text="The databases it may use; empty: every database."
    )
    privileged_commands = models.JSONField(
        default=list, blank=True, help_text="Privileged command families its policy allows (none by default)."
    )
    state = models.CharField(max_length=8, choices=SessionState.choices, default=SessionState.OPEN, db_index=True)
    started_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)
    first_connected_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=32, choices=SessionEndReason.choices, blank=True)
    client_address = models.CharField(max_length=64, blank=True)
    connections = models.PositiveIntegerField(default=0)
    commands_count = models.PositiveIntegerField(default=0)
    bytes_in = models.BigIntegerField(default=0)
    bytes_out = models.BigIntegerField(default=0)

    objects = SessionQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(state=SessionState.OPEN) | Q(ended_at__isnull=False),
                name="session_ended_has_time",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.username} ({self.get_state_display()})"

    @property
    def target(self):
        return self.account or self.lease


class SessionCommand(models.Model):
    """One command the proxy relayed, redacted: what ran where, how it ended and how long it took."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="commands")
    at = models.DateTimeField(default=timezone.now, db_index=True)
    connection_id = models.PositiveIntegerField(default=0)
    database = models.CharField(max_length=128, blank=True)
    collection = models.CharField(max_length=255, blank=True)
    command = models.CharField(max_length=64)
    summary = models.JSONField(default=dict, blank=True)
    ok = models.BooleanField(default=True)
    n = models.IntegerField(null=True, blank=True)
    error_code = models.IntegerField(null=True, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    refused = models.BooleanField(default=False, help_text="Refused by the session's policy, never sent upstream.")
    latency_us = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["session", "at"], name="sessioncommand_session_at")]

    def __str__(self) -> str:
        return f"{self.command} on {self.database}.{self.collection}" if self.collection else self.command


class SessionRevocation(models.Model):
    """One ended session, told to the gateways: a row per end, polled by every gateway (at least once, in order).

    `access.services.sessions` writes it in the transaction that ends the session; gateways read the rows after
    their cursor (`access.services.offboarding.gateway_ended_sessions_since`, about every 200 ms) and close the
    session's connections at once, with `description` (the reason in words) as the error their clients see.
    Rows are kept a day (`session_revocations_prune`): a gateway that was away longer reloads its sessions anyway.
    """

    session = models.ForeignKey(Session, null=True, on_delete=models.SET_NULL, related_name="revocations")
    session_username = models.CharField(max_length=100)
    gateway_id = models.BigIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=32, choices=SessionEndReason.choices)
    description = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.session_username}: {self.description}"
