"""API tokens: created with a random secret shown once; only its digest is stored."""

from __future__ import annotations

from django.db import transaction

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
