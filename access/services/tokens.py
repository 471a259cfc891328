"""API tokens: created with a random secret shown once (only its digest is stored), named, expiring, revocable.

A token expires: by default after `DEFAULT_TOKEN_DAYS` days, never later than `settings.PAM_API_TOKEN_MAX_DAYS`.
People create their own from an OTP-verified page (the portal's token page, or the admin's), `manage.py
create_api_token` makes them for service accounts. A token acts as its owner at each call and never as more
(access.api.authentication). Creating, first use and revoking are audited.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from access.generators import new_token
from access.models import ApiToken, AuditAction
from access.models.tokens import token_digest
from access.services.audit import audit_record

TOKEN_PREFIX = "pam_"
DEFAULT_TOKEN_DAYS = 90


def api_token_max_lifetime() -> timedelta:
    return timedelta(days=settings.PAM_API_TOKEN_MAX_DAYS)


def api_token_default_lifetime() -> timedelta:
    return min(timedelta(days=DEFAULT_TOKEN_DAYS), api_token_max_lifetime())


def api_token_create(*, user, name: str = "", actor=None, lifetime: timedelta | None = None) -> tuple[ApiToken, str]:
    """Create a token for `user` valid for `lifetime` (default 90 days, at most PAM_API_TOKEN_MAX_DAYS); return it
    and the raw value, which is never retrievable again. ValidationError on `lifetime` beyond the maximum."""
    lifetime = api_token_default_lifetime() if lifetime is None else lifetime
    if lifetime <= timedelta(0):
        raise ValidationError({"lifetime": "A token must be valid for some time."})
    if lifetime > api_token_max_lifetime():
        raise ValidationError(
            {"lifetime": f"A token lives at most {settings.PAM_API_TOKEN_MAX_DAYS} days (PAM_API_TOKEN_MAX_DAYS)."}
        )
    raw = new_token(nbytes=32, prefix=TOKEN_PREFIX)
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user,
            name=name[:100],
            prefix=raw[:12],
            digest=token_digest(raw),
            expires_at=timezone.now() + lifetime,
        )
        audit_record(
            action=AuditAction.API_TOKEN_CREATE,
            actor=actor or user,
            target=token,
            data={
                "user": user.get_username(),
                "name": token.name,
                "prefix": token.prefix,
                "expires_at": token.expires_at,
            },
        )
    return token, raw


def api_token_mark_used(*, token: ApiToken) -> None:
    """Record that `token` authenticated a call now; its first use is audited (once, whoever races)."""
    now = timezone.now()
    with transaction.atomic():
        first = ApiToken.objects.filter(pk=token.pk, last_used_at__isnull=True).update(last_used_at=now)
        if first:
            audit_record(
                action=AuditAction.API_TOKEN_FIRST_USE,
                actor=token.user,
                target=token,
                data={"user": token.user.get_username(), "prefix": token.prefix},
            )
        else:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    token.last_used_at = now


def api_token_revoke(*, token: ApiToken, actor) -> bool:
    """Revoke a token now (it stops working at its next call); False if it was already revoked."""
    with transaction.atomic():
        locked = ApiToken.objects.select_for_update().get(pk=token.pk)
        if locked.revoked_at is not None:
            return False
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        audit_record(
            action=AuditAction.API_TOKEN_REVOKE,
            actor=actor,
            target=locked,
            data={"user": locked.user.get_username(), "prefix": locked.prefix},
        )
    token.revoked_at = locked.revoked_at
    return True
