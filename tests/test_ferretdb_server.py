"""FerretDB as a test server, proven with real clients: pymongo, mongosh, the Node driver, and the CLI.

These tests need no Django database; they check that the independent server the suite relies on does
real SCRAM-SHA-256 logins and user management the way the connectors will use it.
"""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
import time
from urllib.parse import quote_plus

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure
from pymongo.uri_parser import parse_uri

from tests.helpers import unique_name as _unique
from tests.helpers import unique_password
from tests.mongo.ferretdb import FerretDB
from tests.mongo.paths import REPO_ROOT, port_is_open, wait_until

pytestmark = pytest.mark.ferretdb

AUTHENTICATION_FAILED = 18


def _user_uri(server: FerretDB, username: str, password: str, database: str) -> str:
    return f"mongodb://{quote_plus(username)}:{quote_plus(password)}@127.0.0.1:{server.port}/?authSource={database}"


def _client(uri: str) -> MongoClient:
    return MongoClient(uri, authMechanism="SCRAM-SHA-256", serverSelectionTimeoutMS=5000)


def test_admin_logs_in_with_scram_sha_256(ferretdb_server: FerretDB) -> None:
    with _client(ferretdb_server.uri) as client:
        status = client.admin.command("connectionStatus")

    assert status["authInfo"]["authenticatedUsers"] == [{"user": ferretdb_server.username, "db": "admin"}]


def test_created_user_logs_in_until_dropped(ferretdb_server: FerretDB) -> None:
    database, username, password = _unique("app"), _unique("lease"), unique_password()
    user_uri = _user_uri(ferretdb_server, username, password, database)

    with _client(ferretdb_server.uri) as admin:
        admin[database].command("createUser", username, pwd=password, roles=[])
        with _client(user_uri) as user:
            assert user[database].command("ping")["ok"] == 1.0
        admin[database].command("dropUser", username)

    with _client(user_uri) as user, pytest.raises(OperationFailure) as failure:
        user[database].command("ping")
    assert failure.value.code == AUTHENTICATION_FAILED


def test_wrong_password_is_refused(ferretdb_server: FerretDB) -> None:
    wrong = _user_uri(ferretdb_server, ferretdb_server.username, "not-the-password", "admin")

    with _client(wrong) as client, pytest.raises(OperationFailure) as failure:
        client.admin.command("ping")
    assert failure.value.code == AUTHENTICATION_FAILED


def test_mongosh_logs_in_inserts_and_finds(ferretdb_server: FerretDB, mongosh) -> None:
    database = _unique("mongosh")
    script = (
        f"const probe = db.getSiblingDB('{database}').probe;"
        "probe.insertOne({_id: 'doc-1', source: 'mongosh'});"
        "print(EJSON.stringify(probe.find().toArray()));"
    )

    result = mongosh(ferretdb_server.uri, script, timeout=90)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [{"_id": "doc-1", "source": "mongosh"}]
    with _client(ferretdb_server.uri) as client:
        assert client[database].probe.find_one({"_id": "doc-1"}) == {"_id": "doc-1", "source": "mongosh"}


def test_node_driver_logs_in_and_finds(ferretdb_server: FerretDB, node_driver) -> None:
    database = _unique("node")
    with _client(ferretdb_server.uri) as client:
        client[database].probe.insert_one({"_id": "doc-1", "source": "pymongo"})
    script = """
        const { MongoClient } = require("mongodb");
        (async () => {
          const client = new MongoClient(process.env.MONGODB_URI, { authMechanism: "SCRAM-SHA-256" });
          try {
            const docs = await client.db(process.env.DATABASE).collection("probe").find().toArray();
            console.log(JSON.stringify(docs));
          } finally {
            await client.close();
          }
        })().catch((error) => { console.error(error); process.exit(1); });
    """

    result = node_driver(script, env={"MONGODB_URI": ferretdb_server.uri, "DATABASE": database})

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip()) == [{"_id": "doc-1", "source": "pymongo"}]


def test_mongo_admin_uri_answers_ping(mongo_admin_uri: str, mongo_server_kind: str) -> None:
    with MongoClient(mongo_admin_uri, serverSelectionTimeoutMS=5000) as client:
        assert client.admin.command("ping")["ok"] == 1.0
    assert mongo_server_kind in {"mongodb", "ferretdb"}


def _read_uri_line(process: subprocess.Popen, timeout: float) -> str:
    """The ``MONGODB_URI=...`` line the CLI prints, or an assertion error after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.5):
                continue
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith("MONGODB_URI="):
                return line.removeprefix("MONGODB_URI=").strip()
    raise AssertionError(f"no MONGODB_URI line; stderr: {process.stderr.read() if process.poll() else ''}")


def test_cli_serves_ferretdb_until_sigint(ferretdb_server: FerretDB) -> None:
    # ferretdb_server makes sure the binary is built (or skips) before the CLI needs it.
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mongo", "ferretdb"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        uri = _read_uri_line(process, timeout=60)
        with _client(uri) as client:
            assert client.admin.command("ping")["ok"] == 1.0
        port = parse_uri(uri)["nodelist"][0][1]

        process.send_signal(signal.SIGINT)

        assert process.wait(timeout=30) == 0
        assert wait_until(lambda: not port_is_open(port), timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
