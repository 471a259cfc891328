"""Connector actions: one-off changes to a database user (rotate, grant, revoke, create, drop, lock, unlock),
each recorded with its before-image and result, audited, and rolled back where the before-image allows it.

Every action runs in three steps so that no database transaction waits on a MongoDB server: record the action
as `running` (with its audit row), call the connector outside any transaction, then record the outcome (state,
result, error, and the audit row) in one transaction. A connector failure is not raised: the action ends
`failed` with the connector's message in words. Input that cannot be run at all raises ValidationError before
anything is recorded.

Passwords this module generates never reach a record, an audit row or a message:
- rotate password stores the new password in the matching Account (the username is an Account of the resource
  and the user lives in the resource's auth database); otherwise the new password is stored nowhere, and the
  result says so. The old password is never stored, so a rotation cannot be rolled back.
- create read-only user makes the user in the resource's auth database with `read` on the database asked for,
  and stores its generated password as a new Account (encrypted, never shown): people use it through gateway
  sessions, where the gateway injects it. Rolling back drops the user and deletes that Account.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from access.crypto import Secret
from access.models import Account, AuditAction, ConnectorAction, Resource
from access.models.actions import ROLLBACK_KINDS, ActionKind, ActionState
from access.services.audit import audit_record
from access.services.connections import resource_mark_verified
from access.services.leases import password_generate
from access.validators import parse_roles, validate_mongodb_roles
from connectors import ConnectorError, connector_for

log = logging.getLogger(__name__)

PASSWORD_LENGTH = 32
ERROR_MAX_LENGTH = 1000

_ALLOWED_PARAMS: dict[str, set[str]] = {
    ActionKind.ROTATE_PASSWORD: set(),
    ActionKind.GRANT_ROLE: {"roles", "role", "role_db"},
    ActionKind.REVOKE_ROLE: {"roles", "role", "role_db"},
    ActionKind.CREATE_READ_ONLY_USER: {"account_name", "description"},
    ActionKind.DROP_USER: set(),
    ActionKind.LOCK_USER: set(),
    ActionKind.UNLOCK_USER: {"restrictions"},
}
_GUARDED_KINDS = {ActionKind.ROTATE_PASSWORD, ActionKind.DROP_USER, ActionKind.LOCK_USER}


def _actor_name(actor) -> str:
    if getattr(actor, "is_authenticated", False):
        return actor.get_username()
    return actor if isinstance(actor, str) else "system"


def _actor_user(actor):
    return actor if getattr(actor, "is_authenticated", False) else None


def _error_text(exc: Exception) -> str:
    text = f"{exc.kind_title} error: {exc}" if isinstance(exc, ConnectorError) else type(exc).__name__
    return text[:ERROR_MAX_LENGTH]


def _role_key(role, default_db: str) -> tuple[str, str]:
    if isinstance(role, str):
        return role, default_db
    return role["role"], role["db"]


def _role_doc(role, default_db: str) -> dict[str, str]:
    name, db = _role_key(role, default_db)
    return {"role": name, "db": db}


def _roles_param(params: dict, db: str) -> list[dict[str, str]]:
    """The roles a grant or revoke names: `roles` (a list or JSON), or one `role` with an optional `role_db`."""
    if params.get("roles") not in (None, "", []):
        roles = parse_roles(params["roles"])
    elif params.get("role"):
        role = params["role"]
        roles = [role if isinstance(role, dict) else {"role": str(role), "db": params.get("role_db") or db}]
    else:
        raise ValidationError({"params": 'Name the role: {"role": "readWrite"} or {"roles": ["read", ...]}.'})
    try:
        validate_mongodb_roles(roles)
    except ValidationError as exc:
        raise ValidationError({"params": exc.messages}) from None
    if not roles:
        raise ValidationError({"params": "Name at least one role."})
    return [_role_doc(role, db) for role in roles]


def _account_for(resource: Resource, db: str, username: str) -> Account | None:
    """The stored Account for username@db on the resource (accounts live in the resource's auth database)."""
    if db != (resource.auth_database or "admin"):
        return None
    return Account.objects.filter(resource=resource, username=username).first()


def _clean(*, resource: Resource, kind: str, db: str, username: str, params: dict | None) -> tuple[str, dict]:
    """Check the request before anything is recorded; return (the user's database, the params to record)."""
    if kind not in ActionKind.values:
        raise ValidationError({"kind": f"Unknown action {kind!r}; choose one of {', '.join(ActionKind.values)}."})
    params = dict(params or {})
    unknown = set(params) - _ALLOWED_PARAMS[kind]
    if unknown:
        raise ValidationError({"params": f"Not a parameter of {kind}: {', '.join(sorted(unknown))}."})
    if not username or not isinstance(username, str):
        raise ValidationError({"username": "Name the database user."})
    if not db or not isinstance(db, str):
        raise ValidationError({"db": "Name the database."})
    auth_db = resource.auth_database or "admin"
    if kind in _GUARDED_KINDS and username == resource.admin_username and db == auth_db:
        raise ValidationError(
            {"username": "This is the resource's admin account: rotate it with root rotation, never lock or drop it."}
        )
    if kind in (ActionKind.GRANT_ROLE, ActionKind.REVOKE_ROLE):
        params = {"roles": _roles_param(params, db)}
    elif kind == ActionKind.CREATE_READ_ONLY_USER:
        account_name = params.get("account_name") or slugify(username)[:64]
        if not account_name:
            raise ValidationError({"params": "Give an account_name: the username makes no usable slug."})
        if Account.objects.filter(resource=resource, username=username).exists():
            raise ValidationError({"username": f"An account for {username!r} already exists on {resource.name}."})
        if Account.objects.filter(resource=resource, name=account_name).exists():
            raise ValidationError({"params": f"An account named {account_name!r} already exists on {resource.name}."})
        params = {"database": db, "account_name": account_name, "description": params.get("description", "")}
        db = auth_db  # the user lives where accounts log in; it may read `database`
    elif kind == ActionKind.UNLOCK_USER and not isinstance(params.get("restrictions", []), list):
        raise ValidationError({"params": "restrictions must be a list of authenticationRestrictions documents."})
    return db, params


# -- the three steps ---------------------------------------------------------------------------------------
def _record_start(*, resource, kind, db, username, params, actor) -> ConnectorAction:
    with transaction.atomic():
        action = ConnectorAction.objects.create(
            resource=resource,
            account=_account_for(resource, db, username),
            kind=kind,
            db=db,
            username=username,
            params=params,
            state=ActionState.RUNNING,
            actor=_actor_user(actor),
            actor_name=_actor_name(actor),
        )
        audit_record(
            action=AuditAction.CONNECTOR_ACTION_RUN,
            actor=actor,
            target=action,
            data={"kind": kind, "resource": resource.name, "db": db, "username": username, "params": params},
        )
    return action


def _record_outcome(
    *, action: ConnectorAction, actor, before_image: dict, result: dict, error: str, after=None
) -> ConnectorAction:
    """Store the outcome and its audit row together; `after(action)` makes further changes in the same transaction."""
    with transaction.atomic():
        action.before_image = before_image
        action.result = result
        action.error = error
        action.state = ActionState.FAILED if error else ActionState.SUCCEEDED
        action.finished_at = timezone.now()
        if after is not None:
            after(action)
        action.save(update_fields=["before_image", "result", "error", "state", "finished_at", "account"])
        audit_record(
            action=AuditAction.for_connector_action_state(action.state),
            actor=actor,
            target=action,
            data={
                "kind": action.kind,
                "resource": action.resource.name,
                "db": action.db,
                "username": action.username,
                "result": result,
                "error": error,
            },
        )
    return action


def action_run(
    *, resource: Resource, kind: str, db: str, username: str, params: dict | None = None, actor=None
) -> ConnectorAction:
    """Run one connector action on `resource` and return its record (state succeeded or failed).

    `kind` is an ActionKind; `db` is the user's database (for create_read_only_user: the database the new
    user may read). `params`: grant/revoke take `roles` (list or JSON) or `role` (+ `role_db`); create takes
    `account_name` and `description`; unlock takes `restrictions` (else those saved by the last lock).
    Raises ValidationError for a request that cannot be run; connector failures end in state failed.
    """
    db, params = _clean(resource=resource, kind=kind, db=db, username=username, params=params)
    action = _record_start(resource=resource, kind=kind, db=db, username=username, params=params, actor=actor)
    runner = _RUNNERS[kind]
    before_image: dict[str, Any] = {}
    result: dict[str, Any] = {}
    secret_holder: dict[str, str] = {}
    try:
        with connector_for(resource) as connector:
            runner(connector, action, before_image, result, secret_holder)
        error = ""
    except ConnectorError as exc:
        error = _error_text(exc)
    except Exception as exc:  # a bug or an unreadable secret: record it, never leave the action running
        _record_outcome(action=action, actor=actor, before_image=before_image, result=result, error=_error_text(exc))
        raise
    after = _AFTER.get(kind)
    # A password the server already took is stored even if a later step failed: otherwise it would be lost.
    store = (lambda a: after(a, secret_holder, actor)) if after and "password" in secret_holder else None
    action = _record_outcome(
        action=action, actor=actor, before_image=before_image, result=result, error=error, after=store
    )
    if action.state == ActionState.SUCCEEDED and kind in _REVOKING_KINDS:
        _end_account_sessions(action, actor)
    return action


# A dropped or locked user can no longer be reached: gateway sessions on its account end with it.
_REVOKING_KINDS = frozenset({ActionKind.DROP_USER, ActionKind.LOCK_USER})


def _end_account_sessions(action: ConnectorAction, actor) -> None:
    from access.services.sessions import session_end_for_account

    account = _account_for(action.resource, action.db, action.username)
    if account is not None:
        session_end_for_account(account=account, actor=actor)


# -- what each kind does on the server ------------------------------------------------------------------
def _definition_or_fail(connector, action: ConnectorAction) -> dict:
    user = connector.get_user(db=action.db, username=action.username)
    if user is None:
        raise ConnectorError(
            f"User {action.username!r} does not exist in {action.db!r} on {action.resource.name}", kind="not_found"
        )
    return user


def _run_rotate(connector, action, before_image, result, secret_holder) -> None:
    _definition_or_fail(connector, action)
    password = password_generate(PASSWORD_LENGTH)
    connector.change_password(db=action.db, username=action.username, password=password)
    secret_holder["password"] = password
    result["connections_ended"] = connector.kill_user_connections(db=action.db, username=action.username)


def _run_grant(connector, action, before_image, result, secret_holder) -> None:
    user = _definition_or_fail(connector, action)
    before_image["roles"] = user.get("roles", [])
    connector.grant_roles(db=action.db, username=action.username, roles=action.params["roles"])
    result["roles"] = (connector.get_user(db=action.db, username=action.username) or {}).get("roles", [])


def _run_revoke(connector, action, before_image, result, secret_holder) -> None:
    user = _definition_or_fail(connector, action)
    before_image["roles"] = user.get("roles", [])
    connector.revoke_roles(db=action.db, username=action.username, roles=action.params["roles"])
    result["roles"] = (connector.get_user(db=action.db, username=action.username) or {}).get("roles", [])


def _run_create_read_only(connector, action, before_image, result, secret_holder) -> None:
    password = password_generate(PASSWORD_LENGTH)
    roles = [{"role": "read", "db": action.params["database"]}]
    connector.create_user(db=action.db, username=action.username, password=password, roles=roles)
    secret_holder["password"] = password
    result.update({"roles": roles, "user_db": action.db})


def _run_drop(connector, action, before_image, result, secret_holder) -> None:
    user = connector.get_user(db=action.db, username=action.username)
    if user is not None:
        before_image["user"] = user  # the definition without credentials (get_user never returns them)
    result["dropped"] = connector.drop_user(db=action.db, username=action.username)
    result["connections_ended"] = connector.kill_user_connections(db=action.db, username=action.username)


def _run_lock(connector, action, before_image, result, secret_holder) -> None:
    before_image["authenticationRestrictions"] = connector.lock_user(db=action.db, username=action.username)
    result["locked"] = True
    result["connections_ended"] = connector.kill_user_connections(db=action.db, username=action.username)


def _restrictions_before_last_lock(action: ConnectorAction) -> list:
    """The restrictions the last successful, not rolled back, lock of this user replaced (none if never locked)."""
    last_lock = (
        ConnectorAction.objects.filter(
            resource=action.resource,
            db=action.db,
            username=action.username,
            kind=ActionKind.LOCK_USER,
            state=ActionState.SUCCEEDED,
        )
        .exclude(pk=action.pk)
        .order_by("-created_at", "-pk")
        .first()
    )
    if last_lock is None:
        return []
    return list(last_lock.before_image.get("authenticationRestrictions") or [])


def _run_unlock(connector, action, before_image, result, secret_holder) -> None:
    user = _definition_or_fail(connector, action)
    before_image["authenticationRestrictions"] = user.get("authenticationRestrictions") or []
    if "restrictions" in action.params:
        restrictions = action.params["restrictions"]
    else:
        restrictions = _restrictions_before_last_lock(action)
    connector.unlock_user(db=action.db, username=action.username, restrictions=restrictions)
    result["authenticationRestrictions"] = restrictions


_RUNNERS = {
    ActionKind.ROTATE_PASSWORD: _run_rotate,
    ActionKind.GRANT_ROLE: _run_grant,
    ActionKind.REVOKE_ROLE: _run_revoke,
    ActionKind.CREATE_READ_ONLY_USER: _run_create_read_only,
    ActionKind.DROP_USER: _run_drop,
    ActionKind.LOCK_USER: _run_lock,
    ActionKind.UNLOCK_USER: _run_unlock,
}


# -- what is stored in the portal afterwards (same transaction as the outcome) --------------------------------
def _store_rotated_password(action: ConnectorAction, secret_holder: dict, actor) -> None:
    account = _account_for(action.resource, action.db, action.username)
    if account is None:
        action.result["password_stored"] = False
        return
    account.password = Secret.of(secret_holder["password"])
    account.last_rotated_at = timezone.now()
    account.save(update_fields=["password", "last_rotated_at", "updated_at"])
    action.account = account
    action.result["password_stored"] = True
    audit_record(
        action=AuditAction.ACCOUNT_ROTATE_PASSWORD,
        actor=actor,
        target=account,
        data={"connector_action": action.pk, "write_only_changed": ["password"]},
    )


def _store_created_account(action: ConnectorAction, secret_holder: dict, actor) -> None:
    account = Account(
        resource=action.resource,
        name=action.params["account_name"],
        description=action.params.get("description") or f"Read-only on {action.params['database']}",
        username=action.username,
    )
    account.password = Secret.of(secret_holder["password"])
    account.last_rotated_at = timezone.now()
    account.save()
    action.account = account
    action.result["account_id"] = account.pk
    audit_record(
        action=AuditAction.ACCOUNT_CREATE,
        actor=actor,
        target=account,
        data={"connector_action": action.pk, "write_only_changed": ["password"]},
    )


_AFTER = {
    ActionKind.ROTATE_PASSWORD: _store_rotated_password,
    ActionKind.CREATE_READ_ONLY_USER: _store_created_account,
}


# -- rollback ------------------------------------------------------------------------------------------
def _rollback_on_server(connector, action: ConnectorAction) -> dict:
    db, username = action.db, action.username
    if action.kind == ActionKind.GRANT_ROLE:
        had = {_role_key(r, db) for r in action.before_image.get("roles", [])}
        added = [r for r in action.params["roles"] if _role_key(r, db) not in had]
        if added:
            connector.revoke_roles(db=db, username=username, roles=added)
        return {"revoked": added}
    if action.kind == ActionKind.REVOKE_ROLE:
        had = {_role_key(r, db) for r in action.before_image.get("roles", [])}
        removed = [r for r in action.params["roles"] if _role_key(r, db) in had]
        if removed:
            connector.grant_roles(db=db, username=username, roles=removed)
        return {"granted": removed}
    if action.kind == ActionKind.CREATE_READ_ONLY_USER:
        dropped = connector.drop_user(db=db, username=username)
        ended = connector.kill_user_connections(db=db, username=username)
        return {"dropped": dropped, "connections_ended": ended}
    if action.kind == ActionKind.LOCK_USER:
        restrictions = action.before_image.get("authenticationRestrictions") or []
        connector.unlock_user(db=db, username=username, restrictions=restrictions)
        return {"authenticationRestrictions": restrictions}
    raise ValidationError(f"{action.get_kind_display()} cannot be rolled back.")


def action_rollback(*, action: ConnectorAction, actor=None) -> ConnectorAction:
    """Undo a succeeded (or failed-to-roll-back) action from its before-image; return the record.

    Grant: revoke the roles it added. Revoke: grant back the roles the user had. Create read-only user: drop it
    and delete its Account. Lock: restore the previous authenticationRestrictions. Rotate, drop and unlock
    cannot be rolled back (ValidationError). A connector failure leaves the action `rollback_failed`.
    """
    action = ConnectorAction.objects.select_related("resource").get(pk=action.pk)
    if action.kind not in ROLLBACK_KINDS:
        raise ValidationError(f"{action.get_kind_display()} cannot be rolled back.")
    if action.state not in (ActionState.SUCCEEDED, ActionState.ROLLBACK_FAILED):
        raise ValidationError(f"Only a succeeded action can be rolled back; this one is {action.get_state_display()}.")
    with transaction.atomic():
        audit_record(
            action=AuditAction.CONNECTOR_ACTION_ROLLBACK,
            actor=actor,
            target=action,
            data={"kind": action.kind, "resource": action.resource.name, "db": action.db, "username": action.username},
        )
    error = ""
    rollback: dict[str, Any] = {}
    try:
        with connector_for(action.resource) as connector:
            rollback = _rollback_on_server(connector, action)
    except ConnectorError as exc:
        error = _error_text(exc)
    except Exception as exc:  # a bug or an unreadable secret: the rollback did not happen
        error = _error_text(exc)
        log.exception("rollback of connector action %s failed unexpectedly", action.pk)
    with transaction.atomic():
        action.result = {**action.result, "rollback": {**rollback, "error": error} if error else rollback}
        action.error = error
        action.state = ActionState.ROLLBACK_FAILED if error else ActionState.ROLLED_BACK
        if not error:
            action.rolled_back_at = timezone.now()
            action.rolled_back_by = _actor_name(actor)
            if action.kind == ActionKind.CREATE_READ_ONLY_USER and action.account_id:
                account = Account.objects.filter(pk=action.account_id).first()
                if account is not None:
                    audit_record(
                        action=AuditAction.ACCOUNT_DELETE,
                        actor=actor,
                        target=account,
                        data={"connector_action": action.pk},
                    )
                    account.delete()
                    action.account = None
        action.save(update_fields=["result", "error", "state", "rolled_back_at", "rolled_back_by", "account"])
        audit_record(
            action=AuditAction.for_connector_action_state(action.state),
            actor=actor,
            target=action,
            data={"kind": action.kind, "rollback": rollback, "error": error},
        )
    return action


# -- checking a resource ---------------------------------------------------------------------------------
def resource_verify_connection(*, resource: Resource, actor=None) -> dict:
    """Log in to the resource with its admin account and check it may manage users; audit the outcome.

    Returns the connector's summary (server, version, topology, admin user and roles); raises ConnectorError
    with the problem in words (DNS, TLS, unreachable, timeout, auth, permission). A success records the settings
    as verified (access.services.connections): stored credentials may then be used against them.
    """
    error: ConnectorError | None = None
    summary: dict = {}
    try:
        with connector_for(resource) as connector:
            summary = connector.verify_connection()
    except ConnectorError as exc:
        error = exc
    with transaction.atomic():
        if error is None and resource.pk is not None:
            resource_mark_verified(resource=resource)
            Resource.objects.filter(pk=resource.pk).update(
                verified_fingerprint=resource.verified_fingerprint, verified_at=resource.verified_at
            )
        audit_record(
            action=AuditAction.RESOURCE_VERIFY_CONNECTION,
            actor=actor,
            target=resource,
            data={"ok": error is None, "error": _error_text(error) if error else "", "summary": summary},
        )
    if error is not None:
        raise error
    return summary
