"""Fixtures for the Atlas tests: `atlas_api` (a running local Admin API server) and `atlas_resource` pointing at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.atlas.server import AtlasApiServer


@pytest.fixture
def atlas_api() -> Iterator[AtlasApiServer]:
    """A fresh Atlas Admin API server on 127.0.0.1: `.base_url`, `.state.group_id/public_key/private_key`.

    Fault knobs: `.fail_next(...)`, `.state.pending_polls`, `.state.clusters`, `.expire_nonces()`.
    """
    server = AtlasApiServer(pending_polls=2).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def atlas_resource(db, atlas_api):
    """An Atlas Resource whose group id, key pair and base URL are the local server's."""
    from access.models import Resource

    return Resource.objects.create(
        name="atlas-proj",
        kind="atlas",
        atlas_group_id=atlas_api.state.group_id,
        atlas_public_key=atlas_api.state.public_key,
        atlas_private_key=atlas_api.state.private_key,
        atlas_base_url=atlas_api.base_url,
        tls=True,
    )


@pytest.fixture
def fast_atlas(settings):
    """Short waits for the connector (poll every 50 ms, back off from 50 ms) so the suite stays quick."""
    settings.PAM_ATLAS_POLL_INTERVAL = 0.05
    settings.PAM_ATLAS_BACKOFF_BASE = 0.05
    settings.PAM_ATLAS_APPLY_TIMEOUT = 10.0
    settings.PAM_ATLAS_TIMEOUT = 5.0
    return settings
