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


class AuditAction(models.TextChoices):
    """Every action an audit event may name: the one vocabulary of the trail (`audit_record` refuses others).

    The values are the strings stored in `AuditEvent.action`; they never change, so old rows stay readable.
    """

    # grants: requests and policies
    REQUEST_CREATE = "request.create", "request created"
    REQUEST_BREAK_GLASS = "request.break_glass", "break-glass request"
    REQUEST_APPROVE = "request.approve", "request approved"
    REQUEST_DENY = "request.deny", "request denied"
    REQUEST_CANCEL = "request.cancel", "request cancelled"
    REQUEST_POST_REVIEW = "request.post_review", "break-glass reviewed"
    ACCESSPOLICY_CREATE = "accesspolicy.create", "policy created"
    ACCESSPOLICY_UPDATE = "accesspolicy.update", "policy updated"
    ACCESSPOLICY_DELETE = "accesspolicy.delete", "policy deleted"
    PERMISSIONLEVEL_CREATE = "permissionlevel.create", "permission level created"
    PERMISSIONLEVEL_UPDATE = "permissionlevel.update", "permission level updated"
    PERMISSIONLEVEL_DELETE = "permissionlevel.delete", "permission level deleted"
    SCOPED_GRANT = "scoped.grant", "scoped grant made"
    SCOPED_GRANT_FAILED = "scoped.grant_failed", "scoped grant failed"
    # leases
    LEASE_ISSUE = "lease.issue", "lease issued"
    LEASE_ISSUE_FAILED = "lease.issue_failed", "lease issue failed"
    LEASE_RENEW = "lease.renew", "lease renewed"
    LEASE_REVEAL = "lease.reveal", "lease password revealed"
    LEASE_REVOKE = "lease.revoke", "lease revoked"
    LEASE_REVOKE_FAILED = "lease.revoke_failed", "lease revoke failed"
    LEASE_REVOKE_PREFIX = "lease.revoke_prefix", "leases revoked by prefix"
    # sessions
    SESSION_OPEN = "session.open", "session opened"
    SESSION_CONNECT = "session.connect", "session connected"
    SESSION_END = "session.end", "session ended"
    # gateways, resources, accounts, roles
    GATEWAY_REGISTER = "gateway.register", "gateway registered"
    GATEWAY_CREATE = "gateway.create", "gateway created"
    GATEWAY_UPDATE = "gateway.update", "gateway updated"
    GATEWAY_DELETE = "gateway.delete", "gateway deleted"
    RESOURCE_CREATE = "resource.create", "resource created"
    RESOURCE_UPDATE = "resource.update", "resource updated"
    RESOURCE_DELETE = "resource.delete", "resource deleted"
    RESOURCE_VERIFY_CONNECTION = "resource.verify_connection", "connection verified"
    RESOURCE_ROTATE_ROOT_STARTED = "resource.rotate_root_started", "root rotation started"
    RESOURCE_ROTATE_ROOT = "resource.rotate_root", "root rotated"
    RESOURCE_ROTATE_ROOT_FAILED = "resource.rotate_root_failed", "root rotation failed"
    ACCOUNT_CREATE = "account.create", "account created"
    ACCOUNT_UPDATE = "account.update", "account updated"
    ACCOUNT_DELETE = "account.delete", "account deleted"
    ACCOUNT_ROTATE_PASSWORD = "account.rotate_password", "account password rotated"
    DYNAMICROLE_CREATE = "dynamicrole.create", "role created"
    DYNAMICROLE_UPDATE = "dynamicrole.update", "role updated"
    DYNAMICROLE_DELETE = "dynamicrole.delete", "role deleted"
    RECONCILE_DROP_USER = "reconcile.drop_user", "orphan user dropped"
    RECONCILE_DROP_ROLE = "reconcile.drop_role", "orphan role dropped"
    # connector actions
    CONNECTOR_ACTION_RUN = "connector_action.run", "connector action started"
    CONNECTOR_ACTION_SUCCEEDED = "connector_action.succeeded", "connector action succeeded"
    CONNECTOR_ACTION_FAILED = "connector_action.failed", "connector action failed"
    CONNECTOR_ACTION_ROLLBACK = "connector_action.rollback", "connector action rollback started"
    CONNECTOR_ACTION_ROLLED_BACK = "connector_action.rolled_back", "connector action rolled back"
    CONNECTOR_ACTION_ROLLBACK_FAILED = "connector_action.rollback_failed", "connector action rollback failed"
    # people, tokens, MFA
    API_TOKEN_CREATE = "api_token.create", "API token created"
    API_TOKEN_FIRST_USE = "api_token.first_use", "API token first used"
    API_TOKEN_REVOKE = "api_token.revoke", "API token revoked"
    USER_ACCESS_END = "user.access_end", "user's access ended"
    # authentication: every sign-in step, in the portal, the admin, the API and the gateways
    AUTH_LOGIN = "auth.login", "password accepted"
    AUTH_LOGIN_FAILED = "auth.login_failed", "password refused"
    AUTH_LOGOUT = "auth.logout", "signed out"
    AUTH_LOCKOUT = "auth.lockout", "locked out"
    AUTH_LOCKOUT_CLEAR = "auth.lockout_clear", "lockout cleared"
    AUTH_MFA_PASSED = "auth.mfa_passed", "second factor passed"
    AUTH_MFA_FAILED = "auth.mfa_failed", "second factor failed"
    AUTH_STEP_UP = "auth.step_up", "step-up passed"
    AUTH_EMAIL_CODE_SENT = "auth.email_code_sent", "email code sent"
    GATEWAY_LOGIN_FAILED = "gateway.login_failed", "gateway login failed"
    AUTH_SSO_LOGIN = "auth.sso_login", "signed in through SSO"
    AUTH_SSO_FAILED = "auth.sso_failed", "SSO sign-in refused"
    SSO_GROUPS_SYNC = "sso.groups_sync", "groups changed by SSO"
    SSO_GROUP_MAPPING_CREATE = "sso.mapping_create", "SSO group mapping created"
    SSO_GROUP_MAPPING_UPDATE = "sso.mapping_update", "SSO group mapping updated"
    SSO_GROUP_MAPPING_DELETE = "sso.mapping_delete", "SSO group mapping deleted"
    CLI_DEVICE_REQUEST = "cli.device_request", "CLI login requested"
    CLI_DEVICE_CONFIRM = "cli.device_confirm", "CLI device code confirmed"
    CLI_DEVICE_DENY = "cli.device_deny", "CLI device code denied"
    CLI_LOGIN = "cli.login", "CLI login"
    CLI_TOKEN_REVOKE = "cli.token_revoke", "CLI login revoked"
    MFA_CODE_REFUSED = "mfa.code_refused", "one-time code refused (API)"
    MFA_TOTP_ENROL = "mfa.totp_enrol", "authenticator enrolled"
    MFA_BACKUP_CODES = "mfa.backup_codes", "backup codes made"
    MFA_METHOD = "mfa.method", "MFA method chosen"
    OTP_DEVICE_CREATE = "otp.device.create", "OTP device added (manage.py)"
    DEMO_USER_CREATE = "demo.user.create", "demo user created"
    # integrations: sinks (SIEM streaming) and chat/webhook notification targets
    SINK_CREATE = "sink.create", "sink created"
    SINK_UPDATE = "sink.update", "sink updated"
    SINK_DELETE = "sink.delete", "sink deleted"
    SINK_REWIND = "sink.rewind", "sink cursor moved"
    NOTIFICATIONTARGET_CREATE = "notificationtarget.create", "notification target created"
    NOTIFICATIONTARGET_UPDATE = "notificationtarget.update", "notification target updated"
    NOTIFICATIONTARGET_DELETE = "notificationtarget.delete", "notification target deleted"
    # housekeeping
    SECRETS_REENCRYPT = "secrets.reencrypt", "secrets re-encrypted"
    SCHEDULES_SETUP = "schedules.setup", "schedules set up"

    @classmethod
    def authentication(cls) -> list[AuditAction]:
        """The authentication events (sign-in steps, lockouts, tokens, gateway logins), for the admin's filter."""
        return [
            action
            for action in cls
            if action.value.startswith(("auth.", "api_token.", "mfa.", "sso.")) or action == cls.GATEWAY_LOGIN_FAILED
        ]

    @classmethod
    def for_connector_action_state(cls, state: str) -> AuditAction:
        """The outcome row of a connector action, by its ActionState (succeeded, failed, rolled_back, ...)."""
        return _CONNECTOR_ACTION_OUTCOMES[state]


_CONNECTOR_ACTION_OUTCOMES = {
    "succeeded": AuditAction.CONNECTOR_ACTION_SUCCEEDED,
    "failed": AuditAction.CONNECTOR_ACTION_FAILED,
    "rolled_back": AuditAction.CONNECTOR_ACTION_ROLLED_BACK,
    "rollback_failed": AuditAction.CONNECTOR_ACTION_ROLLBACK_FAILED,
}


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
    action = models.CharField(max_length=64, db_index=True, choices=AuditAction.choices)
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
