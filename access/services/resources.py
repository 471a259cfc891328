"""Creating, changing and deleting resources, accounts and gateways, each with its audit event."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from access.crypto import Secret
from access.models import Account, AuditAction, Gateway, Resource
from access.models.sessions import SessionEndReason
from access.services.audit import audit_record
from access.services.sessions import session_end_for_account

_SECRET_FIELDS = {"admin_password", "atlas_private_key", "password"}


def _apply(instance, fields: dict[str, Any]) -> list[str]:
    """Set fields on an instance; return the names that changed (secrets named, never valued)."""
    changed = []
    for name, value in fields.items():
        if name in _SECRET_FIELDS:
            if value in (None, ""):
                continue  # blank secret: keep the stored one
            setattr(instance, name, Secret.of(value))
            changed.append(name)
        elif instance._state.adding or getattr(instance, name) != value:
            setattr(instance, name, value)
            changed.append(name)
    return changed


def _changes(instance, changed: list[str]) -> dict:
    """What changed, for the audit row: values of plain fields, only the names of secret ones."""
    return {
        "changed": {name: _plain(getattr(instance, name)) for name in changed if name not in _SECRET_FIELDS},
        "write_only_changed": sorted(name for name in changed if name in _SECRET_FIELDS),
    }


def _plain(value):
    return value.pk if hasattr(value, "pk") else value


def gateway_create(*, actor, **fields) -> Gateway:
    with transaction.atomic():
        gateway = Gateway(**fields)
        gateway.full_clean()
        gateway.save()
        audit_record(
            action=AuditAction.GATEWAY_CREATE, actor=actor, target=gateway, data=_changes(gateway, list(fields))
        )
    return gateway


def resource_create(*, actor, **fields) -> Resource:
    """Register a MongoDB deployment or Atlas project."""
    with transaction.atomic():
        resource = Resource()
        changed = _apply(resource, fields)
        resource.full_clean()
        resource.save()
        audit_record(action=AuditAction.RESOURCE_CREATE, actor=actor, target=resource, data=_changes(resource, changed))
    return resource


def resource_update(*, actor, resource: Resource, **fields) -> Resource:
    with transaction.atomic():
        changed = _apply(resource, fields)
        resource.full_clean()
        resource.save()
        audit_record(action=AuditAction.RESOURCE_UPDATE, actor=actor, target=resource, data=_changes(resource, changed))
    return resource


def resource_delete(*, actor, resource: Resource) -> None:
    with transaction.atomic():
        for account in resource.accounts.all():
            session_end_for_account(account=account, reason=SessionEndReason.ACCOUNT_REVOKED, actor=actor)
        audit_record(action=AuditAction.RESOURCE_DELETE, actor=actor, target=resource)
        resource.delete()


def account_create(*, actor, **fields) -> Account:
    """Store credentials for one database user; the password is encrypted and never shown again."""
    with transaction.atomic():
        account = Account()
        changed = _apply(account, fields)
        account.full_clean()
        account.save()
        audit_record(action=AuditAction.ACCOUNT_CREATE, actor=actor, target=account, data=_changes(account, changed))
    return account


def account_update(*, actor, account: Account, **fields) -> Account:
    with transaction.atomic():
        changed = _apply(account, fields)
        account.full_clean()
        account.save()
        audit_record(action=AuditAction.ACCOUNT_UPDATE, actor=actor, target=account, data=_changes(account, changed))
    return account


def account_delete(*, actor, account: Account) -> None:
    """Delete an account; its open gateway sessions end first (reason account_revoked)."""
    with transaction.atomic():
        session_end_for_account(account=account, reason=SessionEndReason.ACCOUNT_REVOKED, actor=actor)
        audit_record(action=AuditAction.ACCOUNT_DELETE, actor=actor, target=account)
        account.delete()
