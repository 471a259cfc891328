"""The OpenID Connect relying party: mozilla-django-oidc's code flow, made strict, on settings read at run time.

mozilla-django-oidc (`OIDCAuthenticationBackend`, `OIDCAuthenticationRequestView`) brings the authorization
request (state, nonce and PKCE kept per login in the session), the code exchange, the JWKS lookup by key id and the
userinfo call. What it leaves to the application is done here:

- Discovery: the endpoints and keys come from `PAM_OIDC_ISSUER`'s `/.well-known/openid-configuration` (read on the
  first sign-in and kept an hour), whose `issuer` must be the configured one.
- The ID token is checked in full, not only its signature: the algorithm is the configured one (never `none`), the
  key is one the issuer publishes, and `iss`, `aud` (and `azp` with several audiences), `exp`, `iat` and the
  login's nonce must all be right (mozilla-django-oidc skips the audience). Userinfo must name the same subject.
- Every refusal is an `SsoError` whose reason, in words, goes to the audit trail and the login page; no token,
  code or secret is ever part of it.

`PasswordBackend` is Django's password check, closed while `PAM_SSO_ONLY` is on to all but the break-glass names.
`OidcBackend.authenticate` signs nobody in by itself: the callback view (portal.views.sso) checks the state, then
calls `verified_claims`; the backend otherwise serves the sessions SSO started (and drops them when SSO is unset).
"""

from __future__ import annotations

import hmac
import time

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import SuspiciousOperation
from django.urls import reverse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import absolutify, import_from_settings

DISCOVERY_TTL = 3600.0
# Seconds of leeway on `exp` and `iat` for the identity provider's clock against ours.
CLOCK_SKEW = 30


class SsoError(Exception):
    """A sign-in through the identity provider was refused; `reason` says why in words (never a token or secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sso_configured() -> bool:
    """Whether single sign-on is on (an issuer and the portal's client credentials are configured)."""
    return bool(settings.PAM_OIDC_ISSUER and settings.PAM_OIDC_CLIENT_ID and settings.PAM_OIDC_CLIENT_SECRET)


def password_sign_in_refused(username: str | None) -> bool:
    """Whether a password sign-in as `username` is refused: SSO only, and not a break-glass name."""
    return bool(settings.PAM_SSO_ONLY) and (username or "") not in settings.PAM_SSO_BREAK_GLASS_USERS


def idp_asserts_mfa(claims: dict) -> bool:
    """Whether the ID token says the person passed a second factor: an `amr` or `acr` value the settings name."""
    amr = claims.get("amr")
    amr_values = {value for value in amr if isinstance(value, str)} if isinstance(amr, list) else set()
    acr = claims.get("acr")
    return bool(amr_values & set(settings.PAM_OIDC_MFA_AMR)) or (
        isinstance(acr, str) and acr in settings.PAM_OIDC_MFA_ACR
    )


_discovery_cache: dict[str, tuple[float, dict]] = {}


def oidc_discovery(*, refresh: bool = False) -> dict:
    """The issuer's OpenID configuration (endpoints, keys' URL, methods), fetched once an hour."""
    issuer = settings.PAM_OIDC_ISSUER
    cached = _discovery_cache.get(issuer)
    if cached is not None and not refresh and time.monotonic() - cached[0] < DISCOVERY_TTL:
        return cached[1]
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=settings.PAM_OIDC_TIMEOUT)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise SsoError(f"the identity provider could not be reached ({type(exc).__name__} at {url})") from exc
    if not isinstance(document, dict) or str(document.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
        raise SsoError("the identity provider's discovery document names another issuer")
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not document.get(key):
            raise SsoError(f"the identity provider's discovery document has no {key}")
    _discovery_cache[issuer] = (time.monotonic(), document)
    return document


_PAM_SETTINGS = {
    "OIDC_RP_CLIENT_ID": "PAM_OIDC_CLIENT_ID",
    "OIDC_RP_CLIENT_SECRET": "PAM_OIDC_CLIENT_SECRET",
    "OIDC_RP_SCOPES": "PAM_OIDC_SCOPES",
    "OIDC_RP_SIGN_ALGO": "PAM_OIDC_SIGN_ALGO",
    "OIDC_TIMEOUT": "PAM_OIDC_TIMEOUT",
}
_DISCOVERED = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}
_FIXED = {
    "OIDC_USE_NONCE": True,
    "OIDC_USE_PKCE": True,
    "OIDC_AUTHENTICATION_CALLBACK_URL": "portal:sso-callback",
    "OIDC_REDIRECT_FIELD_NAME": "next",
    "OIDC_VERIFY_SSL": True,
    "OIDC_ALLOW_UNSECURED_JWT": False,
    "OIDC_STORE_ACCESS_TOKEN": False,
    "OIDC_STORE_ID_TOKEN": False,
    "OIDC_PROXY": None,
}


def oidc_setting(name: str, *default):
    """mozilla-django-oidc's settings, answered from the PAM_OIDC_* settings and discovery at the time of asking."""
    if name in _PAM_SETTINGS:
        return getattr(settings, _PAM_SETTINGS[name])
    if name in _DISCOVERED:
        return oidc_discovery().get(_DISCOVERED[name])
    if name == "OIDC_TOKEN_USE_BASIC_AUTH":
        # client_secret_basic is the default of the specification; client_secret_post only when it is all there is.
        methods = oidc_discovery().get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        return "client_secret_basic" in methods
    if name in _FIXED:
        return _FIXED[name]
    return import_from_settings(name, *default)


def _setting_property(name: str) -> property:
    return property(lambda self: oidc_setting(name))


class PasswordBackend(ModelBackend):
    """Django's password check; while PAM_SSO_ONLY is on, only the break-glass names may use it."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if password_sign_in_refused(username):
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


class OidcBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend with discovery, a full ID token check and refusals in words."""

    get_settings = staticmethod(oidc_setting)
    OIDC_OP_TOKEN_ENDPOINT = _setting_property("OIDC_OP_TOKEN_ENDPOINT")
    OIDC_OP_USER_ENDPOINT = _setting_property("OIDC_OP_USER_ENDPOINT")
    OIDC_OP_JWKS_ENDPOINT = _setting_property("OIDC_OP_JWKS_ENDPOINT")
    OIDC_RP_CLIENT_ID = _setting_property("OIDC_RP_CLIENT_ID")
    OIDC_RP_CLIENT_SECRET = _setting_property("OIDC_RP_CLIENT_SECRET")
    OIDC_RP_SIGN_ALGO = _setting_property("OIDC_RP_SIGN_ALGO")
    OIDC_RP_IDP_SIGN_KEY = None

    def __init__(self, *args, **kwargs):
        # Nothing is fetched here: Django builds this backend for every request whose session it started, and the
        # identity provider is asked (discovery) only when someone signs in.
        self.UserModel = get_user_model()

    def authenticate(self, request, **kwargs):
        """Never signs in by itself: the callback view checks the login's state first, then `verified_claims`."""
        return None

    def get_user(self, user_id):
        """The session's user while SSO is configured and they are active; else None (signed out)."""
        if not sso_configured():
            return None
        return ModelBackend.get_user(self, user_id)

    # -- the code flow -----------------------------------------------------------------------------------------
    def verified_claims(self, request, *, nonce: str, code_verifier: str | None) -> dict:
        """Exchange the callback's code for tokens and return the verified claims (ID token over userinfo).

        Raises SsoError when anything is wrong: no code, the code refused, the ID token's signature, algorithm,
        key, issuer, audience, expiry or nonce, or a userinfo answer about another subject.
        """
        self.request = request
        code = request.GET.get("code")
        if not code:
            raise SsoError("the identity provider sent no authorization code")
        token_request = {
            "client_id": self.OIDC_RP_CLIENT_ID,
            "client_secret": self.OIDC_RP_CLIENT_SECRET,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": absolutify(request, reverse("portal:sso-callback")),
        }
        if code_verifier:
            token_request["code_verifier"] = code_verifier
        try:
            tokens = self.get_token(token_request)
        except (requests.RequestException, ValueError) as exc:
            raise SsoError("the identity provider refused the authorization code (used, expired or foreign)") from exc
        id_token = tokens.get("id_token") if isinstance(tokens, dict) else None
        if not id_token:
            raise SsoError("the identity provider's answer carried no ID token")
        claims = self.verify_token(id_token, nonce=nonce)
        userinfo = {}
        if self.OIDC_OP_USER_ENDPOINT and tokens.get("access_token"):
            userinfo = self.get_userinfo(tokens["access_token"], id_token, claims)
        # The ID token is signed and checked: where both say something, it wins.
        return {**userinfo, **claims}

    def verify_token(self, token, **kwargs):
        """Check the ID token's algorithm, key, signature, issuer, audience, times and nonce; return its claims."""
        nonce = kwargs.get("nonce")
        expected_alg = self.OIDC_RP_SIGN_ALGO
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise SsoError("the ID token is not a signed JWT") from exc
        if header.get("alg") != expected_alg:
            raise SsoError(f"the ID token is signed with {header.get('alg')!r}, not the configured {expected_alg}")
        try:
            key = self.retrieve_matching_jwk(token)
        except (SuspiciousOperation, KeyError, jwt.InvalidKeyError, jwt.PyJWKError) as exc:
            raise SsoError("the ID token's key is not one the identity provider publishes") from exc
        except requests.RequestException as exc:
            raise SsoError("the identity provider's keys could not be read") from exc
        client_id = self.OIDC_RP_CLIENT_ID
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[expected_alg],
                audience=client_id,
                issuer=oidc_discovery()["issuer"],
                leeway=CLOCK_SKEW,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise SsoError("the ID token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise SsoError("the ID token was issued for another client (audience)") from exc
        except jwt.InvalidIssuerError as exc:
            raise SsoError("the ID token was issued by another issuer") from exc
        except jwt.InvalidSignatureError as exc:
            raise SsoError("the ID token's signature does not verify") from exc
        except jwt.ImmatureSignatureError as exc:
            raise SsoError("the ID token is dated in the future") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise SsoError(f"the ID token has no {exc.claim} claim") from exc
        except jwt.InvalidTokenError as exc:
            raise SsoError(f"the ID token is not valid ({type(exc).__name__})") from exc
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != client_id:
            raise SsoError("the ID token has several audiences and this portal is not its authorized party")
        if nonce is not None:
            token_nonce = claims.get("nonce")
            if not isinstance(token_nonce, str) or not hmac.compare_digest(token_nonce, nonce):
                raise SsoError("the ID token's nonce is not this sign-in's (a replayed or foreign token)")
        return claims

    def get_userinfo(self, access_token, id_token, payload):
        """The userinfo endpoint's claims (JSON), which must be about the ID token's subject."""
        try:
            response = requests.get(
                self.OIDC_OP_USER_ENDPOINT,
                headers={"Authorization": f"Bearer {access_token}"},
                timeout=settings.PAM_OIDC_TIMEOUT,
            )
            response.raise_for_status()
            userinfo = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise SsoError("the identity provider's userinfo endpoint did not answer with JSON") from exc
        if not isinstance(userinfo, dict) or userinfo.get("sub") != payload.get("sub"):
            raise SsoError("the userinfo answer is about another subject than the ID token")
        return userinfo
