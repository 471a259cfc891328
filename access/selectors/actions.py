"""Reads of connector actions: a resource's action history, newest first, for the admin and the API."""

from __future__ import annotations

from django.db.models import QuerySet

from access.models import ConnectorAction, Resource


def connector_actions(*, resource: Resource | None = None) -> QuerySet[ConnectorAction]:
    """Connector actions (of one resource when given), newest first, with what lists show joined in."""
    queryset = ConnectorAction.objects.select_related("resource", "account", "actor").order_by("-created_at", "-pk")
    if resource is not None:
        queryset = queryset.filter(resource=resource)
    return queryset
