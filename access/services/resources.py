"""Creating, changing and deleting resources, accounts and gateways, each with its audit event.

The API and the admin both write through these functions, so the validation (the model's own), the audit row
(`access.services.changes`) and the side effects are the same from every door. A gateway session reaches one
database user on one deployment: when an account comes to name another user or resource, or a resource another
deployment, the open sessions granted for the old one end (reason account_revoked) and their holders open new
ones; deleting an account, a resource or a gateway ends its open sessions first.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from access.models import Account, AuditAction, Gateway, Resource, Session
from access.models.sessions import SessionEndReason
from access.services.audit import audit_record
from access.services.changes import changes_apply, changes_audit_data, changes_save
from access.services.connections import resource_changes_verify, resource_mark_verified
from access.services.sessions import session_end_for_account, session_end_many

ACCOUNT_IDENTITY_FIELDS = frozenset({"resource", "username"})
# What the admin and the API edit on an account, in the order they show it, and what they only show.
ACCOUNT_FIELDS = ("resource", "name", "description", "username", "password", "require_mfa", "rotation_period")
ACCOUNT_RECORDED_FIELDS = ("last_rotated_at", "created_at", "updated_at")
RESOURCE_TARGET_FIELDS = frozenset({"kind", "uri", "auth_database"})


def gateway_create(*, actor, **fields) -> Gateway:
    with transaction.atomic():
        gateway = Gateway()
        changes_save(gateway, fields, action=AuditAction.GATEWAY_CREATE, actor=actor)
    return gateway


def gateway_update(*, actor, gateway: Gateway, **fields) -> Gateway:
    """Change a gateway's name, public address or description (its heartbeat is the gateway's own record)."""
    with transaction.atomic():
        changes_save(gateway, fields, action=AuditAction.GATEWAY_UPDATE, actor=actor)
    return gateway


def gateway_delete(*, actor, gateway: Gateway) -> None:
    """Delete a gateway; its open sessions end first (reason gateway_stopped), so its process drops them."""
    with transaction.atomic():
        session_end_many(
            sessions=Session.objects.filter(gateway=gateway), reason=SessionEndReason.GATEWAY_STOPPED, actor=actor
        )
        audit_record(action=AuditAction.GATEWAY_DELETE, actor=actor, target=gateway)
        gateway.delete()


def _refuse_verification_fields(fields) -> None:
    if {"verified_fingerprint", "verified_at"} & set(fields):
        raise ValidationError({"uri": "Whether the settings are verified is recorded by a verification, not set."})


def _apply_verification(resource: Resource, verified_fingerprint: str) -> bool:
    """Record the settings as verified when the verification was of exactly what is being saved."""
    if verified_fingerprint and verified_fingerprint == resource.connection_fingerprint():
        resource_mark_verified(resource=resource)
        return True
    return False


def _connection_audit(resource: Resource, verified: bool) -> dict:
    """Whether the stored credentials may be used against the saved settings, for the audit row."""
    if verified:
        return {"connection": "verified"}
    return {} if resource.connection_verified else {"connection": "unverified: stored credentials held back"}


def resource_create(*, actor, verify: bool = False, verified_fingerprint: str = "", **fields) -> Resource:
    """Register a MongoDB deployment or Atlas project; with `verify`, only once its settings log in.

    `verified_fingerprint`: the admin form or the API serializer verified these settings while validating
    (access.services.connections.resource_changes_verify); it is recorded when it is what is saved.
    """
    _refuse_verification_fields(fields)
    if verify:
        verified_fingerprint = resource_changes_verify(resource=None, fields=fields)
    with transaction.atomic():
        resource = Resource()
        changed = changes_apply(resource, fields)
        resource.full_clean()
        verified = _apply_verification(resource, verified_fingerprint)
        resource.save()
        audit_record(
            action=AuditAction.RESOURCE_CREATE,
            actor=actor,
            target=resource,
            data={**changes_audit_data(resource, changed), **_connection_audit(resource, verified)},
        )
    return resource


def resource_update(
    *, actor, resource: Resource, verify: bool = False, verified_fingerprint: str = "", **fields
) -> Resource:
    """Change a resource; pointing it at another deployment (kind, URI, auth database) ends its open sessions.

    New hosts or TLS settings are used with the stored credentials only once verified: with `verify` they are
    tried first (ValidationError on `uri` when they do not log in, nothing saved); without it (or a
    `verified_fingerprint` of what is saved, see resource_create) they are saved but held back until the
    resource's "Verify connection" succeeds (access.services.connections).
    """
    _refuse_verification_fields(fields)
    if verify:
        verified_fingerprint = resource_changes_verify(resource=resource, fields=fields)
    with transaction.atomic():
        changed = changes_apply(resource, fields)
        resource.full_clean()
        verified = _apply_verification(resource, verified_fingerprint)
        resource.save()
        audit_record(
            action=AuditAction.RESOURCE_UPDATE,
            actor=actor,
            target=resource,
            data={**changes_audit_data(resource, changed), **_connection_audit(resource, verified)},
        )
        if RESOURCE_TARGET_FIELDS.intersection(changed):
            session_end_many(
                sessions=Session.objects.filter(Q(account__resource=resource) | Q(lease__resource=resource)),
                reason=SessionEndReason.ACCOUNT_REVOKED,
                actor=actor,
            )
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
        changes_save(account, fields, action=AuditAction.ACCOUNT_CREATE, actor=actor)
    return account


def account_update(*, actor, account: Account, **fields) -> Account:
    """Change an account; naming another database user or resource ends its open sessions (granted for the old)."""
    with transaction.atomic():
        changed = changes_save(account, fields, action=AuditAction.ACCOUNT_UPDATE, actor=actor)
        if ACCOUNT_IDENTITY_FIELDS.intersection(changed):
            session_end_for_account(account=account, reason=SessionEndReason.ACCOUNT_REVOKED, actor=actor)
    return account


def account_delete(*, actor, account: Account) -> None:
    """Delete an account; its open gateway sessions end first (reason account_revoked)."""
    with transaction.atomic():
        session_end_for_account(account=account, reason=SessionEndReason.ACCOUNT_REVOKED, actor=actor)
        audit_record(action=AuditAction.ACCOUNT_DELETE, actor=actor, target=account)
        account.delete()
