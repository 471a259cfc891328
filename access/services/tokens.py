"""API tokens: created with a random secret shown once; only its digest is stored."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from access.generators import new_token
from access.models import ApiToken, AuditAction
from access.models.tokens import token_digest
from access.services.audit import audit_record

TOKEN_PREFIX = "pam_"


def api_token_create(*, user, name: str = "", actor=None) -> tuple[ApiToken, str]:
    """Create a token for `user`; return it and the raw value, which is never retrievable again."""
    raw = new_token(nbytes=32, prefix=TOKEN_PREFIX)
    with transaction.atomic():
        token = ApiToken.objects.create(user=user, name=name, prefix=raw[:12], digest=token_digest(raw))
        audit_record(
            action=AuditAction.API_TOKEN_CREATE, actor=actor or user, target=token, data={"user": user.get_username()}
        )
    return token, raw


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
