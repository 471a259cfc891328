"""The wire server survives 100,000 malformed and truncated messages while a real client keeps working.

A separate process (``tests.mongo.wireserver.fuzz``) opens one connection per bad message, 64 at a
time; every message that is really malformed must close its own connection with no reply, and a
pymongo client on its own connection must see every one of its operations succeed meanwhile.
``WIRESERVER_FUZZ_COUNT`` changes the number of messages (default 100,000; about 20 s on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pymongo
import pytest

from tests.mongo.wireserver import WireServer
from tests.mongo.wireserver.fuzz import KINDS

pytestmark = [pytest.mark.wireserver, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[1]
FUZZ_COUNT = int(os.environ.get("WIRESERVER_FUZZ_COUNT", "100000"))
MAY_STAY_VALID = "5"  # one flipped bit can leave a valid message, which then gets a reply


def test_server_survives_malformed_messages_while_a_client_works():
    server = WireServer().start()
    stop = threading.Event()
    done: list[int] = []
    errors: list[BaseException] = []

    def well_behaved_client() -> None:
        with pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=5000) as client:
            coll = client.fuzz_ok.items
            try:
                while not stop.is_set():
                    n = len(done)
                    coll.insert_one({"n": n})
                    assert coll.find_one({"n": n})["n"] == n
                    done.append(n)
            except BaseException as exc:
                errors.append(exc)

    worker = threading.Thread(target=well_behaved_client, daemon=True)
    worker.start()
    try:
        started = time.monotonic()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.mongo.wireserver.fuzz",
                "--port",
                str(server.port),
                "--count",
                str(FUZZ_COUNT),
            ],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        worker.join(10)
    try:
        assert result.stdout, result.stderr[-3000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"fuzz: {FUZZ_COUNT} messages in {elapsed:.1f}s, client ops meanwhile: {len(done)}: {report}")
        assert report["outcomes"].get("hung", 0) == 0
        assert report["outcomes"].get("connect_failed", 0) == 0
        for kind in range(KINDS):
            if str(kind) != MAY_STAY_VALID:
                sent = len(range(kind, FUZZ_COUNT, KINDS))
                assert report["by_kind"][str(kind)] == ({"closed": sent} if sent else {}), kind
        assert not errors, errors
        assert len(done) > 50
        with pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=5000) as client:
            assert client.fuzz_ok.items.count_documents({}) == len(done)
        deadline = time.monotonic() + 5
        while server.connection_count() > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.connection_count() == 0  # no connection leaked
    finally:
        server.stop()
