"""Ending access ends it: a person cut off (deactivated, deleted, their grant removed, their window over) loses
their open gateway sessions, their live leases and their API tokens within seconds, each end audited with why.

- `user_access_end` ends everything one person holds: the user admin calls it when it deactivates or deletes
  someone (`user_delete`, `group_delete` are the admin's deletes, which also delete the policies naming them
  through the policy service, audited).
- `access_grants_reconcile` ends what no grant explains any more (a policy deleted, disabled or narrowed to
  read-only, a group membership removed, an approved window over, a user deactivated by any code path): the
  policy services call it for the people a policy named, the group-membership hook (access.receivers) for the
  people who left a group, the lease sweeper for windows that just closed (`access_windows_end_due`), and a
  scheduled task for everyone (`access.tasks.reconcile_access`, every minute) as the backstop.

Sessions end through `access.services.sessions` (audited, told to the gateways at once through
`access.services.revocations`). Leases are revoked right after the transaction commits, by the lease service
(a failure is retried by the sweeper), because revoking talks to the database server and must not hold the
transaction open. The gateways ask `session_access_problem` at every login, which applies the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from access.models import AccessPolicy, AccessRequest, ApiToken, AuditAction, Lease, Session
from access.models.leases import LeaseState
from access.models.policies import RequestState
from access.models.sessions import SessionEndReason, SessionState, session_end_words
from access.selectors.policies import access_grant_for
from access.services.audit import audit_record
from access.services.cli import cli_logins_end
from access.services.sessions import _session_end_if_open


@dataclass
class AccessEndReport:
    """What one call ended: session ids, lease ids (revoked after commit) and how many API tokens."""

    sessions: list[int] = field(default_factory=list)
    leases: list[int] = field(default_factory=list)
    tokens: int = 0

    def __bool__(self) -> bool:
        return bool(self.sessions or self.leases or self.tokens)

    def as_dict(self) -> dict:
        return {
            "sessions_ended": len(self.sessions),
            "leases_revoked": len(self.leases),
            "api_access_revoked": self.tokens,
        }  # API tokens ("token" keys are redacted in audit rows)


def _leases_revoke_after_commit(lease_ids: list[int], *, reason: str, actor) -> None:
    """Revoke the leases once the caller's transaction has committed (at once when there is none)."""
    if lease_ids:
        transaction.on_commit(lambda: leases_revoke_now(lease_ids=lease_ids, reason=reason, actor=actor))


def leases_revoke_now(*, lease_ids: Iterable[int], reason: str, actor) -> list[Lease]:
    """Revoke each lease now with the lease service (one connector per resource); failures retry via the sweeper."""
    from access.services.leases import ConnectorCache, lease_revoke

    revoked = []
    with ConnectorCache() as connectors:
        for lease in Lease.objects.live().filter(pk__in=list(lease_ids)).select_related("resource", "role"):
            try:
                connector = connectors.for_resource(lease.resource)
            except Exception:  # no connector: the lease service records the failure and the sweeper retries
                connector = None
            revoked.append(lease_revoke(lease=lease, actor=actor, reason=reason, connector=connector))
    return revoked


def user_access_end(*, user, reason: SessionEndReason | str, actor) -> AccessEndReport:
    """End everything `user` holds: open sessions end, live leases are revoked, API tokens and CLI logins are revoked;
    audited.

    `reason` is a SessionEndReason (user_deactivated, user_deleted, grant_removed); it is the sessions' end reason,
    the leases' revoke reason and the audit row's words. Idempotent: a second call finds nothing left.
    """
    reason = SessionEndReason(reason)
    report = AccessEndReport()
    now = timezone.now()
    with transaction.atomic():
        for session in Session.objects.open().filter(user=user).order_by("pk"):
            if _session_end_if_open(session=session, reason=reason, actor=actor):
                report.sessions.append(session.pk)
        report.leases = list(
            Lease.objects.filter(holder=user, state=LeaseState.ACTIVE).order_by("pk").values_list("pk", flat=True)
        )
        report.tokens = ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=now)
        report.tokens += cli_logins_end(user=user)  # `pam login` tokens too
        audit_record(
            action=AuditAction.USER_ACCESS_END,
            actor=actor,
            target=user,
            target_name=user.get_username(),
            data={"reason": reason.value, "why": session_end_words(reason), **report.as_dict()},
        )
        _leases_revoke_after_commit(report.leases, reason=reason.value, actor=actor)
    return report


def user_delete(*, user, actor) -> AccessEndReport:
    """Delete a user: their access ends first (user_deleted), the policies naming them go through the policy service."""
    from access.services.policies import access_policy_delete

    with transaction.atomic():
        report = user_access_end(user=user, reason=SessionEndReason.USER_DELETED, actor=actor)
        for policy in AccessPolicy.objects.filter(user=user).order_by("pk"):
            access_policy_delete(actor=actor, policy=policy, reconcile=False)
        user.delete()
    return report


def group_delete(*, group: Group, actor) -> AccessEndReport:
    """Delete a group: its policies are deleted through the policy service, then its members' access is checked."""
    from access.services.policies import access_policy_delete

    with transaction.atomic():
        members = list(group.user_set.values_list("pk", flat=True))
        for policy in AccessPolicy.objects.filter(group=group).order_by("pk"):
            access_policy_delete(actor=actor, policy=policy, reconcile=False)
        group.delete()
        return access_grants_reconcile(user_ids=members, actor=actor)


def _session_problem(session: Session, user, grants: dict) -> SessionEndReason | None:
    """Why `session` may no longer run, or None: its user gone or deactivated, its grant removed or narrowed."""
    if user is None:
        return SessionEndReason.USER_DELETED
    if not user.is_active:
        return SessionEndReason.USER_DEACTIVATED
    if session.account_id is None:
        return None  # a session on a lease lives and dies with its lease
    key = ("account", user.pk, session.account_id)
    if key not in grants:
        grants[key] = access_grant_for(user=user, account=session.account)
    grant = grants[key]
    if grant is None or (grant.read_only and not session.read_only):
        return SessionEndReason.GRANT_REMOVED
    databases = set(session.database_allow_list or ())
    if grant.databases and (not databases or not databases <= set(grant.databases)):
        return SessionEndReason.GRANT_REMOVED  # the policy's databases were narrowed under the session
    if not set(session.privileged_commands or ()) <= set(grant.privileged_commands):
        return SessionEndReason.GRANT_REMOVED  # a privileged command family was taken away
    return None


def _lease_problem(lease: Lease, grants: dict) -> SessionEndReason | None:
    holder = lease.holder
    if holder is None:
        return SessionEndReason.USER_DELETED
    if not holder.is_active:
        return SessionEndReason.USER_DEACTIVATED
    if lease.is_scoped:  # a user made for one request: explained by that request and its policy
        from access.services.scoped import scoped_lease_problem

        return SessionEndReason.GRANT_REMOVED if scoped_lease_problem(lease) is not None else None
    key = ("role", holder.pk, lease.role_id)
    if key not in grants:
        grants[key] = access_grant_for(user=holder, role=lease.role)
    return SessionEndReason.GRANT_REMOVED if grants[key] is None else None


def access_grants_reconcile(*, user_ids: Iterable[int] | None = None, actor="system") -> AccessEndReport:
    """End the sessions and revoke the leases that no grant explains any more; of `user_ids`, or of everyone.

    A session ends (and a lease is revoked) when its user was deleted or deactivated (user_deleted,
    user_deactivated) or no policy grants its target now, or only read-only while the session may write
    (grant_removed). Runs in the caller's transaction; leases are revoked after it commits.
    """
    report = AccessEndReport()
    grants: dict = {}
    sessions = Session.objects.open().select_related("user", "account__resource").order_by("pk")
    leases = (
        Lease.objects.filter(state=LeaseState.ACTIVE)
        .select_related("holder", "role__resource", "request__policy")
        .order_by("pk")
    )
    if user_ids is not None:
        user_ids = list(user_ids)
        sessions, leases = sessions.filter(user_id__in=user_ids), leases.filter(holder_id__in=user_ids)
    # Without user_ids every open session is checked, those that lost their user (SET_NULL) included.
    to_revoke: dict[str, list[int]] = {}
    with transaction.atomic():
        for session in sessions:
            problem = _session_problem(session, session.user, grants)
            if problem is not None and _session_end_if_open(session=session, reason=problem, actor=actor):
                report.sessions.append(session.pk)
        for lease in leases:
            problem = _lease_problem(lease, grants)
            if problem is not None:
                to_revoke.setdefault(problem.value, []).append(lease.pk)
                report.leases.append(lease.pk)
        for reason, lease_ids in to_revoke.items():
            _leases_revoke_after_commit(lease_ids, reason=reason, actor=actor)
    return report


def access_policy_subjects(policy: AccessPolicy) -> set[int]:
    """The ids of the people a policy names: its user, or its group's members."""
    if policy.user_id is not None:
        return {policy.user_id}
    if policy.group_id is not None:
        return set(get_user_model().objects.filter(groups=policy.group_id).values_list("pk", flat=True))
    return set()


def access_windows_end_due(*, since: datetime, now: datetime | None = None) -> AccessEndReport:
    """Reconcile the requesters whose approved window closed in (since, now]: the lease sweeper's tick."""
    now = now or timezone.now()
    requesters = set(
        AccessRequest.objects.filter(
            state=RequestState.APPROVED, expires_at__gt=since, expires_at__lte=now
        ).values_list("requester_id", flat=True)
    )
    if not requesters:
        return AccessEndReport()
    return access_grants_reconcile(user_ids=requesters, actor="system")


def session_access_problem(*, session_id: int) -> str | None:
    """For the gateway at every login: None while `session_id` may still be used, else why not, in words.

    Checks what the session row alone does not say: its user is still there and active, and a grant (policy,
    approved window) still gives them the account, as writable as the session is. An ended session gives its end
    reason in words ("the session was killed by alice").
    """
    session = Session.objects.select_related("user", "account__resource").filter(pk=session_id).first()
    if session is None:
        return "the session no longer exists"
    if session.state != SessionState.OPEN:
        revocation = session.revocations.order_by("-id").first()
        return revocation.description if revocation is not None else session_end_words(session.end_reason)
    if session.expires_at <= timezone.now():
        return session_end_words(SessionEndReason.EXPIRED)
    problem = _session_problem(session, session.user, {})
    return session_end_words(problem) if problem is not None else None
