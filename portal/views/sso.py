"""Signing in through the identity provider (OpenID Connect), for the portal and the admin alike.

- `SsoLoginView` (/sso/login/?next=…) sends the browser to the identity provider with a fresh state, nonce and PKCE
  challenge kept in the session (mozilla-django-oidc's request view). With `step_up=1`, for a person signed in
  through SSO, it asks the identity provider for a fresh sign-in (`prompt=login`, `max_age=0`).
- `SsoCallbackView` (/sso/callback/) takes the state out of the session (so a replayed callback finds nothing),
  has access.sso_backend verify the code's tokens, and access.services.sso sign the person in (created, updated,
  groups synced). The portal's second factor follows unless the identity provider asserted one and
  PAM_OIDC_TRUST_IDP_MFA trusts it; then the session is verified for django-otp by the IdP's stand-in device.
- `sso_step_up_url` tells portal.guards where a step-up goes for an SSO session (the identity provider when
  PAM_OIDC_STEP_UP=idp).
Every refusal is audited (auth.sso_failed) with its reason and shown on the login page; no token is ever shown.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlencode, urlparse

from django.conf import settings
from django.contrib import auth, messages
from django.http import Http404
from django.shortcuts import redirect, resolve_url
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django_otp import login as otp_login
from mozilla_django_oidc.views import OIDCAuthenticationRequestView

from access.models import IdpMfaDevice, SsoIdentity
from access.models.profiles import MfaMethod
from access.services import auth_events
from access.services import mfa as mfa_services
from access.services import sso as sso_services
from access.sso_backend import CLOCK_SKEW, OidcBackend, SsoError, oidc_discovery, oidc_setting, sso_configured
from portal.guards import MFA_VERIFIED_AT, url_with_next

# What the session remembers of the SSO sign-in that started it (issuer, subject, the IdP's session id).
SSO_SESSION_KEY = "pam_sso"
STATES_KEY = "oidc_states"  # mozilla-django-oidc's per-login state, nonce and PKCE verifier


@method_decorator(never_cache, name="dispatch")
class SsoLoginView(OIDCAuthenticationRequestView):
    """Off to the identity provider; back at /sso/callback/ with a code for this login's state."""

    get_settings = staticmethod(oidc_setting)

    def __init__(self, **kwargs):
        # The endpoints are asked of discovery when a login starts, not when the view is made.
        View.__init__(self, **kwargs)
        self.OIDC_RP_CLIENT_ID = settings.PAM_OIDC_CLIENT_ID

    @property
    def OIDC_OP_AUTH_ENDPOINT(self) -> str:
        return oidc_setting("OIDC_OP_AUTHORIZATION_ENDPOINT")

    def _step_up(self, request) -> bool:
        return bool(request.GET.get("step_up")) and request.user.is_authenticated and SSO_SESSION_KEY in request.session

    def get_extra_params(self, request) -> dict:
        if self._step_up(request):
            return {"prompt": "login", "max_age": "0"}
        return {}

    def get(self, request):
        if not sso_configured():
            raise Http404("Single sign-on is not configured.")
        try:
            response = super().get(request)
        except SsoError as exc:
            sso_services.sso_sign_in_failed(reason=exc.reason, user=request.user if self._step_up(request) else None)
            messages.error(request, f"Single sign-on is unavailable: {exc.reason}.")
            return redirect("portal:login")
        # Keep where to go next and who asked for a step-up with this login's own state, not beside it: two tabs
        # signing in at once each come back to their own page.
        state = parse_qs(urlparse(response["Location"]).query)["state"][0]
        entry = request.session[STATES_KEY][state]
        entry["next"] = request.session.pop("oidc_login_next", None)
        if self._step_up(request):
            entry["step_up_user"] = request.user.pk
        request.session.modified = True
        return response


def _refused(request, reason: str, *, user=None, step_up: bool = False):
    sso_services.sso_sign_in_failed(reason=reason, user=user, step_up=step_up)
    messages.error(request, f"Single sign-on failed: {reason}.")
    return redirect("portal:dashboard" if step_up else "portal:login")


@method_decorator(never_cache, name="dispatch")
class SsoCallbackView(View):
    """The identity provider's answer: state checked and spent, tokens verified, the person signed in."""

    http_method_names = ["get"]

    def get(self, request):
        if not sso_configured():
            raise Http404("Single sign-on is not configured.")
        state = request.GET.get("state") or ""
        states = request.session.get(STATES_KEY)
        entry = states.pop(state, None) if isinstance(states, dict) and state else None
        if entry is not None:
            # Spent before the (slow) token exchange: the same callback replayed meanwhile finds no state.
            request.session.modified = True
            request.session.save()
        step_up_user = entry.get("step_up_user") if entry else None
        signed_in = request.user if request.user.is_authenticated else None
        if entry is None:
            return _refused(
                request, "this sign-in's state is unknown or already used (a replayed or forged answer)", user=signed_in
            )
        if request.GET.get("error"):
            error = request.GET.get("error", "")[:64]
            return _refused(
                request, f"the identity provider answered {error!r}", user=signed_in, step_up=bool(step_up_user)
            )
        try:
            claims = OidcBackend().verified_claims(
                request, nonce=entry.get("nonce") or "", code_verifier=entry.get("code_verifier")
            )
            issuer = oidc_discovery()["issuer"]
            if request.GET.get("iss", issuer) != issuer:
                # RFC 9207: an answer naming another issuer was meant for another identity provider (mix-up).
                raise SsoError("the answer names another identity provider (iss)")
            if step_up_user is not None:
                _check_step_up_identity(request, step_up_user, issuer, claims)
            result = sso_services.sso_user_sign_in(issuer=issuer, claims=claims)
        except SsoError as exc:
            return _refused(request, exc.reason, user=signed_in, step_up=step_up_user is not None)
        next_url = entry.get("next") or resolve_url(settings.LOGIN_REDIRECT_URL)
        if step_up_user is not None:
            return _finish_step_up(request, result, claims, entry, next_url)
        return _finish_sign_in(request, result, claims, issuer, next_url)


def _check_step_up_identity(request, step_up_user: int, issuer: str, claims: dict) -> None:
    """A step-up must be the signed-in person again, at the same identity provider."""
    identity = SsoIdentity.objects.filter(user_id=step_up_user).first()
    if (
        request.user.pk != step_up_user
        or identity is None
        or identity.issuer != issuer
        or identity.subject != claims.get("sub")
    ):
        raise SsoError("the step-up sign-in was by another person than the one signed in here")


def _finish_sign_in(request, result, claims: dict, issuer: str, next_url: str):
    user = result.user
    user.backend = "access.sso_backend.OidcBackend"
    auth.login(request, user)
    request.session[SSO_SESSION_KEY] = {"issuer": issuer, "subject": result.identity.subject, "sid": claims.get("sid")}
    if result.mfa_asserted and settings.PAM_OIDC_TRUST_IDP_MFA:
        device = sso_services.idp_mfa_device_for(user=user)
        otp_login(request, device)
        if settings.PAM_OIDC_STEP_UP == "idp" and isinstance(claims.get("auth_time"), int | float):
            # The identity provider does step-up: its second factor counts as fresh from when it was given.
            request.session[MFA_VERIFIED_AT] = float(claims["auth_time"])
        auth_events.auth_second_factor_passed(user=user, device=device, via="sso")
        return redirect(next_url)
    return redirect(url_with_next("portal:mfa-verify", next_url))


def _finish_step_up(request, result, claims: dict, entry: dict, next_url: str):
    """A fresh sign-in at the identity provider, with a second factor, since the step-up started: fresh for 5 min."""
    auth_time = claims.get("auth_time")
    started = float(entry.get("added_on") or 0)
    if not isinstance(auth_time, int | float) or auth_time < started - CLOCK_SKEW:
        return _refused(
            request, "the identity provider did not sign the person in again", user=result.user, step_up=True
        )
    if not result.mfa_asserted:
        return _refused(
            request, "the identity provider's new sign-in asserted no second factor", user=result.user, step_up=True
        )
    request.session[MFA_VERIFIED_AT] = time.time()
    sso_services.sso_step_up_passed(user=result.user, claims=claims)
    messages.success(request, "Thanks: your identity provider confirmed it is you, for the next 5 minutes.")
    return redirect(next_url)


def sso_step_up_url(request, next_url: str) -> str | None:
    """Where a step-up goes for an SSO session, or None for the portal's own code page.

    PAM_OIDC_STEP_UP=idp: back to the identity provider. Otherwise the portal's code, but a person the identity
    provider verified who has no authenticator app yet (and must use one) is first sent to set it up.
    """
    if SSO_SESSION_KEY not in request.session or not sso_configured():
        return None
    if settings.PAM_OIDC_STEP_UP == "idp":
        return f"{reverse('portal:sso-login')}?{urlencode({'next': next_url, 'step_up': '1'})}"
    user = request.user
    if (
        isinstance(getattr(user, "otp_device", None), IdpMfaDevice)
        and mfa_services.mfa_method_for(user) == MfaMethod.TOTP
        and mfa_services.totp_device_of(user) is None
    ):
        return url_with_next("portal:mfa-enrol", next_url)
    return None
