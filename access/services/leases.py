"""Dynamic credentials: issue a database user for a role, renew its lease, and revoke it until it is really gone.

A lease is `revoked` (or `expired`, when the sweeper revoked it at its expiry) only after the user was
dropped, its live connections were ended, `usersInfo` no longer finds it and a login with the leased
password fails. Anything short of that leaves the lease `revoke_failed` with its attempts, the error in
words and the time of the next attempt (capped exponential backoff); the sweeper retries it.

Revocation runs in three steps so that database transactions stay short and no two workers revoke the
same lease: claim (a conditional UPDATE to `revoking` with a claim deadline), work on the server outside
any transaction (in a thread pool for batches), record the outcome (a conditional UPDATE from `revoking`
plus the audit row, in one transaction). A claim whose worker died is taken over after its deadline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Case, F, Q, QuerySet, Value, When
from django.utils import timezone

from access.generators import new_password
from access.metrics import LEASE_ISSUE_SECONDS
from access.models import AuditAction, DynamicRole, Lease, Resource
from access.models.leases import ISSUE_FAILED_REASON, LIVE_LEASE_STATES, LeaseState
from access.models.sessions import SessionEndReason, SessionState
from access.services.audit import AuditEntry, audit_record, audit_record_many
from access.services.notifications import notifications_revoke_failed
from access.validators import parse_roles
from connectors import ConnectorError, connector_for
from connectors.atlas import delete_after_date as atlas_delete_after_date

log = logging.getLogger(__name__)

USERNAME_MAX_LENGTH = 100
PASSWORD_SYMBOLS = "-._~"
"""RFC 3986 unreserved symbols: a password made of letters, digits and these needs no escaping in a URI."""
PASSWORD_ALPHABET = string.ascii_letters + string.digits + PASSWORD_SYMBOLS
CLAIM_TIMEOUT = timedelta(seconds=120)
"""How long a revocation may run before another worker may take the lease over."""
BACKOFF_BASE_SECONDS = 2
BACKOFF_CAP_SECONDS = 300
ERROR_MAX_LENGTH = 1000
_USERNAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TEMPLATE_FIELDS = ("holder", "role", "resource", "random", "unix")


class LeaseError(Exception):
    """A lease operation that cannot be done as asked (not renewable, issue failed); the message is for people."""

    def __init__(self, message: str, *, code: str = "invalid"):
        super().__init__(message)
        self.message = message
        self.code = code


def system_tag() -> str:
    """Which installation created a user (customData.pam.system), so two portals never drop each other's users."""
    return settings.PAM_SYSTEM_ID


# -- names and passwords -------------------------------------------------------------------------------
def _safe_part(value: str) -> str:
    return _USERNAME_UNSAFE.sub("-", value).strip("-") or "x"


def username_render(*, template: str, holder: str, role: str, resource: str = "", now: datetime | None = None) -> str:
    """A MongoDB username from a role's template: only letters, digits, `.`, `_`, `-`; at most 100 characters.

    Fields: {holder}, {role}, {resource}, {random} (20 letters and digits), {unix} (seconds). Long holder and
    role names are shortened first so that the random part, which makes the name unique, survives.
    """
    now = now or timezone.now()
    values = {
        "random": "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(20)),
        "unix": str(int(now.timestamp())),
    }
    for width in (64, 32, 16, 8, 4):
        values.update(
            holder=_safe_part(holder)[:width], role=_safe_part(role)[:width], resource=_safe_part(resource)[:width]
        )
        try:
            rendered = template.format_map(values)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValidationError(
                {
                    "username_template": f"Unknown field in the username template: {exc}. Use {{holder}}, {{role}}, "
                    "{resource}, {random} and {unix}."
                }
            ) from None
        rendered = _USERNAME_UNSAFE.sub("-", rendered)
        if len(rendered) <= USERNAME_MAX_LENGTH:
            return rendered
    return rendered[:USERNAME_MAX_LENGTH]


def password_generate(length: int = 32) -> str:
    """A random password of `length` characters with letters of both cases, digits and a URI-safe symbol."""
    if length < 16:
        raise ValueError("passwords are at least 16 characters")
    return new_password(
        length=length,
        alphabet=PASSWORD_ALPHABET,
        accept=lambda password: (
            any(c.islower() for c in password)
            and any(c.isupper() for c in password)
            and any(c.isdigit() for c in password)
            and any(c in PASSWORD_SYMBOLS for c in password)
        ),
    )


def lease_id_for(*, role: DynamicRole) -> str:
    """`mongodb/<resource>/creds/<role>/<random>`: the API path that issued it plus a random id, like Vault's."""
    return f"mongodb/{role.resource.name}/creds/{role.name}/{secrets.token_hex(12)}"


def revoke_backoff(attempts: int) -> timedelta:
    """Wait before the next revocation attempt: 2 s, 4 s, 8 s … capped at 5 minutes."""
    return timedelta(seconds=min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1)))


def _holder_name(holder) -> str:
    return holder.get_username() if holder is not None else ""


# -- issue, renew, reveal ----------------------------------------------------------------------------------
def lease_issue(
    *,
    role: DynamicRole,
    holder,
    ttl: timedelta | None = None,
    max_ttl: timedelta | None = None,
    actor=None,
    mark_revealed: bool = False,
    connector=None,
) -> tuple[Lease, str]:
    """Create a database user for `role` and the lease that tracks it; return the lease and the password (once).

    TTL defaults to the role's (else the resource's) default TTL and is capped at the role's max TTL, and at
    `max_ttl` when the caller's grant allows less. The lease row is committed before the user is created, so
    the reconciler never mistakes a user being issued for an orphan; if creation fails the lease is handed
    to the sweeper (state `revoke_failed`, due now) to make sure no user is left behind, and LeaseError says why.
    `mark_revealed` records that the caller shows the password now (the API does), so it is never shown again.
    """
    started = time.monotonic()
    resource = role.resource
    now = timezone.now()
    limit = role.effective_max_ttl if max_ttl is None else min(max_ttl, role.effective_max_ttl)
    lifetime = min(ttl or role.effective_default_ttl, limit)
    if resource.is_atlas:
        # Atlas deletes the user at its deleteAfterDate, at most a week ahead; renewals move it further.
        lifetime = min(lifetime, atlas_delete_after_date(now + lifetime, now=now) - now)
    if lifetime.total_seconds() < 1:
        raise ValidationError({"ttl": "The lease would expire at once: the grant allows no more time."})
    username = username_render(
        template=role.username_template,
        holder=_holder_name(holder) or "api",
        role=role.name,
        resource=resource.name,
        now=now,
    )
    password = password_generate(role.password_length)
    with transaction.atomic():
        lease = Lease.objects.create(
            lease_id=lease_id_for(role=role),
            role=role,
            resource=resource,
            holder=holder,
            holder_name=_holder_name(holder),
            db=_lease_db(role),
            username=username,
            password=password,
            revealed_at=now if mark_revealed else None,
            issued_at=now,
            expires_at=now + lifetime,
            max_expires_at=now + limit,
        )
        audit_record(
            action=AuditAction.LEASE_ISSUE,
            actor=actor if actor is not None else holder,
            target=lease,
            data={
                "role": str(role),
                "username": username,
                "db": role.db,
                "ttl_seconds": int(lifetime.total_seconds()),
                "max_ttl_seconds": int(limit.total_seconds()),
            },
        )
    tag = {"pam": {"lease_id": lease.lease_id, "system": system_tag()}}
    create = {"db": lease.db, "username": username, "password": password, "roles": _roles_of(role), "custom_data": tag}
    if resource.is_atlas:
        # Atlas hook (connectors.atlas.AtlasConnector.create_user): limit the clusters, let Atlas delete the user
        # at the lease's expiry should revocation never run, and return only once every cluster applied it.
        create.update(scopes=list(role.scopes or []), expires_at=lease.expires_at)
    try:
        (connector or connectors_shared().for_resource(resource)).create_user(**create)
    except ConnectorError as exc:
        error = _safe_error(exc, [password])
        user_absent = exc.kind in _NOT_CREATED or exc.code in _REFUSED_CODES
        lease_issue_failed_record(
            lease=lease, error=error, actor=actor if actor is not None else holder, user_absent=user_absent
        )
        raise LeaseError(f"The database user could not be created: {error}", code="unavailable") from None
    lease.password = password
    LEASE_ISSUE_SECONDS.labels(kind=resource.kind).observe(time.monotonic() - started)
    return lease, password


def _lease_db(role: DynamicRole) -> str:
    """The database the leased user authenticates against: the role's, or `admin` for Atlas (always SCRAM on admin)."""
    return "admin" if role.resource.is_atlas else role.db


def _roles_of(role: DynamicRole) -> list:
    roles = parse_roles(role.roles)
    return list(roles or [])


_NOT_CREATED = frozenset({"conflict", "auth", "permission", "config", "dns", "tls", "not_found"})
"""Connector error kinds after which the user certainly was not created by us (conflict: the name is someone else's)."""
_REFUSED_CODES = frozenset({2, 9, 13, 14, 238})
"""Server codes that refuse createUser before it does anything (BadValue, FailedToParse, Unauthorized, TypeMismatch,
NotImplemented: FerretDB's answer to roles): no user was made, so there is nothing to clean up."""


def lease_issue_failed_record(*, lease: Lease, error: str, actor, user_absent: bool) -> None:
    """Record a failed issue as a failed attempt (state `failed`), never as a revoked lease its holder never had.

    When the user may exist (timeout, network), hand it to the sweeper to drop first (`revoke_failed`, reason
    `issue_failed`; it ends `failed`); when it certainly does not — or belongs to someone else (a name conflict) —
    close the attempt without touching the server."""
    now = timezone.now()
    with transaction.atomic():
        if user_absent:
            changes = {"state": LeaseState.FAILED, "next_attempt_at": None}
        else:
            changes = {"state": LeaseState.REVOKE_FAILED, "next_attempt_at": now}
        Lease.objects.filter(pk=lease.pk).update(
            expires_at=now,
            last_error=f"Issue failed: {error}"[:ERROR_MAX_LENGTH],
            revoke_reason=ISSUE_FAILED_REASON,
            **changes,
        )
        audit_record(
            action=AuditAction.LEASE_ISSUE_FAILED,
            actor=actor,
            target=lease,
            data={"error": error, "cleanup": not user_absent},
        )


def lease_renew(*, lease: Lease, increment: timedelta | None = None, actor=None, connector=None) -> Lease:
    """Extend an active lease to now + `increment` (default: the role's TTL), never past its max expiry.

    Refuses leases that are no longer active or already expired (LeaseError). For Atlas, the user's
    `deleteAfterDate` is moved first (outside the transaction); if Atlas refuses, nothing changes.
    """
    if lease.is_scoped:
        raise LeaseError(
            f"Lease {lease.lease_id} was made for one scoped request and lasts its approved window: ask again for "
            "more time.",
            code="not_renewable",
        )
    atlas_expiry = _atlas_expiry_move(lease=lease, increment=increment, connector=connector)
    with transaction.atomic():
        current = Lease.objects.select_for_update(of=("self",)).select_related("role__resource").get(pk=lease.pk)
        now = timezone.now()
        if current.state != LeaseState.ACTIVE or current.expires_at <= now:
            raise LeaseError(
                f"Lease {current.lease_id} is {current.get_state_display().lower()}: it cannot be renewed.",
                code="not_renewable",
            )
        wanted = increment or current.role.effective_default_ttl
        new_expiry = min(now + wanted, current.max_expires_at)
        if atlas_expiry is not None:
            new_expiry = min(new_expiry, atlas_expiry)
        previous = current.expires_at
        updated = Lease.objects.filter(pk=current.pk, state=LeaseState.ACTIVE).update(expires_at=new_expiry)
        if not updated:
            raise LeaseError(f"Lease {current.lease_id} changed state while renewing.", code="not_renewable")
        current.expires_at = new_expiry
        audit_record(
            action=AuditAction.LEASE_RENEW,
            actor=actor,
            target=current,
            data={
                "increment_seconds": int(wanted.total_seconds()),
                "previous_expires_at": previous,
                "expires_at": new_expiry,
                "capped": new_expiry < now + wanted,
            },
        )
    return current


def _atlas_expiry_move(*, lease: Lease, increment: timedelta | None, connector=None) -> datetime | None:
    """For an Atlas lease, move the user's deleteAfterDate to the renewed expiry; return the expiry it allows.

    None for other resources. Runs before the renewal's transaction so no row lock is held over HTTP; the
    lease is re-checked inside it. LeaseError when Atlas cannot be reached or no longer has the user.
    """
    current = Lease.objects.select_related("role__resource").get(pk=lease.pk)
    if not current.resource.is_atlas or current.state != LeaseState.ACTIVE:
        return None
    now = timezone.now()
    wanted = min(now + (increment or current.role.effective_default_ttl), current.max_expires_at)
    try:
        connector = connector or connectors_shared().for_resource(current.resource)
        set_to = connector.update_user_expiry(db=current.db, username=current.username, expires_at=wanted)
    except ConnectorError as exc:
        raise LeaseError(
            f"Lease {current.lease_id} could not be renewed: {_safe_error(exc, [])}", code="unavailable"
        ) from None
    # Atlas deletes the user at deleteAfterDate (at most a week ahead): the lease cannot outlive it.
    return set_to


def lease_reveal_password(*, lease: Lease, user) -> str | None:
    """The lease's password for its holder, once; None when it was already shown or `user` is not the holder."""
    with transaction.atomic():
        updated = Lease.objects.filter(
            pk=lease.pk, holder=user, revealed_at__isnull=True, state=LeaseState.ACTIVE
        ).update(revealed_at=timezone.now())
        if not updated:
            return None
        audit_record(action=AuditAction.LEASE_REVEAL, actor=user, target=lease, data={"username": lease.username})
    return Lease.objects.get(pk=lease.pk).password.reveal()


# -- revocation --------------------------------------------------------------------------------------------
@dataclass
class RevokeOutcome:
    """What one revocation attempt on the server found: `error` is None when the user is confirmed gone."""

    lease: Lease
    error: str | None
    connections_ended: int = 0
    seconds: float = 0.0
    role_note: str = ""  # scoped access: what became of the role made for the request


def _claimable(now: datetime) -> Q:
    return Q(state__in=[LeaseState.ACTIVE, LeaseState.REVOKE_FAILED]) | Q(
        state=LeaseState.REVOKING, next_attempt_at__lte=now
    )


def _claim(queryset: QuerySet, *, reason: str, now: datetime, limit: int | None = None) -> list[Lease]:
    """Move claimable leases of `queryset` to `revoking` (one short transaction) and return them with resources."""
    deadline = now + CLAIM_TIMEOUT
    with transaction.atomic():
        ids_query = queryset.filter(_claimable(now)).order_by("expires_at").values_list("pk", flat=True)
        if transaction.get_connection().features.has_select_for_update_skip_locked:
            ids_query = ids_query.select_for_update(skip_locked=True)
        ids = list(ids_query[:limit] if limit else ids_query)
        if not ids:
            return []
        # Failed revocations and stale claims keep the reason of their first attempt.
        Lease.objects.filter(pk__in=ids).update(
            state=LeaseState.REVOKING,
            next_attempt_at=deadline,
            revoke_reason=Case(When(state=LeaseState.ACTIVE, then=Value(reason)), default=F("revoke_reason")),
        )
    # Prefetched, not joined: the claim's leases share one instance of each resource and role (a batch of 200
    # reads and builds a handful of those rows, not 200 copies of each).
    return list(
        Lease.objects.filter(pk__in=ids, state=LeaseState.REVOKING, next_attempt_at=deadline).prefetch_related(
            "resource", "role"
        )
    )


def _claim_one(pk: int, *, reason: str, now: datetime, loaded: Lease | None = None) -> tuple[Lease, bool]:
    """Claim one lease (as `_claim` does). Returns the lease as it now stands and whether this call claimed it.

    A lease the caller `loaded` as active (with its resource and role) is claimed by one conditional UPDATE: what
    a revocation reads of it (user, database, password, target) never changes, and an active lease has no
    attempts or error to carry. Otherwise, or when that UPDATE finds the lease no longer active, two statements:
    the row locked and read with its resource and role, then moved to `revoking` if it is claimable; a claim held
    by another worker is waited for (its row lock), so the lease is never seen as before it."""
    if loaded is not None and loaded.state == LeaseState.ACTIVE:
        changes = {"state": LeaseState.REVOKING, "next_attempt_at": now + CLAIM_TIMEOUT, "revoke_reason": reason}
        if Lease.objects.filter(pk=pk, state=LeaseState.ACTIVE).update(**changes):
            for name, value in changes.items():
                setattr(loaded, name, value)
            return loaded, True
    with transaction.atomic():
        lease = Lease.objects.select_for_update(of=("self",)).select_related("resource", "role").get(pk=pk)
        claimable = lease.state in (LeaseState.ACTIVE, LeaseState.REVOKE_FAILED) or (
            lease.state == LeaseState.REVOKING and lease.next_attempt_at is not None and lease.next_attempt_at <= now
        )
        if not claimable:
            return lease, False
        changes = {"state": LeaseState.REVOKING, "next_attempt_at": now + CLAIM_TIMEOUT}
        if lease.state == LeaseState.ACTIVE:  # failed revocations and stale claims keep their first reason
            changes["revoke_reason"] = reason
        Lease.objects.filter(pk=pk).update(**changes)
    for name, value in changes.items():
        setattr(lease, name, value)
    return lease, True


def _safe_error(exc: BaseException, secrets_to_hide: Iterable[str]) -> str:
    """An error in words for the lease record: the connector's message, with any secret scrubbed out anyway."""
    text = f"{exc.kind_title} error: {exc}" if isinstance(exc, ConnectorError) else f"{type(exc).__name__}"
    for secret in secrets_to_hide:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text[:ERROR_MAX_LENGTH]


def lease_revoke_on_server(*, lease: Lease, connector) -> RevokeOutcome:
    """Drop the lease's user, end its connections, then confirm: no such user, and its password no longer logs in.

    Touches no database row; safe to run in a worker thread. Never raises for server trouble: the outcome
    carries the error in words instead.
    """
    started = time.monotonic()
    outcome = _revoke_on_server(lease=lease, connector=connector)
    outcome.seconds = time.monotonic() - started
    return outcome


def _revoke_on_server(*, lease: Lease, connector) -> RevokeOutcome:
    password = lease.password.reveal() if lease.password is not None else ""

    def secrets_to_hide() -> list[str]:  # decrypted only when there is an error to scrub
        admin_password = lease.resource.admin_password.reveal() if lease.resource.admin_password else ""
        return [password, admin_password]

    try:
        connector.drop_user(db=lease.db, username=lease.username)
        ended = connector.kill_user_connections(db=lease.db, username=lease.username)
        if connector.get_user(db=lease.db, username=lease.username) is not None:
            return RevokeOutcome(lease, "The user still exists after dropUser.", ended)
        if password and connector.can_login(db=lease.db, username=lease.username, password=password):
            return RevokeOutcome(lease, "The leased password still logs in after the user was dropped.", ended)
        if lease.is_scoped:
            from access.services.scoped import scoped_role_release_on_server

            role_error, role_note = scoped_role_release_on_server(lease=lease, connector=connector)
            if role_error is not None:
                return RevokeOutcome(lease, role_error, ended)
            return RevokeOutcome(lease, None, ended, role_note=role_note)
    except ConnectorError as exc:
        return RevokeOutcome(lease, _safe_error(exc, secrets_to_hide()))
    except Exception as exc:  # a bug or an unexpected driver error: keep retrying, never leak its text
        log.exception("unexpected error revoking lease %s", lease.lease_id)
        return RevokeOutcome(lease, _safe_error(exc, secrets_to_hide()))
    return RevokeOutcome(lease, None, ended)


def _outcome_changes(outcome: RevokeOutcome, *, now: datetime) -> tuple[AuditAction, dict]:
    """The audit action and the row changes that record one outcome (state, attempts, error, next attempt)."""
    lease = outcome.lease
    attempts = lease.attempts + 1
    if outcome.error is not None:
        changes = {
            "state": LeaseState.REVOKE_FAILED,
            "attempts": attempts,
            "last_error": outcome.error,
            "next_attempt_at": now + revoke_backoff(attempts),
        }
        return AuditAction.LEASE_REVOKE_FAILED, changes
    if lease.revoke_reason == ISSUE_FAILED_REASON:
        final = LeaseState.FAILED  # the clean-up after a failed issue: it stays a failed attempt
    elif lease.revoke_reason == "expired":
        final = LeaseState.EXPIRED
    else:
        final = LeaseState.REVOKED
    changes = {"state": final, "revoked_at": now, "attempts": attempts, "last_error": "", "next_attempt_at": None}
    if final == LeaseState.FAILED:  # keep why the issue failed; it was never revoked from anyone
        changes.update(revoked_at=None, last_error=lease.last_error)
    return AuditAction.LEASE_REVOKE, changes


def _record_outcomes(outcomes: list[RevokeOutcome], *, actor) -> list[Lease]:
    """Write each outcome (state, attempts, error, next attempt) with its audit row, in one short transaction.

    An outcome is written only while this worker's claim stands (the lease is still `revoking` with the claim's
    deadline); a claim another worker took over after its deadline keeps that worker's outcome. Outcomes that
    write the same changes share one UPDATE, and the audit rows are appended together: a batch holds the
    database's locks for a handful of statements, not three per lease.
    """
    now = timezone.now()
    recorded = []
    with transaction.atomic():
        by_deadline: dict[datetime | None, list[int]] = {}  # a claim's leases share its deadline: usually one group
        for outcome in outcomes:
            by_deadline.setdefault(outcome.lease.next_attempt_at, []).append(outcome.lease.pk)
        claims = Q()
        for deadline, pks in by_deadline.items():
            claims |= Q(pk__in=pks, next_attempt_at=deadline)
        single = len(outcomes) == 1  # one lease (the API's revoke): its conditional UPDATE says whether it stands
        standing = set()
        if len(outcomes) > 1:
            standing = set(
                Lease.objects.select_for_update().filter(claims, state=LeaseState.REVOKING).values_list("pk", flat=True)
            )
        groups: dict[str, tuple[dict, list[Lease]]] = {}
        entries = []
        for outcome in outcomes:
            lease = outcome.lease
            action, changes = _outcome_changes(outcome, now=now)
            if single:
                if not Lease.objects.filter(claims, state=LeaseState.REVOKING).update(**changes):
                    continue  # another worker took the claim over after its deadline; its outcome stands
            elif lease.pk in standing:
                key = json.dumps(changes, sort_keys=True, cls=DjangoJSONEncoder)
                groups.setdefault(key, (changes, []))[1].append(lease)
            else:
                continue  # as above: the claim was taken over
            for name, value in changes.items():
                setattr(lease, name, value)
            data = {
                "lease_id": lease.lease_id,
                "username": lease.username,
                "db": lease.db,
                "reason": lease.revoke_reason,
                "attempt": changes["attempts"],
                "state": changes["state"],
                "duration_ms": round(outcome.seconds * 1000),
            }
            if outcome.error is None:
                data["connections_ended"] = outcome.connections_ended
                if outcome.role_note:
                    data["role"] = outcome.role_note
            else:
                data.update(error=outcome.error, next_attempt_at=changes["next_attempt_at"])
            entries.append(AuditEntry(action=action, actor=actor, target=lease, data=data))
            recorded.append(lease)
        for changes, leases in groups.values():
            Lease.objects.filter(pk__in=[lease.pk for lease in leases], state=LeaseState.REVOKING).update(**changes)
        audit_record_many(entries=entries)
        _end_sessions_of_revoked(recorded, actor=actor)
        notifications_revoke_failed(leases=recorded)
    return recorded


def _end_sessions_of_revoked(leases: list[Lease], *, actor) -> None:
    """Gateway sessions opened on a lease end with it (one query for the whole batch when there are none)."""
    from access.models import Session
    from access.services.sessions import session_end_many

    gone = [lease.pk for lease in leases if lease.state in (LeaseState.REVOKED, LeaseState.EXPIRED)]
    if not gone:
        return
    # Most leases never had a gateway session: a narrow look first, the sessions themselves only when there are some.
    open_ones = list(Session.objects.filter(lease_id__in=gone, state=SessionState.OPEN).values_list("pk", flat=True))
    if open_ones:
        session_end_many(
            sessions=Session.objects.filter(pk__in=open_ones), reason=SessionEndReason.ACCOUNT_REVOKED, actor=actor
        )


def _connector_key(resource: Resource) -> str:
    """What a connector was built from: where it connects, with which credentials, and whether that was verified.

    Any change (hosts, TLS, CA, admin account or its password, Atlas keys, the verified fingerprint, the row's
    `updated_at`) makes a different key, so a cached connector never outlives the settings it was made for.
    """

    def secret_digest(secret) -> str:
        # The stored ciphertext stands for the secret (a new password is a new token) without decrypting it.
        value = secret.token if secret is not None and hasattr(secret, "token") else (secret or "")
        return hashlib.sha256(value.encode()).hexdigest()

    parts = [
        resource.kind,
        resource.connection_fingerprint(),
        resource.verified_fingerprint,
        resource.updated_at.isoformat() if resource.updated_at else "",
        resource.admin_username,
        resource.auth_database,
        secret_digest(resource.admin_password),
        resource.atlas_group_id,
        resource.atlas_public_key,
        secret_digest(resource.atlas_private_key),
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


class ConnectorCache:
    """One connector per resource, shared by threads (pymongo clients and Atlas sessions are thread-safe).

    A resource whose settings or credentials changed (see `_connector_key`) gets a fresh connector, and the
    old one is closed. After a fork the child starts afresh: pymongo clients must not cross a fork.
    """

    def __init__(self, factory: Callable | None = None):
        self._factory = factory
        self._connectors: dict[int, tuple[str, object]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def for_resource(self, resource: Resource):
        key = _connector_key(resource)
        with self._lock:
            if self._pid != os.getpid():
                self._connectors, self._pid = {}, os.getpid()
            cached = self._connectors.get(resource.pk)
            if cached is not None and cached[0] == key:
                return cached[1]
            if cached is not None:
                cached[1].close()
            connector = (self._factory or connector_for)(resource)
            self._connectors[resource.pk] = (key, connector)
            return connector

    def close(self) -> None:
        with self._lock:
            for _, connector in self._connectors.values():
                connector.close()
            self._connectors.clear()

    def __enter__(self) -> ConnectorCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


_process_connectors = ConnectorCache()


def connectors_shared() -> ConnectorCache:
    """This process's connectors, kept between requests: a lease issued or revoked by the API reuses the admin
    client (its connections and its SCRAM login) instead of connecting and logging in each time."""
    return _process_connectors


def _revoke_claimed(
    leases: list[Lease], *, actor, connectors: ConnectorCache, pool: Executor | None, record_every: int = 50
) -> list[Lease]:
    """Work on the server for each claimed lease (in `pool` when given), recording outcomes in small batches."""
    recorded: list[Lease] = []
    chosen: dict[int, object] = {}  # per resource of this batch: its connector, or the error that stops it

    def connector_of(resource: Resource):
        if resource.pk not in chosen:
            try:
                chosen[resource.pk] = connectors.for_resource(resource)
            except ConnectorError as exc:
                chosen[resource.pk] = exc
        return chosen[resource.pk]

    for lease in leases:  # in this thread, once per resource: the workers below only look it up
        connector_of(lease.resource)

    def work(lease: Lease) -> RevokeOutcome:
        connector = chosen[lease.resource_id]
        if isinstance(connector, ConnectorError):
            return RevokeOutcome(lease, _safe_error(connector, []))
        return lease_revoke_on_server(lease=lease, connector=connector)

    if pool is None:
        outcomes = [work(lease) for lease in leases]
        return _record_outcomes(outcomes, actor=actor)
    pending: list[RevokeOutcome] = []
    for outcome in pool.map(work, leases):
        pending.append(outcome)
        if len(pending) >= record_every:
            recorded += _record_outcomes(pending, actor=actor)
            pending = []
    if pending:
        recorded += _record_outcomes(pending, actor=actor)
    return recorded


def _holds_revocation_fields(lease: Lease) -> bool:
    """Whether `lease` was loaded with its resource and role (as the selectors load it): a claim may use it as is."""
    fields = Lease._meta
    loaded = fields.get_field("resource").is_cached(lease)
    return loaded and (lease.role_id is None or fields.get_field("role").is_cached(lease))


def lease_revoke(*, lease: Lease, actor=None, reason: str = "revoked", connector=None) -> Lease:
    """Revoke one lease now and return it as it ended: `revoked`, or `revoke_failed` with a retry scheduled.

    Idempotent: a lease already revoked or expired is returned unchanged, and one that another worker is
    revoking right now is returned as `revoking` rather than revoked twice.
    """
    loaded = lease if _holds_revocation_fields(lease) else None
    current, claimed = _claim_one(lease.pk, reason=reason, now=timezone.now(), loaded=loaded)
    if not claimed:
        return current  # revoked or expired already, or another worker's claim (waited for): `revoking` or its outcome
    if connector is not None:
        outcome = lease_revoke_on_server(lease=current, connector=connector)
        recorded = _record_outcomes([outcome], actor=actor)
    else:
        recorded = _revoke_claimed([current], actor=actor, connectors=connectors_shared(), pool=None)
    if recorded:
        return recorded[0]  # as written: the claimed row (with its resource and role) and the outcome's changes
    return Lease.objects.select_related("resource", "role").get(pk=lease.pk)


def lease_revoke_prefix(
    *, prefix: str, actor=None, queryset: QuerySet | None = None, pool: Executor | None = None
) -> list[Lease]:
    """Revoke every live lease whose id starts with `prefix` (within `queryset` when given); return them."""
    if not prefix:
        raise ValidationError({"prefix": "A prefix is required."})
    base = (queryset if queryset is not None else Lease.objects.all()).filter(lease_id__startswith=prefix)
    now = timezone.now()
    with transaction.atomic():
        audit_record(
            action=AuditAction.LEASE_REVOKE_PREFIX,
            actor=actor,
            target_name=prefix,
            data={"prefix": prefix, "live": base.filter(state__in=LIVE_LEASE_STATES).count()},
        )
    claimed = _claim(base, reason="revoked", now=now)
    with ConnectorCache() as connectors:
        _revoke_claimed(claimed, actor=actor, connectors=connectors, pool=pool)
    return list(Lease.objects.filter(pk__in=[lease.pk for lease in claimed]).order_by("lease_id"))


def leases_revoke_due(
    *,
    now: datetime | None = None,
    limit: int = 200,
    connectors: ConnectorCache,
    pool: Executor | None = None,
    actor="lease-sweeper",
) -> int:
    """Claim up to `limit` due leases (expired, retry time come, or stale claims) and revoke them; return how many."""
    now = now or timezone.now()
    claimed = _claim(Lease.objects.due(now), reason="expired", now=now, limit=limit)
    if not claimed:
        return 0
    _revoke_claimed(claimed, actor=actor, connectors=connectors, pool=pool)
    return len(claimed)
