"""The live session stream with Redis (the scale-out configuration): events published in another process reach the
websocket through the channels-redis layer, with no database polling."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync

from access.events import session_events_use_channel_layer
from access.services.sessions import session_open
from tests.factories import AccessPolicyFactory
from tests.helpers import otp_browser_session, session_socket
from tests.mongo.paths import free_loopback_port, port_is_open
from tests.profile import subprocess_env

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db(transaction=True)

WRITER = """
import django
django.setup()
from access.models import Session
from access.services.gateway import session_commands_record
from access.services.sessions import session_end
session = Session.objects.get(pk={pk})
session_commands_record(commands=[{{"session_id": session.pk, "command": "aggregate", "database": "sales",
                                    "collection": "orders", "n": 7, "latency_us": 950}}])
session_end(session=session, reason="killed", actor="redis-test")
"""


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A private redis-server on a free loopback port (Debian's package; `make test` installs it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (tests/install-redis.sh installs it)")
        pytest.skip("redis-server is not installed: run tests/install-redis.sh")
    port = free_loopback_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not port_is_open(port):
            assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def test_an_event_from_another_process_arrives_through_redis(redis_url, settings):
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3") and "memory" in str(database["NAME"]):
        pytest.skip("the test database is in memory: another process cannot share it")
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [redis_url]}}
    }
    settings.PAM_SESSION_EVENTS = ""
    assert session_events_use_channel_layer()
    policy = AccessPolicyFactory(approval_required=False)
    session, secret = session_open(user=policy.user, account=policy.account, duration=timedelta(hours=1))
    env = subprocess_env(DJANGO_SETTINGS_MODULE="portal.settings", REDIS_URL=redis_url)

    browser_session = otp_browser_session(session.user)

    async def scenario():
        communicator = session_socket(session, session.user, browser_session)
        assert (await communicator.connect(timeout=5))[0]
        assert (await communicator.receive_json_from(timeout=5))["type"] == "snapshot"
        writer = await _run_in_thread(
            [sys.executable, "-c", WRITER.format(pk=session.pk)], cwd=ROOT, env=env, capture_output=True, timeout=60
        )
        assert writer.returncode == 0, writer.stderr.decode()[-2000:]
        command = await communicator.receive_json_from(timeout=5)
        ended = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return command, ended

    command, ended = async_to_sync(scenario)()

    assert (command["type"], command["command"], command["n"], command["collection"]) == (
        "command",
        "aggregate",
        7,
        "orders",
    )
    assert (ended["type"], ended["reason"]) == ("ended", "killed")
    assert secret not in repr((command, ended))


async def _run_in_thread(args, **kwargs):
    import asyncio

    return await asyncio.to_thread(subprocess.run, args, **kwargs)
