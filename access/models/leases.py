"""Dynamic credentials: roles that describe on-demand database users, and the leases they issue."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from access.fields import EncryptedTextField, HumanDurationField
from access.models.resources import Resource
from access.models.visibility import VisibleToQuerySet, user_is_active, user_sees_every

DEFAULT_USERNAME_TEMPLATE = "v-{holder}-{role}-{random}-{unix}"
ATLAS_USERS_DB_MESSAGE = "Atlas users always authenticate against admin: name databases in the roles instead."


class DynamicRoleQuerySet(models.QuerySet):
    def granted_to(self, user):
        """Roles an enabled policy names for `user` (directly or through a group): what they may ask to use."""
        from access.models.policies import AccessPolicy  # policies refer to roles: imported when asked

        return self.filter(pk__in=AccessPolicy.objects.granted_to(user).filter(role__isnull=False).values("role_id"))

    def visible_to(self, user, action: str = "view"):
        """Roles `user` may see: those granted to them, or every role for active staff holding the permission."""
        if not user_is_active(user):
            return self.none()
        if user_sees_every(user, self.model, action):
            return self
        return self.granted_to(user)


class DynamicRole(models.Model):
    """A template for short-lived database users (Vault's role): database, roles, TTLs, username and password policy.

    For MongoDB, `roles` holds role names or {"role", "db"} documents; for Atlas it holds
    {"roleName", "databaseName", "collectionName"} documents and `scopes` limits the clusters.
    """

    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="roles")
    name = models.SlugField(max_length=64)
    description = models.TextField(blank=True)
    db = models.CharField("database", max_length=64, default="admin", help_text="Database the user is created in.")
    roles = models.JSONField(
        default=list,
        blank=True,  # none: a server without authorization (FerretDB, the demo's) refuses any role
        help_text='e.g. ["readWrite", {"role": "read", "db": "reports"}]; empty on servers without authorization.',
    )
    scopes = models.JSONField(default=list, blank=True, help_text='Atlas only: [{"name", "type"}].')
    default_ttl = HumanDurationField(null=True, blank=True, help_text="Blank: the resource's default TTL.")
    max_ttl = HumanDurationField(null=True, blank=True, help_text="Blank: the resource's max TTL.")
    username_template = models.CharField(max_length=200, default=DEFAULT_USERNAME_TEMPLATE)
    password_length = models.PositiveSmallIntegerField(default=32)
    require_mfa = models.BooleanField("require MFA", default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DynamicRoleQuerySet.as_manager()

    class Meta:
        ordering = ["resource__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["resource", "name"], name="role_unique_name"),
            models.CheckConstraint(
                condition=Q(default_ttl__isnull=True) | Q(max_ttl__isnull=True) | Q(default_ttl__lte=F("max_ttl")),
                name="role_ttl_within_max",
            ),
            models.CheckConstraint(
                condition=Q(password_length__gte=16) & Q(password_length__lte=128),
                name="role_password_length",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.resource.name}/{self.name}"

    def clean(self) -> None:
        from access.validators import validate_atlas_roles, validate_atlas_scopes, validate_mongodb_roles

        errors = {}
        if self.resource_id:
            validator = validate_atlas_roles if self.resource.is_atlas else validate_mongodb_roles
            try:
                validator(self.roles)
            except ValidationError as exc:
                errors["roles"] = exc.messages
            if self.resource.is_atlas:
                try:
                    validate_atlas_scopes(self.scopes)
                except ValidationError as exc:
                    errors["scopes"] = exc.messages
                if self.db != "admin":
                    errors["db"] = ATLAS_USERS_DB_MESSAGE
            elif self.scopes:
                errors["scopes"] = "Scopes choose Atlas clusters: a MongoDB role has none."
        if self.effective_default_ttl > self.effective_max_ttl:
            errors["default_ttl"] = "The TTL cannot be longer than the max TTL."
        if not 16 <= self.password_length <= 128:
            errors["password_length"] = "Passwords are between 16 and 128 characters."
        if errors:
            raise ValidationError(errors)

    @property
    def effective_default_ttl(self) -> timedelta:
        return self.default_ttl or (self.resource.default_ttl if self.resource_id else timedelta(hours=1))

    @property
    def effective_max_ttl(self) -> timedelta:
        return self.max_ttl or (self.resource.max_ttl if self.resource_id else timedelta(hours=24))


class LeaseState(models.TextChoices):
    ACTIVE = "active", "Active"
    REVOKING = "revoking", "Revoking"
    REVOKED = "revoked", "Revoked"
    EXPIRED = "expired", "Expired"
    REVOKE_FAILED = "revoke_failed", "Revoke failed (retrying)"
    FAILED = "failed", "Issue failed"


ISSUE_FAILED_REASON = "issue_failed"
"""`revoke_reason` of a lease whose database user could not be created: it was never handed to anyone."""

LIVE_LEASE_STATES = (LeaseState.ACTIVE, LeaseState.REVOKING, LeaseState.REVOKE_FAILED)


class LeaseQuerySet(VisibleToQuerySet):
    owner_field = "holder"  # visible_to(user, action): the holder's own leases, or all for staff with the permission

    def active(self, now=None):
        """Leases whose credentials still work and have not expired."""
        now = now or timezone.now()
        return self.filter(state=LeaseState.ACTIVE, expires_at__gt=now)

    def live(self):
        """Leases whose database user may still exist (not yet confirmed gone)."""
        return self.filter(state__in=LIVE_LEASE_STATES)

    def due(self, now=None):
        """Leases that must be revoked now: expired, failed revocations whose retry time has come, and
        revocations whose worker stopped before its claim deadline (`next_attempt_at` while revoking)."""
        now = now or timezone.now()
        return self.filter(
            Q(state=LeaseState.ACTIVE, expires_at__lte=now)
            | Q(state=LeaseState.REVOKE_FAILED, next_attempt_at__lte=now)
            | Q(state=LeaseState.REVOKING, next_attempt_at__lte=now)
        )


class Lease(models.Model):
    """One generated credential: a database user that exists from issue until revocation.

    The password is encrypted and revealed once to its holder. A lease is `revoked` only after the
    user is confirmed gone and its password no longer logs in; failures go to `revoke_failed` and
    are retried with backoff until they hold.
    """

    lease_id = models.CharField(max_length=200, unique=True)
    role = models.ForeignKey(DynamicRole, on_delete=models.PROTECT, related_name="leases")
    resource = models.ForeignKey(Resource, on_delete=models.PROTECT, related_name="leases")
    holder = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="leases"
    )
    holder_name = models.CharField(max_length=150, blank=True)
    db = models.CharField("database", max_length=64)
    username = models.CharField(max_length=100)
    password = EncryptedTextField()
    revealed_at = models.DateTimeField(null=True, blank=True, help_text="When the password was shown to its holder.")
    issued_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)
    max_expires_at = models.DateTimeField()
    state = models.CharField(max_length=16, choices=LeaseState.choices, default=LeaseState.ACTIVE, db_index=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Revocation attempts so far.")
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoke_reason = models.CharField(max_length=64, blank=True)

    objects = LeaseQuerySet.as_manager()

    class Meta:
        ordering = ["-issued_at"]
        constraints = [
            models.CheckConstraint(condition=Q(expires_at__lte=F("max_expires_at")), name="lease_expiry_within_max"),
            models.CheckConstraint(condition=Q(issued_at__lte=F("expires_at")), name="lease_expires_after_issue"),
            models.UniqueConstraint(fields=["resource", "username"], name="lease_unique_username"),
        ]
        indexes = [
            models.Index(fields=["state", "expires_at"], name="lease_state_expiry"),
            # Every lease list is newest first (the admin's, with its date hierarchy, over 100,000s of rows).
            models.Index(fields=["issued_at"], name="lease_issued_at"),
        ]

    def __str__(self) -> str:
        return self.lease_id

    @property
    def issue_failed(self) -> bool:
        """The database user was never created for its holder: a failed attempt, never a credential they held."""
        return self.revoke_reason == ISSUE_FAILED_REASON

    @property
    def display_state(self) -> str:
        """The state a person reads: a failed issue stays `failed` while the sweeper makes sure no user is left."""
        return LeaseState.FAILED if self.issue_failed else self.state

    def get_display_state_display(self) -> str:
        if self.issue_failed and self.state != LeaseState.FAILED:
            return "Issue failed (cleaning up)"
        return LeaseState(self.display_state).label

    @property
    def renewable(self) -> bool:
        return self.state == LeaseState.ACTIVE and self.expires_at < self.max_expires_at

    @property
    def ttl_seconds(self) -> int:
        return max(0, int((self.expires_at - timezone.now()).total_seconds()))
