"""Who calls the API: a bearer token (`Authorization: Bearer pam_…` or `Token pam_…`), or a browser session
that passed the second factor.

- `CliTokenAuthentication`: the CLI's OAuth access tokens (django-oauth-toolkit, from `pam login`'s device grant):
  a bearer token without the `pam_` prefix; expired, revoked or a deactivated owner's: 401 "run `pam login` again".
- `ApiTokenAuthentication`: hashed ApiToken rows. A token acts as its owner as the owner stands at each call (an
  inactive owner's token fails; staff status and permissions are read then), never as more; its first use is
  audited and its last use recorded.
- `OtpSessionAuthentication`: Django's session, only when the session verified a second factor (django-otp):
  a session that gave only the password gets 403 on every call, whatever the view allows. Unsafe methods need the
  CSRF token (DRF's check), and a view whose GET changes state (`session_get_refused`, Vault's `creds/<role>`)
  refuses GET from a browser session (POST with the CSRF token instead); token clients keep Vault's GET.
"""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework import authentication, exceptions

from access import context
from access.models import ApiToken
from access.models.tokens import token_digest
from access.services.tokens import api_token_mark_used

LAST_USED_GRANULARITY = 60  # seconds: last_used_at is written at most this often per token

API_TOKEN_PREFIX = "pam_"  # access.services.tokens.TOKEN_PREFIX: every API token starts with it, no OAuth token does


class CliTokenAuthentication(OAuth2Authentication):
    """The CLI's access tokens: a bearer token without the API-token prefix is an OAuth token or nothing.

    An expired, revoked or unknown one is refused here with a message that tells the person what to do, and so is
    the token of a deactivated user; API tokens (``pam_…``) are left to :class:`ApiTokenAuthentication`.
    """

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if len(header) != 2 or header[0].lower() != "bearer" or header[1].startswith(API_TOKEN_PREFIX):
            return None
        found = super().authenticate(request)
        if found is None or not found[0].is_active:
            raise exceptions.AuthenticationFailed("Your CLI login has expired or was revoked: run `pam login` again.")
        context.mark_client("cli")  # audit rows written for this request say it came from the CLI
        return found

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keywords = ("bearer", "token")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if not header or header[0].lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("The Authorization header must be 'Bearer <token>'.")
        token = ApiToken.objects.usable().select_related("user").filter(digest=token_digest(header[1])).first()
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or expired API token.")
        if token.last_used_at is None or (timezone.now() - token.last_used_at).total_seconds() > LAST_USED_GRANULARITY:
            api_token_mark_used(token=token)
        return token.user, token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


def session_otp_verified(request) -> bool:
    """Whether the Django request's user passed a second factor in this session (django-otp's `is_verified`)."""
    verified = getattr(request.user, "is_verified", None)
    return bool(callable(verified) and verified())


class OtpSessionAuthentication(authentication.SessionAuthentication):
    """DRF's session authentication for sessions that passed the second factor; 403 for the others."""

    def authenticate(self, request):
        django_request = request._request
        user = getattr(django_request, "user", None)
        if not user or not user.is_active:
            return None
        if not session_otp_verified(django_request):
            raise exceptions.PermissionDenied(
                "This browser session has not passed the second factor: enter your one-time code in the portal "
                "(or call the API with a token)."
            )
        self.enforce_csrf(request)
        view = request.parser_context.get("view") if request.parser_context else None
        if request.method == "GET" and getattr(view, "session_get_refused", False):
            raise exceptions.MethodNotAllowed(
                "GET", detail="From a browser this call changes state: send it as POST with the CSRF token."
            )
        return user, None


def is_token_request(request) -> bool:
    """Whether a DRF request was authenticated by an API token (not a browser session)."""
    return isinstance(getattr(request, "auth", None), ApiToken)


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "access.api.authentication.ApiTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer"}


class CliTokenScheme(OpenApiAuthenticationExtension):
    target_class = "access.api.authentication.CliTokenAuthentication"
    name = "cliOAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An access token from `pam login` (device grant)."}


class OtpSessionScheme(OpenApiAuthenticationExtension):
    target_class = "access.api.authentication.OtpSessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": "sessionid"}
