"""MongoDB's privilege actions, and the built-in permission levels of scoped access as sets of them.

`PRIVILEGE_ACTIONS` (kept in gatewayproxy.wire.actions, which the test wire server shares) is the MongoDB
manual's "Privilege Actions" list (7.x/8.0): the names a role's privileges may grant. A custom permission level
(access.models.PermissionLevel) is validated against it, so a level that names an unknown action is refused
before any server sees it (mongod would refuse it too, with "Unrecognized action privilege strings").

The built-in levels (`read`, `readWrite`, `dbAdmin`) are the actions of MongoDB's built-in roles of those
names on non-system collections, limited to actions every supported server version (5.0 and later) knows, so
that a role made for a request is accepted by all of them. A scoped grant gives a level's actions on exactly
the chosen `{db, collection}` resources.
"""

from __future__ import annotations

from gatewayproxy.wire.actions import PRIVILEGE_ACTIONS


def _actions(text: str) -> frozenset[str]:
    return frozenset(text.split())


ESCALATING_ACTIONS = _actions(
    """
    anyAction impersonate internal createUser createRole grantRole grantRolesToUser grantRolesToRole
    grantPrivilegesToRole updateUser updateRole changePassword changeCustomData setAuthenticationRestriction
    dropUser dropRole dropAllUsersFromDatabase dropAllRolesFromDatabase revokeRole revokeRolesFromUser
    revokeRolesFromRole revokePrivilegesFromRole runAsLessPrivilegedUser useTenant
    """
)
"""Actions that manage users and roles (or act as someone else): a level granting them would let a scoped
user widen its own access, so a custom level may not name them."""

READ = _actions("changeStream collStats dbHash dbStats find killCursors listCollections listIndexes")
READ_WRITE = READ | _actions(
    "convertToCapped createCollection createIndex dropCollection dropIndex insert remove renameCollectionSameDB update"
)
DB_ADMIN = _actions(
    "bypassDocumentValidation collMod collStats compact convertToCapped createCollection createIndex dbStats "
    "dropCollection dropDatabase dropIndex enableProfiler listCollections listIndexes planCacheIndexFilter "
    "planCacheRead planCacheWrite reIndex renameCollectionSameDB storageDetails validate"
)

BUILTIN_LEVELS: dict[str, frozenset[str]] = {"read": READ, "readWrite": READ_WRITE, "dbAdmin": DB_ADMIN}
"""The permission levels every installation has, by name: the actions MongoDB's built-in role of that name grants."""

BUILTIN_LEVEL_WORDS = {
    "read": "read documents and indexes",
    "readWrite": "read and write documents, create and drop collections and indexes",
    "dbAdmin": "administer collections and indexes (no document reads or writes)",
}


def unknown_actions(actions) -> list[str]:
    """The names in `actions` that are not MongoDB privilege actions, in the order given."""
    return [action for action in actions if action not in PRIVILEGE_ACTIONS]
