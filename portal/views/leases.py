"""Dynamic credentials in the portal: get a lease for a role, see its password once, renew it, revoke it."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from access.models import Lease
from access.models.leases import ISSUE_FAILED_REASON, LeaseState
from access.selectors.leases import lease_connection_string, leases_held_by, roles_granted_to
from access.selectors.policies import GrantNeedsMfa
from access.services.leases import LeaseError, lease_reveal_password
from access.services.usage import access_lease_issue, access_lease_renew, access_lease_revoke, access_scoped_reveal
from portal.forms import LeaseForm, RenewForm
from portal.guards import grant_or_redirect, mfa_fresh, portal_view, step_up_redirect
from portal.listing import listing

LEASE_STATES = [("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked"), ("failed", "Issue failed")]
_NOT_FAILED = ~Q(revoke_reason=ISSUE_FAILED_REASON)
LEASE_STATE_FILTERS = {
    "active": Q(state=LeaseState.ACTIVE),
    "expired": Q(state=LeaseState.EXPIRED),
    "revoked": Q(state__in=[LeaseState.REVOKED, LeaseState.REVOKING, LeaseState.REVOKE_FAILED]) & _NOT_FAILED,
    "failed": Q(revoke_reason=ISSUE_FAILED_REASON),
}


def _own_lease(request, pk: int) -> Lease:
    """The user's own lease, or 404: the portal never shows anyone else's (staff use the admin)."""
    return get_object_or_404(leases_held_by(request.user), pk=pk)


@never_cache
@portal_view
def role_use(request, role_id: int):
    """Ask for credentials on a role the user holds a policy for; a fresh code first when the grant requires MFA."""
    role = get_object_or_404(roles_granted_to(request.user), pk=role_id)
    grant, elsewhere = grant_or_redirect(request, role=role)
    if elsewhere:
        return elsewhere
    form = LeaseForm(request.POST or None, initial={"ttl": grant.cap(role.effective_default_ttl)})
    if request.method == "POST" and form.is_valid():
        try:
            issued = access_lease_issue(
                user=request.user, role=role, ttl=form.cleaned_data.get("ttl"), mfa_verified=mfa_fresh(request)
            )
        except (LeaseError, PermissionDenied, ValidationError) as exc:
            form.add_error(None, getattr(exc, "message", None) or " ".join(getattr(exc, "messages", [str(exc)])))
        else:
            for warning in issued.warnings:
                messages.warning(request, warning)
            # The password is shown once on the lease page (lease_reveal_password), never passed in a URL.
            return redirect("portal:lease-detail", pk=issued.lease.pk)
    return render(request, "portal/role_use.html", {"role": role, "grant": grant, "form": form})


@portal_view
def lease_list(request):
    """The user's leases, newest first, filtered by state and role or username, a page at a time."""
    page = listing(
        request,
        leases_held_by(request.user).select_related("role__resource"),
        states=LEASE_STATES,
        state_filters=LEASE_STATE_FILTERS,
        search_fields=("role__name", "resource__name", "username"),
    )
    return render(request, "portal/lease_list.html", {"listing": page})


@never_cache
@portal_view
def lease_detail(request, pk: int):
    """The lease; on the first visit after issue, its password and connection string (then only the username)."""
    lease = _own_lease(request, pk)
    password = None
    if lease.revealed_at is None and lease.is_scoped:
        try:  # scoped access: shown once to its requester while the grant stands, with a fresh code if it says so
            password = access_scoped_reveal(user=request.user, lease=lease, mfa_verified=mfa_fresh(request))
        except GrantNeedsMfa:
            return step_up_redirect(request, request.get_full_path())
        except (LeaseError, PermissionDenied):
            password = None
    elif lease.revealed_at is None:
        password = lease_reveal_password(lease=lease, user=request.user)
    if password is not None:
        lease.refresh_from_db()
    context = {
        "lease": lease,
        "password": password,
        "connection_string": lease_connection_string(lease, password) if password else "",
        "connection_template": lease_connection_string(lease, "<password>").replace("%3Cpassword%3E", "<password>"),
        "is_active": lease.state == LeaseState.ACTIVE,
        "renew_form": RenewForm(initial={"increment": lease.role.effective_default_ttl if lease.role else None}),
    }
    response = render(request, "portal/lease_detail.html", context)
    response["Cache-Control"] = "no-store"
    if password is not None:
        response["X-One-Time-Secret"] = "1"  # the reveal-once page (the test suite's leak scan skips only these)
    return response


@require_POST
@portal_view
def lease_renew_view(request, pk: int):
    """Extend the lease (capped at its maximum and at the grant)."""
    lease = _own_lease(request, pk)
    form = RenewForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(form.errors.get("increment", ["Enter a duration such as 30m."])))
        return redirect("portal:lease-detail", pk=pk)
    try:
        renewed = access_lease_renew(user=request.user, lease=lease, increment=form.cleaned_data.get("increment"))
    except LeaseError as exc:
        messages.error(request, exc.message)
    except PermissionDenied as exc:
        messages.error(request, str(exc))
    else:
        for warning in renewed.warnings:
            messages.warning(request, warning)
        if not renewed.warnings:
            messages.success(request, f"Renewed until {renewed.lease.expires_at:%Y-%m-%d %H:%M:%S} UTC.")
    return redirect("portal:lease-detail", pk=pk)


@require_POST
@portal_view
def lease_revoke_view(request, pk: int):
    """Drop the database user now."""
    lease = _own_lease(request, pk)
    revoked = access_lease_revoke(user=request.user, lease=lease, reason="revoked by holder")
    if revoked.state == LeaseState.REVOKED:
        messages.success(request, f"Revoked: the database user {revoked.username} is gone.")
    else:
        messages.warning(request, f"Revocation is {revoked.get_state_display().lower()}; it will be retried.")
    return redirect(reverse("portal:lease-detail", kwargs={"pk": pk}))
