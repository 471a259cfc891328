"""Real clients through the gateway: pymongo against FerretDB, and mongosh and the Node driver everywhere.

FerretDB is an independent server (real SCRAM, no roles), so the gateway's upstream login and relay are
checked against code that is not ours. mongosh and the Node driver bring their own handshakes (client
metadata, ``saslSupportedMechs``, speculative authentication) and must log in with the session secret and
work as against a server.
"""

from __future__ import annotations

import json
import time

import pytest
from pymongo import InsertOne, MongoClient, UpdateOne
from pymongo.write_concern import WriteConcern

from access.models import SessionCommand
from tests.factories import AccountFactory, ResourceFactory
from tests.gateway_fixtures import account_on, wait_for
from tests.helpers import unique_name as _name
from tests.helpers import unique_password
from tests.secret_scan import remember

pytestmark = pytest.mark.django_db(transaction=True)

NODE_SCRIPT = """
const { MongoClient } = require("mongodb");
(async () => {
  const client = new MongoClient(process.env.MONGODB_URI, { serverSelectionTimeoutMS: 5000 });
  await client.connect();
  const items = client.db(process.env.DB).collection("items");
  await items.insertMany(Array.from({ length: 120 }, (_, n) => ({ n })));
  const query = items.find({ n: { $gte: 100 } }, { projection: { _id: 0 }, batchSize: 7 });
  const docs = await query.sort({ n: 1 }).toArray();
  const hello = await client.db("admin").command({ hello: 1 });
  const topology = client.topology.description;
  console.log(JSON.stringify({
    count: docs.length, first: docs[0], servers: Array.from(topology.servers.keys()), type: topology.type,
    hosts: hello.hosts || null,
  }));
  await client.close();
})().catch((error) => { console.error(String(error)); process.exit(1); });
"""


@pytest.fixture
def ferret_account(ferretdb_server):
    """An Account for a new FerretDB user (FerretDB has no roles: any user may do anything)."""
    username, password = _name("acct"), unique_password()
    remember(password)
    with MongoClient(ferretdb_server.uri, serverSelectionTimeoutMS=5000) as admin:
        admin.admin.command("createUser", username, pwd=password, roles=[])
    resource = ResourceFactory(uri=f"mongodb://127.0.0.1:{ferretdb_server.port}", tls=False)
    return AccountFactory(resource=resource, username=username, password=password)


@pytest.mark.ferretdb
def test_pymongo_through_the_gateway_to_ferretdb(ferret_account, gateway_session, gateway_proxy):
    session, secret, uri = gateway_session(ferret_account)
    with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        items = client[_name("ferret")].items
        items.insert_many([{"n": n, "group": n % 2} for n in range(150)])
        assert [doc["n"] for doc in items.find({}, batch_size=25).sort("n", 1)] == list(range(150))
        result = items.bulk_write([InsertOne({"n": 500, "group": 7}), UpdateOne({"n": 0}, {"$set": {"group": 7}})])
        assert (result.inserted_count, result.modified_count) == (1, 1)
        groups = {g["_id"]: g["count"] for g in items.aggregate([{"$group": {"_id": "$group", "count": {"$sum": 1}}}])}
        assert groups == {0: 74, 1: 75, 7: 2}
        big = "y" * (15 * 1024 * 1024)
        items.insert_one({"_id": "big", "payload": big})
        assert len(items.find_one({"_id": "big"})["payload"]) == len(big)
        unacknowledged = items.with_options(write_concern=WriteConcern(w=0))
        for n in range(10):
            unacknowledged.insert_one({"w0": n})
        assert wait_for(lambda: items.count_documents({"w0": {"$exists": True}}) == 10)
        assert list(client.topology_description.server_descriptions()) == [("127.0.0.1", gateway_proxy.port)]
    assert wait_for(lambda: SessionCommand.objects.filter(session=session, command="getMore").exists())
    assert secret not in gateway_proxy.log_text()
    assert ferret_account.password.reveal() not in gateway_proxy.log_text()


def _mongosh_script(database: str) -> str:
    return (
        f'const d = db.getSiblingDB("{database}"); d.items.insertOne({{a: 1}}); '
        "print(JSON.stringify({docs: d.items.find({}, {_id: 0}).toArray(), "
        "ping: db.runCommand({ping: 1}).ok}))"
    )


def test_mongosh_through_the_gateway_to_the_wire_server(wire_server, gateway_session, mongosh):
    _session, secret, uri = gateway_session(account_on(wire_server))
    result = mongosh(uri, _mongosh_script(_name("sh")), timeout=90)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"docs": [{"a": 1}], "ping": 1}
    assert secret not in result.stdout + result.stderr.replace(uri, "")


@pytest.mark.ferretdb
def test_mongosh_through_the_gateway_to_ferretdb(ferret_account, gateway_session, mongosh):
    _session, _secret, uri = gateway_session(ferret_account)
    result = mongosh(uri, _mongosh_script(_name("shf")), timeout=90)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"docs": [{"a": 1}], "ping": 1}


def test_mongosh_with_a_wrong_secret_sees_authentication_failed(wire_server, gateway_session, gateway_proxy, mongosh):
    session, _secret, _uri = gateway_session(account_on(wire_server))
    result = mongosh(gateway_proxy.uri(session.username, "wrong-secret"), "db.runCommand({ping: 1})", timeout=90)
    assert result.returncode != 0
    assert "Authentication failed" in result.stdout + result.stderr


@pytest.mark.parametrize("upstream", ["standalone", "replica_set", "ferretdb"])
def test_the_node_driver_through_the_gateway(upstream, request, gateway_session, gateway_proxy, node_driver):
    if upstream == "ferretdb":
        account = request.getfixturevalue("ferret_account")
    else:
        server = request.getfixturevalue("wire_server" if upstream == "standalone" else "wire_server_rs")
        account = account_on(server)
    _session, _secret, uri = gateway_session(account)
    started = time.monotonic()
    result = node_driver(NODE_SCRIPT, env={"MONGODB_URI": uri, "DB": _name("node")}, timeout=90)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["count"] == 20 and output["first"] == {"n": 100}
    assert output["servers"] == [gateway_proxy.address] and output["type"] == "Single"
    assert output["hosts"] is None
    assert time.monotonic() - started < 60
