"""Who may reach a portal page: signed in, past the second factor, and (for some actions) recently verified.

`portal_view` sends anonymous visitors to the login page and signed-in users without a verified OTP device
to the MFA step. `approver_view` also requires `access.approve_accessrequest` (403 otherwise). The time of
the last successful code is kept in the session so that targets marked "require MFA" can ask for a fresh
one when it is older than `STEP_UP_MAX_AGE` seconds.
"""

from __future__ import annotations

import time
from functools import wraps
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django_otp import login as otp_login

from access.selectors.policies import GrantNeedsMfa, NoGrant, access_grant_require
from access.services.requests import user_may_approve

MFA_VERIFIED_AT = "pam_mfa_verified_at"
STEP_UP_MAX_AGE = 300


def is_verified(request) -> bool:
    verified = getattr(request.user, "is_verified", None)
    return bool(callable(verified) and verified())


def mark_mfa_verified(request, device) -> None:
    """Record a successful code: django-otp's login (the session's device) and the time, for step-up checks."""
    otp_login(request, device)
    request.session[MFA_VERIFIED_AT] = time.time()


def mfa_fresh(request, max_age: int = STEP_UP_MAX_AGE) -> bool:
    """Whether the user gave a correct code less than `max_age` seconds ago."""
    verified_at = request.session.get(MFA_VERIFIED_AT)
    return is_verified(request) and verified_at is not None and time.time() - float(verified_at) <= max_age


def safe_next(request, default: str = "portal:dashboard") -> str:
    """The `next` URL of the request when it stays on this site, else `default`."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return resolve_url(default)


def url_with_next(name: str, next_url: str) -> str:
    return f"{reverse(name)}?{urlencode({'next': next_url})}"


def portal_view(view):
    """Signed in and verified with a second factor, or redirected to the step that is missing."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_verified(request):
            return redirect(url_with_next("portal:mfa-verify", request.get_full_path()))
        return view(request, *args, **kwargs)

    return wrapper


def approver_view(view):
    """A portal view for approvers only: 403 for everyone else."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not user_may_approve(request.user):
            raise PermissionDenied("Only approvers may decide access requests.")
        return view(request, *args, **kwargs)

    return portal_view(wrapper)


def step_up_redirect(request, next_url: str):
    """Send the user for a fresh code, coming back to `next_url` (SSO sessions: see portal.views.sso)."""
    from portal.views.sso import sso_step_up_url

    return redirect(sso_step_up_url(request, next_url) or url_with_next("portal:mfa-step-up", next_url))


def grant_or_redirect(request, **target):
    """The user's grant on `target` (role= or account=) for a page that uses it, or where the user goes instead.

    Returns `(grant, None)`, or `(None, response)`: the step-up page when the grant wants a fresh code, the
    catalogue (with a note) when no grant covers the target.
    """
    try:
        return access_grant_require(user=request.user, mfa_verified=mfa_fresh(request), **target), None
    except GrantNeedsMfa:
        return None, step_up_redirect(request, request.get_full_path())
    except NoGrant:
        (thing,) = target.values()
        messages.info(request, f"You need an approved request before using {thing}.")
        return None, redirect("portal:catalogue")
