"""Dynamic roles and per-resource Vault-style configuration (connection, lease defaults), each change audited."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import ProtectedError

from access.models import AuditAction, DynamicRole, Resource
from access.services.audit import audit_record
from access.services.resources import resource_create, resource_update
from access.validators import parse_roles, split_mongodb_uri

ROLE_FIELDS = (
    "db",
    "roles",
    "scopes",
    "default_ttl",
    "max_ttl",
    "username_template",
    "password_length",
    "description",
    "require_mfa",
)
_TRUE = {"true", "1", "yes"}
_HANDLED_OPTIONS = {"authsource", "tls", "ssl", "tlsinsecure", "tlsallowinvalidcertificates"}


class RoleInUseError(Exception):
    """A role that leases still reference cannot be deleted (their history must stay)."""


def dynamic_role_save(*, actor, resource: Resource, name: str, **fields: Any) -> tuple[DynamicRole, bool]:
    """Create or update the role `name` on `resource` (Vault's write to roles/NAME); return it and whether it is new.

    The API and the admin both write roles here. `roles` may be a list or a JSON string of one. Validation is the
    model's own (roles shape, TTL within max, an Atlas role's users in admin). A role is named by its resource and
    name (the API's path): neither changes after creation.
    """
    unknown = set(fields) - set(ROLE_FIELDS)
    if unknown:
        raise ValidationError({sorted(unknown)[0]: "Unknown field."})
    for key in ("roles", "scopes"):  # scopes: Atlas only
        if key in fields:
            fields[key] = parse_roles(fields[key])
    with transaction.atomic():
        role = DynamicRole.objects.select_for_update().filter(resource=resource, name=name).first()
        created = role is None
        if created:
            role = DynamicRole(resource=resource, name=name)
        for key, value in fields.items():
            setattr(role, key, value)
        role.full_clean()
        role.save()
        audit_record(
            action=AuditAction.DYNAMICROLE_CREATE if created else AuditAction.DYNAMICROLE_UPDATE,
            actor=actor,
            target=role,
            data={"changed": {k: _plain(v) for k, v in fields.items()}},
        )
    return role, created


def _plain(value):
    return value.total_seconds() if hasattr(value, "total_seconds") else value


def dynamic_role_delete(*, actor, role: DynamicRole) -> None:
    """Delete a role; refused (RoleInUseError) while leases reference it."""
    try:
        with transaction.atomic():
            audit_record(action=AuditAction.DYNAMICROLE_DELETE, actor=actor, target=role)
            role.delete()
    except ProtectedError:
        raise RoleInUseError(
            f"Role {role.name} has leases on record; revoke them and keep the role, or disable its policies."
        ) from None


def connection_settings_from_uri(uri: str, *, username: str = "", password: str = "") -> dict[str, Any]:
    """Split a Vault-style connection URL into resource fields: credentials and database never stay in the URI.

    `mongodb://admin:pw@h1:27017/admin?tls=true` gives admin_username "admin", admin_password "pw",
    auth_database "admin", tls True and uri `mongodb://h1:27017`. `{{username}}:{{password}}` (Vault's
    template) takes `username` and `password` instead. authSource, tls/ssl and tlsInsecure /
    tlsAllowInvalidCertificates become the resource's auth database, TLS and verification settings.
    """
    try:
        scheme, userinfo, hosts, database, options = split_mongodb_uri(uri)
    except ValidationError as exc:
        raise ValidationError({"uri": exc.messages}) from None
    fields: dict[str, Any] = {}
    if userinfo and userinfo != "{{username}}:{{password}}":
        user, _, secret = userinfo.partition(":")
        fields["admin_username"], fields["admin_password"] = unquote(user), unquote(secret)
    if username:
        fields["admin_username"] = username
    if password:
        fields["admin_password"] = password
    kept, auth_source, tls, verify = [], None, None, None
    for key, value in parse_qsl(options, keep_blank_values=True):
        lowered = key.lower()
        if lowered == "authsource":
            auth_source = value
        elif lowered in ("tls", "ssl"):
            tls = value.lower() in _TRUE
        elif lowered in ("tlsinsecure", "tlsallowinvalidcertificates"):
            verify = value.lower() not in _TRUE
        else:
            kept.append(f"{key}={value}")
    fields["auth_database"] = auth_source or database or "admin"
    fields["tls"] = tls if tls is not None else scheme == "mongodb+srv"
    if verify is not None:
        fields["tls_verify"] = verify
    fields["uri"] = f"{scheme}://{hosts}" + (f"/?{'&'.join(kept)}" if kept else "")
    return fields


def resource_connection_configure(
    *, actor, name: str, uri: str, verify: bool = True, username: str = "", password: str = "", **extra: Any
) -> tuple[Resource, bool]:
    """Vault's config/connection: create or update the MongoDB resource `name` from a connection URL.

    With `verify`, the new settings are tried (log in, may manage users) before anything is stored; a
    failure is a ValidationError on `uri` naming what failed, in words and without secrets.
    """
    fields = connection_settings_from_uri(uri, username=username, password=password)
    fields.update(extra)
    resource = Resource.objects.filter(name=name).first()
    # One verification for every door (access.services.connections): the admin form and the REST API use it too.
    if resource is None:
        return resource_create(actor=actor, name=name, kind="mongodb", verify=verify, **fields), True
    return resource_update(actor=actor, resource=resource, verify=verify, **fields), False
