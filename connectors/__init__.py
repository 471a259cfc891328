"""Adapters that change users and roles on a target: `connector_for(resource)` picks the right one.

`connectors.mongodb.MongoDBConnector` speaks to a self-hosted deployment with pymongo; the Atlas
connector (Atlas Admin API) comes later. Errors are `connectors.base.ConnectorError`.
"""

from __future__ import annotations

from connectors.base import ConnectorError


def connector_for(resource, **options):
    """The connector for `resource` (a `access.models.Resource`); use it as a context manager to close it.

    Options (such as `timeout_ms`) are passed to the connector. Raises ConnectorError(kind="config")
    for a resource kind no connector serves yet.
    """
    kind = getattr(resource, "kind", "mongodb")
    if kind == "mongodb":
        from connectors.mongodb import MongoDBConnector

        return MongoDBConnector(resource, **options)
    if kind == "atlas":
        try:
            from connectors.atlas import AtlasConnector
        except ImportError:
            raise ConnectorError("Atlas connector not available yet", kind="config") from None
        return AtlasConnector(resource, **options)
    raise ConnectorError(f"No connector for resources of kind {kind!r}", kind="config")


__all__ = ["ConnectorError", "connector_for"]
