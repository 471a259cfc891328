"""Access requests: asking for time-boxed access, approving or denying it, break-glass, and the post-review.

A requester asks under one of their policies for a target (an account or a dynamic role), with a reason and a
duration no longer than the policy allows. Someone else holding `access.approve_accessrequest` approves or
denies it; nobody decides their own request (the database refuses it too). Approval starts the clock:
`expires_at = decided_at + duration`. A policy with `break_glass_allowed` lets the requester skip approval in an
emergency: the request is approved at once by nobody, flagged, the approvers are told, and it stays on the admin's
"awaiting post-review" list until an approver records a review. Every step writes an audit row in the same
transaction and sends an email (after the commit) to the requester and the approvers.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from access.durations import format_duration
from access.models import AccessPolicy, AccessRequest, AuditAction
from access.models.leases import LeaseState
from access.models.notifications import NotificationEvent
from access.models.policies import RequestState, database_list_errors, user_may_approve
from access.services.audit import audit_record
from access.services.notifications import notifications_dispatch, request_message

log = logging.getLogger(__name__)

REASON_MAX_LENGTH = 2000


def approvers_for(request: AccessRequest | None = None):
    """Active users who may decide requests (the permission directly, through a group, or superusers).

    With `request`, its requester is left out: nobody decides their own request.
    """
    permission = Permission.objects.filter(codename="approve_accessrequest", content_type__app_label="access")
    users = (
        get_user_model()
        .objects.filter(is_active=True)
        .filter(Q(is_superuser=True) | Q(user_permissions__in=permission) | Q(groups__permissions__in=permission))
        .distinct()
    )
    if request is not None:
        users = users.exclude(pk=request.requester_id)
    return users


def portal_link(path: str) -> str:
    """An absolute link into the portal (settings.PAM_PORTAL_URL) for emails: the page where the action happens."""
    return f"{settings.PAM_PORTAL_URL}{path}"


def _notify(
    *,
    request: AccessRequest,
    subject: str,
    body: str,
    to_requester: bool = True,
    action_path: tuple[str, str] | None = None,
    event: NotificationEvent | None = None,
    actor_name: str = "",
) -> None:
    """Email the requester and the approvers once the transaction commits (a mail failure is logged, not raised);
    for `event`, also post to the chat and webhook targets of the request's policy or resource (queued on commit).

    Every email links to the request's page; `action_path` adds the page where the next step is taken (the
    approval queue, the admin's post-review list). The chat message carries the same links.
    """
    links = [("Open it", portal_link(reverse("portal:request-detail", args=[request.pk])))]
    if action_path:
        links.insert(0, (action_path[0], portal_link(action_path[1])))
    if event is not None:
        target = request.account or request.role
        notifications_dispatch(
            message=request_message(
                request=request, event=event, links=links, actor_name=actor_name, comment=request.decision_comment
            ),
            policy=request.policy,
            resource=target.resource if target is not None else None,
        )
    recipients = {user.email for user in approvers_for(request) if user.email}
    if to_requester and request.requester.email:
        recipients.add(request.requester.email)
    if not recipients:
        return
    text = f"{body}\n\nRequest #{request.pk}: {request.target} for {format_duration(request.duration)}.\n"
    text += "".join(f"{label}: {url}\n" for label, url in reversed(links))

    def send():
        try:
            send_mail(
                f"[MongoDB access] {subject}",
                text,
                settings.DEFAULT_FROM_EMAIL,
                sorted(recipients),
                fail_silently=False,
            )
        except Exception:  # the decision stands even when the mail server is down
            log.warning("access request #%s: notification email failed", request.pk, exc_info=True)

    transaction.on_commit(send)


def _use_path(request: AccessRequest) -> tuple[str, str]:
    """Where the requester uses approved access: open a session on the account, or get credentials for the role."""
    if request.is_scoped:
        return "Get credentials or open a session", reverse("portal:request-detail", args=[request.pk])
    if request.account_id:
        return "Open a session", reverse("portal:account-use", args=[request.account_id])
    return "Get credentials", reverse("portal:role-use", args=[request.role_id])


def _locked(request: AccessRequest) -> AccessRequest:
    locked = AccessRequest.objects.select_for_update(of=("self",)).select_related("requester", "policy")
    return locked.get(pk=request.pk)


def access_request_create(
    *,
    requester,
    policy: AccessPolicy,
    reason: str,
    duration: timedelta,
    break_glass: bool = False,
    databases: list[str] | None = None,
    scope: dict | None = None,
) -> AccessRequest:
    """Ask for access to `policy`'s target for `duration`; break-glass approves it at once and tells the approvers.

    `databases` narrows the gateway sessions the request will allow to some of the policy's databases (any, when
    the policy names none). With `scope` ({"resources": ["shop.orders", ...], "level": "read"}) it asks for scoped
    access inside the policy's envelope (access.services.scoped.scope_check); a scoped request the policy lets
    through without approval is approved at once, and either way an approved scoped request gets its database
    user and role made right after the commit (access.services.scoped.scoped_grant_make; a failure is on the
    request's lease).

    Raises PermissionDenied when the policy does not name the requester (or forbids break-glass) and
    ValidationError for an empty reason, a duration outside (0, policy.max_duration], a database the policy does
    not allow, or a scope outside the envelope (naming the field: resources, level, duration).
    """
    if not AccessPolicy.objects.granted_to(requester).filter(pk=policy.pk).exists():
        raise PermissionDenied("No enabled access policy lets you request this.")
    if break_glass and not policy.break_glass_allowed:
        raise PermissionDenied("This policy does not allow break-glass access.")
    reason = (reason or "").strip()
    errors = {}
    if not reason:
        errors["reason"] = "Say why you need this access."
    elif len(reason) > REASON_MAX_LENGTH:
        errors["reason"] = f"Keep the reason under {REASON_MAX_LENGTH} characters."
    if duration <= timedelta(0):
        errors["duration"] = "The duration must be positive."
    elif duration > policy.max_duration:
        errors["duration"] = f"At most {format_duration(policy.max_duration)} under this policy."
    databases = list(databases or [])
    if databases:
        allowed = policy.database_allow_list or []
        if scope is not None:
            errors["databases"] = "Scoped access names its databases in the scope (resources)."
        elif policy.role_id:
            errors["databases"] = "Databases narrow gateway sessions; this policy gives credentials for a role."
        elif problem := database_list_errors(databases):
            errors["databases"] = problem
        elif allowed and (outside := [name for name in databases if name not in allowed]):
            errors["databases"] = f"Outside this policy's databases ({', '.join(allowed)}): {', '.join(outside)}."
    checked_scope = None
    if scope is None and policy.target is None:
        errors["scope"] = "This policy grants scoped access: choose databases or collections and a level."
    elif scope is not None:
        from access.services.scoped import scope_check

        if not isinstance(scope, dict):
            scope = {}
        try:
            checked_scope = scope_check(
                policy=policy, resources=scope.get("resources"), level=scope.get("level") or "", duration=duration
            )
            if policy.scope_resource.is_atlas and not errors:
                from access.services.scoped import atlas_custom_role_precheck

                atlas_custom_role_precheck(policy=policy, scope=checked_scope)
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                errors.setdefault(name, messages)
    if errors:
        raise ValidationError(errors)
    now = timezone.now()
    scoped = checked_scope is not None
    at_once = break_glass or (scoped and not policy.approval_required)
    with transaction.atomic():
        request = AccessRequest.objects.create(
            requester=requester,
            policy=policy,
            account=None if scoped else policy.account,
            role=None if scoped else policy.role,
            resource=policy.scope_resource if scoped else None,
            scope=checked_scope or {},
            scope_requested={**checked_scope, "duration_seconds": int(duration.total_seconds())} if scoped else {},
            reason=reason,
            duration=duration,
            database_allow_list=databases,
            break_glass=break_glass,
            state=RequestState.APPROVED if at_once else RequestState.PENDING,
            decided_at=now if at_once else None,
            expires_at=now + duration if at_once else None,
        )
        data = {
            "policy": policy.name,
            "target": str(request.target),
            "duration_seconds": int(duration.total_seconds()),
            "reason": reason,
            "databases": databases,
        }
        if scoped:
            from access.services.scoped import envelope_of

            data.update(envelope=envelope_of(policy), scope=checked_scope, approved_at_once=at_once)
        audit_record(
            action=AuditAction.REQUEST_BREAK_GLASS if break_glass else AuditAction.REQUEST_CREATE,
            actor=requester,
            target=request,
            data=data,
        )
        if break_glass:
            _notify(
                request=request,
                subject=f"BREAK-GLASS access by {requester.get_username()} to {request.target}",
                body=f"{requester.get_username()} used break-glass access without approval.\nReason: {reason}\n"
                "Record a post-review in the admin.",
                action_path=(
                    "Review it",
                    reverse("admin:access_accessrequest_changelist") + "?post_review=awaiting",
                ),
                event=NotificationEvent.BREAK_GLASS,
            )
        elif not at_once:  # a scoped request its policy lets through without approval asks nobody
            _notify(
                request=request,
                subject=f"{requester.get_username()} asks for access to {request.target}",
                body=f"{requester.get_username()} asks for access.\nReason: {reason}\n"
                "Approve or deny it in the portal.",
                action_path=("Approve or deny it", reverse("portal:approvals")),
                event=NotificationEvent.REQUEST_CREATE,
            )
    if scoped and at_once:
        _scoped_grant_make_now(request, actor=requester)
    return request


def _scoped_grant_make_now(request: AccessRequest, *, actor) -> None:
    """Make the user and role of an approved scoped request now, once its approval is committed (the services'
    own transactions have closed; callers do not wrap them in another)."""
    from access.services.scoped import scoped_grant_make

    scoped_grant_make(request=request, actor=actor)


def _decide(
    *, request: AccessRequest, approver, comment: str, approve: bool, narrow: dict | None = None
) -> AccessRequest:
    if not user_may_approve(approver):
        raise PermissionDenied("You may not approve or deny access requests.")
    with transaction.atomic():
        current = _locked(request)
        if current.requester_id == approver.pk:
            raise PermissionDenied("Nobody approves or denies their own request.")
        if current.state != RequestState.PENDING:
            raise ValidationError(f"This request is already {current.get_state_display().lower()}.")
        changed = ["state", "approver", "decision_comment", "decided_at", "expires_at"]
        if narrow:
            if not current.is_scoped:
                raise ValidationError("Only a scoped request can be narrowed.")
            from access.services.scoped import scope_narrow

            narrowed = scope_narrow(request=current, **narrow)
            current.scope, current.duration = narrowed["scope"], narrowed["duration"]
            changed += ["scope", "duration"]
        now = timezone.now()
        current.state = RequestState.APPROVED if approve else RequestState.DENIED
        current.approver = approver
        current.decision_comment = (comment or "").strip()
        current.decided_at = now
        current.expires_at = now + current.duration if approve else None
        current.save(update_fields=changed)
        data = {"requester": current.requester.get_username(), "comment": current.decision_comment}
        if current.is_scoped:
            data.update(
                requested=current.scope_requested,
                granted=current.scope,
                duration_seconds=int(current.duration.total_seconds()),
                narrowed=current.scope_narrowed,
            )
        audit_record(
            action=AuditAction.REQUEST_APPROVE if approve else AuditAction.REQUEST_DENY,
            actor=approver,
            target=current,
            data=data,
        )
        outcome = "approved" if approve else "denied"
        until = f" until {current.expires_at:%Y-%m-%d %H:%M:%S} UTC" if approve else ""
        _notify(
            request=current,
            subject=f"Request #{current.pk} {outcome} by {approver.get_username()}",
            body=f"{approver.get_username()} {outcome} the request of {current.requester.get_username()}{until}."
            + (f"\nComment: {current.decision_comment}" if current.decision_comment else ""),
            action_path=_use_path(current) if approve else None,
            event=NotificationEvent.REQUEST_APPROVE if approve else NotificationEvent.REQUEST_DENY,
            actor_name=approver.get_username(),
        )
    request.refresh_from_db()
    return current


def access_request_approve(
    *,
    request: AccessRequest,
    approver,
    comment: str = "",
    resources=None,
    level: str | None = None,
    duration: timedelta | None = None,
) -> AccessRequest:
    """Approve a pending request; its window opens now for its duration. PermissionDenied for self or no permission.

    For a scoped request the approver may narrow what was asked (`resources`, `level`, a shorter `duration`; never
    wider: ValidationError naming the field), and its database user and role are made once this commits
    (access.services.scoped.scoped_grant_make; a failure is recorded on the request's lease, not raised).
    """
    narrow = {
        name: value
        for name, value in (("resources", resources), ("level", level), ("duration", duration))
        if value not in (None, "", [])
    }
    decided = _decide(request=request, approver=approver, comment=comment, approve=True, narrow=narrow or None)
    if decided.is_scoped:
        _scoped_grant_make_now(decided, actor=approver)
    return decided


def access_request_deny(*, request: AccessRequest, approver, comment: str = "") -> AccessRequest:
    """Deny a pending request. PermissionDenied for one's own request or without the permission."""
    return _decide(request=request, approver=approver, comment=comment, approve=False)


def access_request_cancel(*, request: AccessRequest, user) -> AccessRequest:
    """The requester withdraws a pending request, or gives up an approved one early (its window closes now)."""
    with transaction.atomic():
        current = _locked(request)
        if current.requester_id != user.pk:
            raise PermissionDenied("Only the requester may cancel a request.")
        now = timezone.now()
        if current.state == RequestState.PENDING:
            pass
        elif current.state == RequestState.APPROVED and current.expires_at and current.expires_at > now:
            current.expires_at = now
        else:
            raise ValidationError(f"This request is already {current.get_state_display().lower()}.")
        current.state = RequestState.CANCELLED
        current.save(update_fields=["state", "expires_at"])
        audit_record(action=AuditAction.REQUEST_CANCEL, actor=user, target=current)
        _notify(
            request=current,
            subject=f"Request #{current.pk} cancelled",
            body=f"{user.get_username()} cancelled the request.",
        )
        if current.is_scoped:  # the user and role made for it go now, not at the end of the window
            from access.services.offboarding import leases_revoke_now

            lease_ids = list(current.scoped_leases.filter(state=LeaseState.ACTIVE).values_list("pk", flat=True))
            if lease_ids:
                transaction.on_commit(
                    lambda: leases_revoke_now(lease_ids=lease_ids, reason="request cancelled", actor=user)
                )
    return current


def access_request_post_review(*, request: AccessRequest, reviewer, comment: str) -> AccessRequest:
    """Record the review of a break-glass grant after the fact; it then leaves the "awaiting post-review" list."""
    if not user_may_approve(reviewer):
        raise PermissionDenied("You may not review break-glass access.")
    comment = (comment or "").strip()
    if not comment:
        raise ValidationError({"comment": "Write what the review found."})
    with transaction.atomic():
        current = _locked(request)
        if not current.break_glass:
            raise ValidationError("Only break-glass grants are post-reviewed.")
        if current.requester_id == reviewer.pk:
            raise PermissionDenied("Nobody reviews their own break-glass access.")
        if current.post_reviewed_at is not None:
            raise ValidationError("This break-glass grant was already reviewed.")
        current.post_reviewed_by = reviewer
        current.post_reviewed_at = timezone.now()
        current.post_review_comment = comment
        current.save(update_fields=["post_reviewed_by", "post_reviewed_at", "post_review_comment"])
        audit_record(action=AuditAction.REQUEST_POST_REVIEW, actor=reviewer, target=current, data={"comment": comment})
        _notify(
            request=current,
            subject=f"Break-glass request #{current.pk} reviewed by {reviewer.get_username()}",
            body=f"Review: {comment}",
        )
    return current


POLICY_USE_GRANULARITY = 60  # seconds, as API tokens' last use (access.api.authentication.LAST_USED_GRANULARITY)


def access_policy_mark_used(*, policy: AccessPolicy | None, at=None) -> None:
    """Record that a lease or session was just issued under `policy` (the access review's "last used", per minute)."""
    if policy is None:
        return
    at = at or timezone.now()
    if policy.last_used_at is not None and abs((at - policy.last_used_at).total_seconds()) < POLICY_USE_GRANULARITY:
        return  # recorded moments ago (as loaded with the grant): a lease per second writes it once a minute
    AccessPolicy.objects.filter(pk=policy.pk).update(last_used_at=at)
