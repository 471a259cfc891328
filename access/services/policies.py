"""Creating, changing and deleting access policies (who may reach which account or role), each audited.

The admin is today's only door to policies; it writes through these functions like the API writes resources.
What a policy may say is the model's own validation (one subject, one target); when it was last used is a
recorded fact kept by the grant services (`access_policy_mark_used`), not a field any door sets.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from access.models import AccessPolicy, AuditAction
from access.services.audit import audit_record
from access.services.changes import changes_refuse_unknown, changes_save
from access.services.offboarding import access_grants_reconcile, access_policy_subjects

# Every field a door may set on a policy, in the order the admin's form shows them.
POLICY_FIELDS = (
    "name",
    "user",
    "group",
    "account",
    "role",
    "scope_resource",
    "scope_databases",
    "scope_collections",
    "scope_levels",
    "max_duration",
    "approval_required",
    "mfa_required",
    "break_glass_allowed",
    "read_only",
    "database_allow_list",
    "privileged_commands",
    "is_enabled",
)


def _refuse_unknown(fields: dict[str, Any]) -> None:
    changes_refuse_unknown(fields, allowed=POLICY_FIELDS, noun="a policy")


def access_policy_create(*, actor, **fields: Any) -> AccessPolicy:
    """Let a user or a group reach an account (gateway sessions) or a dynamic role (leases), on the given terms."""
    _refuse_unknown(fields)
    with transaction.atomic():
        policy = AccessPolicy()
        changes_save(policy, fields, action=AuditAction.ACCESSPOLICY_CREATE, actor=actor)
    return policy


def access_policy_update(*, actor, policy: AccessPolicy, **fields: Any) -> AccessPolicy:
    """Change a policy's subject, target or terms; the row names what changed.

    Whoever it named before or names now keeps only what a grant still explains: sessions and leases the change
    took away end (grant_removed, access.services.offboarding).
    """
    _refuse_unknown(fields)
    with transaction.atomic():
        subjects = access_policy_subjects(policy)
        # only_changed: never writes back a stale last_used_at
        changed = changes_save(policy, fields, action=AuditAction.ACCESSPOLICY_UPDATE, actor=actor, only_changed=True)
        if changed:
            access_grants_reconcile(user_ids=subjects | access_policy_subjects(policy), actor=actor)
    return policy


def access_policy_delete(*, actor, policy: AccessPolicy, reconcile: bool = True) -> None:
    """Delete a policy (its requests go with it); the audit row keeps its name, subject and target.

    The people it named lose the sessions and leases no other grant explains (grant_removed); `reconcile=False`
    for a caller that ends their access itself (deleting the user or the group).
    """
    subjects = access_policy_subjects(policy) if reconcile else set()
    with transaction.atomic():
        audit_record(
            action=AuditAction.ACCESSPOLICY_DELETE,
            actor=actor,
            target=policy,
            data={
                "user": policy.user_id,
                "group": policy.group_id,
                "account": policy.account_id,
                "role": policy.role_id,
                "scope_resource": policy.scope_resource_id,
                "scope_databases": policy.scope_databases,
                "scope_collections": policy.scope_collections,
                "scope_levels": policy.scope_levels,
            },
        )
        policy.delete()
        if subjects:
            access_grants_reconcile(user_ids=subjects, actor=actor)
