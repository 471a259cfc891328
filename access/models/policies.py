"""Who may reach what: standing access policies and time-boxed access requests with approval."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from access.fields import HumanDurationField
from access.models.leases import DynamicRole
from access.models.resources import Account
from access.models.visibility import user_is_active
from gatewayproxy.policy import PRIVILEGED_FAMILIES

APPROVE_PERMISSION = "access.approve_accessrequest"
#: The privileged command families a policy may allow in its gateway sessions (gatewayproxy.policy), as choices.
PRIVILEGED_COMMAND_CHOICES = [(family, label) for family, (label, _commands) in PRIVILEGED_FAMILIES.items()]
_DATABASE_NAME_FORBIDDEN = set('/\\. "$*<>:|?') | {"\x00"}


def database_list_errors(value) -> str | None:
    """Why `value` is not a list of MongoDB database names (None when it is)."""
    if not isinstance(value, list):
        return "Give a list of database names."
    for name in value:
        if not isinstance(name, str) or not name or len(name) > 63 or set(name) & _DATABASE_NAME_FORBIDDEN:
            return f'{name!r} is not a database name (1 to 63 characters, none of / \\ . space " $ * < > : | ?).'
    if len(set(value)) != len(value):
        return "Name each database once."
    return None


def narrowed_databases(policy_databases: list[str], requested: list[str]) -> list[str]:
    """The databases a grant allows: the policy's list (empty: every database) narrowed by a request's list.

    A request can only narrow: its names outside a non-empty policy list are dropped, and if none remains the
    policy's list stands (never an empty list, which would mean every database).
    """
    if not requested:
        return list(policy_databases)
    if not policy_databases:
        return list(requested)
    kept = [name for name in requested if name in policy_databases]
    return kept or list(policy_databases)


def user_may_approve(user) -> bool:
    """Whether `user` may approve or deny other people's requests (and so read them)."""
    return user_is_active(user) and user.has_perm(APPROVE_PERMISSION)


class AccessPolicyQuerySet(models.QuerySet):
    def enabled(self):
        return self.filter(is_enabled=True)

    def granted_to(self, user):
        """Enabled policies that name `user` directly or through one of their groups (none for inactive users).

        This is where grants come from (access.selectors.policies.access_grant_for) and what the portal's
        catalogue lists; it is not a visibility rule (the admin shows policies to staff by model permission).
        """
        if not user_is_active(user):
            return self.none()
        return self.enabled().filter(Q(user=user) | Q(group__in=user.groups.all())).distinct()


class AccessPolicy(models.Model):
    """Who (a user or a group) may reach which account (gateway session) or dynamic role (lease), and on what terms."""

    name = models.CharField(max_length=120)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="access_policies",
    )
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="access_policies")
    account = models.ForeignKey(Account, null=True, blank=True, on_delete=models.CASCADE, related_name="policies")
    role = models.ForeignKey(DynamicRole, null=True, blank=True, on_delete=models.CASCADE, related_name="policies")
    max_duration = HumanDurationField(default=timedelta(hours=1))
    approval_required = models.BooleanField(default=True)
    mfa_required = models.BooleanField("MFA required", default=False)
    break_glass_allowed = models.BooleanField(default=False, help_text="Allow emergency access without approval.")
    read_only = models.BooleanField(default=False, help_text="Gateway sessions under this policy are read-only.")
    database_allow_list = models.JSONField(
        "databases",
        default=list,
        blank=True,
        help_text="The databases its gateway sessions may use; empty: every database. A request may narrow it.",
    )
    privileged_commands = models.JSONField(
        default=list,
        blank=True,
        help_text="Privileged command families its gateway sessions may run; none unless named here.",
    )
    is_enabled = models.BooleanField(default=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AccessPolicyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "access policies"
        constraints = [
            models.CheckConstraint(
                condition=(Q(user__isnull=False) & Q(group__isnull=True))
                | (Q(user__isnull=True) & Q(group__isnull=False)),
                name="policy_one_subject",
            ),
            models.CheckConstraint(
                condition=(Q(account__isnull=False) & Q(role__isnull=True))
                | (Q(account__isnull=True) & Q(role__isnull=False)),
                name="policy_one_target",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        if bool(self.user_id) == bool(self.group_id):
            errors["user"] = "Choose either a user or a group."
        if bool(self.account_id) == bool(self.role_id):
            errors["account"] = "Choose either an account (gateway sessions) or a dynamic role (leases)."
        if problem := database_list_errors(self.database_allow_list):
            errors["database_allow_list"] = problem
        elif self.database_allow_list and self.role_id:
            errors["database_allow_list"] = "Databases narrow gateway sessions: choose an account, or leave it empty."
        families = self.privileged_commands
        if not isinstance(families, list) or not set(families) <= set(PRIVILEGED_FAMILIES):
            known = ", ".join(PRIVILEGED_FAMILIES)
            errors["privileged_commands"] = f"Choose among the privileged command families: {known}."
        elif families and self.role_id:
            errors["privileged_commands"] = "Privileged commands are for gateway sessions: choose an account."
        if errors:
            raise ValidationError(errors)

    @property
    def target(self):
        return self.account or self.role


class RequestState(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    DENIED = "denied", "Denied"
    EXPIRED = "expired", "Expired"
    CANCELLED = "cancelled", "Cancelled"


class AccessRequestQuerySet(models.QuerySet):
    def pending(self):
        return self.filter(state=RequestState.PENDING)

    def visible_to(self, user):
        """Requests `user` may open: their own, and everyone's for approvers (who need not be staff)."""
        if not user_is_active(user):
            return self.none()
        if user_may_approve(user):
            return self
        return self.filter(requester=user)

    def usable(self, now=None):
        """Approved requests whose window is open."""
        now = now or timezone.now()
        return self.filter(state=RequestState.APPROVED, expires_at__gt=now)

    def awaiting_post_review(self):
        return self.filter(break_glass=True, post_reviewed_at__isnull=True)


class AccessRequest(models.Model):
    """A requester's ask for time-boxed access to an account or role, approved or denied by someone else."""

    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_requests")
    policy = models.ForeignKey(AccessPolicy, on_delete=models.CASCADE, related_name="requests")
    account = models.ForeignKey(Account, null=True, blank=True, on_delete=models.CASCADE, related_name="requests")
    role = models.ForeignKey(DynamicRole, null=True, blank=True, on_delete=models.CASCADE, related_name="requests")
    reason = models.TextField()
    duration = HumanDurationField()
    database_allow_list = models.JSONField(
        "databases",
        default=list,
        blank=True,
        help_text="The databases asked for, within the policy's; empty: the policy's.",
    )
    state = models.CharField(max_length=16, choices=RequestState.choices, default=RequestState.PENDING, db_index=True)
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="approved_requests",
    )
    decision_comment = models.TextField(blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Access ends; the clock starts at approval.")
    break_glass = models.BooleanField(default=False)
    post_reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="post_reviewed_requests",
    )
    post_reviewed_at = models.DateTimeField(null=True, blank=True)
    post_review_comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AccessRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        permissions = [("approve_accessrequest", "Can approve or deny access requests")]
        constraints = [
            models.CheckConstraint(condition=~Q(approver=F("requester")), name="request_no_self_approval"),
            models.CheckConstraint(
                condition=(Q(account__isnull=False) & Q(role__isnull=True))
                | (Q(account__isnull=True) & Q(role__isnull=False)),
                name="request_one_target",
            ),
        ]

    def __str__(self) -> str:
        return f"Request #{self.pk} by {self.requester} for {self.target}"

    @property
    def target(self):
        return self.account or self.role
