"""The wire server checked with the real JavaScript clients: mongosh and the official Node driver."""

from __future__ import annotations

import json

import pytest

from tests.helpers import unique_name

pytestmark = pytest.mark.wireserver

NODE_SCRIPT = """
const { MongoClient } = require("mongodb");
(async () => {
  const client = new MongoClient(process.env.MONGODB_URI, { serverSelectionTimeoutMS: 5000 });
  await client.connect();
  const items = client.db(process.env.DB).collection("items");
  await items.insertMany([{ n: 1 }, { n: 2 }, { n: 3 }]);
  const docs = await items.find({ n: { $gte: 2 } }, { projection: { _id: 0 } }).sort({ n: 1 }).toArray();
  const status = await client.db("admin").command({ connectionStatus: 1 });
  console.log(JSON.stringify({ docs, users: status.authInfo.authenticatedUsers }));
  await client.close();
})().catch((error) => { console.error(String(error)); process.exit(1); });
"""


def test_mongosh_logs_in_inserts_and_finds(wire_server, mongosh):
    db = unique_name("sh")
    script = (
        f'const d = db.getSiblingDB("{db}"); d.items.insertOne({{a: 1}}); '
        "print(JSON.stringify({docs: d.items.find({}, {_id: 0}).toArray(), "
        "users: db.runCommand({connectionStatus: 1}).authInfo.authenticatedUsers}))"
    )
    result = mongosh(wire_server.uri, script, timeout=90)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output == {"docs": [{"a": 1}], "users": [{"user": wire_server.admin_user, "db": "admin"}]}


def test_mongosh_refuses_a_wrong_password(wire_server, mongosh):
    result = mongosh(
        wire_server.uri_for(wire_server.admin_user, "wrong-password"), "db.runCommand({ping: 1})", timeout=90
    )
    assert result.returncode != 0
    assert "Authentication failed" in result.stdout + result.stderr


def test_node_driver_logs_in_and_finds(wire_server, node_driver):
    db = unique_name("node")
    result = node_driver(NODE_SCRIPT, env={"MONGODB_URI": wire_server.uri, "DB": db}, timeout=90)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output == {"docs": [{"n": 2}, {"n": 3}], "users": [{"user": wire_server.admin_user, "db": "admin"}]}


def test_node_driver_finds_the_replica_set_primary(wire_server_rs, node_driver):
    db = unique_name("node_rs")
    result = node_driver(NODE_SCRIPT, env={"MONGODB_URI": wire_server_rs.uri, "DB": db}, timeout=90)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["docs"] == [{"n": 2}, {"n": 3}]
