"""Opening and ending gateway sessions: one-time session credentials stored only as SCRAM verifiers.

A session lets a person use a stored account through a gateway for a bounded time. Opening one
checks the caller's access grant, caps the duration, picks the gateway, and returns a session
username with a one-time secret; the database keeps only the SCRAM-SHA-1 and SCRAM-SHA-256
verifiers (salt, iterations, StoredKey, ServerKey), which let the gateway check a login but never
log in themselves. Ending a session (by its user, an administrator, expiry, a revoked account or
lease, or a stopped gateway) is idempotent, recorded in the audit trail, and published to the live
session stream; the gateway closes the session's connections when it next asks `sessions_to_close`.
"""

from __future__ import annotations

import secrets
import string
from datetime import timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from access.events import publish_session_event
from access.generators import new_token
from access.models import Account, AuditAction, Gateway, Lease, Session
from access.models.policies import database_list_errors
from access.models.sessions import SessionEndReason, SessionState
from access.selectors.policies import AccessGrant, access_grant_require
from access.services.audit import audit_record
from access.services.connections import resource_credentials_may_go
from access.services.revocations import session_revocation_record
from gatewayproxy.wire.scram import derive_credentials

SESSION_MECHANISMS = ("SCRAM-SHA-1", "SCRAM-SHA-256")
SECRET_BYTES = 32  # token_urlsafe(32) gives 43 characters
_USERNAME_ALPHABET = string.ascii_lowercase + string.digits
_USERNAME_RANDOM_LENGTH = 8
_MIN_DURATION = timedelta(seconds=1)


def session_username_new() -> str:
    """A fresh session username such as `s-k3v9x0qa` (unique in practice; the database enforces it)."""
    return "s-" + "".join(secrets.choice(_USERNAME_ALPHABET) for _ in range(_USERNAME_RANDOM_LENGTH))


def session_verifiers(*, username: str, secret: str) -> dict[str, dict]:
    """The stored SCRAM verifiers of a session secret, keyed by mechanism."""
    return {mechanism: derive_credentials(mechanism, username, secret).to_dict() for mechanism in SESSION_MECHANISMS}


def _gateway_for(resource, gateway: Gateway | None = None) -> Gateway | None:
    """The gateway a new session uses: the given one, the resource's, else the freshest alive (or any) gateway."""
    if gateway is not None:
        return gateway
    if resource.gateway_id is not None:
        return resource.gateway
    return (
        Gateway.objects.alive().order_by("-last_heartbeat", "name").first()
        or Gateway.objects.order_by("-last_heartbeat", "name").first()
    )


def session_open(
    *,
    user,
    account: Account,
    duration: timedelta,
    read_only: bool = False,
    gateway: Gateway | None = None,
    actor=None,
    mfa_verified: bool = False,
    grant: AccessGrant | None = None,
    databases: list[str] | None = None,
) -> tuple[Session, str]:
    """Open a session on `account` for `user`; return it with its one-time secret (shown once, never stored).

    Raises PermissionDenied when the user has no grant for the account now, or when the grant requires
    MFA and the caller did not verify it (`mfa_verified`: the request passed an OTP check); `grant` is the
    one access.services.usage.access_session_open already decided (else it is decided here, the same way).
    The duration is capped by the grant (policy maximum, approved window); a read-only grant forces a
    read-only session; the session takes the grant's databases (the policy's, narrowed by the request's) and
    privileged command families, which the gateway enforces; `databases` narrows them further (ValidationError
    for a name outside the grant's).
    """
    if grant is None:
        grant = access_grant_require(user=user, account=account, mfa_verified=mfa_verified)
    if duration <= timedelta(0):
        raise ValidationError({"duration": "A duration must be positive."})
    now = timezone.now()
    capped = grant.cap(duration, now)
    if capped < _MIN_DURATION:
        raise PermissionDenied(f"Your access to the account {account} has ended.")
    if account.resource.is_atlas or not account.resource.uri:
        raise ValidationError({"account": "Gateway sessions need an account on a MongoDB resource with a URI."})
    if not resource_credentials_may_go(account.resource):
        # The gateway would refuse every login on it: say so now, not after the secret is handed out.
        raise ValidationError(
            {
                "account": f"The connection settings of {account.resource.name} changed and are not verified yet, "
                "so its stored credentials are held back: ask the security team to verify the connection."
            }
        )
    read_only = bool(read_only or grant.read_only)
    allowed = _session_databases(grant, databases)
    return _session_create(
        user=user,
        actor=actor,
        gateway=_gateway_for(account.resource, gateway),
        fields={
            "account": account,
            "read_only": read_only,
            "database_allow_list": allowed,
            "privileged_commands": list(grant.privileged_commands),
            "started_at": now,
            "expires_at": now + capped,
        },
        audit_data={
            "account": str(account),
            "account_id": account.pk,
            "duration_seconds": int(capped.total_seconds()),
            "requested_seconds": int(duration.total_seconds()),
            "read_only": read_only,
            "databases": allowed,
            "privileged_commands": list(grant.privileged_commands),
            "policy": grant.policy.name if grant.policy else None,
            "request_id": grant.request.pk if grant.request else None,
        },
    )


def _session_create(*, user, actor, gateway: Gateway | None, fields: dict, audit_data: dict) -> tuple[Session, str]:
    """Draw a session username and a one-time secret, create the session with `fields` and audit its opening.

    The audit row carries the session's username and gateway with `audit_data`. A rare username collision draws
    again; the secret is returned once and only its SCRAM verifiers are stored.
    """
    secret = new_token(nbytes=SECRET_BYTES)
    for _attempt in range(5):
        username = session_username_new()
        verifiers = session_verifiers(username=username, secret=secret)  # key stretching: outside the write lock
        try:
            with transaction.atomic():
                session = Session.objects.create(
                    user=user,
                    user_name=user.get_username(),
                    gateway=gateway,
                    username=username,
                    verifiers=verifiers,
                    **fields,
                )
                audit_record(
                    action=AuditAction.SESSION_OPEN,
                    actor=actor or user,
                    target=session,
                    data={"username": username, "gateway": gateway.name if gateway else None, **audit_data},
                )
            return session, secret
        except IntegrityError:
            if Session.objects.filter(username=username).exists():
                continue  # a rare username collision: draw again
            raise
    raise RuntimeError("Could not draw a unique session username.")


def _session_databases(grant: AccessGrant, asked: list[str] | None) -> list[str]:
    """The databases a new session may use: the grant's, narrowed to `asked` when given (never widened)."""
    if not asked:
        return list(grant.databases)
    if problem := database_list_errors(list(asked)):
        raise ValidationError({"databases": problem})
    outside = [name for name in asked if grant.databases and name not in grant.databases]
    if outside:
        raise ValidationError({"databases": f"Outside the databases your access allows: {', '.join(outside)}."})
    return list(asked)


def session_open_on_lease(
    *,
    user,
    lease: Lease,
    expires_at,
    requested: timedelta,
    database_allow_list: list[str] | None = None,
    actor=None,
    audit_data: dict | None = None,
) -> tuple[Session, str]:
    """Open a session through the database user of `lease` (scoped access) until `expires_at`; secret once.

    The caller (access.services.usage.access_scoped_session_open) has checked the grant and capped the time; the
    gateway logs in upstream with the lease's user, and `database_allow_list` keeps the session to its databases.
    """
    if lease.resource.is_atlas or not lease.resource.uri:
        raise ValidationError({"lease": "Gateway sessions need a MongoDB resource with a URI (not Atlas)."})
    now = timezone.now()
    if expires_at - now < _MIN_DURATION:
        raise PermissionDenied("Your access has ended.")
    return _session_create(
        user=user,
        actor=actor,
        gateway=_gateway_for(lease.resource),
        fields={
            "lease": lease,
            "database_allow_list": list(database_allow_list or []),
            "started_at": now,
            "expires_at": expires_at,
        },
        audit_data={
            "lease": lease.lease_id,
            "upstream_user": lease.username,
            "duration_seconds": int((expires_at - now).total_seconds()),
            "requested_seconds": int(requested.total_seconds()),
            "databases": list(database_allow_list or []),
            **(audit_data or {}),
        },
    )


def session_end(*, session: Session, reason: SessionEndReason | str, actor=None) -> Session:
    """End a session (idempotent: an ended session is returned unchanged) and tell its live viewers.

    The gateway closes the session's connections on its next `sessions_to_close` poll.
    """
    _session_end_if_open(session=session, reason=reason, actor=actor)
    return session


def _session_end_if_open(*, session: Session, reason: SessionEndReason | str, actor=None) -> bool:
    """End `session` unless it has already ended; refresh its end fields either way; True if this call ended it."""
    reason = SessionEndReason(reason)
    with transaction.atomic():
        locked = Session.objects.select_for_update().get(pk=session.pk)
        ended_now = locked.state == SessionState.OPEN
        if ended_now:
            now = timezone.now()
            locked.state = SessionState.ENDED
            locked.ended_at = now
            locked.end_reason = reason
            locked.save(update_fields=["state", "ended_at", "end_reason"])
            audit_record(
                action=AuditAction.SESSION_END,
                actor=actor or "system",
                target=locked,
                data={"reason": reason.value, "username": locked.username, "commands": locked.commands_count},
            )
            session_revocation_record(session=locked, reason=reason, actor=actor)
            event = {"type": "session.ended", "reason": reason.value, "ended_at": now.isoformat()}
            transaction.on_commit(lambda: publish_session_event(locked, event))
    session.state, session.ended_at, session.end_reason = locked.state, locked.ended_at, locked.end_reason
    return ended_now


def session_end_many(*, sessions, reason: SessionEndReason | str, actor=None) -> int:
    """End every open session of a queryset; return how many this call ended."""
    return sum(
        _session_end_if_open(session=session, reason=reason, actor=actor)
        for session in sessions.filter(state=SessionState.OPEN).order_by("pk")
    )


def session_end_for_account(
    *, account: Account, reason: SessionEndReason | str = SessionEndReason.ACCOUNT_REVOKED, actor=None
) -> int:
    """End the open sessions on `account` (its password rotated, or it is being deleted); return how many."""
    return session_end_many(sessions=Session.objects.filter(account=account), reason=reason, actor=actor)


def session_end_for_lease(
    *, lease: Lease, reason: SessionEndReason | str = SessionEndReason.ACCOUNT_REVOKED, actor=None
) -> int:
    """End the open sessions that use `lease` (revoked or expired); return how many."""
    return session_end_many(sessions=Session.objects.filter(lease=lease), reason=reason, actor=actor)


def sessions_expire_due(*, now=None) -> int:
    """End every open session past its expiry with reason `expired`; return how many (the scheduled sweep)."""
    return session_end_many(sessions=Session.objects.due(now), reason=SessionEndReason.EXPIRED, actor="system")


def session_expire_if_due(*, session_id: int) -> bool:
    """End one session as expired if it is open and past its expiry (a live view's timer); True if it ended now."""
    session = Session.objects.due().filter(pk=session_id).first()
    return session is not None and _session_end_if_open(session=session, reason=SessionEndReason.EXPIRED)


def sessions_end_orphaned() -> int:
    """End open sessions whose account or lease was deleted behind the services' back (e.g. a bulk delete)."""
    orphans = Session.objects.open().filter(account__isnull=True, lease__isnull=True)
    return session_end_many(sessions=orphans, reason=SessionEndReason.ACCOUNT_REVOKED, actor="system")
