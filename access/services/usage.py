"""Using a grant: issuing a lease for a dynamic role or opening a gateway session on an account, from the portal.

Both check the caller's grant (policy, approved window, MFA), cap the duration at what the grant allows, call the
lease or session service, and record the policy's last use for the access review.
"""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import PermissionDenied

from access.models import Account, DynamicRole, Lease, Session
from access.selectors.policies import access_grant_for
from access.services.leases import lease_issue
from access.services.requests import access_policy_mark_used
from access.services.sessions import session_open


def access_lease_issue(
    *, user, role: DynamicRole, ttl: timedelta | None = None, mfa_verified: bool = False
) -> tuple[Lease, str]:
    """Issue a lease on `role` for `user` under their grant; the password is returned once and not marked revealed.

    PermissionDenied without a grant, or when the grant needs MFA and `mfa_verified` is False.
    LeaseError (from lease_issue) when the database user cannot be created.
    """
    grant = access_grant_for(user=user, role=role)
    if grant is None:
        raise PermissionDenied(f"You have no access to the role {role} now.")
    if grant.mfa_required and not mfa_verified:
        raise PermissionDenied(f"The role {role} requires a fresh one-time code.")
    wanted = grant.cap(ttl or role.effective_default_ttl)
    lease, password = lease_issue(
        role=role, holder=user, ttl=wanted, max_ttl=grant.cap(role.effective_max_ttl), actor=user
    )
    access_policy_mark_used(policy=grant.policy, at=lease.issued_at)
    return lease, password


def access_session_open(
    *, user, account: Account, duration: timedelta, read_only: bool = False, mfa_verified: bool = False
) -> tuple[Session, str]:
    """Open a gateway session on `account` for `user` (session_open checks the grant); records the policy's use."""
    grant = access_grant_for(user=user, account=account)
    session, secret = session_open(
        user=user, account=account, duration=duration, read_only=read_only, actor=user, mfa_verified=mfa_verified
    )
    access_policy_mark_used(policy=grant.policy if grant else None, at=session.started_at)
    return session, secret
