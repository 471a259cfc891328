"""Bearer-token authentication: hashed ApiToken rows (`Authorization: Bearer pam_…` or `Token pam_…`) for services,
and the CLI's OAuth access tokens (django-oauth-toolkit, from `pam login`'s device grant) for people.
"""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework import authentication, exceptions

from access import context
from access.models import ApiToken
from access.models.tokens import token_digest

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
        if token.last_used_at is None or (timezone.now() - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
        return token.user, token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


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
