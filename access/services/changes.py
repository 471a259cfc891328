"""Applying field values to a configuration record and describing the change for its audit row.

The services that create and update gateways, resources, accounts and access policies take their fields as a
dict (from an API serializer or an admin form) and use these two helpers, so that every door records a change
the same way: a secret is stored wrapped in `Secret` and a blank secret keeps the stored one; the audit row
carries the new values of plain fields (a related record by its primary key) and only the names of secrets.
`changes_save` is the whole write of a plain create or update (apply, validate, save, audit) in one place, and
`changes_refuse_unknown` the one spelling of "this field is not set here" for the services that take a field list.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError

from access.crypto import Secret
from access.services.audit import audit_record

SECRET_FIELDS = frozenset({"admin_password", "atlas_private_key", "password", "hec_token", "hmac_key", "webhook_url"})


def changes_apply(instance, fields: dict[str, Any]) -> list[str]:
    """Set `fields` on `instance`; return the names that changed (every given name on a new instance)."""
    changed = []
    for name, value in fields.items():
        if name in SECRET_FIELDS:
            if value in (None, ""):
                continue  # blank secret: keep the stored one
            setattr(instance, name, Secret.of(value))
            changed.append(name)
        elif instance._state.adding or getattr(instance, name) != value:
            setattr(instance, name, value)
            changed.append(name)
    return changed


def changes_audit_data(instance, changed: list[str]) -> dict:
    """What changed, for the audit row: values of plain fields, only the names of secret ones."""
    return {
        "changed": {name: _plain(getattr(instance, name)) for name in changed if name not in SECRET_FIELDS},
        "write_only_changed": sorted(name for name in changed if name in SECRET_FIELDS),
    }


def changes_refuse_unknown(fields: dict[str, Any], *, allowed: Iterable[str], noun: str) -> None:
    """Refuse a field the service does not set (ValidationError on the first unknown name, in name order)."""
    unknown = set(fields).difference(allowed)
    if unknown:
        raise ValidationError({sorted(unknown)[0]: f"This field is not set on {noun}."})


def changes_save(instance, fields: dict[str, Any], *, action, actor, only_changed: bool = False) -> list[str]:
    """Apply `fields`, validate and save `instance`, and record its audit row (`action`) with what changed.

    Call inside the service's transaction; returns the names that changed, for the service's side effects.
    `only_changed` saves just those columns (an update that must not write back fields other doors keep).
    """
    changed = changes_apply(instance, fields)
    instance.full_clean()
    if only_changed:
        instance.save(update_fields=changed)
    else:
        instance.save()
    audit_record(action=action, actor=actor, target=instance, data=changes_audit_data(instance, changed))
    return changed


def _plain(value):
    return value.pk if hasattr(value, "pk") else value
