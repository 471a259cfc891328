"""Reads about leases and dynamic roles: what a user may see, and how a lease's holder connects."""

from __future__ import annotations

from urllib.parse import quote

from django.db.models import QuerySet

from access.models import DynamicRole, Lease
from access.validators import split_mongodb_uri

# Who may see or change a lease or a role is `Lease.objects.visible_to(user, action)` and
# `DynamicRole.objects.visible_to(user)` (access/models/visibility.py): the only spelling of that rule.


def leases_visible(*, user, action: str = "view") -> QuerySet:
    """Leases `user` may see (or, with action="change", renew and revoke), with their role and resource."""
    return Lease.objects.visible_to(user, action).select_related("role__resource", "resource")


def roles_visible(*, user) -> QuerySet:
    """Roles `user` may see (the API's role list and reads): granted ones, or all for staff with the permission."""
    return DynamicRole.objects.visible_to(user).select_related("resource")


def lease_may_change(*, user, lease: Lease) -> bool:
    """Whether `user` may renew or revoke `lease`: its holder, or active staff holding `access.change_lease`."""
    return Lease.objects.row_visible_to(user, lease, "change")


def leases_held_by(user) -> QuerySet:
    """The user's own leases, newest first: the portal shows nobody else's, not even to staff (they use the admin)."""
    return Lease.objects.visible_to(user).filter(holder=user).select_related("role", "resource").order_by("-issued_at")


def roles_granted_to(user) -> QuerySet:
    """Roles a policy names for `user`: the ones the portal lets them use (staff included: no policy, no use)."""
    return DynamicRole.objects.granted_to(user).select_related("resource")


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
