"""The terminal's way in, seen from the portal: confirming a `pam login` device code, and listing CLI logins.

`/device/` asks for the code the CLI printed (or takes it from the link the CLI opened), then shows which client
asked, from which address and when, and waits for an explicit "Sign in the CLI" or "Deny". The page needs the
portal's login with the second factor (`portal_view`). Codes are single use and expire in minutes; a wrong code
counts against a small per-session allowance so the short codes cannot be guessed from one browser.
`/cli-logins/` lists the user's live CLI logins, each revocable.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST
from oauth2_provider.models import get_application_model

from access.selectors.cli import cli_login_tokens_visible, cli_logins_of, device_grant_origin, device_grant_pending
from access.services.cli import cli_device_decide, cli_login_revoke
from portal.guards import portal_view

WRONG_CODES = "pam_device_wrong_codes"
WRONG_CODES_ALLOWED = 10


class DeviceCodeForm(forms.Form):
    user_code = forms.CharField(label="Code shown by the CLI", max_length=20)


def _error_text(exc: ValidationError | PermissionDenied) -> str:
    return " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)


def _confirm_page(request, grant):
    application = get_application_model().objects.filter(client_id=grant.client_id).first()
    return render(
        request,
        "portal/cli_device_confirm.html",
        {
            "grant": grant,
            "code": f"{grant.user_code[:4]}-{grant.user_code[4:]}",
            "client_name": application.name if application else grant.client_id,
            "origin": device_grant_origin(grant),
        },
    )


@never_cache
@portal_view
def device(request):
    """Type (or follow a link with) the CLI's code, then confirm it on the next page."""
    initial = request.GET.get("user_code", "")
    form = DeviceCodeForm(request.POST or None, initial={"user_code": initial})
    if request.method == "POST" and "decision" in request.POST:
        return _decide(request)
    if request.session.get(WRONG_CODES, 0) >= WRONG_CODES_ALLOWED:
        form.errors.clear()
        messages.error(request, "Too many wrong codes: sign out and in again before trying another.")
        return render(request, "portal/cli_device.html", {"form": DeviceCodeForm(), "locked": True})
    if request.method == "POST" and form.is_valid():
        grant = device_grant_pending(user_code=form.cleaned_data["user_code"])
        if grant is None:
            request.session[WRONG_CODES] = request.session.get(WRONG_CODES, 0) + 1
            form.add_error("user_code", "That code is unknown, used or expired: run `pam login` again for a new one.")
        else:
            return _confirm_page(request, grant)
    return render(request, "portal/cli_device.html", {"form": form})


def _decide(request):
    grant = device_grant_pending(user_code=request.POST.get("user_code", ""))
    if grant is None:
        messages.error(request, "That code is unknown, used or expired: run `pam login` again for a new one.")
        return redirect("portal:device")
    approve = request.POST.get("decision") == "approve"
    try:
        cli_device_decide(device_grant=grant, user=request.user, approve=approve)
    except (ValidationError, PermissionDenied) as exc:
        messages.error(request, _error_text(exc))
        return redirect("portal:device")
    request.session.pop(WRONG_CODES, None)
    return render(request, "portal/cli_device_done.html", {"approved": approve})


@never_cache
@portal_view
def cli_logins(request):
    """The user's live CLI logins (one per `pam login`), each with a revoke button."""
    return render(request, "portal/cli_logins.html", {"logins": cli_logins_of(request.user)})


@require_POST
@portal_view
def cli_login_revoke_view(request, pk: int):
    token = cli_login_tokens_visible(user=request.user).filter(user=request.user, pk=pk).first()
    if token is None:
        raise Http404("No such CLI login.")
    cli_login_revoke(refresh_token=token, actor=request.user)
    messages.success(request, "The CLI login is revoked: that terminal must run `pam login` again.")
    return redirect("portal:cli-logins")
