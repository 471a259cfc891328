"""Scoped access in the portal: ask inside an envelope (databases and collections listed from the server), an
approver's narrowing, and using the grant (credentials once on the lease page, or a gateway session).

Each view parses its form and calls one service (access.services.requests / usage / scoped); the request page
(portal.views.requests.request_detail) shows what was asked, what was granted and the grant itself.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from access.selectors.policies import GrantNeedsMfa
from access.selectors.requests import requests_of, requests_visible
from access.selectors.scoped import envelopes_granted_to, narrower_levels, scope_choices, scoped_leases_of
from access.services import requests as request_services
from access.services.leases import LeaseError
from access.services.scoped import scoped_grant_retry
from access.services.usage import access_scoped_session_open
from portal.forms import ScopedDecisionForm, ScopedRequestForm
from portal.guards import approver_view, mfa_fresh, portal_view, step_up_redirect
from portal.views.sessions import _session_page

_FORM_FIELDS = {"resources", "level", "duration", "reason", "break_glass"}


def _errors_into(form, exc: ValidationError) -> None:
    for field, errors in exc.message_dict.items() if hasattr(exc, "error_dict") else [(None, exc.messages)]:
        form.add_error(field if field in _FORM_FIELDS else None, errors)


@never_cache
@portal_view
def scoped_request_new(request, policy_id: int):
    """Ask for scoped access under one of the user's envelopes (404 for one that does not name them)."""
    policy = get_object_or_404(envelopes_granted_to(request.user), pk=policy_id)
    choices = scope_choices(policy=policy, refresh=request.GET.get("refresh") == "1")
    form = ScopedRequestForm(request.POST or None, policy=policy, choices=choices)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            created = request_services.access_request_create(
                requester=request.user,
                policy=policy,
                reason=data["reason"],
                duration=data["duration"],
                break_glass=data.get("break_glass", False),
                scope={"resources": data["chosen"], "level": data["level"]},
            )
        except ValidationError as exc:
            _errors_into(form, exc)
        except PermissionDenied as exc:
            form.add_error(None, str(exc))
        else:
            if created.state == "approved":
                lease = scoped_leases_of(created).first()
                if lease is not None and lease.issue_failed:
                    messages.error(request, f"Approved, but the database user could not be made: {lease.last_error}")
                else:
                    messages.success(request, "Granted: your database user is ready.")
            else:
                messages.success(request, "Your request was sent to the approvers.")
            return redirect("portal:request-detail", pk=created.pk)
    return render(request, "portal/scoped_request_form.html", {"form": form, "policy": policy, "choices": choices})


def scoped_decision_form(access_request, data=None) -> ScopedDecisionForm:
    return ScopedDecisionForm(data, access_request=access_request, levels=narrower_levels(access_request))


@require_POST
@approver_view
def scoped_decide(request, pk: int):
    """Approve (as asked, or narrowed) or deny a scoped request; anything wider than asked is refused."""
    access_request = get_object_or_404(requests_visible(user=request.user).filter(resource__isnull=False), pk=pk)
    form = scoped_decision_form(access_request, request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
        return redirect("portal:request-detail", pk=pk)
    data = form.cleaned_data
    if data["decision"] == "approve" and not data["resources"]:
        messages.error(request, "Keep at least one database or collection, or deny the request.")
        return redirect("portal:request-detail", pk=pk)
    try:
        if data["decision"] == "deny":
            decided = request_services.access_request_deny(
                request=access_request, approver=request.user, comment=data["comment"]
            )
        else:
            decided = request_services.access_request_approve(
                request=access_request,
                approver=request.user,
                comment=data["comment"],
                resources=data["resources"],
                level=data["level"],
                duration=data["duration"],
            )
    except (ValidationError, PermissionDenied) as exc:
        messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
    else:
        lease = scoped_leases_of(decided).first()
        if lease is not None and lease.issue_failed:
            messages.error(request, f"Approved, but the database user could not be made: {lease.last_error}")
        else:
            messages.success(
                request, f"Request #{decided.pk} of {decided.requester} is {decided.get_state_display().lower()}."
            )
    return redirect("portal:request-detail", pk=pk)


@require_POST
@portal_view
def scoped_session_open(request, pk: int):
    """Open a gateway session through the user made for the user's own scoped request."""
    access_request = get_object_or_404(requests_of(request.user).filter(resource__isnull=False), pk=pk)
    lease = scoped_leases_of(access_request).first()
    if lease is None:
        messages.error(request, "This request has no grant yet.")
        return redirect("portal:request-detail", pk=pk)
    try:
        opened = access_scoped_session_open(user=request.user, lease=lease, mfa_verified=mfa_fresh(request))
    except GrantNeedsMfa:
        return step_up_redirect(request, reverse("portal:request-detail", args=[pk]))
    except (LeaseError, PermissionDenied, ValidationError) as exc:
        messages.error(request, getattr(exc, "message", None) or " ".join(getattr(exc, "messages", [str(exc)])))
        return redirect("portal:request-detail", pk=pk)
    for warning in opened.warnings:
        messages.warning(request, warning)
    return _session_page(request, opened.session, secret=opened.secret)


@require_POST
@portal_view
def scoped_grant_retry_view(request, pk: int):
    """Try again to make the database user of an approved scoped request whose last attempt failed."""
    access_request = get_object_or_404(requests_visible(user=request.user).filter(resource__isnull=False), pk=pk)
    try:
        grant = scoped_grant_retry(request=access_request, user=request.user)
    except (ValidationError, PermissionDenied) as exc:
        messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
    else:
        if grant.ok:
            messages.success(request, "Granted: the database user is ready.")
        else:
            messages.error(request, f"The database user could not be made: {grant.error}")
    return redirect("portal:request-detail", pk=pk)
