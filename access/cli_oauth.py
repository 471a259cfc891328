"""django-oauth-toolkit as the CLI's authorization server: the device authorization and token endpoints, and the
validator that makes device codes expire in minutes and work once.

`/oauth/device-authorization/` hands the CLI a device code and a short user code (the CLI's client is created on
first use, the request audited with its address); the person confirms the user code on the portal's `/device/`
page (portal.views.cli); `/oauth/token/` exchanges the device code — once, before it expires — for an access
token and a refresh token, and later refreshes them. Nothing else of django-oauth-toolkit is exposed.
"""

from __future__ import annotations

import hashlib
import json

from django.conf import settings
from django.db import transaction
from django.http import JsonResponse
from oauth2_provider import views as oauth_views
from oauth2_provider.models import (
    DeviceCodeResponse,
    DeviceRequest,
    create_device_grant,
    get_device_grant_model,
    get_refresh_token_model,
)
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.oauth2.rfc8628.endpoints.pre_configured import DeviceApplicationServer
from oauthlib.oauth2.rfc8628.errors import SlowDownError

from access.generators import new_token
from access.services.cli import (
    CLI_CLIENT_ID,
    DEVICE_CODE_GRANT,
    cli_application,
    cli_device_code_consume,
    cli_device_grant_start,
    cli_device_poll_too_soon,
    cli_device_request_record,
    cli_login_lapsed,
    cli_login_record,
)


def new_access_token(request) -> str:
    """The CLI's access tokens, made where every secret of the portal is made (access.generators)."""
    return new_token(nbytes=32)


def new_refresh_token(request) -> str:
    return new_token(nbytes=32)


class PamOAuth2Validator(OAuth2Validator):
    """django-oauth-toolkit's validator, with the device code's life enforced at the token endpoint.

    A device code is accepted once, while it is unexpired and confirmed; its exchange is audited as a CLI login.
    """

    def validate_device_code(self, client_id, code, request, *args, **kwargs):
        model = get_device_grant_model()
        grant = model.objects.filter(device_code=code, client_id=client_id).select_related("user").first()
        if grant is None:
            return None
        if grant.is_expired():
            return "expired_token"
        if grant.status == model.AUTHORIZATION_PENDING:
            return "authorization_pending"
        if grant.status == model.DENIED:
            return "access_denied"
        if grant.status != model.AUTHORIZED or grant.user is None or not grant.user.is_active:
            return "expired_token"
        if not cli_device_code_consume(device_grant=grant):
            return "expired_token"  # another request exchanged it first
        request.user = grant.user
        request.scopes = grant.scope.split() if grant.scope else list(oauth_settings_default_scopes())
        request.pam_device_grant = grant
        return "authorized"

    def validate_refresh_token(self, refresh_token, client, request, *args, **kwargs):
        """The toolkit's checks (revoked, reused, idle too long), and a CLI login's absolute lifetime."""
        if not super().validate_refresh_token(refresh_token, client, request, *args, **kwargs):
            return False
        current = request.refresh_token_instance
        if cli_login_lapsed(refresh_token=current):
            get_refresh_token_model().revoke_family(current.token_family)
            return False
        return True

    def save_bearer_token(self, token, request, *args, **kwargs):
        with transaction.atomic():
            super().save_bearer_token(token, request, *args, **kwargs)
            grant = getattr(request, "pam_device_grant", None)
            if request.grant_type == DEVICE_CODE_GRANT and grant is not None:
                digest = hashlib.sha256(token.get("refresh_token", "").encode()).hexdigest()
                refresh = get_refresh_token_model().objects.filter(token_checksum=digest).first()
                if refresh is not None:
                    cli_login_record(user=request.user, device_grant=grant, refresh_token=refresh)


def oauth_settings_default_scopes() -> list[str]:
    from oauth2_provider.settings import oauth2_settings

    return oauth2_settings.DEFAULT_SCOPES


class _ShortLivedDeviceServer(DeviceApplicationServer):
    """oauthlib's device endpoint, whose codes live `PAM_CLI_DEVICE_CODE_SECONDS` rather than its fixed 30 minutes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._expires_in = settings.PAM_CLI_DEVICE_CODE_SECONDS


class DeviceAuthorizationView(oauth_views.DeviceAuthorizationView):
    """`POST /oauth/device-authorization/` (client_id): a device code, a user code and where to confirm it.

    The toolkit's view is followed step by step here: oauthlib 4 adds `scope` to the answer, which the toolkit's
    `DeviceCodeResponse` does not take.
    """

    server_class = _ShortLivedDeviceServer

    def post(self, request, *args, **kwargs):
        if request.POST.get("client_id") == CLI_CLIENT_ID:
            cli_application()  # the CLI's client exists from its first login on
        headers, body, status = self.create_device_authorization_response(request)
        data = json.loads(body) if isinstance(body, str | bytes) else dict(body)
        if status != 200:
            return JsonResponse(data, status=status, headers=headers)
        scope = data.pop("scope", None) or " ".join(oauth_settings_default_scopes())
        fields = {name: data[name] for name in _DEVICE_RESPONSE_FIELDS if name in data}
        base = request.build_absolute_uri(data["verification_uri"])
        fields["verification_uri"] = base
        fields["verification_uri_complete"] = f"{base}?user_code={data['user_code']}"
        with transaction.atomic():
            grant = create_device_grant(
                DeviceRequest(client_id=request.POST["client_id"], scope=scope), DeviceCodeResponse(**fields)
            )
            cli_device_grant_start(device_grant=grant, interval=fields["interval"])
            cli_device_request_record(device_code=fields["device_code"])
        return JsonResponse(fields, headers={"Cache-Control": "no-store"})


_DEVICE_RESPONSE_FIELDS = (
    "verification_uri",
    "expires_in",
    "user_code",
    "device_code",
    "interval",
    "verification_uri_complete",
)


def _no_store(response):
    response["Cache-Control"] = "no-store"
    return response


class TokenView(oauth_views.TokenView):
    """`POST /oauth/token/`: exchange a confirmed device code, or a refresh token, for new tokens. A client polling a
    pending code sooner than half its interval after its previous poll is told `slow_down`, and the code's interval
    grows by 5 seconds (access.services.cli.cli_device_poll_too_soon)."""

    def post(self, request, *args, **kwargs):
        if request.POST.get("grant_type") == DEVICE_CODE_GRANT:
            grant = get_device_grant_model().objects.filter(device_code=request.POST.get("device_code", "")).first()
            if grant is not None:
                grant.is_expired()  # marks a lapsed code expired, so the toolkit answers expired_token, not pending
            pending = grant is not None and grant.status == grant.AUTHORIZATION_PENDING
            # RFC 8628 §3.5 slow_down, which the toolkit leaves as a TODO (it answers pending by itself)
            if pending and cli_device_poll_too_soon(device_grant=grant):
                return _no_store(JsonResponse(json.loads(SlowDownError().json), status=400))
        response = super().post(request, *args, **kwargs)
        _no_store(response)
        if response.status_code == 200:
            response["X-One-Time-Secret"] = "1"  # the one answer that carries the tokens (the leak scan skips it)
        return response
