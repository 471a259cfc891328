"""pytest plugin: a real ``manage.py runproxy`` subprocess sharing a file-based test database with the tests.

pytest-django's SQLite test database is in memory by default, which another process cannot open. This
plugin puts the test database in a file (``django_db_modify_db_settings``), so a gateway subprocess and the
test see the same rows; in the production profile the subprocess uses PostgreSQL's test database and Redis
(``tests.profile.subprocess_env``). Tests that talk to the gateway must commit what they create:
``@pytest.mark.django_db(transaction=True)`` (a plain ``db`` test holds SQLite's write lock until it ends).

Fixtures:

- ``gateway_process`` (module): a :class:`GatewayProcess` — ``runproxy`` on a port of its own for the module, its
  stderr log in a file (``.log_text()``), ``.start()``, ``.stop()`` (SIGTERM), ``.restart()``; not started.
- ``gateway_proxy`` (function): ``gateway_process`` running for one test. It stops before the test's flush: a
  gateway that writes its heartbeat or command log during the flush (TRUNCATE) can deadlock with it on PostgreSQL.
- ``gateway`` (function): the Gateway row the running subprocess registered as.
- ``gateway_session(account, ...)`` (function): opens a session on ``account`` through the gateway and
  returns ``(session, secret, uri)`` where ``uri`` logs in through the gateway.

Helpers: ``account_on(server)`` (an Account for a new user of a wire server), ``session_on(gateway, account)`` (a
Session with a new username and secret on any Gateway row: ``(session, secret)``), ``wait_for``, ``free_port``.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote_plus

import pytest

ROOT = Path(__file__).resolve().parent.parent
_READY = re.compile(r"gateway listening on (\S+):(\d+)")


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns something true or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def account_on(server, *, roles=None, **resource_fields):
    """An Account stored for a new user of the wire server ``server`` (root unless ``roles``)."""
    from tests.factories import AccountFactory, ResourceFactory
    from tests.helpers import unique_name, unique_password
    from tests.secret_scan import remember

    username, password = unique_name("acct"), unique_password()
    remember(password)
    server.create_user(username, password, roles or [{"role": "root", "db": "admin"}])
    uri = f"mongodb://{server.host_port}" + (f"/?replicaSet={server.replica_set}" if server.replica_set else "")
    resource = ResourceFactory(uri=uri, tls=False, **resource_fields)
    return AccountFactory(resource=resource, username=username, password=password)


def session_on(gateway, account, *, user=None, ttl=timedelta(hours=1), granted=True, **fields):
    """A gateway Session on ``account`` through the Gateway row ``gateway``, owned by ``user`` (a new user by
    default), with a new session username and secret (given to the leak scan): ``(session, secret)``.

    The gateway checks the user and the grant at every login, so the owner holds a standing grant on the account
    (an enabled policy without approval, as writable as the session) unless ``granted=False``."""
    import secrets

    from django.utils import timezone

    from access.models import Session
    from access.selectors.policies import access_grant_for
    from access.services.sessions import session_username_new, session_verifiers
    from tests.factories import AccessPolicyFactory, UserFactory
    from tests.secret_scan import remember

    user = user if user is not None else UserFactory()
    if granted and access_grant_for(user=user, account=account) is None:
        AccessPolicyFactory(
            user=user,
            account=account,
            approval_required=False,
            max_duration=ttl + timedelta(hours=1),
            read_only=bool(fields.get("read_only", False)),
            privileged_commands=list(fields.get("privileged_commands", [])),
        )
    username, secret = session_username_new(), secrets.token_urlsafe(32)
    remember(secret)
    session = Session.objects.create(
        user=user,
        account=account,
        gateway=gateway,
        username=username,
        verifiers=session_verifiers(username=username, secret=secret),
        expires_at=timezone.now() + ttl,
        **fields,
    )
    return session, secret


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory) -> None:
    """Keep the SQLite test database in a file, so that a gateway subprocess can share it."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("TEST", {})
        database["TEST"]["NAME"] = str(tmp_path_factory.mktemp("testdb") / "test.sqlite3")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GatewayProcess:
    """``manage.py runproxy`` in a subprocess, on the test database."""

    def __init__(self, log_path: Path, name: str = "test-gateway", *, workers: int | None = None) -> None:
        self.log_path = log_path
        self.name = name
        self.workers = workers  # None: runproxy's default (one worker process per core)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.metrics_port = free_port()
        self.process: subprocess.Popen | None = None
        self.gateway_id: int | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        from tests.profile import subprocess_env

        return subprocess_env()  # the test database (SQLite file or PostgreSQL test_*), and Redis when configured

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        """Start the gateway and wait until it listens."""
        command = [
            sys.executable,
            str(ROOT / "manage.py"),
            "runproxy",
            "--listen",
            self.address,
            "--gateway",
            self.name,
            "--metrics",
            f"127.0.0.1:{self.metrics_port}",
            *(["--workers", str(self.workers)] if self.workers else []),
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=self.environment(), stdout=subprocess.PIPE, stderr=log, text=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if _READY.search(line or ""):
                break
            if self.process.poll() is not None:
                raise RuntimeError(f"runproxy exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
        else:
            self.stop()
            raise RuntimeError("runproxy did not start in time")
        from access.models import Gateway

        self.gateway_id = Gateway.objects.get(name=self.name).pk
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the gateway and wait for it; returns its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        if self.process.stdout:
            self.process.stdout.close()
        self.process = None
        return code

    def restart(self) -> GatewayProcess:
        self.stop()
        return self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def uri(self, username: str, secret: str, **options: str) -> str:
        """A connection string that logs in through the gateway as ``username``."""
        query = "&".join(f"{key}={value}" for key, value in {"authSource": "admin", **options}.items())
        return f"mongodb://{quote_plus(username)}:{quote_plus(secret)}@{self.address}/?{query}&directConnection=true"


@pytest.fixture(scope="module")
def gateway_process(tmp_path_factory) -> Iterator[GatewayProcess]:
    """The module's gateway (one address and one log file for the module), started by ``gateway_proxy``."""
    process = GatewayProcess(tmp_path_factory.mktemp("gateway") / "runproxy.log")
    yield process
    process.stop()


@pytest.fixture
def gateway_proxy(gateway_process, transactional_db) -> Iterator[GatewayProcess]:
    """The module's gateway, running for this test only.

    It depends on ``transactional_db``, so it stops before the test's flush: a gateway still writing its heartbeat
    or command log while the flush truncates the tables can deadlock with it on PostgreSQL.
    """
    gateway_process.start()
    yield gateway_process
    gateway_process.stop()


@pytest.fixture
def gateway(gateway_proxy):
    """The Gateway row the running ``gateway_proxy`` registered as."""
    from access.models import Gateway

    return Gateway.objects.get(pk=gateway_proxy.gateway_id)


@pytest.fixture
def gateway_session(gateway, gateway_proxy):
    """``open(account, *, read_only=False, ttl=..., database_allow_list=None)`` -> (session, secret, uri)."""
    from tests.factories import UserFactory

    def open_session(account, *, read_only=False, ttl=timedelta(hours=1), database_allow_list=None, **uri_options):
        session, secret = session_on(
            gateway,
            account,
            user=UserFactory(),
            ttl=ttl,
            read_only=read_only,
            database_allow_list=list(database_allow_list or []),
        )
        return session, secret, gateway_proxy.uri(session.username, secret, **uri_options)

    return open_session
