"""The gateway (a real ``manage.py runproxy`` subprocess) in front of the in-repo wire server, with pymongo.

What a user observes through the gateway: their driver logs in with the session's secret and stays on the
gateway address; CRUD, cursors across batches, bulk writes, aggregation, a 15 MB document and unacknowledged
writes work; the session's policy refuses what it must, naming the command; ending or killing the session
closes its connections within 2 s; the command log never holds the secret or, unless full logging is on,
the inserted values; the gateway survives bad messages and upstream restarts.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from pymongo import InsertOne, MongoClient, UpdateOne
from pymongo.errors import OperationFailure, PyMongoError
from pymongo.write_concern import WriteConcern

from access.models import Gateway, Session, SessionCommand
from access.models.sessions import SessionEndReason, SessionState
from access.services.sessions import session_end
from gatewayproxy.wire import codec as wire
from tests.gateway_fixtures import GatewayProcess, account_on, session_on, wait_for
from tests.helpers import unique_name as _name
from tests.mongo.wireserver import WireServer

pytestmark = [pytest.mark.wireserver, pytest.mark.django_db(transaction=True)]


def client_for(uri: str, **options) -> MongoClient:
    return MongoClient(uri, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000, **options)


def commands_of(session) -> list[SessionCommand]:
    return list(SessionCommand.objects.filter(session=session).order_by("at", "id"))


def test_pymongo_crud_stays_on_the_gateway_in_front_of_a_standalone(wire_server, gateway_session, gateway_proxy):
    session, _secret, uri = gateway_session(account_on(wire_server))
    with client_for(uri) as client:
        items = client[_name("crud")].items
        inserted = items.insert_one({"name": "a", "qty": 1}).inserted_id
        items.insert_many([{"name": "b", "qty": 2}, {"name": "c", "qty": 3}])
        assert items.update_one({"name": "a"}, {"$inc": {"qty": 10}}).modified_count == 1
        assert items.find_one({"_id": inserted})["qty"] == 11
        assert items.delete_one({"name": "b"}).deleted_count == 1
        assert items.count_documents({}) == 2
        assert sorted(doc["name"] for doc in items.find({}, {"_id": 0})) == ["a", "c"]

        description = client.topology_description
        servers = description.server_descriptions()
        assert description.topology_type_name == "Single"
        assert list(servers) == [("127.0.0.1", gateway_proxy.port)]
        assert next(iter(servers.values())).server_type_name == "Standalone"

    assert wait_for(lambda: Session.objects.get(pk=session.pk).first_connected_at is not None)
    logged = wait_for(lambda: {row.command for row in commands_of(session)} >= {"insert", "update", "find", "delete"})
    assert logged


def test_the_replica_set_primary_is_presented_as_a_mongos_and_the_driver_stays(
    wire_server_rs, gateway_session, gateway_proxy
):
    _session, _secret, uri = gateway_session(account_on(wire_server_rs))
    with client_for(uri) as client:
        items = client[_name("rs")].items
        items.insert_many([{"n": n} for n in range(5)])
        assert items.count_documents({"n": {"$gte": 2}}) == 3
        hello = client.admin.command("hello")
        assert hello["msg"] == "isdbgrid"
        assert not {"hosts", "setName", "me", "topologyVersion", "compression"} & set(hello)
        description = client.topology_description
        assert list(description.server_descriptions()) == [("127.0.0.1", gateway_proxy.port)]
        assert description.topology_type_name == "Single"


def test_getmore_across_batches_bulk_writes_and_aggregation(wire_server, gateway_session):
    session, _secret, uri = gateway_session(account_on(wire_server))
    with client_for(uri) as client:
        items = client[_name("batch")].items
        items.insert_many([{"n": n, "group": n % 3} for n in range(250)])
        assert [doc["n"] for doc in items.find({}, batch_size=40).sort("n", 1)] == list(range(250))

        result = items.bulk_write(
            [InsertOne({"n": 1000, "group": 9}), UpdateOne({"n": 0}, {"$set": {"group": 9}})], ordered=True
        )
        assert (result.inserted_count, result.modified_count) == (1, 1)

        groups = list(items.aggregate([{"$group": {"_id": "$group", "count": {"$sum": 1}}}, {"$sort": {"_id": 1}}]))
        assert [(g["_id"], g["count"]) for g in groups] == [(0, 83), (1, 83), (2, 83), (9, 2)]

    def getmores():
        rows = [row for row in commands_of(session) if row.command == "getMore"]
        return rows if sum(row.n or 0 for row in rows) >= 210 else None

    rows = wait_for(getmores)
    assert rows and all(row.ok for row in rows)  # 250 documents: 40 in the find, 210 in getMores


def test_a_15_mb_document_and_unacknowledged_writes(wire_server, gateway_session):
    _session, _secret, uri = gateway_session(account_on(wire_server))
    big = "x" * (15 * 1024 * 1024)
    with client_for(uri) as client:
        database = client[_name("big")]
        database.docs.insert_one({"_id": "big", "payload": big})
        assert len(database.docs.find_one({"_id": "big"})["payload"]) == len(big)

        fire_and_forget = database.get_collection("fast", write_concern=WriteConcern(w=0))
        for n in range(20):
            fire_and_forget.insert_one({"n": n})
        assert wait_for(lambda: database.fast.count_documents({}) == 20)


def test_a_wrong_secret_fails_with_authentication_failed(wire_server, gateway_session, gateway_proxy):
    session, secret, _uri = gateway_session(account_on(wire_server))
    wrong = "not-" + secret[4:]
    with client_for(gateway_proxy.uri(session.username, wrong)) as client, pytest.raises(OperationFailure) as failure:
        client.admin.command("ping")
    assert failure.value.code == 18
    with client_for(gateway_proxy.uri("s-nobody00", secret)) as client, pytest.raises(OperationFailure) as failure:
        client.admin.command("ping")
    assert failure.value.code == 18
    assert secret not in gateway_proxy.log_text() and wrong not in gateway_proxy.log_text()


def test_an_expired_session_cannot_log_in(wire_server, gateway_session):
    session, _secret, uri = gateway_session(account_on(wire_server), ttl=timedelta(seconds=60))
    Session.objects.filter(pk=session.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    time.sleep(2.1)  # past the gateway's login cache
    with client_for(uri) as client, pytest.raises(OperationFailure) as failure:
        client.admin.command("ping")
    assert failure.value.code == 18


def test_a_session_reaching_its_expiry_loses_its_connections(wire_server, gateway_session):
    session, _secret, uri = gateway_session(account_on(wire_server), ttl=timedelta(seconds=3))
    with client_for(uri, retryReads=False) as client:
        assert client.admin.command("ping")["ok"] == 1
        time.sleep(3.5)
        with pytest.raises(PyMongoError):
            client.app.items.find_one()
    ended = wait_for(lambda: Session.objects.get(pk=session.pk).state == SessionState.ENDED, timeout=5)
    assert ended and Session.objects.get(pk=session.pk).end_reason == SessionEndReason.EXPIRED


def test_unauthenticated_commands_are_refused_with_code_13(gateway_proxy):
    with MongoClient(f"mongodb://{gateway_proxy.address}/?directConnection=true", serverSelectionTimeoutMS=5000) as c:
        assert c.admin.command("ping")["ok"] == 1
        with pytest.raises(OperationFailure) as failure:
            c.app.items.find_one()
    assert failure.value.code == 13


def test_killing_the_session_closes_an_open_cursor_within_two_seconds(wire_server, gateway_session):
    session, _secret, uri = gateway_session(account_on(wire_server))
    with client_for(uri, retryReads=False) as client:
        items = client[_name("kill")].items
        items.insert_many([{"n": n} for n in range(100)])
        cursor = items.find({}, batch_size=10)
        next(cursor)
        session_end(session=Session.objects.get(pk=session.pk), reason=SessionEndReason.KILLED)
        killed_at = time.monotonic()
        with pytest.raises(PyMongoError):
            while time.monotonic() - killed_at < 5:
                for _doc in cursor:  # drains the batch, then the next getMore must fail
                    time.sleep(0.01)
                cursor = items.find({}, batch_size=10)
        assert time.monotonic() - killed_at < 2.5
        with pytest.raises(PyMongoError):
            items.find_one()
    assert Session.objects.get(pk=session.pk).end_reason == SessionEndReason.KILLED


def test_a_read_only_session_reads_but_refuses_writes_naming_the_command(wire_server, gateway_session):
    _writable, _secret, writable_uri = gateway_session(account_on(wire_server))
    name = _name("ro")
    with client_for(writable_uri) as client:
        client[name].items.insert_one({"n": 1})
    session, _secret, uri = gateway_session(account_on(wire_server), read_only=True)
    with client_for(uri) as client:
        items = client[name].items
        assert items.find_one({}, {"_id": 0}) == {"n": 1}
        assert items.count_documents({}) == 1
        with pytest.raises(OperationFailure) as failure:
            items.insert_one({"n": 2})
        assert failure.value.code == 13
        assert "insert is not allowed in a read-only session" in str(failure.value)
        with pytest.raises(OperationFailure, match="aggregate with \\$out"):
            list(items.aggregate([{"$match": {}}, {"$out": "copy"}]))
        with pytest.raises(OperationFailure, match="createIndexes is not allowed"):
            items.create_index("n")
        assert items.count_documents({}) == 1

    def refused_rows():
        rows = [row for row in commands_of(session) if row.refused]
        return rows if {row.command for row in rows} >= {"insert", "createIndexes"} else None

    refused = wait_for(refused_rows)
    assert refused
    assert all(row.error_code == 13 for row in refused)


def test_the_deny_list_and_the_database_allow_list(wire_server, gateway_session):
    _session, _secret, uri = gateway_session(account_on(wire_server), database_allow_list=["allowed"])
    with client_for(uri) as client:
        client.allowed.items.insert_one({"n": 1})
        with pytest.raises(OperationFailure, match="dropDatabase is denied") as failure:
            client.drop_database("allowed")
        assert failure.value.code == 13
        with pytest.raises(OperationFailure, match="outside this session's databases"):
            client.other.items.find_one()
        assert client.allowed.items.count_documents({}) == 1
        assert client.admin.command("ping")["ok"] == 1


def test_a_second_login_on_a_logged_in_connection_is_refused(wire_server, gateway_session):
    _session, _secret, uri = gateway_session(account_on(wire_server))
    with client_for(uri) as client:
        with pytest.raises(OperationFailure, match="saslStart is not allowed after login") as failure:
            client.admin.command("saslStart", 1, mechanism="SCRAM-SHA-256", payload=b"n,,n=x,r=abc")
        assert failure.value.code == 20
        assert client.admin.command("ping")["ok"] == 1


def test_the_command_log_redacts_values_unless_full_logging_is_on(wire_server, gateway_session, gateway_proxy):
    marker = f"value-{uuid.uuid4().hex}"
    session, secret, uri = gateway_session(account_on(wire_server))
    with client_for(uri) as client:
        items = client[_name("redact")].items
        items.insert_one({"card": marker})
        items.update_one({"card": marker}, {"$set": {"note": marker}})
        assert items.find_one({"card": marker})["note"] == marker
    rows = wait_for(lambda: {"insert", "update", "find"} <= {r.command for r in commands_of(session)})
    rows = commands_of(session)
    text = repr([(row.summary, row.error_message) for row in rows])
    assert marker not in text and secret not in text
    assert secret not in gateway_proxy.log_text() and marker not in gateway_proxy.log_text()
    find = next(row for row in rows if row.command == "find")
    assert find.summary["filter"] == {"card": "?"}
    update = next(row for row in rows if row.command == "update")
    assert update.summary["updates"][0]["u"] == {"$set": ["note"]}
    insert = next(row for row in rows if row.command == "insert")
    assert insert.summary["documents"] == {"count": 1} and insert.n == 1

    full, _secret, full_uri = gateway_session(account_on(wire_server, full_command_logging=True))
    with client_for(full_uri) as client:
        client[_name("full")].items.insert_one({"card": marker})
    rows = wait_for(lambda: commands_of(full))
    assert marker in repr([row.summary for row in rows])


def test_upstream_down_restart_and_refused_account_login(gateway_session):
    server = WireServer().start()
    port = server.port
    try:
        account = account_on(server)
        _session, _secret, uri = gateway_session(account)
        with client_for(uri) as client:
            client.app.items.insert_one({"n": 1})
        server.stop()
        with client_for(uri) as client, pytest.raises(OperationFailure) as failure:
            client.admin.command("ping")
        assert failure.value.code == 6 and "could not reach the upstream" in str(failure.value)

        server = WireServer(port=port).start()  # a restarted server on the same address
        server.create_user(account.username, account.password.reveal(), [{"role": "root", "db": "admin"}])
        with client_for(uri) as client:
            assert client.app.items.count_documents({}) == 0  # the new server starts empty
            client.app.items.insert_one({"n": 2})

        server.users.drop(account.username, "admin")
        with client_for(uri) as client, pytest.raises(OperationFailure) as failure:
            client.admin.command("ping")
        assert failure.value.code == 18
        assert "gateway could not authenticate upstream" in str(failure.value)
        assert account.password.reveal() not in str(failure.value)
    finally:
        server.stop()


def test_a_malformed_message_closes_only_its_own_connection(wire_server, gateway_session, gateway_proxy):
    _session, _secret, uri = gateway_session(account_on(wire_server))
    with client_for(uri) as client:
        items = client[_name("fuzz")].items
        items.insert_one({"n": 1})
        for garbage in (
            struct.pack("<iiii", 10, 1, 0, wire.OP_MSG),  # length below the header size
            struct.pack("<iiii", 2**31 - 1, 1, 0, wire.OP_MSG),  # oversized
            struct.pack("<iiii", 40, 1, 0, wire.OP_MSG) + b"\x00" * 10,  # truncated
            wire.build_op_msg({"ping": 1, "$db": "admin"})[:-3] + b"\xff\xff\xff",  # broken BSON
        ):
            with socket.create_connection(("127.0.0.1", int(gateway_proxy.port)), timeout=5) as raw:
                raw.sendall(garbage)
                raw.shutdown(socket.SHUT_WR)  # a truncated message ends here
                assert raw.recv(1024) == b""  # the gateway closed it
            assert items.count_documents({}) == 1
    assert "bad message" in gateway_proxy.log_text()


def test_compressed_messages_are_refused_by_closing(gateway_proxy):
    message = wire.compress_message(wire.build_op_msg({"ping": 1, "$db": "admin"}, request_id=7), "zlib")
    with socket.create_connection(("127.0.0.1", int(gateway_proxy.port)), timeout=5) as raw:
        raw.sendall(message)
        assert raw.recv(1024) == b""
    assert "compressed message" in gateway_proxy.log_text()


def test_old_style_op_query_hello_is_answered_in_op_reply(gateway_proxy):
    query = wire.build_op_query("admin.$cmd", {"isMaster": 1, "helloOk": True}, request_id=41)
    with socket.create_connection(("127.0.0.1", int(gateway_proxy.port)), timeout=5) as raw:
        raw.sendall(query)
        header = raw.recv(16, socket.MSG_WAITALL)
        length = struct.unpack("<i", header[:4])[0]
        body = raw.recv(length - 16, socket.MSG_WAITALL)
    reply = wire.parse_op_reply(header + body)
    assert reply.response_to == 41
    assert reply.documents[0]["ismaster"] is True and "hosts" not in reply.documents[0]


def test_sigterm_ends_sessions_flushes_the_log_and_exits_quickly(wire_server, gateway, tmp_path):
    other = GatewayProcess(tmp_path / "runproxy.log", name="stopping-gateway").start()
    try:
        session, secret = session_on(Gateway.objects.get(pk=other.gateway_id), account_on(wire_server))
        client = client_for(other.uri(session.username, secret))
        client.app.items.insert_one({"n": 1})
        started = time.monotonic()
        assert other.stop() == 0
        assert time.monotonic() - started < 5
        client.close()
        session.refresh_from_db()
        assert session.state == SessionState.ENDED and session.end_reason == SessionEndReason.GATEWAY_STOPPED
        assert SessionCommand.objects.filter(session=session, command="insert").exists()
        assert secret not in other.log_text()
    finally:
        other.stop()


def test_metrics_are_exposed_in_prometheus_text(wire_server, gateway_session, gateway_proxy):
    import urllib.request

    _session, _secret, uri = gateway_session(account_on(wire_server))
    with client_for(uri) as client:
        client.app.items.find_one()
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway_proxy.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert "pam_gateway_commands_total" in text and "pam_gateway_command_latency_seconds_bucket" in text
    assert "pam_gateway_connections_open" in text
