"""A replica-set upstream whose primary steps down, directly and through the gateway, with pymongo.

The wire server's two-member mode (``tests.mongo.wireserver.replset``) is checked first against pymongo
directly: a ``replicaSet=rs0`` client follows ``replSetStepDown`` to the new primary, a retryable write that
reaches the old primary is refused with NotWritablePrimary and retried by the driver on the new one, and a
primary read on the old primary is refused with NotPrimaryNoSecondaryOk. Then through a real ``runproxy``:
a client keeps working across the step-down after its driver's retry, a retryable insert lands exactly
once, a retryable read works, the gateway's upstream connections move to the new primary (as the members
themselves count them), and the client's topology stays the gateway alone.
"""

from __future__ import annotations

import pytest
from pymongo import MongoClient, monitoring
from pymongo.errors import NotPrimaryError

from tests.gateway_fixtures import wait_for
from tests.helpers import unique_name as _name
from tests.mongo.wireserver.replset import WireReplicaSet

pytestmark = [pytest.mark.wireserver]


class CommandEvents(monitoring.CommandListener):
    """What pymongo sent and how each command ended: ``(name, address, code or None)``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple, int | None]] = []
        self.failures: list[dict] = []

    def started(self, event) -> None:
        pass

    def succeeded(self, event) -> None:
        self.events.append((event.command_name, event.connection_id, None))

    def failed(self, event) -> None:
        self.failures.append(dict(event.failure))
        code = event.failure.get("code")
        self.events.append((event.command_name, event.connection_id, code))

    def of(self, name: str) -> list[tuple[tuple, int | None]]:
        return [(address, code) for command, address, code in self.events if command == name]


def _address(member) -> tuple[str, int]:
    return (member.host, member.port)


# -- the wire server's two-member mode, directly ----------------------------------------------------------


def test_a_replica_set_client_follows_the_step_down_to_the_new_primary(wire_replica_set: WireReplicaSet):
    rs = wire_replica_set
    first, second = rs.members
    with MongoClient(rs.uri, serverSelectionTimeoutMS=5000) as client:
        items = client[_name("rs")].items
        items.insert_one({"_id": 1})
        assert client.primary == _address(first)
        assert client.nodes == {_address(first), _address(second)}
        hello = client.admin.command("hello")
        assert hello["setName"] == "rs0" and hello["isWritablePrimary"] and "topologyVersion" in hello

        assert client.admin.command("replSetStepDown", 60)["ok"] == 1
        assert rs.primary is second
        assert wait_for(lambda: client.primary == _address(second), timeout=3)  # the streaming monitor hears it
        items.insert_one({"_id": 2})
        assert sorted(doc["_id"] for doc in items.find()) == [1, 2]
        status = client.admin.command("replSetGetStatus")
        assert [m["stateStr"] for m in status["members"]] == ["SECONDARY", "PRIMARY"]

    with MongoClient(first.uri.replace("replicaSet=rs0", "directConnection=true")) as old:
        hello = old.admin.command("hello")
        assert hello["secondary"] and not hello["isWritablePrimary"] and hello["primary"] == second.host_port
        with pytest.raises(NotPrimaryError) as refused:
            old.admin.command("replSetStepDown", 60)
        assert refused.value.details["code"] == 10107


def test_a_retryable_write_and_read_that_reach_the_old_primary_are_retried_on_the_new_one(
    wire_replica_set: WireReplicaSet,
):
    rs = wire_replica_set
    first, second = rs.members
    listener = CommandEvents()
    # Polling every minute: the driver learns of the step-down only from the old primary's refusal.
    with MongoClient(
        rs.uri, serverMonitoringMode="poll", heartbeatFrequencyMS=60_000, event_listeners=[listener]
    ) as client:
        items = client[_name("retry")].items
        items.insert_one({"_id": 1})
        rs.step_down()
        items.insert_one({"_id": 2})
        inserts = listener.of("insert")
        assert inserts[-2:] == [(_address(first), 10107), (_address(second), None)]
        assert listener.failures[-1]["errorLabels"] == ["RetryableWriteError"]  # the write carried a txnNumber
        assert sorted(doc["_id"] for doc in items.find()) == [1, 2]

        rs.step_down()  # back to the first member; the driver still reads from the second
        listener.events.clear()
        assert items.find_one({"_id": 2}) == {"_id": 2}
        assert listener.of("find") == [(_address(second), 13435), (_address(first), None)]


def test_the_old_primary_refuses_writes_and_primary_reads_as_mongod_does(wire_replica_set: WireReplicaSet):
    rs = wire_replica_set
    first = rs.members[0]
    rs.step_down()
    with MongoClient(first.uri.replace("replicaSet=rs0", "directConnection=true")) as old:
        db = old[_name("old")]
        with pytest.raises(NotPrimaryError) as write:
            db.items.insert_one({"_id": 1})
        assert write.value.details["code"] == 10107 and write.value.details["codeName"] == "NotWritablePrimary"
        assert "errorLabels" not in write.value.details  # no txnNumber on a direct connection: not retryable
        assert db.command("ping")["ok"] == 1
        assert db.items.find_one() is None  # a direct connection reads with primaryPreferred: allowed
