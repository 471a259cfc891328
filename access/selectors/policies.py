"""Who may reach which account or role right now, and on what terms."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import PermissionDenied
from django.utils import timezone

from access.models import AccessPolicy, AccessRequest, Account, DynamicRole
from access.models.policies import narrowed_databases


@dataclass(frozen=True)
class AccessGrant:
    """Why a user may use a target now: the policy, and the approved request when approval is required.

    `max_duration` bounds a lease or session; `not_after` is when the approved window closes (None
    for standing access without approval). For gateway sessions, `databases` are the databases it may use (empty:
    every database; the policy's list narrowed by the request's) and `privileged_commands` the privileged command
    families the policy allows (none for a superuser without a policy).
    """

    policy: AccessPolicy | None
    request: AccessRequest | None
    max_duration: timedelta
    not_after: datetime | None
    read_only: bool
    mfa_required: bool
    databases: tuple[str, ...] = ()
    privileged_commands: tuple[str, ...] = ()

    @property
    def superuser_bypass(self) -> bool:
        """Granted only because the user is a superuser: no policy, or no approved request, lets them in."""
        return self.policy is None

    def cap(self, duration: timedelta, now: datetime | None = None) -> timedelta:
        """Shorten `duration` to what this grant allows."""
        now = now or timezone.now()
        capped = min(duration, self.max_duration)
        if self.not_after is not None:
            capped = min(capped, self.not_after - now)
        return capped


def policies_granted_to(user):
    """The enabled policies naming `user` (directly or through a group), with their targets: what they may ask for."""
    return AccessPolicy.objects.granted_to(user).select_related("account__resource", "role__resource")


def policies_for_target(*, user, account: Account | None = None, role: DynamicRole | None = None):
    target = {"account": account} if account is not None else {"role": role}
    return AccessPolicy.objects.granted_to(user).filter(**target)


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
        session_terms = {
            "databases": tuple(policy.database_allow_list or ()),
            "privileged_commands": tuple(policy.privileged_commands or ()),
        }
        if not policy.approval_required:
            return AccessGrant(
                policy,
                None,
                policy.max_duration,
                None,
                policy.read_only,
                policy.mfa_required or target.require_mfa,
                **session_terms,
            )
        request = (
            AccessRequest.objects.usable(now)
            .filter(requester=user, policy=policy, **({"account": account} if account else {"role": role}))
            .order_by("-expires_at")
            .first()
        )
        if request is not None:
            databases = narrowed_databases(list(session_terms["databases"]), list(request.database_allow_list or ()))
            return AccessGrant(
                policy,
                request,
                policy.max_duration,
                request.expires_at,
                policy.read_only,
                policy.mfa_required or target.require_mfa,
                databases=tuple(databases),
                privileged_commands=session_terms["privileged_commands"],
            )
    if user.is_superuser:
        max_duration = account.resource.max_ttl if account else role.effective_max_ttl
        return AccessGrant(None, None, max_duration, None, False, target.require_mfa)
    return None


class NoGrant(PermissionDenied):
    """The user holds no grant for the target now (no policy, or no approved request whose window is open)."""


class GrantNeedsMfa(PermissionDenied):
    """The grant requires a fresh one-time code and the caller did not verify one."""


def access_grant_require(
    *, user, account: Account | None = None, role: DynamicRole | None = None, mfa_verified: bool
) -> AccessGrant:
    """The grant that lets `user` use `account` or `role` now, with its MFA condition met; else PermissionDenied.

    The one place a grant is decided for issuing a lease or opening a session (the API, the portal and the CLI
    reach it through access.services.usage and access.services.sessions): NoGrant without a grant, GrantNeedsMfa
    when the grant (policy or target) requires MFA and `mfa_verified` is False.
    """
    grant = access_grant_for(user=user, account=account, role=role)
    if account is not None:
        if grant is None:
            raise NoGrant(f"You have no access to the account {account} now.")
        if grant.mfa_required and not mfa_verified:
            raise GrantNeedsMfa(f"The account {account} requires MFA: sign in with your one-time code first.")
    else:
        if grant is None:
            raise NoGrant(
                f"No access policy lets you use the role {role} now: ask for access (and approval) in the portal."
            )
        if grant.mfa_required and not mfa_verified:
            raise GrantNeedsMfa(f"The role {role} requires MFA: use it from the portal with your one-time code.")
    return grant
