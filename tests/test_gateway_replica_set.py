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

from tests.gateway_fixtures import session_on, wait_for
from tests.helpers import unique_name as _name
from tests.mongo.wireserver.replset import WireReplicaSet

pytestmark = [pytest.mark.wireserver]


class CommandEvents(monitoring.CommandListener):
    """What pymongo sent and how each command ended: ``(name, address, code or None)``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple, int | None]] = []
        self.failures: list[dict] = []
        self.started_commands: list[dict] = []

    def started(self, event) -> None:
        self.started_commands.append(dict(event.command))

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


# -- through the gateway ------------------------------------------------------------------------------------


def _account_on_set(rs: WireReplicaSet, **resource_fields):
    """An Account for a new root user of the set, on a Resource whose URI names both members."""
    from tests.factories import AccountFactory, ResourceFactory
    from tests.helpers import unique_password
    from tests.secret_scan import remember

    username, password = _name("acct"), unique_password()
    remember(password)
    rs.create_user(username, password, [{"role": "root", "db": "admin"}])
    resource = ResourceFactory(uri=rs.uri_for(), tls=False, **resource_fields)
    return AccountFactory(resource=resource, username=username, password=password)


def _upstreams_of(rs: WireReplicaSet, username: str) -> list[int]:
    """How many logged-in connections of ``username`` each member holds (the gateway's upstream connections)."""
    return [sum((username, "admin") in c.users for c in list(m.connections.values())) for m in rs.members]


def _gateway_client(gateway_proxy, session, secret, listener) -> MongoClient:
    """A pymongo client through the gateway, once it sees the gateway as a mongos.

    Before the first login the gateway cannot tell a driver's monitor which deployment it fronts and answers as a
    standalone (no retryable writes); the monitor's next hello, after the login, sees the mongos.
    """
    client = MongoClient(
        gateway_proxy.uri(session.username, secret),
        serverSelectionTimeoutMS=5000,
        heartbeatFrequencyMS=500,
        event_listeners=[listener],
    )
    client.admin.command("ping")
    kinds = lambda: [s.server_type_name for s in client.topology_description.server_descriptions().values()]  # noqa: E731
    assert wait_for(lambda: kinds() == ["Mongos"], timeout=3), kinds()
    return client


@pytest.mark.django_db(transaction=True)
def test_a_client_through_the_gateway_keeps_working_across_a_step_down(wire_replica_set, gateway, gateway_proxy):
    rs = wire_replica_set
    account = _account_on_set(rs)
    session, secret = session_on(gateway, account)
    listener = CommandEvents()
    with _gateway_client(gateway_proxy, session, secret, listener) as client:
        items = client[_name("gw")].items
        items.insert_one({"_id": 1})
        assert _upstreams_of(rs, account.username) == [1, 0]

        rs.step_down()
        items.insert_one({"_id": 2})  # refused by the old primary, retried by the driver: lands once
        assert [code for _address, code in listener.of("insert")][-2:] == [10107, None]
        assert wait_for(lambda: _upstreams_of(rs, account.username) == [0, 1], timeout=3)
        assert sorted(doc["_id"] for doc in items.find()) == [1, 2]
        assert rs.members[1].command_counts["insert"] == 1

        rs.step_down()
        listener.events.clear()
        assert items.find_one({"_id": 2}) == {"_id": 2}  # a retryable read across the step-down
        assert [code for _address, code in listener.of("find")] == [13435, None]
        assert wait_for(lambda: _upstreams_of(rs, account.username) == [1, 0], timeout=3)

        description = client.topology_description
        assert description.topology_type_name == "Single"
        assert list(description.server_descriptions()) == [("127.0.0.1", gateway_proxy.port)]
        assert client.nodes == {("127.0.0.1", gateway_proxy.port)}


@pytest.mark.django_db(transaction=True)
def test_an_old_primary_that_closes_its_connections_sends_the_retry_to_the_new_one(
    wire_replica_set, gateway, gateway_proxy
):
    rs = wire_replica_set
    account = _account_on_set(rs)
    session, secret = session_on(gateway, account)
    listener = CommandEvents()
    with _gateway_client(gateway_proxy, session, secret, listener) as client:
        items = client[_name("gwclose")].items
        items.insert_one({"_id": 1})
        rs.step_down()
        rs.members[0].kill_connections()  # as mongod before 4.2 did on a step-down
        items.insert_one({"_id": 2})  # the driver sees the gateway close, retries on a new connection
        assert sorted(doc["_id"] for doc in items.find()) == [1, 2]
        assert wait_for(lambda: (counts := _upstreams_of(rs, account.username))[0] == 0 and counts[1] >= 1, timeout=3)
        assert client.nodes == {("127.0.0.1", gateway_proxy.port)}


@pytest.mark.django_db(transaction=True)
def test_secondary_reads_go_to_a_secondary_only_when_the_resource_allows_them(wire_replica_set, gateway, gateway_proxy):
    from pymongo.read_preferences import ReadPreference

    rs = wire_replica_set
    primary, secondary = rs.members
    allowed = _account_on_set(rs, allow_secondary_reads=True)
    refused = _account_on_set(rs)
    for account, expected in ((refused, primary), (allowed, secondary)):
        session, secret = session_on(gateway, account)
        with _gateway_client(gateway_proxy, session, secret, CommandEvents()) as client:
            database = client[_name("sec")]
            database.items.insert_many([{"_id": i} for i in range(5)])
            for member in rs.members:
                member.command_counts.clear()
            for mode in (ReadPreference.SECONDARY, ReadPreference.SECONDARY_PREFERRED):
                items = database.get_collection("items", read_preference=mode)
                assert [doc["_id"] for doc in items.find().sort("_id", 1).batch_size(2)] == [0, 1, 2, 3, 4]
                assert items.count_documents({}) == 5
            assert database.items.find_one({"_id": 4}) == {"_id": 4}  # primary reads stay on the primary
            other = secondary if expected is primary else primary
            # Two finds (each with two getMores) and two counts went where the resource says; find_one to the primary.
            assert expected.command_counts["getMore"] == 4 and expected.command_counts["aggregate"] == 2
            assert primary.command_counts["find"] == (1 if expected is secondary else 3)
            assert secondary.command_counts["find"] == (2 if expected is secondary else 0)
            other = primary if expected is secondary else secondary
            assert other.command_counts["getMore"] == 0 and other.command_counts["aggregate"] == 0
            assert client.nodes == {("127.0.0.1", gateway_proxy.port)}

            if account is allowed:  # after a step-down, secondary reads go to the member that is secondary now
                rs.step_down()
                database.items.insert_one({"_id": 9})  # refused by the old primary, retried: the upstreams move
                for member in rs.members:
                    member.command_counts.clear()
                items = database.get_collection("items", read_preference=ReadPreference.SECONDARY)
                assert items.find_one({"_id": 9}) == {"_id": 9}
                assert (primary.command_counts["find"], secondary.command_counts["find"]) == (1, 0)


def test_the_sessions_other_connections_follow_the_primary_before_their_next_command(
    wire_replica_set, tmp_path, transactional_db
):
    from access.models import Gateway
    from tests.gateway_fixtures import GatewayProcess

    rs = wire_replica_set
    # One worker process: connections of a session learn a move from each other within a process.
    process = GatewayProcess(tmp_path / "runproxy.log", name=_name("rs-one"), workers=1).start()
    try:
        account = _account_on_set(rs)
        session, secret = session_on(Gateway.objects.get(pk=process.gateway_id), account)
        first_events, second_events = CommandEvents(), CommandEvents()
        with (
            _gateway_client(process, session, secret, first_events) as first,
            _gateway_client(process, session, secret, second_events) as second,
        ):
            name = _name("siblings")
            first[name].items.insert_many([{"_id": 1}, {"_id": 2}])
            cursor = second[name].items.find().sort("_id", 1).batch_size(1)  # on the old primary, one document read
            assert next(cursor) == {"_id": 1}
            assert _upstreams_of(rs, account.username) == [2, 0]

            rs.step_down()
            first[name].items.insert_one({"_id": 3})  # refused, retried: this connection moves, the move is counted
            assert [code for _address, code in first_events.of("insert")][-2:] == [10107, None]
            assert list(cursor) == [{"_id": 2}]  # its getMore still reaches the member holding the cursor
            assert second[name].items.count_documents({}) == 3  # moved before it was sent: no error, no retry
            assert [code for _address, code in second_events.of("aggregate")] == [None]
            assert wait_for(lambda: _upstreams_of(rs, account.username) == [0, 2], timeout=3)  # the old ones closed
    finally:
        process.stop()
