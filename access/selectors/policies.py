"""Who may reach which account or role right now, and on what terms."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from access.models import AccessPolicy, AccessRequest, Account, DynamicRole


@dataclass(frozen=True)
class AccessGrant:
    """Why a user may use a target now: the policy, and the approved request when approval is required.

    `max_duration` bounds a lease or session; `not_after` is when the approved window closes (None
    for standing access without approval).
    """

    policy: AccessPolicy | None
    request: AccessRequest | None
    max_duration: timedelta
    not_after: datetime | None
    read_only: bool
    mfa_required: bool

    def cap(self, duration: timedelta, now: datetime | None = None) -> timedelta:
        """Shorten `duration` to what this grant allows."""
        now = now or timezone.now()
        capped = min(duration, self.max_duration)
        if self.not_after is not None:
            capped = min(capped, self.not_after - now)
        return capped


def policies_for_target(*, user, account: Account | None = None, role: DynamicRole | None = None):
    target = {"account": account} if account is not None else {"role": role}
    return AccessPolicy.objects.for_user(user).filter(**target)


def access_grant_for(*, user, account: Account | None = None, role: DynamicRole | None = None) -> AccessGrant | None:
    """The grant that lets `user` use `account` (a gateway session) or `role` (a lease) now, or None.

    Superusers may reach everything (an explicit break of least privilege for the operators who
    configure the system); everyone else needs an enabled policy, and an approved request whose
    window is open when that policy requires approval.
    """
    if (account is None) == (role is None):
        raise ValueError("Ask about exactly one of account or role.")
    if not user or not user.is_authenticated or not user.is_active:
        return None
    now = timezone.now()
    target = account or role
    for policy in policies_for_target(user=user, account=account, role=role).order_by("-max_duration"):
        if not policy.approval_required:
            return AccessGrant(
                policy, None, policy.max_duration, None, policy.read_only, policy.mfa_required or target.require_mfa
            )
        request = (
            AccessRequest.objects.usable(now)
            .filter(requester=user, policy=policy, **({"account": account} if account else {"role": role}))
            .order_by("-expires_at")
            .first()
        )
        if request is not None:
            return AccessGrant(
                policy,
                request,
                policy.max_duration,
                request.expires_at,
                policy.read_only,
                policy.mfa_required or target.require_mfa,
            )
    if user.is_superuser:
        max_duration = account.resource.max_ttl if account else role.effective_max_ttl
        return AccessGrant(None, None, max_duration, None, False, target.require_mfa)
    return None
