"""Scoped just-in-time access: checking a request against its policy's envelope, narrowing it, and making the
database user and role for it (and removing them again).

The request picks inside the envelope (`scope_check`); an approver may narrow what was asked, never widen it
(`scope_narrow`, called by access.services.requests when it approves). Once a scoped request is approved (at once
when its policy needs no approval), `scoped_grant_make` makes the grant on the server:

- MongoDB: a role for the request (`createRole` in `admin` with privileges on exactly the chosen `{db, collection}`
  resources and the level's actions) and a user holding only that role, tagged like lease users
  (customData.pam: lease id, system, request). The role's name starts with `role_prefix()`, so the reconciler can
  tell the roles this installation made.
- Atlas: built-in roles where the level is one (`read` and `readWrite`, with `collectionName` for collections;
  `dbAdmin` on whole databases); otherwise one custom database role for the scope, reused when the project
  already has an identical one, and refused near the project's limit of custom roles (the limit and usage Atlas
  reports for the project, PAM_ATLAS_CUSTOM_ROLE_LIMIT only where it reports none; PAM_ATLAS_CUSTOM_ROLE_HEADROOM
  of them left free). The user is created with `deleteAfterDate` and
  returns only once every cluster applied the change, so credentials are never shown before they work.

The grant is a Lease without a dynamic role (`Lease.request`, `.scope`, `.server_role`): it ends through the
lease machinery (expiry by the sweeper, revocation by its holder or the security team, offboarding and the grant
reconciliation), whose revocation calls `scoped_role_release_on_server` once the user is confirmed gone: the
role is dropped and verified gone (on Atlas only when no other user still holds it).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from access.durations import format_duration
from access.models import AccessPolicy, AccessRequest, AuditAction, Lease, PermissionLevel
from access.models.leases import LIVE_LEASE_STATES, LeaseState
from access.models.policies import RequestState
from access.mongodb_actions import BUILTIN_LEVELS
from access.scopes import (
    ScopeResource,
    level_actions,
    parse_resources,
    resources_outside,
    scope_resources,
    scope_text,
)
from access.services.audit import audit_record
from access.services.changes import changes_refuse_unknown, changes_save
from connectors import ConnectorError, connector_for
from connectors.atlas import CUSTOM_ROLE_ACTIONS, custom_role_key
from connectors.atlas import delete_after_date as atlas_delete_after_date

log = logging.getLogger(__name__)

ROLE_DB = "admin"
"""Where request roles and users live: a role in `admin` may hold privileges on any database."""
SCOPED_USERNAME_TEMPLATE = "s-{holder}-{random}"
ATLAS_COLLECTION_ROLES = frozenset({"read", "readWrite"})
"""Atlas built-in roles that take a collectionName."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class ScopedGrantRefused(Exception):
    """The grant cannot be made as asked (an Atlas project near its custom-role limit); the message is for people."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def role_prefix() -> str:
    """The start of every role name this installation makes for requests: `pam-<system>-r-`."""
    system = _UNSAFE.sub("-", settings.PAM_SYSTEM_ID).strip("-")[:32] or "pam"
    return f"pam-{system}-r-"


# -- permission levels -------------------------------------------------------------------------------------
LEVEL_FIELDS = ("name", "description", "actions")


def permission_level_create(*, actor, **fields) -> PermissionLevel:
    """Define a custom permission level: a name and MongoDB privilege actions (an unknown action is refused)."""
    changes_refuse_unknown(fields, allowed=LEVEL_FIELDS, noun="a permission level")
    with transaction.atomic():
        level = PermissionLevel()
        changes_save(level, fields, action=AuditAction.PERMISSIONLEVEL_CREATE, actor=actor)
    return level


def permission_level_update(*, actor, level: PermissionLevel, **fields) -> PermissionLevel:
    """Change a level's description or actions (its name stays: envelopes name it). Grants made keep their actions."""
    changes_refuse_unknown(fields, allowed=LEVEL_FIELDS, noun="a permission level")
    if "name" in fields and fields["name"] != level.name:
        raise ValidationError({"name": "A level keeps its name: policies name it. Define a new level instead."})
    with transaction.atomic():
        changes_save(level, fields, action=AuditAction.PERMISSIONLEVEL_UPDATE, actor=actor)
    return level


def permission_level_delete(*, actor, level: PermissionLevel) -> None:
    """Delete a level no policy offers (ValidationError naming the policies otherwise)."""
    users = [p.name for p in AccessPolicy.objects.exclude(scope_resource=None) if level.name in (p.scope_levels or [])]
    if users:
        raise ValidationError(
            f"The level {level.name} is offered by {', '.join(sorted(users))}: remove it there first."
        )
    with transaction.atomic():
        audit_record(
            action=AuditAction.PERMISSIONLEVEL_DELETE,
            actor=actor,
            target=level,
            data={"name": level.name, "actions": level.actions},
        )
        level.delete()


# -- the envelope ------------------------------------------------------------------------------------------
def envelope_of(policy: AccessPolicy) -> dict:
    """A policy's envelope as plain values (audit rows, the API, the access review)."""
    if not policy.has_envelope:
        return {}
    return {
        "resource": policy.scope_resource.name,
        "databases": list(policy.scope_databases or []),
        "collections": list(policy.scope_collections or []),
        "levels": list(policy.scope_levels or []),
        "max_duration_seconds": int(policy.max_duration.total_seconds()),
        "approval_required": policy.approval_required,
        "mfa_required": policy.mfa_required,
    }


def atlas_plan(*, scope: dict, custom_role_name: str = "") -> tuple[list[dict], dict | None]:
    """How Atlas grants `scope`: the user's roles, and the custom role to make (None when built-in roles do).

    Built-in `read`/`readWrite` take a collection; `dbAdmin` only a whole database; anything else is a custom
    role whose actions (Atlas's names) apply to exactly the scope's resources. ValidationError ("level") when a
    level's action is one Atlas custom roles do not offer.
    """
    level = scope["level"]
    resources = scope_resources(scope)
    builtin = level in ATLAS_COLLECTION_ROLES or (level == "dbAdmin" and all(r.whole_database for r in resources))
    if builtin and level in BUILTIN_LEVELS:
        roles = []
        for resource in resources:
            role = {"roleName": level, "databaseName": resource.db}
            if resource.collection:
                role["collectionName"] = resource.collection
            roles.append(role)
        return roles, None
    unsupported = sorted(set(scope["actions"]) - set(CUSTOM_ROLE_ACTIONS))
    if unsupported:
        raise ValidationError(
            {"level": f"Atlas custom roles do not offer {', '.join(unsupported)}: choose another level for Atlas."}
        )
    atlas_resources = [{"db": r.db, "collection": r.collection} for r in resources]
    body = {
        "actions": [
            {"action": CUSTOM_ROLE_ACTIONS[action], "resources": atlas_resources} for action in sorted(scope["actions"])
        ],
        "inheritedRoles": [],
    }
    name = custom_role_name or atlas_custom_role_name(body)
    return [{"roleName": name, "databaseName": ROLE_DB}], {"roleName": name, **body}


def atlas_custom_role_name(body: dict) -> str:
    """The name this installation gives a custom role: its prefix and a digest of what it grants (so an identical
    role made earlier is found by name as well as by content)."""
    digest = hashlib.sha256(repr(custom_role_key(body)).encode()).hexdigest()[:20]
    return f"{role_prefix()}{digest}"


def scope_check(*, policy: AccessPolicy, resources, level: str, duration: timedelta) -> dict:
    """What a request under `policy` would be granted, checked against the envelope: the scope to store.

    ValidationError with the fields that fall outside: "resources" (a database or collection the envelope does
    not allow, in words), "level" (not offered, gone, or not possible on Atlas), "duration" (above the maximum).
    """
    if not policy.has_envelope:
        raise ValidationError({"policy": "This policy grants no scoped access: it names an account or a role."})
    errors: dict[str, list[str]] = {}
    parsed: list[ScopeResource] = []
    try:
        parsed = parse_resources(resources)
    except ValidationError as exc:
        errors["resources"] = exc.messages
    else:
        problems = resources_outside(
            databases=policy.scope_databases, collections=policy.scope_collections, resources=parsed
        )
        if problems:
            errors["resources"] = [f"Outside what the policy allows: {problem}." for problem in problems]
    actions = None
    if not level:
        errors["level"] = [f"Choose a permission level: {', '.join(policy.scope_levels)}."]
    elif level not in (policy.scope_levels or []):
        errors["level"] = [f"The policy offers {', '.join(policy.scope_levels)}, not {level}."]
    else:
        actions = level_actions(level)
        if actions is None:
            errors["level"] = [f"The permission level {level} no longer exists."]
    if duration is None or duration <= timedelta(0):
        errors["duration"] = ["The duration must be positive."]
    elif duration > policy.max_duration:
        errors["duration"] = [f"At most {format_duration(policy.max_duration)} under this policy."]
    if errors:
        raise ValidationError(errors)
    scope = {"resources": [r.as_dict() for r in parsed], "level": level, "actions": sorted(actions)}
    if policy.scope_resource.is_atlas:
        atlas_plan(scope=scope)
    return scope


def scope_narrow(
    *, request: AccessRequest, resources=None, level: str | None = None, duration: timedelta | None = None
) -> dict:
    """An approver's narrowing of a pending scoped request; returns the changes (scope, duration) to store.

    Narrowing may drop databases or collections, pick collections inside a database that was asked whole, choose
    a level whose actions are a subset of the asked level's, and shorten the time. Anything wider is refused
    (ValidationError naming the field), and the result must still fit the policy's envelope as it stands now.
    """
    asked = request.scope_requested or request.scope
    asked_resources = scope_resources(asked)
    asked_actions = frozenset(asked.get("actions") or [])
    asked_duration = timedelta(seconds=int(asked.get("duration_seconds") or request.duration.total_seconds()))
    errors: dict[str, list[str]] = {}
    new_resources = asked_resources
    if resources is not None:
        try:
            new_resources = parse_resources(resources)
        except ValidationError as exc:
            errors["resources"] = exc.messages
        else:
            wider = [r for r in new_resources if not any(a.covers(r) for a in asked_resources)]
            if wider:
                errors["resources"] = [
                    f"An approver may only narrow a request: {', '.join(str(r) for r in wider)} was not asked for "
                    f"(asked: {', '.join(str(r) for r in asked_resources)})."
                ]
    new_level = level or asked.get("level")
    new_actions = asked_actions
    if level and level != asked.get("level"):
        actions = level_actions(level)
        if actions is None:
            errors["level"] = [f"There is no permission level {level}."]
        elif not actions <= asked_actions:
            extra = ", ".join(sorted(actions - asked_actions))
            errors["level"] = [
                f"An approver may only narrow a request: {level} grants more than the {asked.get('level')} "
                f"that was asked ({extra})."
            ]
        else:
            new_actions = actions
    new_duration = asked_duration if duration is None else duration
    if duration is not None and duration > asked_duration:
        errors["duration"] = [
            f"An approver may shorten the time, never lengthen it: {format_duration(asked_duration)} was asked."
        ]
    if errors:
        raise ValidationError(errors)
    scope = scope_check(
        policy=request.policy, resources=[r.as_dict() for r in new_resources], level=new_level, duration=new_duration
    )
    scope["actions"] = sorted(new_actions)
    return {"scope": scope, "duration": new_duration}


# -- making the grant ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScopedGrant:
    """The outcome of making a scoped grant: its lease (active, or failed with `error` in words)."""

    lease: Lease | None
    error: str = ""
    password: str = field(default="", repr=False)

    @property
    def ok(self) -> bool:
        return self.lease is not None and not self.error


def scoped_lease_of(request: AccessRequest) -> Lease | None:
    """The newest lease made for a scoped request (live or not), or None."""
    return request.scoped_leases.order_by("-issued_at", "-pk").first()


def scoped_grant_make(*, request: AccessRequest, actor, connector=None) -> ScopedGrant:
    """Make the database user (and role) for an approved scoped request whose window is open; idempotent.

    Returns the active lease when one exists. Otherwise the lease row is committed first (so the reconciler never
    takes the new user or role for an orphan), then the role and the user are made; a failure leaves the lease
    `failed` (cleaned up by the sweeper when something may have been made) and is returned in words, audited.
    ValidationError when the request is not approved or its window is closed.
    """
    from access.services.leases import (
        connectors_shared,
        lease_issue_failed_record,
        password_generate,
        system_tag,
        username_render,
    )

    request = AccessRequest.objects.select_related("resource", "policy", "requester").get(pk=request.pk)
    if not request.is_scoped:
        raise ValueError("Only scoped requests get a user made for them.")
    now = timezone.now()
    if request.state != RequestState.APPROVED or request.expires_at is None or request.expires_at <= now:
        raise ValidationError("This request is not approved with an open window: nothing to grant.")
    live = request.scoped_leases.filter(state__in=LIVE_LEASE_STATES).order_by("-pk").first()
    if live is not None:
        if live.state == LeaseState.ACTIVE and not live.issue_failed:
            return ScopedGrant(live)
        raise ValidationError("The previous attempt is still being cleaned up: try again in a moment.")
    resource = request.resource
    holder = request.requester
    lifetime = request.expires_at - now
    if resource.is_atlas:
        lifetime = min(lifetime, atlas_delete_after_date(now + lifetime, now=now) - now)
    token = secrets.token_hex(12)
    username = username_render(template=SCOPED_USERNAME_TEMPLATE, holder=holder.get_username(), role="scoped")
    password = password_generate(32)
    scope = dict(request.scope)
    atlas_roles, custom_role = atlas_plan(scope=scope) if resource.is_atlas else ([], None)
    server_role = (custom_role["roleName"] if custom_role else "") if resource.is_atlas else f"{role_prefix()}{token}"
    with transaction.atomic():
        lease = Lease.objects.create(
            lease_id=f"mongodb/{resource.name}/scoped/{request.pk}/{token}",
            role=None,
            request=request,
            scope=scope,
            server_role=server_role,
            resource=resource,
            holder=holder,
            holder_name=holder.get_username(),
            db=ROLE_DB,
            username=username,
            password=password,
            issued_at=now,
            expires_at=now + lifetime,
            max_expires_at=now + lifetime,
        )
        audit_record(
            action=AuditAction.SCOPED_GRANT,
            actor=actor,
            target=lease,
            data={
                "request": request.pk,
                "requester": holder.get_username(),
                "policy": request.policy.name,
                "envelope": envelope_of(request.policy),
                "requested": request.scope_requested,
                "granted": scope,
                "granted_text": scope_text(scope),
                "narrowed": request.scope_narrowed,
                "username": username,
                "db": ROLE_DB,
                "server_role": server_role,
                "atlas_roles": atlas_roles,
                "ttl_seconds": int(lifetime.total_seconds()),
            },
        )
    tag = {"pam": {"lease_id": lease.lease_id, "system": system_tag(), "request": request.pk}}
    made: list[str] = []  # what may exist on the server if a step fails (then the sweeper cleans up)
    try:
        connector = connector or connectors_shared().for_resource(resource)
        if resource.is_atlas:
            _atlas_grant(
                connector=connector,
                lease=lease,
                password=password,
                roles=atlas_roles,
                custom_role=custom_role,
                tag=tag,
                made=made,
            )
        else:
            privileges = [{"resource": r.as_dict(), "actions": list(scope["actions"])} for r in scope_resources(scope)]
            made.append("role")
            connector.create_role(db=ROLE_DB, name=server_role, privileges=privileges)
            made.append("user")
            connector.create_user(
                db=ROLE_DB,
                username=username,
                password=password,
                roles=[{"role": server_role, "db": ROLE_DB}],
                custom_data=tag,
            )
    except (ConnectorError, ScopedGrantRefused) as exc:
        error = _error_text(exc, [password])
        nothing_made = not made or (len(made) == 1 and _refused_before_acting(exc))
        lease_issue_failed_record(lease=lease, error=error, actor=actor, user_absent=nothing_made)
        with transaction.atomic():
            audit_record(
                action=AuditAction.SCOPED_GRANT_FAILED,
                actor=actor,
                target=lease,
                data={"request": request.pk, "granted_text": scope_text(scope), "error": error},
            )
        return ScopedGrant(Lease.objects.get(pk=lease.pk), error)
    lease = Lease.objects.select_related("resource", "request").get(pk=lease.pk)
    return ScopedGrant(lease, "", password)


def _error_text(exc: Exception, secrets_to_hide: list[str]) -> str:
    text = f"{exc.kind_title} error: {exc}" if isinstance(exc, ConnectorError) else str(exc)
    for secret in secrets_to_hide:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text[:1000]


def _refused_before_acting(exc: Exception) -> bool:
    """Whether the server refused a write before doing anything (so nothing needs cleaning up)."""
    from access.services.leases import _NOT_CREATED, _REFUSED_CODES

    return isinstance(exc, ScopedGrantRefused) or (
        isinstance(exc, ConnectorError) and (exc.kind in _NOT_CREATED or exc.code in _REFUSED_CODES)
    )


def _atlas_grant(
    *, connector, lease: Lease, password: str, roles: list, custom_role: dict | None, tag: dict, made: list
) -> None:
    """Make the Atlas side of a grant: the custom role when needed, then the user (noting in `made` what was made)."""
    if custom_role is not None:
        name = atlas_custom_role_ensure(connector=connector, role=custom_role)
        made.append("role")
        if name != custom_role["roleName"]:
            Lease.objects.filter(pk=lease.pk).update(server_role=name)
            roles = [{"roleName": name, "databaseName": ROLE_DB}]
    create = {
        "db": ROLE_DB,
        "username": lease.username,
        "password": password,
        "roles": roles,
        "custom_data": tag,
        "expires_at": lease.expires_at,
    }
    made.append("user")
    try:
        connector.create_user(**create)
    except ConnectorError as exc:
        if custom_role is None or exc.kind not in ("config", "not_found"):
            raise
        # The reused role was deleted by a revocation between our check and the user's creation: make it again.
        atlas_custom_role_ensure(connector=connector, role=custom_role)
        connector.create_user(**create)


def atlas_custom_role_ensure(*, connector, role: dict) -> str:
    """The name of a custom role granting exactly `role`'s actions: an identical existing one (reused without
    counting it against the limit), else a new one.

    ScopedGrantRefused when the project holds so many custom roles that making another would leave fewer than
    PAM_ATLAS_CUSTOM_ROLE_HEADROOM of its limit free (`atlas_custom_roles_full`).
    """
    key = custom_role_key(role)
    existing = connector.list_custom_roles()
    identical = [r for r in existing if custom_role_key(r) == key]
    if identical:
        ours = [r for r in identical if r.get("roleName") == role["roleName"]]
        return (ours or identical)[0]["roleName"]
    full = atlas_custom_roles_full(connector=connector, existing=existing)
    if full is not None:
        raise ScopedGrantRefused(full)
    connector.create_custom_role(
        name=role["roleName"], actions=role["actions"], inherited_roles=role.get("inheritedRoles"), wait=False
    )
    return role["roleName"]


def atlas_custom_role_precheck(*, policy: AccessPolicy, scope: dict) -> None:
    """Refuse, before anyone approves, a scoped Atlas request that would need a custom role the project has no room
    for (ValidationError on "level"). Nothing is refused when Atlas cannot be asked now: the grant checks again."""
    _roles, custom_role = atlas_plan(scope=scope)
    if custom_role is None:
        return
    try:
        with connector_for(policy.scope_resource) as connector:
            existing = connector.list_custom_roles()
            if any(custom_role_key(r) == custom_role_key(custom_role) for r in existing):
                return
            full = atlas_custom_roles_full(connector=connector, existing=existing)
    except ConnectorError as exc:
        log.warning("could not count the custom roles of %s: %s", policy.scope_resource.name, exc)
        return
    if full is not None:
        raise ValidationError({"level": full})


def atlas_custom_roles_full(*, connector, existing: list[dict]) -> str | None:
    """Why the project has no room for another custom role (a message a requester can act on), or None.

    The limit and usage are the project's own (`AtlasConnector.custom_role_limit`: Atlas's project-limits
    endpoint, the setting PAM_ATLAS_CUSTOM_ROLE_LIMIT only where Atlas offers none); the count is the larger of
    Atlas's usage and the roles listed in `existing` (either may lag a change just made). The portal stops
    PAM_ATLAS_CUSTOM_ROLE_HEADROOM roles short of the limit.
    """
    limit = connector.custom_role_limit()
    count = max(len(existing), limit.usage or 0)
    headroom = max(0, int(settings.PAM_ATLAS_CUSTOM_ROLE_HEADROOM))
    if count < limit.limit - headroom:
        return None
    if limit.source == "atlas":
        allows = f"Atlas allows {limit.limit} per project (its limit {limit.name} for this project)"
        raise_it = f"raise the project's limit {limit.name} in Atlas"
    else:
        allows = (
            f"Atlas allows {limit.limit} per project (PAM_ATLAS_CUSTOM_ROLE_LIMIT: this Atlas does not report "
            "its project limits)"
        )
        raise_it = "raise the project's limit in Atlas and PAM_ATLAS_CUSTOM_ROLE_LIMIT with it"
    keeps = f" and the portal keeps {headroom} of them free for the project's administrators" if headroom else ""
    return (
        f"The Atlas project {connector.group_id} already has {count} custom roles; {allows}{keeps}, so it makes "
        "no more. Ask for a built-in level (read or readWrite), or have an Atlas administrator remove unused "
        f"custom roles or {raise_it}."
    )


def atlas_custom_roles_usage(*, connector) -> dict:
    """How many custom roles the project holds, of how many (and where that limit came from), and how many this
    installation made."""
    roles = connector.list_custom_roles()
    limit = connector.custom_role_limit()
    prefix = role_prefix()
    return {
        "count": max(len(roles), limit.usage or 0),
        "limit": limit.limit,
        "limit_source": limit.source,
        "headroom": settings.PAM_ATLAS_CUSTOM_ROLE_HEADROOM,
        "ours": sorted(r["roleName"] for r in roles if str(r.get("roleName", "")).startswith(prefix)),
    }


# -- ending the grant ---------------------------------------------------------------------------------------
def scoped_role_release_on_server(*, lease: Lease, connector) -> tuple[str | None, str]:
    """After a scoped lease's user is gone: drop its role and verify it is gone. Returns (error, what was done).

    MongoDB: the request's own role is dropped. Atlas: a custom role this installation made is deleted once no
    user holds it any more (another grant may share an identical role); a reused role made by someone else, and
    built-in roles, are left alone. Raises ConnectorError for server trouble (the caller records it and retries).
    """
    name = lease.server_role
    if not name:
        return None, "no role of its own"
    if lease.resource.is_atlas:
        if not name.startswith(role_prefix()):
            return None, f"kept {name} (not made by the portal)"
        holders = connector.custom_role_users(name)
        if holders:
            return None, f"kept {name} (still held by {len(holders)} other user{'s' if len(holders) > 1 else ''})"
        try:
            connector.delete_custom_role(name)
        except ConnectorError as exc:
            if exc.kind == "conflict":  # a grant just took it up again: it stays theirs
                return None, f"kept {name} (taken up by another grant)"
            raise
        if connector.get_custom_role(name) is not None:
            return f"The custom role {name} still exists after it was deleted.", ""
        return None, f"deleted {name}"
    connector.drop_role(db=lease.db, name=name)
    if connector.get_role(db=lease.db, name=name) is not None:
        return f"The role {name} still exists after dropRole.", ""
    return None, f"dropped {name}"


def scoped_lease_problem(lease: Lease, now=None) -> str | None:
    """Why a scoped lease may no longer live (its grant was removed), or None.

    The request must still exist, be approved and the policy still enabled, naming the holder, with the same
    envelope resource. A window that simply ran out is not a problem here: the lease expires with it (the
    sweeper revokes it as `expired`).
    """
    request = lease.request
    if request is None:
        return "its request was deleted"
    if request.state != RequestState.APPROVED:
        return f"its request is {request.get_state_display().lower()}"
    policy = request.policy
    holder = lease.holder
    if not AccessPolicy.objects.granted_to(holder).filter(pk=policy.pk, scope_resource=lease.resource_id).exists():
        return "no enabled policy grants this scope any more"
    return None


def scoped_grant_retry(*, request: AccessRequest, user) -> ScopedGrant:
    """Try again to make the grant of an approved scoped request whose last attempt failed (its requester, or an
    approver); returns the active lease at once when there is one."""
    from django.core.exceptions import PermissionDenied

    from access.models.policies import user_may_approve

    if request.requester_id != getattr(user, "pk", None) and not user_may_approve(user):
        raise PermissionDenied("Only the requester or an approver may retry making this grant.")
    return scoped_grant_make(request=request, actor=user)
