"""Reads for the CLI's sign-in: a pending device code, where it was asked from, and a person's CLI logins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from oauth2_provider.models import get_device_grant_model, get_refresh_token_model
from oauth2_provider.settings import oauth2_settings

from access.models import AuditAction, AuditEvent
from access.models.visibility import user_is_active
from access.services.cli import CLI_CLIENT_ID, cli_login_started_at

REVOKE_PERMISSION = "oauth2_provider.change_refreshtoken"


def device_code_normalised(user_code: str) -> str:
    """What a person typed, as stored: upper case, without spaces or dashes (codes are shown as ABCD-EFGH)."""
    return "".join(ch for ch in (user_code or "").upper() if ch.isalnum())


def device_grant_pending(*, user_code: str):
    """The device code awaiting a decision for `user_code`, or None (unknown, used, denied or expired)."""
    model = get_device_grant_model()
    code = device_code_normalised(user_code)
    if not code:
        return None
    grant = model.objects.filter(user_code=code, status=model.AUTHORIZATION_PENDING).first()
    if grant is None or grant.expires <= timezone.now():
        return None
    return grant


@dataclass(frozen=True)
class DeviceOrigin:
    """Where and when a device code was asked for (from its audit row)."""

    ip: str | None
    requested_at: datetime | None


def device_grant_origin(grant) -> DeviceOrigin:
    event = AuditEvent.objects.for_target(grant).filter(action=AuditAction.CLI_DEVICE_REQUEST).order_by("-seq").first()
    return DeviceOrigin(event.ip if event else None, event.created_at if event else None)


@dataclass(frozen=True)
class CliLogin:
    """One live CLI login: its current refresh token, when it started, was last refreshed, and lapses."""

    refresh_token: object
    username: str
    started_at: datetime
    refreshed_at: datetime
    expires_at: datetime | None
    ip: str | None

    @property
    def pk(self) -> int:
        return self.refresh_token.pk


def _refresh_lifetime() -> timedelta | None:
    seconds = oauth2_settings.REFRESH_TOKEN_EXPIRE_SECONDS
    return timedelta(seconds=seconds) if seconds else None


def cli_login_tokens_visible(*, user) -> QuerySet:
    """The live refresh tokens of CLI logins `user` may see: their own, everyone's for staff who may revoke them."""
    model = get_refresh_token_model()
    if not user_is_active(user):
        return model.objects.none()
    tokens = model.objects.filter(revoked__isnull=True, application__client_id=CLI_CLIENT_ID).select_related("user")
    lifetime = _refresh_lifetime()
    if lifetime is not None:
        tokens = tokens.filter(created__gt=timezone.now() - lifetime)
    if user.is_staff and user.has_perm(REVOKE_PERMISSION):
        return tokens
    return tokens.filter(user=user)


def cli_logins_of(user) -> list[CliLogin]:
    """The user's own live CLI logins, newest first, with when each began and where from."""
    tokens = list(cli_login_tokens_visible(user=user).filter(user=user).order_by("-created"))
    families = [str(token.token_family) for token in tokens if token.token_family]
    logins_by_family = {
        event.data.get("token_family"): event
        for event in AuditEvent.objects.filter(action=AuditAction.CLI_LOGIN, actor=user).order_by("seq")
        if event.data.get("token_family") in families
    }
    rows = []
    for token in tokens:
        login = logins_by_family.get(str(token.token_family))
        started_at = cli_login_started_at(refresh_token=token)
        rows.append(
            CliLogin(
                refresh_token=token,
                username=token.user.get_username(),
                started_at=started_at,
                refreshed_at=token.created,
                expires_at=started_at + timedelta(seconds=settings.PAM_CLI_LOGIN_MAX_SECONDS),
                ip=login.ip if login else None,
            )
        )
    return rows
