"""Where stored credentials may go: one verification of a resource's connection settings, for every door.

A resource's stored credentials (its admin account, its accounts, the leases made on it) are sent only to the
connection settings (URI hosts and options, TLS, its CA) the resource was created with or last verified with,
kept as `Resource.verified_fingerprint`. Changing a host or the TLS settings leaves the old fingerprint in
place, so the connectors (connectors/mongodb.py) and the gateway (`session_login_lookup`) refuse to use the
stored credentials against the new settings until a verification succeeds and records the new fingerprint.

The verification is `resource_settings_verify`: the admin's resource form ("verify the connection before
saving"), the REST API (`verify_connection` on /api/v1/resources), Vault's config/connection and the admin's
"Verify connection" action all call it, so they accept and refuse the same settings with the same words.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone

from access.models import Resource
from access.services.changes import changes_apply
from access.validators import validate_resource_uri
from connectors import ConnectorError, connector_for


def resource_probe(*, resource: Resource | None, fields: dict[str, Any]) -> Resource:
    """An unsaved copy of `resource` (or a new one) with `fields` applied, as the services would apply them."""
    probe = (
        Resource(**{f.attname: getattr(resource, f.attname) for f in Resource._meta.concrete_fields})
        if resource is not None
        else Resource()
    )
    if resource is not None:
        probe._state.adding = False
    changes_apply(probe, fields)
    return probe


def resource_settings_verify(*, resource: Resource) -> dict:
    """Log in with `resource`'s settings as they stand (saved or not) and check its admin account may manage users.

    Returns the connector's summary. Raises ValidationError on `uri` saying what failed (DNS, TLS, refused login,
    ...), in words and without any secret: the same error from the admin, the REST API and Vault's door.
    """
    try:
        with connector_for(resource) as connector:
            summary = connector.verify_connection() or {}
    except ConnectorError as exc:
        raise ValidationError({"uri": f"The connection could not be verified ({exc.kind_title}): {exc}"}) from None
    return summary


def resource_changes_verify(*, resource: Resource | None, fields: dict[str, Any]) -> str:
    """Verify `resource` (None: a new one) as it would be with `fields` applied; return the verified fingerprint.

    What the admin form and the API serializer call while validating (errors become the form's or the request's
    field errors); the service they then call records the fingerprint when it is the one saved. The probe is
    validated first: its own errors are left to the model's validation, which reports them.
    """
    probe = resource_probe(resource=resource, fields=fields)
    try:
        probe.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError:
        return ""
    resource_settings_verify(resource=probe)
    return probe.connection_fingerprint()


def resource_changes_need_verification(*, resource: Resource | None, fields: dict[str, Any]) -> bool:
    """Whether saving `fields` changes where or as whom stored credentials go, or the resource is unverified now."""
    if resource is None:
        return True
    probe = resource_probe(resource=resource, fields=fields)
    credentials_changed = any(
        name in fields and fields[name] not in (None, "") and getattr(resource, name, None) != fields[name]
        for name in ("admin_username", "admin_password", "auth_database")
    )
    return credentials_changed or not probe.connection_verified


def resource_mark_verified(*, resource: Resource) -> None:
    """Record `resource`'s current settings as verified (the caller saves it, in its audited transaction)."""
    resource.verified_fingerprint = resource.connection_fingerprint()
    resource.verified_at = timezone.now()


def resource_credentials_may_go(resource: Resource) -> bool:
    """Whether stored credentials may be sent over `resource`'s settings now: a URI the portal allows (the rule
    of access.validators, for rows saved before it) and settings as created or last verified."""
    try:
        validate_resource_uri(resource.uri)
    except ValidationError:
        return False
    return resource.connection_verified
