"""Reads about leases and dynamic roles: what a user may see, and how a lease's holder connects."""

from __future__ import annotations

from urllib.parse import quote

from django.db.models import Q, QuerySet

from access.models import AccessPolicy, DynamicRole, Lease
from access.validators import split_mongodb_uri


def lease_visible_to(user) -> QuerySet:
    """Leases `user` may see: their own, or every lease for superusers and holders of `access.view_lease`."""
    if not user or not user.is_authenticated or not user.is_active:
        return Lease.objects.none()
    if user.is_superuser or user.has_perm("access.view_lease"):
        return Lease.objects.all()
    return Lease.objects.for_user(user)


def lease_may_manage(user, lease: Lease) -> bool:
    """Whether `user` may renew or revoke `lease`: its holder, or staff with `access.change_lease`."""
    return bool(user.is_superuser or lease.holder_id == user.pk or user.has_perm("access.change_lease"))


def role_visible_to(user) -> QuerySet:
    """Dynamic roles `user` may see: those an enabled policy names for them, or all with `access.view_dynamicrole`."""
    if not user or not user.is_authenticated or not user.is_active:
        return DynamicRole.objects.none()
    if user.is_superuser or user.has_perm("access.view_dynamicrole"):
        return DynamicRole.objects.all()
    role_ids = AccessPolicy.objects.for_user(user).filter(role__isnull=False).values("role_id")
    return DynamicRole.objects.filter(Q(pk__in=role_ids))


def lease_connection_string(lease: Lease, password: str) -> str:
    """`mongodb://user:password@hosts/db?authSource=db&...` for the lease's holder (shown once, never stored).

    An Atlas project has a URI only when the security team entered a cluster's (e.g. `mongodb+srv://cluster0.
    abcde.mongodb.net`); without one there is no string to build and this returns "" (the page shows the
    username and password alone).
    """
    if not lease.resource.uri:
        return ""
    scheme, _userinfo, hosts, _database, options = split_mongodb_uri(lease.resource.uri)
    params = [p for p in options.split("&") if p and not p.lower().startswith(("authsource=", "tls=", "ssl="))]
    params.insert(0, f"authSource={quote(lease.db, safe='')}")
    if lease.resource.tls:
        params.append("tls=true")
    credentials = f"{quote(lease.username, safe='')}:{quote(password, safe='')}"
    return f"{scheme}://{credentials}@{hosts}/{quote(lease.db, safe='')}?{'&'.join(params)}"
