"""Using a grant: issuing and renewing a lease on a dynamic role, opening and ending a gateway session on an account.

These are the only doors through which a person uses access, whatever they come from (the API, the portal and,
later, the CLI): each decides the caller's grant once (access.selectors.policies.access_grant_require: policy,
approved window, MFA), caps the duration at what the grant allows, calls the lease or session service, and
records the policy's last use for the access review. Views parse their input, call one of these, and render.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from django.core.exceptions import PermissionDenied

from access.models import Account, DynamicRole, Lease, Session
from access.models.sessions import SessionEndReason
from access.selectors.leases import lease_may_change
from access.selectors.policies import NoGrant, access_grant_for, access_grant_require
from access.services.leases import lease_issue, lease_renew, lease_revoke
from access.services.requests import access_policy_mark_used
from access.services.sessions import session_end, session_open

_MIN_INCREMENT = timedelta(seconds=1)


def access_lease_issue(
    *,
    user,
    role: DynamicRole,
    ttl: timedelta | None = None,
    mfa_verified: bool = False,
    mark_revealed: bool = False,
) -> tuple[Lease, str]:
    """Issue a lease on `role` for `user` under their grant; the password is returned once.

    The TTL (default: the role's) and the lease's maximum are capped by the grant. `mark_revealed` records that
    the caller shows the password in this answer (the API does; the portal reveals it on the lease page).
    NoGrant / GrantNeedsMfa (PermissionDenied) without a usable grant; ValidationError when the grant leaves no
    time; LeaseError when the database user cannot be created.
    """
    grant = access_grant_require(user=user, role=role, mfa_verified=mfa_verified)
    lease, password = lease_issue(
        role=role,
        holder=user,
        ttl=grant.cap(ttl or role.effective_default_ttl),
        max_ttl=grant.cap(role.effective_max_ttl),
        actor=user,
        mark_revealed=mark_revealed,
    )
    access_policy_mark_used(policy=grant.policy, at=lease.issued_at)
    return lease, password


def access_lease_renew(*, user, lease: Lease, increment: timedelta | None = None) -> Lease:
    """Extend `lease` by `increment` (default: its role's TTL), never past its maximum.

    Its holder renews within their grant as it stands now (superusers too): the increment is capped by the
    policy's maximum and the approved window, and a holder whose grant has ended cannot renew. Active staff
    holding `access.change_lease` may renew someone else's lease up to its maximum. PermissionDenied otherwise;
    LeaseError when the lease is not renewable (or its target refuses).
    """
    if not lease_may_change(user=user, lease=lease):
        raise PermissionDenied("Only the lease's holder or the security team may change it.")
    if lease.holder_id == user.pk:
        grant = access_grant_for(user=user, role=lease.role)
        increment = grant.cap(increment or lease.role.effective_default_ttl) if grant is not None else None
        if increment is None or increment < _MIN_INCREMENT:
            raise NoGrant("Your access to this role has ended: the lease cannot be renewed.")
    return lease_renew(lease=lease, increment=increment, actor=user)


def access_lease_revoke(*, user, lease: Lease, reason: str = "revoked") -> Lease:
    """Revoke `lease` now for its holder or for staff holding `access.change_lease` (PermissionDenied otherwise)."""
    if not lease_may_change(user=user, lease=lease):
        raise PermissionDenied("Only the lease's holder or the security team may change it.")
    return lease_revoke(lease=lease, actor=user, reason=reason)


def access_session_open(
    *,
    user,
    account: Account,
    duration: timedelta,
    read_only: bool = False,
    mfa_verified: bool = False,
    database_allow_list: Sequence[str] = (),
) -> tuple[Session, str]:
    """Open a gateway session on `account` for `user` under their grant (decided once, here); records its use.

    NoGrant / GrantNeedsMfa (PermissionDenied) without a usable grant; see session_open for the rest.
    """
    grant = access_grant_require(user=user, account=account, mfa_verified=mfa_verified)
    session, secret = session_open(
        user=user,
        account=account,
        duration=duration,
        read_only=read_only,
        actor=user,
        grant=grant,
        database_allow_list=database_allow_list,
    )
    access_policy_mark_used(policy=grant.policy, at=session.started_at)
    return session, secret


def access_session_end(*, user, session: Session) -> Session:
    """End `session`: its owner ends it (ended_by_user); active staff holding `access.change_session` kill it."""
    if session.user_id is not None and session.user_id == user.pk:
        reason = SessionEndReason.ENDED_BY_USER
    elif Session.objects.visible_to(user, "change").filter(pk=session.pk).exists():
        reason = SessionEndReason.KILLED
    else:
        raise PermissionDenied("You may only end your own sessions.")
    return session_end(session=session, reason=reason, actor=user)
