"""Root rotation: give a resource's admin account a new password without ever losing the working one.

Order of events: the candidate password is stored encrypted in `pending_admin_password` (committed) before
the server is asked to change it, so a crash at any point leaves both passwords known. The server's change
is then verified by logging in with the candidate; only a verified candidate replaces `admin_password`.
When the change or the check fails, `root_rotation_error` says so in the admin, and the candidate stays
pending whenever the server may have taken it.
"""

from __future__ import annotations

from django.db import transaction

from access.models import AuditAction, Resource
from access.services.audit import audit_record
from access.services.leases import password_generate
from connectors import ConnectorError, connector_for

# Errors after which the server certainly kept the old password.
_DEFINITELY_UNCHANGED = {"auth", "permission", "not_found", "config", "dns", "tls"}


class RootRotationError(Exception):
    """Root rotation did not complete; the message (no secret in it) is also stored in root_rotation_error."""


def _save(resource: Resource, **fields) -> None:
    for name, value in fields.items():
        setattr(resource, name, value)
    resource.save(update_fields=[*fields, "updated_at"])


def resource_rotate_root(*, resource: Resource, actor=None, connector_factory=connector_for) -> Resource:
    """Change the admin account's password on the server, verify it, then store it; raise RootRotationError if not."""
    if resource.is_atlas or not resource.admin_username:
        raise RootRotationError(f"{resource.name} has no MongoDB admin account to rotate.")
    candidate = password_generate(32)
    with transaction.atomic():
        _save(resource, pending_admin_password=candidate)
        audit_record(action=AuditAction.RESOURCE_ROTATE_ROOT_STARTED, actor=actor, target=resource)
    db, user = resource.auth_database or "admin", resource.admin_username
    try:
        with connector_factory(resource) as connector:
            connector.change_password(db=db, username=user, password=candidate)
            verified = connector.can_login(db=db, username=user, password=candidate)
    except ConnectorError as exc:
        unchanged = exc.kind in _DEFINITELY_UNCHANGED
        message = f"Root rotation failed ({exc.kind_title} error: {exc}). " + (
            "The server kept the old password, which is still in use."
            if unchanged
            else "The server may or may not have taken the new password: both are kept (the new one as the "
            "pending admin password) until a rotation succeeds."
        )
        _rotation_failed(resource=resource, actor=actor, message=message, keep_pending=not unchanged)
        raise RootRotationError(message) from None
    if not verified:
        message = (
            "Root rotation: the server accepted the new password but a login with it failed. The old password "
            "is kept as the admin password and the new one as the pending admin password; check the account, "
            "then rotate again."
        )
        _rotation_failed(resource=resource, actor=actor, message=message, keep_pending=True)
        raise RootRotationError(message)
    with transaction.atomic():
        _save(resource, admin_password=candidate, pending_admin_password="", root_rotation_error="")
        audit_record(action=AuditAction.RESOURCE_ROTATE_ROOT, actor=actor, target=resource, data={"username": user})
    return resource


def _rotation_failed(*, resource: Resource, actor, message: str, keep_pending: bool) -> None:
    with transaction.atomic():
        fields = {"root_rotation_error": message}
        if not keep_pending:
            fields["pending_admin_password"] = ""
        _save(resource, **fields)
        audit_record(
            action=AuditAction.RESOURCE_ROTATE_ROOT_FAILED,
            actor=actor,
            target=resource,
            data={"error": message, "pending_kept": keep_pending},
        )
