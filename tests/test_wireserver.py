"""The in-repo wire server, checked with a real client (pymongo): SCRAM logins, CRUD with cursors,
authorization by role, kills, replica-set discovery, fault injection and robustness against bad input.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pymongo
import pymongo.errors
import pytest

from tests.helpers import unique_name, unique_password
from tests.mongo.wireserver import WireServer

pytestmark = pytest.mark.wireserver

REPO_ROOT = Path(__file__).resolve().parents[1]


def _client(uri: str, **options) -> pymongo.MongoClient:
    options.setdefault("serverSelectionTimeoutMS", 3000)
    options.setdefault("connectTimeoutMS", 3000)
    return pymongo.MongoClient(uri, **options)


@pytest.fixture
def admin(wire_server: WireServer):
    client = _client(wire_server.uri)
    yield client
    client.close()


@pytest.fixture
def make_user(wire_server: WireServer):
    """Create a uniquely named user in ``admin``; returns (name, password)."""

    def make(roles: list, **options) -> tuple[str, str]:
        name, password = unique_name(), unique_password()
        wire_server.create_user(name, password, roles, **options)
        return name, password

    return make


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_pymongo_logs_in_with_each_scram_mechanism(wire_server, make_user, mechanism):
    name, password = make_user(["readAnyDatabase"])
    with _client(wire_server.uri_for(name, password), authMechanism=mechanism) as client:
        status = client.admin.command("connectionStatus")
    assert status["authInfo"]["authenticatedUsers"] == [{"user": name, "db": "admin"}]
    assert status["authInfo"]["authenticatedUserRoles"] == [{"role": "readAnyDatabase", "db": "admin"}]


def test_hello_negotiates_mechanisms_and_advertises_op_msg(admin):
    reply = admin.admin.command("hello", saslSupportedMechs="admin.admin")
    assert reply["saslSupportedMechs"] == ["SCRAM-SHA-1", "SCRAM-SHA-256"]
    assert reply["isWritablePrimary"] is True
    assert reply["maxWireVersion"] >= 17 and reply["maxMessageSizeBytes"] == 48_000_000
    assert "setName" not in reply and "topologyVersion" not in reply


def test_pymongo_logs_in_speculatively_inside_hello(wire_server, make_user):
    name, password = make_user(["read"])
    before = wire_server.command_counts.copy()
    with _client(wire_server.uri_for(name, password), authMechanism="SCRAM-SHA-256") as client:
        client.admin.command("ping")
    # saslStart travelled inside hello's speculativeAuthenticate: only saslContinue was sent on its own
    assert wire_server.command_counts["saslStart"] == before["saslStart"]
    assert wire_server.command_counts["saslContinue"] == before["saslContinue"] + 1


def test_unacknowledged_writes_get_no_reply_and_are_applied(admin):
    coll = admin.get_database("w0_db", write_concern=pymongo.WriteConcern(w=0)).items
    coll.insert_many([{"i": i} for i in range(5)])
    deadline = time.monotonic() + 5
    while admin.w0_db.items.count_documents({}) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert admin.w0_db.items.count_documents({}) == 5


def test_wrong_password_fails_with_authentication_failed(wire_server, make_user):
    name, _ = make_user(["read"])
    client = _client(wire_server.uri_for(name, "not-the-password"))
    with client, pytest.raises(pymongo.errors.OperationFailure) as failure:
        client.admin.command("ping")
    assert failure.value.code == 18


def test_unknown_user_fails_like_a_wrong_password(wire_server):
    client = _client(wire_server.uri_for("nobody", "x"))
    with client, pytest.raises(pymongo.errors.OperationFailure) as failure:
        client.admin.command("ping")
    assert failure.value.code == 18


def test_unauthenticated_client_may_ping_but_not_read(wire_server):
    with _client(wire_server.uri_for()) as client:
        assert client.admin.command("ping")["ok"] == 1
        with pytest.raises(pymongo.errors.OperationFailure) as failure:
            client.test.things.find_one()
    assert failure.value.code == 13
    assert failure.value.details["errmsg"] == "command find requires authentication"


def test_crud_and_cursors_that_span_batches(admin):
    coll = admin.crud_db.items
    coll.drop()
    coll.insert_many([{"i": i, "even": i % 2 == 0} for i in range(350)])
    found = list(coll.find({}, sort=[("i", pymongo.DESCENDING)]))  # 101 + getMore batches
    assert [d["i"] for d in found] == list(range(349, -1, -1))
    small = coll.find({"even": True}, projection={"_id": 0, "i": 1}, batch_size=7, skip=5, limit=40)
    assert [d["i"] for d in small] == list(range(10, 90, 2))
    assert coll.count_documents({"even": False}) == 175
    assert coll.update_many({"i": {"$lt": 10}}, {"$set": {"tag": "low"}}).modified_count == 10
    assert coll.replace_one({"i": 0}, {"i": 0, "replaced": True}).modified_count == 1
    assert coll.update_one({"i": 1000}, {"$set": {"new": 1}}, upsert=True).upserted_id is not None
    assert sorted(coll.distinct("tag")) == ["low"]
    assert coll.delete_many({"i": {"$gte": 300}}).deleted_count == 51
    pipeline = [
        {"$match": {"even": {"$exists": True}}},
        {"$group": {"_id": "$even", "n": {"$sum": 1}}},
        {"$sort": {"_id": 1}},
    ]
    assert list(coll.aggregate(pipeline)) == [{"_id": False, "n": 150}, {"_id": True, "n": 149}]
    assert (
        coll.find_one_and_update({"i": 5}, {"$inc": {"i": 1000}}, return_document=pymongo.ReturnDocument.AFTER)["i"]
        == 1005
    )
    assert "crud_db" in admin.list_database_names()
    assert admin.crud_db.list_collection_names() == ["items"]
    admin.drop_database("crud_db")
    assert "crud_db" not in admin.list_database_names()


def test_users_info_filters_on_custom_data(wire_server, admin):
    wire_server.create_user("tagged_a", "pw", [], db="tags", custom_data={"pam": "lease-1"})
    wire_server.create_user("tagged_b", "pw", [], db="tags", custom_data={"pam": "lease-2"})
    wire_server.create_user("untagged", "pw", [], db="tags")
    reply = admin.admin.command({"usersInfo": {"forAllDBs": True}, "filter": {"customData.pam": {"$exists": True}}})
    # The server is shared by the session: other tests' tagged users live in other databases.
    assert sorted(u["user"] for u in reply["users"] if u["db"] == "tags") == ["tagged_a", "tagged_b"]


def test_killed_cursor_is_gone(admin):
    coll = admin.cursor_db.items
    coll.insert_many([{"i": i} for i in range(30)])
    cursor = coll.find(batch_size=5)
    next(cursor)
    cursor_id = cursor.cursor_id
    reply = admin.cursor_db.command("killCursors", "items", cursors=[cursor_id])
    assert reply["cursorsKilled"] == [cursor_id]
    with pytest.raises(pymongo.errors.OperationFailure) as failure:
        admin.cursor_db.command("getMore", cursor_id, collection="items")
    assert failure.value.code == 43


def test_duplicate_keys_give_write_errors_in_order(admin):
    coll = admin.dup_db.items
    coll.drop()
    coll.create_index("k", unique=True)
    with pytest.raises(pymongo.errors.BulkWriteError) as failure:
        coll.insert_many([{"k": 1}, {"k": 1}, {"k": 2}, {"k": 2}], ordered=False)
    details = failure.value.details
    assert details["nInserted"] == 2
    assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(1, 11000), (3, 11000)]
    with pytest.raises(pymongo.errors.BulkWriteError) as failure:
        coll.insert_many([{"k": 3}, {"k": 3}, {"k": 4}], ordered=True)
    assert failure.value.details["nInserted"] == 1
    assert coll.count_documents({}) == 3


def test_read_user_cannot_insert(wire_server, make_user, admin):
    admin.ro_db.items.insert_one({"seen": True})
    name, password = make_user([{"role": "read", "db": "ro_db"}])
    with _client(wire_server.uri_for(name, password)) as client:
        assert client.ro_db.items.find_one({}, {"_id": 0}) == {"seen": True}
        with pytest.raises(pymongo.errors.OperationFailure) as failure:
            client.ro_db.items.insert_one({"x": 1})
        with pytest.raises(pymongo.errors.OperationFailure) as other_db:
            client.other_db.items.find_one()
    assert failure.value.code == 13
    assert failure.value.details["codeName"] == "Unauthorized"
    assert failure.value.details["errmsg"].startswith('not authorized on ro_db to execute command { insert: "items"')
    assert other_db.value.code == 13


def test_role_changes_apply_to_a_logged_in_user(wire_server, make_user, admin):
    name, password = make_user([{"role": "read", "db": "grant_db"}])
    with _client(wire_server.uri_for(name, password)) as client:
        with pytest.raises(pymongo.errors.OperationFailure):
            client.grant_db.items.insert_one({"x": 1})
        admin.admin.command("grantRolesToUser", name, roles=[{"role": "readWrite", "db": "grant_db"}])
        client.grant_db.items.insert_one({"x": 1})


def _victim(wire_server, name, password):
    # No retries: the test wants to see the killed connection's error, not a silent reconnect.
    return _client(wire_server.uri_for(name, password), retryReads=False, retryWrites=False)


def test_kill_all_sessions_closes_that_users_connections(wire_server, make_user, admin):
    name, password = make_user(["readWriteAnyDatabase"])
    bystander_name, bystander_password = make_user(["readWriteAnyDatabase"])
    with (
        _victim(wire_server, name, password) as victim,
        _victim(wire_server, bystander_name, bystander_password) as bystander,
    ):
        victim.kill_db.items.find_one()
        bystander.kill_db.items.find_one()
        admin.admin.command("killAllSessions", [{"user": name, "db": "admin"}])
        with pytest.raises(pymongo.errors.AutoReconnect):
            victim.kill_db.items.find_one()
        bystander.kill_db.items.find_one()  # other users keep their connections
        victim.kill_db.items.find_one()  # a fresh connection logs in again


def test_kill_op_found_through_current_op_closes_the_connection(wire_server, make_user, admin):
    name, password = make_user(["readWriteAnyDatabase"])
    with _victim(wire_server, name, password) as victim:
        victim.killop_db.items.insert_one({"x": 1})
        ops = admin.admin.command({"currentOp": 1, "$all": True, "effectiveUsers.user": name})["inprog"]
        assert len(ops) == 1 and ops[0]["effectiveUsers"] == [{"user": name, "db": "admin"}]
        assert ops[0]["client"].startswith("127.0.0.1:") and ops[0]["active"] is False
        admin.admin.command("killOp", op=ops[0]["opid"])
        with pytest.raises(pymongo.errors.AutoReconnect):
            victim.killop_db.items.find_one()


def test_kill_op_ends_a_slow_operation_in_flight(wire_faults_cleared, make_user, admin):
    name, password = make_user(["readAnyDatabase"])
    outcome: list[BaseException | None] = []
    wire_faults_cleared.delay(5000, command="count")

    def slow_count() -> None:
        with _victim(wire_faults_cleared, name, password) as client:
            try:
                client.slow_db.command("count", "items")
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=slow_count)
    worker.start()
    ops: list = []
    while not ops and time.monotonic() - started < 4:
        ops = admin.admin.command({"currentOp": 1, "command.count": "items"})["inprog"]
    assert ops and ops[0]["active"] is True and ops[0]["effectiveUsers"][0]["user"] == name
    admin.admin.command("killOp", op=ops[0]["opid"])
    worker.join(5)
    assert isinstance(outcome[0], pymongo.errors.AutoReconnect)
    assert time.monotonic() - started < 4


def test_current_op_needs_cluster_monitor(wire_server, make_user):
    name, password = make_user(["readWriteAnyDatabase"])
    with _client(wire_server.uri_for(name, password)) as client:
        with pytest.raises(pymongo.errors.OperationFailure) as failure:
            client.admin.command("currentOp")
        own = client.admin.command({"currentOp": 1, "$ownOps": True})["inprog"]
    assert failure.value.code == 13
    assert [op["effectiveUsers"] for op in own] == [[{"user": name, "db": "admin"}]]


@pytest.mark.parametrize(("source", "allowed"), [("10.0.0.0/8", False), ("127.0.0.0/8", True)])
def test_client_source_restriction_applies_at_login(wire_server, make_user, source, allowed):
    name, password = make_user(["read"], restrictions=[{"clientSource": [source]}])
    with _client(wire_server.uri_for(name, password)) as client:
        if allowed:
            assert client.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"]
        else:
            with pytest.raises(pymongo.errors.OperationFailure) as failure:
                client.admin.command("ping")
            assert failure.value.code == 18


def test_replica_set_mode_is_discovered_as_a_primary(wire_server_rs):
    assert "replicaSet=rs0" in wire_server_rs.uri
    with _client(wire_server_rs.uri) as client:
        client.rs_db.items.insert_one({"a": 1})
        assert client.rs_db.items.find_one({}, {"_id": 0}) == {"a": 1}
        assert client.topology_description.topology_type_name == "ReplicaSetWithPrimary"
        assert client.primary == ("127.0.0.1", wire_server_rs.port)
        hello = client.admin.command("hello")
    assert hello["setName"] == "rs0" and hello["hosts"] == [wire_server_rs.host_port]


# -- fault injection ------------------------------------------------------------------------------
def test_failed_command_fault_fails_n_times(wire_faults_cleared, admin):
    wire_faults_cleared.fail_command("insert", 96, "injected", times=1)
    with pytest.raises(pymongo.errors.OperationFailure) as failure:
        admin.fault_db.items.insert_one({"x": 1})
    assert failure.value.code == 96 and failure.value.details["codeName"] == "OperationFailed"
    admin.fault_db.items.insert_one({"x": 2})


def test_faults_can_be_set_with_the_admin_command(wire_faults_cleared, admin):
    admin.admin.command({"wireserverFault": "failCommand", "command": "count", "code": 2, "errmsg": "boom"})
    with pytest.raises(pymongo.errors.OperationFailure) as failure:
        admin.fault_db.command("count", "items")
    assert failure.value.details["errmsg"] == "boom"
    status = admin.admin.command("wireserverFault", "clear")["faults"]
    assert status["failCommands"] == {}
    admin.fault_db.command("count", "items")


def test_fault_command_is_root_only(wire_server, make_user):
    name, password = make_user(["readWriteAnyDatabase", "clusterMonitor"])
    client = _client(wire_server.uri_for(name, password))
    with client, pytest.raises(pymongo.errors.OperationFailure) as failure:
        client.admin.command("wireserverFault", "status")
    assert failure.value.code == 13


def test_delay_fault_slows_replies(wire_faults_cleared, admin):
    admin.admin.command("ping")
    wire_faults_cleared.delay(300, command="ping")
    started = time.monotonic()
    admin.admin.command("ping")
    assert time.monotonic() - started >= 0.3


def test_close_after_fault_drops_the_connection(wire_faults_cleared, make_user):
    name, password = make_user(["readWriteAnyDatabase"])
    with _victim(wire_faults_cleared, name, password) as client:
        client.admin.command("ping")  # the login does not count: this is command 1
        wire_faults_cleared.close_after(2)
        client.admin.command("ping")
        with pytest.raises(pymongo.errors.AutoReconnect):
            client.admin.command("ping")


@pytest.mark.parametrize("mode", ["close", "stop"])
def test_refused_connections_fail_server_selection(wire_faults_cleared, make_user, mode):
    name, password = make_user(["read"])
    wire_faults_cleared.refuse_connections(mode)
    client = _client(wire_faults_cleared.uri_for(name, password), serverSelectionTimeoutMS=500)
    with client, pytest.raises(pymongo.errors.ServerSelectionTimeoutError):
        client.admin.command("ping")
    wire_faults_cleared.refuse_connections("off")
    with _client(wire_faults_cleared.uri_for(name, password)) as client:
        assert client.admin.command("ping")["ok"] == 1


# -- robustness -----------------------------------------------------------------------------------
def _send_and_wait_for_close(port: int, data: bytes, *, half_close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_bad_messages_close_only_their_connection_with_a_logged_reason(wire_server, admin, caplog):
    admin.admin.command("ping")
    oversized = struct.pack("<iiii", 60_000_000, 1, 0, 2013)
    garbage = struct.pack("<iiii", 40, 1, 0, 2013) + b"\xff" * 24
    truncated = struct.pack("<iiii", 100, 1, 0, 2013) + b"\x00" * 10
    with caplog.at_level(logging.INFO, logger="tests.mongo.wireserver"):
        for data in (oversized, garbage, truncated):
            assert _send_and_wait_for_close(wire_server.port, data) == b""
            assert admin.admin.command("ping")["ok"] == 1
    reasons = [r.getMessage() for r in caplog.records if "closed: bad message" in r.getMessage()]
    assert len(reasons) == 3
    assert "exceeds the limit" in reasons[0] and "after 26 of 100 bytes" in reasons[2]


def _exchange(sock: socket.socket, request: bytes):
    from gatewayproxy.wire import codec as wire

    sock.sendall(request)
    header = sock.recv(16, socket.MSG_WAITALL)
    length = struct.unpack("<i", header[:4])[0]
    return wire.parse_message(header + sock.recv(length - 16, socket.MSG_WAITALL))


def test_legacy_is_master_gets_an_op_reply_and_other_op_query_commands_are_refused(wire_server):
    from gatewayproxy.wire import codec as wire

    with socket.create_connection(("127.0.0.1", wire_server.port), timeout=5) as sock:
        hello = _exchange(sock, wire.build_op_query("admin.$cmd", {"isMaster": 1, "client": {}}, request_id=5))
        assert isinstance(hello, wire.OpReply) and hello.response_to == 5
        assert hello.documents[0]["ismaster"] is True and hello.documents[0]["maxWireVersion"] == 21
        refused = _exchange(sock, wire.build_op_query("admin.$cmd", {"ping": 1}, request_id=7))
        assert refused.response_to == 7 and refused.documents[0]["code"] == 352
        again = _exchange(sock, wire.build_op_msg({"hello": 1, "client": {}, "$db": "admin"}, request_id=9))
        assert isinstance(again, wire.OpMsg) and again.response_to == 9
        assert again.body["code"] == 186  # client metadata may be sent once per connection


def test_command_line_prints_a_working_uri():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.mongo", "wireserver", "--replica-set", "cli0", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        line = proc.stdout.readline().strip()
        match = re.fullmatch(
            r"MONGODB_URI=(mongodb://admin:\w+@127\.0\.0\.1:\d+/\?authSource=admin"
            r"&replicaSet=cli0)",
            line,
        )
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        with _client(match.group(1)) as client:
            client.cli_db.items.insert_one({"ok": True})
            assert client.cli_db.items.count_documents({}) == 1
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0
