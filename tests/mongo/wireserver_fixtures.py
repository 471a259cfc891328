"""pytest plugin with the in-repo wire server (``tests.mongo.wireserver``) as fixtures.

- ``wire_server`` (session): a standalone :class:`WireServer` on a free port, in its own thread and
  event loop; ``.uri`` is the root user's connection string (``directConnection=true``).
- ``wire_server_rs`` (session): the same as the primary of replica set ``rs0`` (``replicaSet=rs0``).
- ``wire_replica_set`` (function): a fresh two-member replica set ``rs0`` (``WireReplicaSet``), for tests
  that step its primary down.
- ``wire_faults_cleared``: clears the faults of both servers after a test that set some.

Session servers are shared: tests should use their own database and user names and clear faults.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.mongo.wireserver import WireServer
from tests.mongo.wireserver.replset import WireReplicaSet


@pytest.fixture(scope="session")
def wire_server() -> Iterator[WireServer]:
    """A standalone wire server for the whole session."""
    server = WireServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def wire_server_rs() -> Iterator[WireServer]:
    """A wire server answering as the primary of replica set ``rs0``."""
    server = WireServer(replica_set="rs0").start()
    yield server
    server.stop()


@pytest.fixture
def wire_replica_set() -> Iterator[WireReplicaSet]:
    """Two wire servers forming replica set ``rs0`` (one data store), fresh for each test: it may step down."""
    replica_set = WireReplicaSet("rs0").start()
    yield replica_set
    replica_set.stop()


@pytest.fixture
def wire_faults_cleared(wire_server: WireServer) -> Iterator[WireServer]:
    """``wire_server``, with every fault removed after the test."""
    yield wire_server
    wire_server.clear_faults()
