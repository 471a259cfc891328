"""The second factor: verify a code after login, enrol an authenticator app, backup codes, email codes, step-up.

Which method a user must use comes from `access.services.mfa.mfa_method_for`. A code is checked against the
user's main device, then an email code sent in this session, then the backup codes; each device throttles
wrong codes on its own (django-otp), and the page says how long to wait.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from access.models.profiles import MfaMethod
from access.services import auth_events
from access.services import mfa as mfa_services
from portal.forms import MfaMethodForm, TokenForm
from portal.guards import is_verified, mark_mfa_verified, portal_view, safe_next, url_with_next

EMAIL_SENT = "pam_mfa_email_sent"


def _candidate_devices(request) -> list:
    user = request.user
    method = mfa_services.mfa_method_for(user)
    # A confirmed authenticator app is always accepted: it is at least as strong as the email code.
    devices = [mfa_services.totp_device_of(user)]
    if method == MfaMethod.EMAIL or request.session.get(EMAIL_SENT):
        devices.append(mfa_services.mfa_email_device_for(user=user))
    devices.append(mfa_services.backup_device_of(user))
    return [device for device in devices if device is not None]


def _check_code(request, form) -> bool:
    """Try the code on each candidate device; on success mark the session verified; else add the form's error."""
    token = form.cleaned_data["token"]
    throttled = []
    step_up = is_verified(request)
    for device in _candidate_devices(request):
        throttle = mfa_services.device_throttle(device)
        if throttle is not None:
            throttled.append(throttle.message)
            continue
        if device.verify_token(token):
            mark_mfa_verified(request, device)
            request.session.pop(EMAIL_SENT, None)
            auth_events.auth_second_factor_passed(user=request.user, device=device, via="portal", step_up=step_up)
            return True
    auth_events.auth_second_factor_failed(
        user=request.user, via="portal", reason="throttled" if throttled else "wrong code", step_up=step_up
    )
    form.add_error("token", throttled[0] if throttled else "That code is not right. Try the current one.")
    # Repeated wrong codes start a back-off: say so at once rather than on the next try.
    for device in _candidate_devices(request)[:1]:
        throttle = mfa_services.device_throttle(device)
        if throttle is not None and not throttled and device.throttling_failure_count >= 2:
            form.add_error("token", throttle.message)
    return False


def _send_email_code(request) -> None:
    device = mfa_services.mfa_email_device_for(user=request.user)
    if device is None:
        messages.error(request, "Your account has no email address: ask the security team to add one.")
        return
    allowed, _data = device.generate_is_allowed()
    if not allowed:
        messages.info(request, "A code was sent a moment ago: check your inbox.")
        request.session[EMAIL_SENT] = True
        return
    device.generate_challenge()
    auth_events.auth_email_code_sent(user=request.user)
    request.session[EMAIL_SENT] = True
    messages.success(request, f"We emailed a code to {_masked(request.user.email)}.")


def _masked(email: str) -> str:
    name, _, domain = email.partition("@")
    return f"{name[:2]}…@{domain}"


@never_cache
@login_required
def mfa_verify(request):
    """After the password: the code from the user's method (or a backup code, or an email code)."""
    next_url = safe_next(request)
    if is_verified(request):
        return redirect(next_url)
    user = request.user
    method = mfa_services.mfa_method_for(user)
    if method == MfaMethod.TOTP and mfa_services.totp_device_of(user) is None:
        return redirect(url_with_next("portal:mfa-enrol", next_url))
    if method == MfaMethod.EMAIL and request.method == "GET" and not request.session.get(EMAIL_SENT):
        _send_email_code(request)
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid() and _check_code(request, form):
        return redirect(next_url)
    return render(
        request,
        "portal/mfa/verify.html",
        {
            "form": form,
            "method": method,
            "next": next_url,
            "has_email": bool(user.email),
            "backup_codes_left": mfa_services.backup_codes_left(user),
        },
    )


@never_cache
@login_required
def mfa_enrol(request):
    """Scan a QR code into an authenticator app and confirm with its first code; backup codes follow, once."""
    user = request.user
    next_url = safe_next(request)
    first_device = mfa_services.totp_device_of(user) is None and mfa_services.backup_device_of(user) is None
    if not is_verified(request) and not (mfa_services.mfa_method_for(user) == MfaMethod.TOTP and first_device):
        return redirect(url_with_next("portal:mfa-verify", next_url))
    device = mfa_services.mfa_totp_enrolment_start(user=user)
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        throttle = mfa_services.device_throttle(device)
        if throttle is not None:
            form.add_error("token", throttle.message)
        elif mfa_services.mfa_totp_enrolment_confirm(device=device, token=form.cleaned_data["token"]):
            mark_mfa_verified(request, device)
            auth_events.auth_second_factor_passed(user=user, device=device, via="portal enrolment")
            codes = mfa_services.mfa_backup_codes_generate(user=user)
            messages.success(request, "Your authenticator app is set up.")
            return _backup_codes_page(request, codes, next_url)
        else:
            auth_events.auth_second_factor_failed(user=user, via="portal enrolment", reason="wrong code")
            form.add_error("token", "That code is not right: check the app's clock and try the current code.")
    return render(
        request,
        "portal/mfa/enrol.html",
        {
            "form": form,
            "qr_data_uri": mfa_services.totp_qr_data_uri(device),
            "otpauth_uri": device.config_url,
            "secret_b32": _b32(device),
            "next": next_url,
        },
    )


def _b32(device) -> str:
    import base64

    return base64.b32encode(device.bin_key).decode().rstrip("=")


def _backup_codes_page(request, codes: list[str], next_url: str):
    response = render(request, "portal/mfa/backup_codes.html", {"codes": codes, "next": next_url})
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@portal_view
def mfa_backup_codes(request):
    """Replace the backup codes and show the new ones, once."""
    codes = mfa_services.mfa_backup_codes_generate(user=request.user)
    return _backup_codes_page(request, codes, reverse("portal:mfa-settings"))


@require_POST
@login_required
def mfa_email_send(request):
    """Email a code (the fallback when the app is not at hand)."""
    _send_email_code(request)
    target = "portal:mfa-step-up" if is_verified(request) else "portal:mfa-verify"
    return redirect(url_with_next(target, safe_next(request)))


@never_cache
@portal_view
def mfa_step_up(request):
    """A fresh code before reaching a target marked "require MFA"."""
    next_url = safe_next(request)
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid() and _check_code(request, form):
        messages.success(request, "Thanks: your code is verified for the next 5 minutes.")
        return redirect(next_url)
    method = mfa_services.mfa_method_for(request.user)
    return render(
        request,
        "portal/mfa/step_up.html",
        {"form": form, "method": method, "next": next_url, "has_email": bool(request.user.email)},
    )


@never_cache
@portal_view
def mfa_settings(request):
    """The user's second factor: the method in force, the app, the backup codes left; choose a method."""
    user = request.user
    enforced = mfa_services.mfa_method_enforced()
    form = MfaMethodForm(request.POST or None, initial={"method": mfa_services.mfa_method_for(user)})
    if request.method == "POST" and not enforced and form.is_valid():
        method = form.cleaned_data["method"]
        if method == MfaMethod.TOTP and mfa_services.totp_device_of(user) is None:
            return redirect(url_with_next("portal:mfa-enrol", reverse("portal:mfa-settings")))
        mfa_services.mfa_method_choose(user=user, method=method)
        messages.success(request, "Your sign-in method is saved.")
        return redirect("portal:mfa-settings")
    return render(
        request,
        "portal/mfa/settings.html",
        {
            "form": form,
            "enforced": enforced,
            "method": mfa_services.mfa_method_for(user),
            "has_totp": mfa_services.totp_device_of(user) is not None,
            "backup_codes_left": mfa_services.backup_codes_left(user),
        },
    )
