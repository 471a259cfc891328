"""Scopes: what a scope envelope allows and what a request picks inside it, as plain values and pure checks.

An envelope (on AccessPolicy: `scope_resource`, `scope_databases`, `scope_collections`, `scope_levels`, plus the
policy's `max_duration`, `approval_required`, `mfa_required`) names:
- databases: names or glob patterns (`*`, `?`, `[...]`), e.g. `shop`, `reports_*`. A pattern never matches the
  server's own databases (admin, local, config); naming one literally allows it.
- collections (optional): `<database pattern>.<collection pattern>`, e.g. `shop.orders`, `*.audit_*`. When the
  envelope lists collections, a request must name collections it matches; without them, a request may ask for
  whole databases or for collections in them. `system.*` collections are never granted.
- levels: `read`, `readWrite`, `dbAdmin` and custom PermissionLevel names.

A scope is {"resources": [{"db", "collection"}], "level", "actions"}: `collection` "" is the whole database
(MongoDB's `{db: "x", collection: ""}` resource). Everything here is pure (no database, no server) except
`level_actions`, which reads the custom levels.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass

from django.core.exceptions import ValidationError

from access.mongodb_actions import BUILTIN_LEVELS

SERVER_DATABASES = frozenset({"admin", "local", "config"})
MAX_RESOURCES = 50
DB_NAME_MAX = 63
_DB_FORBIDDEN = re.compile(r'[/\\. "$\x00*?\[\]]')
_PATTERN_FORBIDDEN = re.compile(r'[/\\. "$\x00]')
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True, order=True)
class ScopeResource:
    """One `{db, collection}` resource of a scope; `collection` "" means the whole database."""

    db: str
    collection: str = ""

    @property
    def whole_database(self) -> bool:
        return not self.collection

    def covers(self, other: ScopeResource) -> bool:
        """Whether granting this resource grants `other` too (a whole database covers its collections)."""
        return self.db == other.db and (self.whole_database or self.collection == other.collection)

    def as_dict(self) -> dict:
        return {"db": self.db, "collection": self.collection}

    def __str__(self) -> str:
        return self.db if self.whole_database else f"{self.db}.{self.collection}"


def is_pattern(text: str) -> bool:
    return bool(_GLOB.search(text))


def _pattern_matches(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern)


def validate_database_patterns(value) -> list[str]:
    """The envelope's databases: a non-empty list of names or glob patterns (ValidationError in words)."""
    if not isinstance(value, list) or not value or not all(isinstance(item, str) and item for item in value):
        raise ValidationError('List at least one database name or pattern, e.g. ["shop", "reports_*"].')
    for item in value:
        if len(item) > DB_NAME_MAX or _PATTERN_FORBIDDEN.search(item):
            raise ValidationError(
                f"{item!r} is not a database name or pattern: no spaces, dots, slashes, quotes or $, "
                f"at most {DB_NAME_MAX} characters."
            )
    return value


def validate_collection_patterns(value) -> list[str]:
    """The envelope's collections: `<database pattern>.<collection pattern>` items (may be empty)."""
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValidationError('Collections are a list like ["shop.orders", "*.audit_*"].')
    for item in value:
        db, dot, collection = item.partition(".")
        if not dot or not db or not collection:
            raise ValidationError(f"{item!r}: write collections as <database>.<collection>, e.g. shop.orders.")
        if _PATTERN_FORBIDDEN.search(db) or "$" in collection or "\x00" in collection:
            raise ValidationError(f"{item!r} is not a collection pattern.")
        if collection.startswith("system."):
            raise ValidationError(f"{item!r}: system collections are never granted by a scope.")
    return value


def validate_level_names(value, *, known: Iterable[str]) -> list[str]:
    """The envelope's levels: a non-empty list of built-in or defined custom level names."""
    if not isinstance(value, list) or not value or not all(isinstance(item, str) and item for item in value):
        raise ValidationError('List at least one permission level, e.g. ["read", "readWrite"].')
    known = set(known)
    unknown = [item for item in value if item not in known]
    if unknown:
        raise ValidationError(
            f"Unknown permission level{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
            f"(built in: {', '.join(BUILTIN_LEVELS)}; define others as permission levels)."
        )
    return value


def database_allowed(patterns: Iterable[str], db: str) -> bool:
    """Whether an envelope's database patterns allow `db` (server databases only when named literally)."""
    for pattern in patterns:
        if pattern == db:
            return True
        if db not in SERVER_DATABASES and is_pattern(pattern) and _pattern_matches(pattern, db):
            return True
    return False


def collection_allowed(patterns: Iterable[str], db: str, collection: str) -> bool:
    """Whether an envelope's collection patterns allow `db.collection` (never a system collection)."""
    if collection.startswith("system."):
        return False
    for item in patterns:
        db_pattern, _, collection_pattern = item.partition(".")
        if _pattern_matches(db_pattern, db) and _pattern_matches(collection_pattern, collection):
            return True
    return False


def validate_database_name(db: str) -> None:
    if not isinstance(db, str) or not db or len(db) > DB_NAME_MAX or _DB_FORBIDDEN.search(db):
        raise ValidationError(f"{db!r} is not a database name.")


def validate_collection_name(collection: str) -> None:
    if not isinstance(collection, str) or "$" in collection or "\x00" in collection or len(collection) > 200:
        raise ValidationError(f"{collection!r} is not a collection name.")
    if collection.startswith("system."):
        raise ValidationError(f"{collection!r}: system collections are never granted by a scope.")


def parse_resources(value) -> list[ScopeResource]:
    """Resources as given by a form or the API: "shop", "shop.orders", or {"db", "collection"} documents.

    Duplicates and collections covered by a whole database of the same list are dropped; the order is kept.
    """
    if isinstance(value, str | dict):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise ValidationError("Choose at least one database or collection.")
    parsed: list[ScopeResource] = []
    for item in value:
        if isinstance(item, str):
            db, _, collection = item.strip().partition(".")
        elif isinstance(item, dict) and set(item) <= {"db", "collection"}:
            db, collection = item.get("db", ""), item.get("collection") or ""
        else:
            raise ValidationError(f'{item!r}: name a database ("shop"), a collection ("shop.orders") or {{"db", ...}}.')
        validate_database_name(db)
        if collection:
            validate_collection_name(collection)
        parsed.append(ScopeResource(db, collection))
    if len(parsed) > MAX_RESOURCES:
        raise ValidationError(f"At most {MAX_RESOURCES} databases and collections in one request.")
    kept: list[ScopeResource] = []
    for resource in parsed:
        if resource in kept:
            continue
        if not resource.whole_database and ScopeResource(resource.db) in parsed:
            continue
        kept.append(resource)
    return kept


def resources_outside(
    *, databases: Iterable[str], collections: Iterable[str], resources: Iterable[ScopeResource]
) -> list[str]:
    """Why each resource falls outside an envelope, in words (empty when all are inside)."""
    databases, collections = list(databases), list(collections)
    problems = []
    for resource in resources:
        if not database_allowed(databases, resource.db):
            problems.append(f"the database {resource.db} is outside the policy's databases ({', '.join(databases)})")
        elif collections and resource.whole_database:
            problems.append(
                f"the policy grants only some collections ({', '.join(collections)}): name collections in "
                f"{resource.db} instead of the whole database"
            )
        elif collections and not collection_allowed(collections, resource.db, resource.collection):
            problems.append(f"the collection {resource} is outside the policy's collections ({', '.join(collections)})")
    return problems


def level_actions(name: str) -> frozenset[str] | None:
    """The actions of a built-in or custom level, None when no level has that name."""
    if name in BUILTIN_LEVELS:
        return BUILTIN_LEVELS[name]
    from access.models.scoped import PermissionLevel

    level = PermissionLevel.objects.filter(name=name).first()
    return level.action_set if level is not None else None


def level_names_known() -> list[str]:
    """Every level an envelope may offer: the built-in ones, then the custom ones by name."""
    from access.models.scoped import PermissionLevel

    return [*BUILTIN_LEVELS, *PermissionLevel.objects.order_by("name").values_list("name", flat=True)]


def scope_resources(scope: dict) -> list[ScopeResource]:
    """The resources of a stored scope."""
    return [ScopeResource(item["db"], item.get("collection") or "") for item in (scope or {}).get("resources") or []]


def scope_text(scope: dict) -> str:
    """A scope in words: `read on shop.orders, shop.invoices`."""
    if not scope:
        return ""
    resources = ", ".join(str(resource) for resource in scope_resources(scope))
    return f"{scope.get('level', '?')} on {resources}"


def scope_databases(scope: dict) -> list[str]:
    """The databases a scope touches, sorted (a gateway session's database allow-list)."""
    return sorted({resource.db for resource in scope_resources(scope)})
