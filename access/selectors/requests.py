"""Reads for the portal's requesting pages: the catalogue, a user's requests, the approval queue, the access review."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from access.models import AccessPolicy, AccessRequest, Lease, Session
from access.models.policies import RequestState, user_may_approve
from access.selectors.policies import access_grant_for


@dataclass(frozen=True)
class CatalogueEntry:
    """One thing a user may ask for or use: the policy, its target, and where the user stands with it."""

    policy: AccessPolicy
    kind: str  # "account" (gateway session) or "role" (lease)
    usable_now: bool
    usable_until: datetime | None
    pending_request: AccessRequest | None
    superuser_bypass: bool = False  # usable only because the user is a superuser (no approved request)

    @property
    def target(self):
        return self.policy.target


def catalogue_for(user) -> list[CatalogueEntry]:
    """The enabled policies naming `user` (directly or through a group), with whether each is usable now."""
    policies = AccessPolicy.objects.granted_to(user).select_related("account__resource", "role__resource", "group")
    pending = {
        request.policy_id: request
        for request in AccessRequest.objects.filter(requester=user, state=RequestState.PENDING).order_by("created_at")
    }
    entries = []
    for policy in policies:
        kind = "account" if policy.account_id else "role"
        grant = access_grant_for(user=user, **{kind: policy.target})
        entries.append(
            CatalogueEntry(
                policy=policy,
                kind=kind,
                usable_now=grant is not None,
                usable_until=grant.not_after if grant else None,
                pending_request=pending.get(policy.pk),
                superuser_bypass=grant is not None and grant.superuser_bypass,
            )
        )
    return entries


def requests_of(user) -> QuerySet:
    """A user's own requests, newest first."""
    return (
        AccessRequest.objects.visible_to(user)
        .filter(requester=user)
        .select_related("policy", "account", "role", "approver")
    )


def requests_visible(*, user) -> QuerySet:
    """Requests `user` may open (`AccessRequest.objects.visible_to`: their own, everyone's for approvers)."""
    return AccessRequest.objects.visible_to(user).select_related("requester", "policy", "account", "role", "approver")


def approvals_recent(user, *, limit: int = 20) -> list[AccessRequest]:
    """Other people's requests `user` decided, and every break-glass request, newest first (the approvers' page)."""
    return list(
        AccessRequest.objects.visible_to(user)
        .exclude(requester=user)
        .filter(Q(approver=user) | Q(break_glass=True))
        .select_related("requester", "account", "role")
        .order_by("-created_at")[:limit]
    )


def approval_queue(user) -> QuerySet:
    """Pending requests `user` may decide (never their own), oldest first; empty without the permission."""
    if not user_may_approve(user):
        return AccessRequest.objects.none()
    return (
        AccessRequest.objects.pending()
        .exclude(requester=user)
        .select_related("requester", "policy", "account__resource", "role__resource")
        .order_by("created_at")
    )


def request_display_state(request: AccessRequest, now: datetime | None = None) -> str:
    """The state a person should read: an approved request whose window closed reads "expired"."""
    now = now or timezone.now()
    if request.state == RequestState.APPROVED and request.expires_at and request.expires_at <= now:
        return RequestState.EXPIRED
    return request.state


@dataclass(frozen=True)
class AccessReviewRow:
    """Who holds a standing policy, how (directly or through a group), and when they and the policy were last used."""

    username: str
    email: str
    policy: AccessPolicy
    via: str  # "direct" or "group <name>"
    user_last_used_at: datetime | None


def access_review_rows() -> list[AccessReviewRow]:
    """Every enabled policy expanded to its users (groups resolved), with each user's last lease or session on it."""
    users = get_user_model().objects
    policies = AccessPolicy.objects.enabled().select_related("user", "group", "account__resource", "role__resource")
    rows: list[AccessReviewRow] = []
    for policy in policies.order_by("name", "pk"):
        if policy.user_id:
            holders = [(policy.user, "direct")]
        else:
            members = users.filter(groups=policy.group, is_active=True).order_by("username")
            holders = [(member, f"group {policy.group.name}") for member in members]
        for holder, via in holders:
            if policy.account_id:
                last = Session.objects.filter(user=holder, account_id=policy.account_id).aggregate(
                    at=Max("started_at")
                )["at"]
            else:
                last = Lease.objects.filter(holder=holder, role_id=policy.role_id).aggregate(at=Max("issued_at"))["at"]
            rows.append(AccessReviewRow(holder.get_username(), holder.email, policy, via, last))
    return rows
