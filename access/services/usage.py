"""Using a grant: issuing and renewing a lease on a dynamic role, opening and ending a gateway session on an account.

These are the only doors through which a person uses access, whatever they come from (the API, the portal and,
later, the CLI): each decides the caller's grant once (access.selectors.policies.access_grant_require: policy,
approved window, MFA), caps the duration at what the grant allows, calls the lease or session service, and
records the policy's last use for the access review. Views parse their input, call one of these, and render.

Nothing silently changes what was asked: a TTL, renewal or duration longer than the grant allows is granted
capped, and the result carries a warning in words (the limit, named, and the time it ends) that the API returns
in its `warnings` list (as Vault does) and the portal shows as a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.core.exceptions import PermissionDenied
from django.utils import timezone

from access.durations import format_duration
from access.models import Account, DynamicRole, Lease, Session
from access.models.sessions import SessionEndReason
from access.selectors.leases import lease_may_change
from access.selectors.policies import AccessGrant, NoGrant, access_grant_for, access_grant_require
from access.services.leases import lease_issue, lease_renew, lease_revoke
from access.services.requests import access_policy_mark_used
from access.services.sessions import session_end, session_open

_MIN_INCREMENT = timedelta(seconds=1)
_SLACK = timedelta(seconds=1)  # the services read the clock a moment after us: shorter by less is not a cap


@dataclass(frozen=True)
class LeaseIssued:
    """A new lease, its password (once) and the warnings to show with it (a capped TTL)."""

    lease: Lease
    password: str = field(repr=False)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class LeaseRenewed:
    """A renewed lease and the warnings to show with it (a capped renewal)."""

    lease: Lease
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class SessionOpened:
    """A new gateway session, its one-time secret and the warnings to show with it (a capped duration)."""

    session: Session
    secret: str = field(repr=False)
    warnings: tuple[str, ...] = ()


def _utc(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _grant_limits(grant: AccessGrant | None, now: datetime) -> list[tuple[timedelta, str]]:
    """The limits a grant sets, each said in words (the tightest one is the one a warning names)."""
    if grant is None:
        return []
    who = f"the policy \u201c{grant.policy.name}\u201d" if grant.policy is not None else "the target (superuser bypass)"
    limits = [(grant.max_duration, f"{who} allows at most {format_duration(grant.max_duration)}")]
    if grant.not_after is not None:
        limits.append((grant.not_after - now, f"your approved window closes at {_utc(grant.not_after)}"))
    return limits


def _cap_warning(
    *, what: str, asked: timedelta, granted: timedelta, ends: datetime, limits: list[tuple[timedelta, str]]
) -> tuple[str, ...]:
    """One warning when `granted` is shorter than `asked`, naming the tightest limit; none otherwise."""
    if granted + _SLACK >= asked:
        return ()
    why = min(limits, key=lambda limit: limit[0])[1] if limits else "that is above the maximum"
    granted_text = format_duration(timedelta(seconds=round(granted.total_seconds())))
    return (
        f"{what} was capped: you asked for {format_duration(asked)}, but {why}; "
        f"granted {granted_text}, until {_utc(ends)}.",
    )


def access_lease_issue(
    *,
    user,
    role: DynamicRole,
    ttl: timedelta | None = None,
    mfa_verified: bool = False,
    mark_revealed: bool = False,
) -> LeaseIssued:
    """Issue a lease on `role` for `user` under their grant; the password is returned once.

    The TTL (default: the role's) and the lease's maximum are capped by the grant; a cap is reported in the
    result's `warnings`. `mark_revealed` records that the caller shows the password in this answer (the API
    does; the portal reveals it on the lease page). NoGrant / GrantNeedsMfa (PermissionDenied) without a usable
    grant; ValidationError when the grant leaves no time; LeaseError when the database user cannot be created.
    """
    grant = access_grant_require(user=user, role=role, mfa_verified=mfa_verified)
    asked = ttl or role.effective_default_ttl
    now = timezone.now()
    lease, password = lease_issue(
        role=role,
        holder=user,
        ttl=grant.cap(asked, now),
        max_ttl=grant.cap(role.effective_max_ttl, now),
        actor=user,
        mark_revealed=mark_revealed,
    )
    access_policy_mark_used(policy=grant.policy, at=lease.issued_at)
    role_max = role.effective_max_ttl
    limits = [(role_max, f"the role {role} allows at most {format_duration(role_max)}"), *_grant_limits(grant, now)]
    warnings = _cap_warning(
        what="The TTL",
        asked=asked,
        granted=lease.expires_at - lease.issued_at,
        ends=lease.expires_at,
        limits=limits,
    )
    return LeaseIssued(lease, password, warnings)


def access_lease_renew(*, user, lease: Lease, increment: timedelta | None = None) -> LeaseRenewed:
    """Extend `lease` by `increment` (default: its role's TTL), never past its maximum; a cap is a warning.

    Its holder renews within their grant as it stands now (superusers too): the increment is capped by the
    policy's maximum and the approved window, and a holder whose grant has ended cannot renew. Active staff
    holding `access.change_lease` may renew someone else's lease up to its maximum. PermissionDenied otherwise;
    LeaseError when the lease is not renewable (or its target refuses).
    """
    if not lease_may_change(user=user, lease=lease):
        raise PermissionDenied("Only the lease's holder or the security team may change it.")
    asked = increment or lease.role.effective_default_ttl
    now = timezone.now()
    limits = [(lease.max_expires_at - now, f"the lease cannot be renewed past {_utc(lease.max_expires_at)}")]
    if lease.holder_id == user.pk:
        grant = access_grant_for(user=user, role=lease.role)
        increment = grant.cap(asked, now) if grant is not None else None
        if increment is None or increment < _MIN_INCREMENT:
            raise NoGrant("Your access to this role has ended: the lease cannot be renewed.")
        limits += _grant_limits(grant, now)
    renewed = lease_renew(lease=lease, increment=increment, actor=user)
    warnings = _cap_warning(
        what="The renewal",
        asked=asked,
        granted=renewed.expires_at - now,
        ends=renewed.expires_at,
        limits=limits,
    )
    return LeaseRenewed(renewed, warnings)


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
    databases: list[str] | None = None,
) -> SessionOpened:
    """Open a gateway session on `account` for `user` under their grant (decided once, here); records its use.

    A duration longer than the grant allows is capped, with a warning in the result; `databases` narrows the
    grant's databases for this session. NoGrant / GrantNeedsMfa (PermissionDenied) without a usable grant; see
    session_open for the rest.
    """
    grant = access_grant_require(user=user, account=account, mfa_verified=mfa_verified)
    now = timezone.now()
    session, secret = session_open(
        user=user, account=account, duration=duration, read_only=read_only, actor=user, grant=grant, databases=databases
    )
    access_policy_mark_used(policy=grant.policy, at=session.started_at)
    warnings = _cap_warning(
        what="The session's duration",
        asked=duration,
        granted=session.expires_at - session.started_at,
        ends=session.expires_at,
        limits=_grant_limits(grant, now),
    )
    return SessionOpened(session, secret, warnings)


def access_session_end(*, user, session: Session) -> Session:
    """End `session`: its owner ends it (ended_by_user); active staff holding `access.change_session` kill it."""
    if session.user_id is not None and session.user_id == user.pk:
        reason = SessionEndReason.ENDED_BY_USER
    elif Session.objects.visible_to(user, "change").filter(pk=session.pk).exists():
        reason = SessionEndReason.KILLED
    else:
        raise PermissionDenied("You may only end your own sessions.")
    return session_end(session=session, reason=reason, actor=user)
