"""The reconciler: find database users (and request roles) this system created that no live lease explains, and drop
them.

A user is ours when its `customData.pam.system` (for Atlas: its labels, see connectors.atlas) names this
installation (see `leases.system_tag`). It is an orphan when no lease on the same resource with its `lease_id`
is still live (active, revoking or revoke_failed) — for instance a user re-created by hand, a revocation
recorded as done by an older version, or a lease row deleted. Lease rows are committed before their users are
created, so a user being issued is never taken for an orphan. Each drop is audited; a dry run only lists.

Roles made for scoped requests (access.services.scoped) are named with `role_prefix()`; one is an orphan when no
live lease on its resource names it as its `server_role` (on Atlas, also when no user holds it any more, since an
identical custom role is shared). Servers without roles (FerretDB) are skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Q

from access.models import AuditAction, Lease, Resource
from access.models.leases import LIVE_LEASE_STATES
from access.models.resources import ResourceKind
from access.services.audit import audit_record
from access.services.leases import system_tag
from connectors import ConnectorError, connector_for
from connectors.mongodb import COMMAND_NOT_FOUND, COMMAND_NOT_SUPPORTED, NOT_IMPLEMENTED, TAG_KEY

log = logging.getLogger(__name__)

_UNSUPPORTED_CODES = frozenset({COMMAND_NOT_FOUND, COMMAND_NOT_SUPPORTED, NOT_IMPLEMENTED})


@dataclass(frozen=True)
class OrphanUser:
    """A tagged database user that no live lease explains."""

    resource: str
    db: str
    username: str
    lease_id: str


@dataclass(frozen=True)
class OrphanRole:
    """A role made for a scoped request that no live lease explains."""

    resource: str
    db: str
    name: str


@dataclass
class ReconcileReport:
    """What a reconciler run found and did: orphans found, dropped, and errors per resource (in words)."""

    dry_run: bool
    found: list[OrphanUser] = field(default_factory=list)
    dropped: list[OrphanUser] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    roles_found: list[OrphanRole] = field(default_factory=list)
    roles_dropped: list[OrphanRole] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "found": [o.__dict__ for o in self.found],
            "dropped": [o.__dict__ for o in self.dropped],
            "errors": self.errors,
            "roles_found": [o.__dict__ for o in self.roles_found],
            "roles_dropped": [o.__dict__ for o in self.roles_dropped],
        }


def _tag_of(user: dict) -> dict | None:
    custom = user.get("customData") or {}
    tag = custom.get(TAG_KEY) if isinstance(custom, dict) else None
    if not isinstance(tag, dict) or tag.get("system") != system_tag():
        return None
    return tag


def orphan_users_find(*, resource: Resource, connector) -> list[OrphanUser]:
    """The tagged users on `resource` whose lease is missing or no longer live."""
    tagged = []
    for user in connector.list_users():
        tag = _tag_of(user)
        if tag is not None:
            tagged.append((user, str(tag.get("lease_id", ""))))
    if not tagged:
        return []
    live = set(
        Lease.objects.filter(
            resource=resource, state__in=LIVE_LEASE_STATES, lease_id__in=[lease_id for _, lease_id in tagged]
        ).values_list("lease_id", "username", "db")
    )
    # An Atlas user whose labels were removed keeps only a shortened lease id in its description (see
    # connectors.atlas): it is explained by a live lease with its username (unique per resource).
    by_description = [user.get("user", "") for user, _ in tagged if _tag_of(user).get("from_description")]
    live_usernames = set(
        Lease.objects.filter(resource=resource, state__in=LIVE_LEASE_STATES, username__in=by_description).values_list(
            "username", flat=True
        )
    )
    orphans = []
    for user, lease_id in tagged:
        username, db = user.get("user", ""), user.get("db", "")
        if _tag_of(user).get("from_description") and username in live_usernames:
            continue
        if (lease_id, username, db) not in live:
            orphans.append(OrphanUser(resource=resource.name, db=db, username=username, lease_id=lease_id))
    return orphans


def users_reconcile(*, resource: Resource | None = None, dry_run: bool = False, actor="reconciler") -> ReconcileReport:
    """Find (and unless `dry_run`, drop and audit) orphaned users on `resource`, or on every resource.

    Every resource means MongoDB deployments with a URI and Atlas projects (users tagged in their labels or
    description, see connectors.atlas).
    """
    report = ReconcileReport(dry_run=dry_run)
    resources = (
        [resource]
        if resource is not None
        else list(Resource.objects.filter(Q(kind=ResourceKind.ATLAS) | (Q(kind=ResourceKind.MONGODB) & ~Q(uri=""))))
    )
    for target in resources:
        try:
            with connector_for(target) as connector:
                orphans = orphan_users_find(resource=target, connector=connector)
                report.found += orphans
                for orphan in [] if dry_run else orphans:
                    _orphan_drop(orphan=orphan, resource=target, connector=connector, actor=actor)
                    report.dropped.append(orphan)
                roles = orphan_roles_find(resource=target, connector=connector)
                report.roles_found += roles
                if dry_run:
                    continue
                for orphan in roles:
                    _orphan_role_drop(orphan=orphan, resource=target, connector=connector, actor=actor)
                    report.roles_dropped.append(orphan)
        except ConnectorError as exc:
            report.errors[target.name] = f"{exc.kind_title} error: {exc}"
            log.warning("reconciling %s failed: %s", target.name, exc)
    return report


def _orphan_drop(*, orphan: OrphanUser, resource: Resource, connector, actor) -> None:
    """Drop one orphan, end its connections, and audit it (only once the server has done it)."""
    connector.drop_user(db=orphan.db, username=orphan.username)
    ended = connector.kill_user_connections(db=orphan.db, username=orphan.username)
    with transaction.atomic():
        audit_record(
            action=AuditAction.RECONCILE_DROP_USER,
            actor=actor,
            target=resource,
            data={
                "db": orphan.db,
                "username": orphan.username,
                "lease_id": orphan.lease_id,
                "connections_ended": ended,
            },
        )


def orphan_roles_find(*, resource: Resource, connector) -> list[OrphanRole]:
    """Roles on `resource` made for scoped requests (named with `role_prefix()`) that no live lease explains."""
    from access.services.scoped import ROLE_DB, role_prefix

    prefix = role_prefix()
    try:
        if resource.is_atlas:
            names = [str(r.get("roleName", "")) for r in connector.list_custom_roles()]
        else:
            names = [str(r.get("role", "")) for r in connector.list_roles(db=ROLE_DB)]
    except ConnectorError as exc:
        if exc.kind == "server" and exc.code in _UNSUPPORTED_CODES:
            return []  # a server without roles (FerretDB) has no request roles either
        raise
    ours = [name for name in names if name.startswith(prefix)]
    if not ours:
        return []
    live = set(
        Lease.objects.filter(resource=resource, state__in=LIVE_LEASE_STATES, server_role__in=ours).values_list(
            "server_role", flat=True
        )
    )
    orphans = [name for name in ours if name not in live]
    if resource.is_atlas and orphans:
        held = {role.get("role") for user in connector.list_users() for role in user.get("roles") or []}
        orphans = [name for name in orphans if name not in held]
    return [OrphanRole(resource=resource.name, db=ROLE_DB, name=name) for name in orphans]


def _orphan_role_drop(*, orphan: OrphanRole, resource: Resource, connector, actor) -> None:
    """Drop one orphaned request role and audit it (only once the server has done it)."""
    if resource.is_atlas:
        connector.delete_custom_role(orphan.name)
    else:
        connector.drop_role(db=orphan.db, name=orphan.name)
    with transaction.atomic():
        audit_record(
            action=AuditAction.RECONCILE_DROP_ROLE,
            actor=actor,
            target=resource,
            data={"db": orphan.db, "role": orphan.name},
        )
