"""Key rotation: re-encrypt every stored secret under the first configured key."""

from __future__ import annotations

from django.apps import apps
from django.db import transaction

from access.crypto import Secret, reencrypt
from access.fields import EncryptedTextField
from access.models import AuditAction
from access.services.audit import audit_record


def encrypted_fields() -> list[tuple[type, list[str]]]:
    """Every (model, [encrypted field names]) in the project."""
    found = []
    for model in apps.get_models():
        names = [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
        if names:
            found.append((model, names))
    return found


def secrets_reencrypt(*, actor=None, batch_size: int = 500) -> dict[str, int]:
    """Re-encrypt every non-empty secret under the first key; return counts per model field.

    Works on ciphertext only (MultiFernet.rotate): no plain secret is held in memory.
    """
    counts: dict[str, int] = {}
    for model, names in encrypted_fields():
        for name in names:
            rows = list(model.objects.exclude(**{name: ""}).values_list("pk", name))
            for start in range(0, len(rows), batch_size):
                with transaction.atomic():
                    for pk, secret in rows[start : start + batch_size]:
                        rotated = Secret(token=reencrypt(secret.token))
                        model.objects.filter(pk=pk).update(**{name: rotated})
            counts[f"{model._meta.label}.{name}"] = len(rows)
    audit_record(action=AuditAction.SECRETS_REENCRYPT, actor=actor, data={"counts": counts})
    return counts
