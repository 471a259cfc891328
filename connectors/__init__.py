"""Adapters that change users and roles on a target: `connector_for(resource)` picks the right one.

`connectors.mongodb.MongoDBConnector` speaks to a self-hosted deployment with pymongo;
`connectors.atlas.AtlasConnector` to an Atlas project through the Atlas Administration API v2. Errors are
`connectors.base.ConnectorError`.
"""

from __future__ import annotations

from connectors.base import ConnectorError


def connector_for(resource, **options):
    """The connector for `resource` (a `access.models.Resource`); use it as a context manager to close it.

    Options (such as `timeout_ms`) are passed to the connector. Raises ConnectorError(kind="config")
    for a resource kind no connector serves.
    """
    kind = getattr(resource, "kind", "mongodb")
    if kind == "mongodb":
        from connectors.mongodb import MongoDBConnector

        return MongoDBConnector(resource, **options)
    if kind == "atlas":
        from connectors.atlas import AtlasConnector

        return AtlasConnector(resource, **options)
    raise ConnectorError(f"No connector for resources of kind {kind!r}", kind="config")


__all__ = ["ConnectorError", "connector_for"]
