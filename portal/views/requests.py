"""Asking for access and deciding on it: the catalogue, the request form, a user's requests, the approvers' queue."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from access.models.policies import RequestState, user_may_approve
from access.selectors.policies import policies_granted_to
from access.selectors.requests import (
    approval_queue,
    approvals_recent,
    catalogue_for,
    requests_of,
    requests_visible,
)
from access.services import requests as request_services
from portal.forms import AccessRequestForm, DecisionForm
from portal.guards import approver_view, portal_view
from portal.listing import listing


def _error_text(exc: ValidationError | PermissionDenied) -> str:
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    return str(exc) or "You may not do that."


@portal_view
def catalogue(request):
    """What the user may ask for or use now."""
    return render(request, "portal/catalogue.html", {"entries": catalogue_for(request.user)})


@portal_view
def request_new(request, policy_id: int):
    """Ask for access under one of the user's policies (404 for a policy that does not name them)."""
    policy = get_object_or_404(policies_granted_to(request.user), pk=policy_id)
    form = AccessRequestForm(request.POST or None, policy=policy)
    if request.method == "POST" and form.is_valid():
        try:
            access_request = request_services.access_request_create(
                requester=request.user,
                policy=policy,
                reason=form.cleaned_data["reason"],
                duration=form.cleaned_data["duration"],
                break_glass=form.cleaned_data.get("break_glass", False),
                databases=form.cleaned_data.get("databases") or [],
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items() if hasattr(exc, "error_dict") else [(None, exc.messages)]:
                form.add_error(field if field in form.fields else None, errors)
        except PermissionDenied as exc:
            form.add_error(None, _error_text(exc))
        else:
            if access_request.break_glass:
                messages.warning(request, "Break-glass access granted now. The approvers were told and will review it.")
            else:
                messages.success(request, "Your request was sent to the approvers.")
            return redirect("portal:request-detail", pk=access_request.pk)
    return render(request, "portal/request_form.html", {"form": form, "policy": policy})


def _request_state_filters() -> dict[str, Q]:
    """An approved request whose window closed reads "expired" (request_display_state): filter it the same way."""
    now = timezone.now()
    window_closed = Q(state=RequestState.APPROVED, expires_at__lte=now)
    return {
        RequestState.APPROVED: Q(state=RequestState.APPROVED) & ~window_closed,
        RequestState.EXPIRED: Q(state=RequestState.EXPIRED) | window_closed,
    }


@portal_view
def request_list(request):
    """The user's requests, newest first, filtered by state and target or reason, a page at a time."""
    page = listing(
        request,
        requests_of(request.user).order_by("-created_at"),
        states=list(RequestState.choices),
        state_filters=_request_state_filters(),
        search_fields=("account__name", "role__name", "policy__name", "reason"),
    )
    return render(request, "portal/request_list.html", {"listing": page})


@portal_view
def request_detail(request, pk: int):
    """One request: its requester, or any approver, may read it; others get 404."""
    access_request = get_object_or_404(requests_visible(user=request.user), pk=pk)
    can_decide = (
        user_may_approve(request.user)
        and access_request.requester_id != request.user.pk
        and access_request.state == "pending"
    )
    return render(
        request,
        "portal/request_detail.html",
        {"req": access_request, "can_decide": can_decide, "decision_form": DecisionForm() if can_decide else None},
    )


@require_POST
@portal_view
def request_cancel(request, pk: int):
    access_request = get_object_or_404(requests_of(request.user), pk=pk)
    try:
        request_services.access_request_cancel(request=access_request, user=request.user)
        messages.success(request, "The request is cancelled.")
    except (ValidationError, PermissionDenied) as exc:
        messages.error(request, _error_text(exc))
    return redirect("portal:request-detail", pk=pk)


@approver_view
def approvals(request):
    """The approvers' queue: pending requests from other people, oldest first."""
    return render(
        request,
        "portal/approvals.html",
        {"queue": approval_queue(request.user), "recent": approvals_recent(request.user), "form": DecisionForm()},
    )


@require_POST
@approver_view
def approval_decide(request, pk: int):
    """Approve or deny one request with a comment (403 without the permission; one's own request is refused)."""
    access_request = get_object_or_404(requests_visible(user=request.user), pk=pk)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose approve or deny.")
        return redirect("portal:approvals")
    decide = (
        request_services.access_request_approve
        if form.cleaned_data["decision"] == "approve"
        else request_services.access_request_deny
    )
    try:
        decided = decide(request=access_request, approver=request.user, comment=form.cleaned_data["comment"])
    except (ValidationError, PermissionDenied) as exc:
        messages.error(request, _error_text(exc))
    else:
        messages.success(
            request, f"Request #{decided.pk} of {decided.requester} is {decided.get_state_display().lower()}."
        )
    return redirect("portal:approvals")
