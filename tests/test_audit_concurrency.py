"""The audit chain under concurrent writers: threads and processes append at once, and the chain still holds.

The writers go through real services (API token creation, which records `api_token.create`) against the
configured database: SQLite with IMMEDIATE transactions in the embedded profile, PostgreSQL with the chain's
advisory lock in the production profile. `verify_audit` must then pass with every event present exactly once, and
fail, naming the row, after one row is edited by raw SQL.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from access.models import AuditEvent
from tests.factories import UserFactory
from tests.profile import subprocess_env
from tests.test_audit import verify_audit

ROOT = Path(__file__).resolve().parent.parent
THREADS = 3
PROCESSES = 3
EVENTS_PER_WRITER = 40

WRITER_SCRIPT = """
import os, time
from pathlib import Path
from django.contrib.auth import get_user_model
from access.services.tokens import api_token_create
user = get_user_model().objects.get(username=os.environ["WRITER_USER"])
start = Path(os.environ["WRITER_START"])
(start.parent / ("ready-" + os.environ["WRITER_NAME"])).touch()
while not start.exists():
    time.sleep(0.01)
for n in range(int(os.environ["WRITER_EVENTS"])):
    api_token_create(user=user, name=f"{os.environ['WRITER_NAME']}-{n}", actor="writer")
    time.sleep(0.005)  # requests arrive spaced a little, so the writers take turns
"""


def _start_writer_processes(tmp_path: Path, username: str) -> list[subprocess.Popen]:
    start = tmp_path / "start"
    processes = []
    for index in range(PROCESSES):
        env = subprocess_env(
            WRITER_USER=username,
            WRITER_START=str(start),
            WRITER_EVENTS=str(EVENTS_PER_WRITER),
            WRITER_NAME=f"process{index}",
            PAM_LOG_LEVEL="WARNING",
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, "manage.py", "shell", "-c", WRITER_SCRIPT],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return processes


def _thread_writer(user, name: str, start: threading.Event, errors: list[BaseException]) -> None:
    from django.db import connection as thread_connection

    from access.services.tokens import api_token_create

    try:
        start.wait()
        for n in range(EVENTS_PER_WRITER):
            api_token_create(user=user, name=f"{name}-{n}", actor="writer")
            time.sleep(0.005)
    except BaseException as exc:  # reported by the test, not lost in the thread
        errors.append(exc)
    finally:
        thread_connection.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(240)
def test_concurrent_writers_keep_the_audit_chain_whole_and_an_edit_breaks_it(tmp_path):
    user = UserFactory(username="chain-writer")
    processes = _start_writer_processes(tmp_path, user.username)
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < PROCESSES and time.monotonic() < deadline:
        time.sleep(0.05)  # the processes import Django, then wait at the start line
    start, errors = threading.Event(), []
    threads = [
        threading.Thread(target=_thread_writer, args=(user, f"thread{index}", start, errors))
        for index in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    (tmp_path / "start").touch()
    start.set()
    for thread in threads:
        thread.join(timeout=180)
    outputs = []
    for process in processes:
        output, _ = process.communicate(timeout=180)
        outputs.append((process.returncode, output[-2000:]))
    assert not errors, errors
    assert all(code == 0 for code, _ in outputs), outputs

    writes = AuditEvent.objects.filter(action="api_token.create", actor_name="writer")
    assert writes.count() == (THREADS + PROCESSES) * EVENTS_PER_WRITER
    writer_of = _writer_of_events(writes)
    assert len(set(writer_of)) == THREADS + PROCESSES
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "the chain has a gap or a duplicate sequence number"
    interleaved = sum(1 for a, b in itertools.pairwise(writer_of) if a != b)
    code, out = verify_audit()
    assert code == 0, out
    assert f"{len(seqs)} events checked" in out
    assert interleaved >= 2 * (THREADS + PROCESSES), f"the writers hardly overlapped ({interleaved} switches)"

    middle = seqs[len(seqs) // 2]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE access_auditevent SET actor_name = %s WHERE seq = %s", ["mallory", middle])
    code, err = verify_audit()
    assert code == 1
    assert f"event #{middle} (api_token.create) was altered" in err
    print(f"audit chain: {len(seqs)} events from {THREADS} threads and {PROCESSES} processes, {interleaved} switches")


def _writer_of_events(writes) -> list[str]:
    """The writer (thread or process) behind each event, in chain order, from the token names."""
    from access.models import ApiToken

    names = dict(ApiToken.objects.values_list("pk", "name"))
    return [
        names[int(target_id)].rsplit("-", 1)[0]
        for target_id in writes.order_by("seq").values_list("target_id", flat=True)
    ]
