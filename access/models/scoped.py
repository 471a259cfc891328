"""Scoped just-in-time access: the permission levels a scope envelope offers, beyond the built-in ones.

A policy may grant a scope envelope on a resource (databases, optional collections, permission levels; see
AccessPolicy.scope_*). A requester picks inside it; the grant is a database user and a role made for that
request. A level is a named set of MongoDB privilege actions: `read`, `readWrite` and `dbAdmin` are built in
(access.mongodb_actions.BUILTIN_LEVELS); administrators define others here, validated against the manual's
list of privilege actions (access.mongodb_actions.PRIVILEGE_ACTIONS).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from access.mongodb_actions import BUILTIN_LEVELS, ESCALATING_ACTIONS, unknown_actions


class PermissionLevel(models.Model):
    """A custom permission level: a name and the MongoDB privilege actions it grants on the chosen resources."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=200, blank=True)
    actions = models.JSONField(
        default=list, help_text='MongoDB privilege actions, e.g. ["find", "listIndexes", "collStats"].'
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        if self.name in BUILTIN_LEVELS:
            errors["name"] = f"{self.name} is a built-in level: choose another name."
        actions = self.actions
        if not isinstance(actions, list) or not actions or not all(isinstance(a, str) and a for a in actions):
            errors["actions"] = "List at least one MongoDB privilege action, as text."
        else:
            unknown = unknown_actions(actions)
            if unknown:
                errors["actions"] = (
                    f"Unknown MongoDB privilege action{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                    "(see the manual's Privilege Actions)."
                )
            elif escalating := sorted(set(actions) & ESCALATING_ACTIONS):
                errors["actions"] = (
                    f"{', '.join(escalating)} would let a scoped user manage users or roles: a level may not grant it."
                )
            elif len(set(actions)) != len(actions):
                errors["actions"] = "Name each action once."
        if errors:
            raise ValidationError(errors)

    @property
    def action_set(self) -> frozenset[str]:
        return frozenset(self.actions or [])
