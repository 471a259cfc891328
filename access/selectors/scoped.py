"""Reads for scoped access: the envelopes a user may ask inside, what the server holds inside them (for the
request form), and the scoped grants made (for the access review)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.db.models import QuerySet

from access.models import AccessPolicy, Lease
from access.scopes import collection_allowed, database_allowed, is_pattern, level_actions
from connectors import ConnectorError, connector_for

log = logging.getLogger(__name__)


def envelopes_granted_to(user) -> QuerySet:
    """The enabled policies naming `user` that grant a scope envelope, with their resources."""
    return (
        AccessPolicy.objects.granted_to(user)
        .filter(scope_resource__isnull=False)
        .select_related("scope_resource")
        .order_by("name")
    )


@dataclass(frozen=True)
class DatabaseChoice:
    """A database a requester may pick: whether the whole of it may be asked for, and its collections inside."""

    name: str
    whole: bool
    collections: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ScopeChoices:
    """What the request form offers under one envelope: databases and collections, levels, and where they came
    from (`listed`: read from the server; otherwise only the envelope's literal names, with `error` in words)."""

    databases: list[DatabaseChoice]
    levels: list[dict]
    listed: bool
    error: str = ""
    collections_listed: bool = True
    note: str = ""

    def as_dict(self) -> dict:
        return {
            "databases": [
                {"name": d.name, "whole_database": d.whole, "collections": d.collections} for d in self.databases
            ],
            "levels": self.levels,
            "listed_from_server": self.listed,
            "collections_listed_from_server": self.listed and self.collections_listed,
            "error": self.error,
            "note": self.note,
        }


ATLAS_COLLECTIONS_NOTE = (
    "Atlas's Admin API lists databases but not collections: the collections offered are the ones the policy "
    "names; type others it allows."
)


def _server_listing(resource, *, allowed, refresh: bool) -> tuple[dict[str, list[str]], bool]:
    """({database: [collections]} of the databases `allowed(db)` lets through, whether the collections came from
    the server), read through the resource's connector (its admin account; Atlas's Admin API); each answer is
    cached PAM_SCOPE_LIST_CACHE_SECONDS (collections only of the databases asked about). A connector that cannot
    list collections (`lists_collections` False: Atlas) gives each database an empty list."""
    stamp = resource.updated_at.timestamp() if resource.updated_at else 0
    prefix = f"pam:scope-listing:{resource.pk}:{stamp}"
    ttl = settings.PAM_SCOPE_LIST_CACHE_SECONDS
    listing: dict[str, list[str]] = {}
    with connector_for(resource) as connector:
        lists_collections = getattr(connector, "lists_collections", True)
        names = None if refresh else cache.get(f"{prefix}:databases")
        if names is None:
            names = connector.list_database_names()
            cache.set(f"{prefix}:databases", names, ttl)
        for db in names:
            if not allowed(db):
                continue
            if not lists_collections:
                listing[db] = []
                continue
            key = f"{prefix}:collections:{db}"
            collections = None if refresh else cache.get(key)
            if collections is None:
                collections = connector.list_collection_names(db=db)
                cache.set(key, collections, ttl)
            listing[db] = collections
    return listing, lists_collections


def _literal_collections(collections_allowed: list[str], db: str) -> list[str]:
    """The collections of `db` an envelope names literally (`shop.orders`, or `*.orders` for any database)."""
    names = []
    for item in collections_allowed:
        pattern, _, collection = item.partition(".")
        if not is_pattern(collection) and (pattern == db or (is_pattern(pattern) and database_allowed([pattern], db))):
            names.append(collection)
    return names


def envelope_levels(policy: AccessPolicy) -> list[dict]:
    """The levels an envelope offers, each with its actions (a custom level deleted since is left out)."""
    levels = []
    for name in policy.scope_levels or []:
        actions = level_actions(name)
        if actions is not None:
            levels.append({"name": name, "actions": sorted(actions)})
    return levels


def scope_choices(*, policy: AccessPolicy, refresh: bool = False) -> ScopeChoices:
    """The databases and collections a requester may pick under `policy`'s envelope, filtered by it.

    Read from the server through the resource's connector and cached briefly (`refresh` reads again): MongoDB
    through its admin account (listDatabases, listCollections); Atlas through the Admin API (the databases of
    each cluster's primary), whose collections cannot be listed, so the envelope's literal collection names are
    offered with a `note` saying so. A server that cannot be read: the envelope's literal names only, with the
    reason in `error`. A requester may still type names the envelope's patterns allow.
    """
    resource = policy.scope_resource
    databases_allowed = list(policy.scope_databases or [])
    collections_allowed = list(policy.scope_collections or [])
    listing: dict[str, list[str]] | None = None
    collections_listed = True
    error = note = ""
    try:
        listing, collections_listed = _server_listing(
            resource, allowed=lambda db: database_allowed(databases_allowed, db), refresh=refresh
        )
    except ConnectorError as exc:
        error = f"The databases could not be read from {resource.name}: {exc}"
        log.warning("listing databases of %s for a scoped request failed: %s", resource.name, exc)
    if listing is not None and not collections_listed:
        listing = {db: _literal_collections(collections_allowed, db) for db in listing}
        note = ATLAS_COLLECTIONS_NOTE
    if listing is None:
        listing = {}
        for pattern in databases_allowed:
            if not is_pattern(pattern):
                listing.setdefault(pattern, [])
        for item in collections_allowed:
            db, _, collection = item.partition(".")
            if not is_pattern(db) and not is_pattern(collection):
                listing.setdefault(db, []).append(collection)
    choices = []
    for db in sorted(listing):
        if not database_allowed(databases_allowed, db):
            continue
        names = sorted(
            name
            for name in listing[db]
            if not name.startswith("system.")
            and (not collections_allowed or collection_allowed(collections_allowed, db, name))
        )
        whole = not collections_allowed
        if names or whole:
            choices.append(DatabaseChoice(db, whole, names))
    return ScopeChoices(
        choices,
        envelope_levels(policy),
        listed=not error,
        error=error,
        collections_listed=collections_listed,
        note=note,
    )


def scoped_grants(*, limit: int = 500) -> list[Lease]:
    """The scoped grants made (newest first): who, on what resource, what they covered, and how each ended."""
    return list(
        Lease.objects.filter(role__isnull=True)
        .select_related("resource", "request__policy", "request__approver", "holder")
        .order_by("-issued_at")[:limit]
    )


def scoped_leases_of(request) -> QuerySet:
    """The leases made for one scoped request (a failed attempt and its retry are two), newest first."""
    return request.scoped_leases.select_related("resource").order_by("-issued_at", "-pk")


def narrower_levels(access_request) -> list[str]:
    """The levels an approver may grant instead of the one asked: those of the envelope whose actions are all
    among the asked level's (the asked one first)."""
    asked = access_request.scope_requested or access_request.scope
    asked_actions = frozenset(asked.get("actions") or [])
    names = [asked.get("level")]
    for name in access_request.policy.scope_levels or []:
        actions = level_actions(name)
        if name not in names and actions is not None and actions <= asked_actions:
            names.append(name)
    return [name for name in names if name]
