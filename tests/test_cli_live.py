"""`pam`, the CLI, run as a subprocess against one live stack shared by the module: daphne (the portal and the API),
`manage.py qcluster` (lease expiry), `manage.py runproxy` (the gateway) and FerretDB, all on the test database.

The login is a real device grant completed in Debian's chromium through Playwright (password, then TOTP, then an
explicit confirm). Then: `pam db access` serves pymongo, mongosh and the Node driver through its local proxy with
no password, the commands reach the session's log, Ctrl+C ends the session within a second; an admin kill makes
the CLI exit with the reason; an approval wait ends when a second user approves; `pam exec` revokes its lease when
its command exits, and a SIGKILLed `pam exec` leaves a lease that expires within its short TTL; a revoked login is
refused. The CLI's output goes to `*.log` files under pytest's temporary folder, which the leak scan searches for
every secret the portal made (the session secret must never appear).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pymongo
import pytest
from django.utils import timezone
from django_otp.oath import totp

from tests.mongo.fixtures import running_in_ci
from tests.profile import subprocess_env
from tests.test_portal_browser import CHROMIUM, PASSWORD, PortalServer, chromium_browser

pytestmark = [pytest.mark.browser, pytest.mark.ferretdb]

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT_USER = "cli-acct"
GATED_USER = "cli-gated"
ACCOUNT_PASSWORD = "cli-acct-pass-7Hq2"
DOCUMENT = "cli-sku-4471"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


# -- processes --------------------------------------------------------------------------------------------------
class Output:
    """A process's combined output collected on a thread, so a test can wait for a line without blocking."""

    def __init__(self, process: subprocess.Popen, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
        self.process.stdout.close()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text)
            if found:
                return found
            if self.process.poll() is not None:
                self.thread.join(2)
                found = re.search(pattern, self.text)
                if found:
                    return found
                break
            time.sleep(0.05)
        raise AssertionError(f"pam did not print {pattern!r}; it printed:\n{self.text[-3000:]}")

    def finish(self, timeout: float = 15) -> int:
        code = self.process.wait(timeout)
        self.thread.join(5)
        self.log_path.write_text(self.text)  # the leak scan searches *.log files under pytest's temporary folder
        return code


@dataclass
class Stack:
    portal: PortalServer
    gateway_address: str
    tmp: Path
    config_home: Path
    engineer_key: bytes = field(repr=False)
    approver_key: bytes = field(repr=False)
    approver_token: str = field(repr=False)

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("PAM_TOKEN", "PAM_PORTAL", "DJANGO_SETTINGS_MODULE", "DATABASE_URL")
        }
        env.update(
            PYTHONPATH=str(ROOT),
            XDG_CONFIG_HOME=str(self.config_home),
            PAM_NO_BROWSER="1",
            PYTHONUNBUFFERED="1",
            PAM_MONGOSH=str(ROOT / "tests" / "js" / "node_modules" / ".bin" / "mongosh"),
        )
        env.update(extra)
        return env

    def boss_env(self) -> dict[str, str]:
        """The approver's `pam`: an API token in the environment (no stored login)."""
        return self.env(PAM_PORTAL=self.portal.url, PAM_TOKEN=self.approver_token, XDG_CONFIG_HOME=str(self.tmp))

    def pam(self, *args: str, env: dict | None = None, input: str | None = None, timeout: float = 60):
        return subprocess.run(
            [sys.executable, "-m", "cli", *args],
            cwd=ROOT,
            env=env or self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, name: str, *args: str, env: dict | None = None) -> Output:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            cwd=ROOT,
            env=env or self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return Output(process, self.tmp / f"pam-{name}.log")


def _seed(gateway_name: str, ferret) -> dict:
    """The portal's rows: a FerretDB resource behind the gateway, two accounts, a role, an engineer, an approver."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from access.models import Gateway
    from access.services.tokens import api_token_create
    from tests.factories import AccessPolicyFactory, AccountFactory, DynamicRoleFactory, ResourceFactory, UserFactory
    from tests.helpers import make_approver
    from tests.secret_scan import remember

    remember(ACCOUNT_PASSWORD)
    with pymongo.MongoClient(ferret.uri, serverSelectionTimeoutMS=5000) as admin:
        for user in (ACCOUNT_USER, GATED_USER):
            if not admin.admin.command("usersInfo", user)["users"]:
                admin.admin.command("createUser", user, pwd=ACCOUNT_PASSWORD, roles=[])
    resource = ResourceFactory(
        name="ferret",
        uri=f"mongodb://127.0.0.1:{ferret.port}/?directConnection=true",
        admin_username=ferret.username,
        admin_password=ferret.password,
        gateway=Gateway.objects.get(name=gateway_name),
    )
    open_account = AccountFactory(resource=resource, name="app-rw", username=ACCOUNT_USER, password=ACCOUNT_PASSWORD)
    gated_account = AccountFactory(resource=resource, name="app-gated", username=GATED_USER, password=ACCOUNT_PASSWORD)
    role = DynamicRoleFactory(
        resource=resource, name="reporting", db="admin", roles=[], default_ttl=timedelta(minutes=10)
    )
    engineer = UserFactory(username="eng")
    approver = make_approver(UserFactory(username="boss"))
    engineer_device = TOTPDevice.objects.create(user=engineer, name="app", confirmed=True)
    approver_device = TOTPDevice.objects.create(user=approver, name="app", confirmed=True)
    AccessPolicyFactory(
        name="app standing",
        user=engineer,
        account=open_account,
        approval_required=False,
        max_duration=timedelta(hours=2),
    )
    AccessPolicyFactory(name="app gated", user=engineer, account=gated_account, approval_required=True)
    AccessPolicyFactory(
        name="reporting",
        user=engineer,
        account=None,
        role=role,
        approval_required=False,
        max_duration=timedelta(hours=1),
    )
    _token, raw = api_token_create(user=approver, name="boss automation")
    return {
        "engineer_key": bytes(engineer_device.bin_key),
        "approver_key": bytes(approver_device.bin_key),
        "approver_token": raw,
    }


def _start_qcluster(tmp: Path) -> subprocess.Popen:
    env = subprocess_env(PAM_LOG_LEVEL="WARNING", PAM_Q_WORKERS="1")
    subprocess.run([sys.executable, "manage.py", "setup_schedules"], cwd=ROOT, env=env, check=True, timeout=120)
    log = (tmp / "qcluster.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return process


def _stop(process: subprocess.Popen | None, sig=signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        process.send_signal(sig)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker, gateway_process, ferretdb_server, tmp_path_factory):
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: run tests/install-browser.sh"
        pytest.fail(message) if running_in_ci() else pytest.skip(message)
    tmp = tmp_path_factory.mktemp("cli")
    config_home = tmp / "config"
    config_home.mkdir()
    qcluster = portal = None
    previous_interval = os.environ.get("PAM_CLI_DEVICE_POLL_SECONDS")
    os.environ["PAM_CLI_DEVICE_POLL_SECONDS"] = "1"  # daphne tells the CLI to poll every second
    try:
        with django_db_blocker.unblock():
            gateway_process.start()
            seeded = _seed(gateway_process.name, ferretdb_server)
            portal = PortalServer(tmp / "daphne.log", gateway_process.address).start()
            qcluster = _start_qcluster(tmp)
        yield Stack(portal, gateway_process.address, tmp, config_home, **seeded)
    finally:
        if previous_interval is None:
            os.environ.pop("PAM_CLI_DEVICE_POLL_SECONDS", None)
        else:
            os.environ["PAM_CLI_DEVICE_POLL_SECONDS"] = previous_interval
        _stop(qcluster)
        if portal is not None:
            portal.stop()
        gateway_process.stop()  # before the flush: a gateway writing its heartbeat could deadlock with it
        with django_db_blocker.unblock():
            from django.core.management import call_command

            call_command("flush", interactive=False, verbosity=0)


@pytest.fixture
def orm(django_db_blocker):
    """The test database, read and written from the test (no transaction: the subprocesses see every row)."""
    with django_db_blocker.unblock():
        yield


def _code(key: bytes) -> str:
    return f"{totp(key):06d}"


def _portal_sign_in(page, stack: Stack, username: str, key: bytes, *, url: str = "") -> None:
    """Sign `page` in as `username`: password, then the authenticator's code (from `url`, or the portal's home)."""
    page.set_default_timeout(15_000)
    page.goto(url or f"{stack.portal.url}/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/mfa/"))
    page.fill("#id_token", _code(key))
    page.click("form:has(#id_token) button[type=submit]")
    page.wait_for_url(lambda address: "/mfa/" not in address)


# -- before any login ------------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)  # also makes pytest-django create the test database the stack shares
def test_without_a_login_pam_says_how_to_sign_in(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(tmp_path)}
    env.pop("PAM_TOKEN", None)
    env.pop("PAM_PORTAL", None)
    result = subprocess.run(
        [sys.executable, "-m", "cli", "leases"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3
    assert "You are not signed in: run `pam login --portal URL` first." in result.stderr
    assert "Traceback" not in result.stderr
    as_json = subprocess.run(
        [sys.executable, "-m", "cli", "--json", "sessions"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert as_json.returncode == 3 and json.loads(as_json.stdout)["error"]["exit_code"] == 3


# -- the login, through the browser ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def logged_in(stack) -> dict:
    """`pam login` completed in chromium: password, TOTP, then the explicit confirm of the code it printed."""
    login = stack.start("login", "login", "--portal", stack.portal.url)
    link = login.wait_for(r"\(or open (\S+/device/\?user_code=(\w+))\)", timeout=30)
    url, user_code = link.group(1), link.group(2)
    shown = login.wait_for(r"enter the code (\w{4}-\w{4})").group(1)
    with chromium_browser() as browser:
        page = browser.new_page()
        # the device page needs a signed-in user, past the second factor
        _portal_sign_in(page, stack, "eng", stack.engineer_key, url=url)
        page.wait_for_url(re.compile(r"/device/"))
        page.click("#device-code-form button[type=submit]")
        page.wait_for_selector("#device-confirm")
        confirm_page = {
            "code": page.inner_text("#device-code"),
            "client": page.inner_text("#device-client"),
            "origin": page.inner_text("#device-origin"),
        }
        page.click("#device-approve")
        page.wait_for_selector("#device-done")
        done_text = page.inner_text("#device-done")
    exit_code = login.finish(timeout=30)
    return {
        "exit_code": exit_code,
        "output": login.text,
        "user_code": user_code,
        "shown": shown,
        "confirm_page": confirm_page,
        "done_text": done_text,
    }


def test_device_login_in_chromium_stores_a_private_token_and_is_audited(stack, logged_in, orm):
    from access.models import AuditAction, AuditEvent

    assert logged_in["exit_code"] == 0, logged_in["output"]
    assert f"Signed in to {stack.portal.url} as eng." in logged_in["output"]
    page = logged_in["confirm_page"]
    assert page["code"] == logged_in["shown"] and page["client"] == "pam command line"
    assert page["origin"].startswith("127.0.0.1")
    assert "The CLI is signed in" in logged_in["done_text"]
    token_file = stack.config_home / "pam" / "credentials.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    stored = json.loads(token_file.read_text())
    assert stored["portal"] == stack.portal.url and stored["username"] == "eng"
    assert stored["access_token"] not in logged_in["output"] and stored["refresh_token"] not in logged_in["output"]
    login = AuditEvent.objects.filter(action=AuditAction.CLI_LOGIN).latest("seq")
    assert login.actor_name == "eng" and login.ip == "127.0.0.1"
    assert AuditEvent.objects.filter(action=AuditAction.CLI_DEVICE_CONFIRM, actor_name="eng").exists()
    whoami = stack.pam("whoami")
    assert whoami.returncode == 0 and whoami.stdout.startswith("eng on "), whoami.stderr


def test_a_client_polling_the_token_endpoint_too_fast_is_told_to_slow_down(stack):
    """RFC 8628 §3.5, through daphne with a raw HTTP client: polls closer than half the interval (1 s here) are
    answered slow_down and each adds 5 s to the code's interval; `pam login` above, polling every second, never was."""
    import requests

    codes = requests.post(f"{stack.portal.url}/oauth/device-authorization/", data={"client_id": "pam-cli"}, timeout=10)
    assert codes.status_code == 200 and codes.json()["interval"] == 1
    poll = {"grant_type": DEVICE_GRANT, "device_code": codes.json()["device_code"], "client_id": "pam-cli"}
    answers = [requests.post(f"{stack.portal.url}/oauth/token/", data=poll, timeout=10) for _ in range(3)]
    assert [a.json()["error"] for a in answers] == ["authorization_pending", "slow_down", "slow_down"]
    assert all(a.status_code == 400 and a.headers["Cache-Control"] == "no-store" for a in answers)
    time.sleep(1.2)  # the first interval (1 s) is long over, but the code's is now 11 s
    assert requests.post(f"{stack.portal.url}/oauth/token/", data=poll, timeout=10).json()["error"] == "slow_down"


def test_creds_leases_renew_and_revoke_from_the_terminal(stack, logged_in, orm):
    from access.models import Lease

    issued = stack.pam("creds", "reporting", "--resource", "ferret", "--ttl", "5m", "--format", "json")
    assert issued.returncode == 0, issued.stderr
    lease = json.loads(issued.stdout)
    from tests.secret_scan import remember

    remember(lease["password"])  # shown once on purpose; nowhere else
    with pymongo.MongoClient(lease["connection_string"], serverSelectionTimeoutMS=5000) as client:
        client.admin.command("ping")
    listed = json.loads(stack.pam("leases", "--json").stdout)
    assert [row["lease_id"] for row in listed] == [lease["lease_id"]]
    assert "password" not in listed[0]
    table = stack.pam("leases").stdout
    assert lease["lease_id"] in table and "active" in table
    renewed = stack.pam("renew", lease["lease_id"], "--increment", "10m")
    assert renewed.returncode == 0 and "renewed" in renewed.stdout, renewed.stderr
    revoked = stack.pam("revoke", lease["lease_id"])
    assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked.stderr
    assert Lease.objects.get(lease_id=lease["lease_id"]).state == "revoked"
    with (
        pytest.raises(pymongo.errors.OperationFailure),
        pymongo.MongoClient(lease["connection_string"], serverSelectionTimeoutMS=5000) as client,
    ):
        client.admin.command("ping")
    missing = stack.pam("creds", "nope", "--resource", "ferret")
    assert missing.returncode == 4 and "No access policy gives you the role 'nope'" in missing.stderr


def _local_uri(output: Output) -> str:
    return output.wait_for(r"Local proxy: (mongodb://127\.0\.0\.1:\d+/\?directConnection=true)", timeout=60).group(1)


def _session_of(output: Output):
    from access.models import Session

    public_id = output.wait_for(r"Session ([0-9a-f-]{36}) on").group(1)
    return Session.objects.get(public_id=public_id)


def test_db_access_serves_pymongo_mongosh_and_node_without_a_password_and_ctrl_c_ends_it(
    stack, logged_in, orm, mongosh, node_driver
):
    from access.models import SessionCommand

    access = stack.start("db-access", "db", "access", "--resource", "ferret", "--account", "app-rw", "-d", "30m")
    try:
        uri = _local_uri(access)
        access.wait_for("Press Ctrl\\+C to end the session")
        assert f"mongosh '{uri}'" in access.text or f"mongosh {uri}" in access.text
        session = _session_of(access)
        assert session.user.username == "eng" and session.state == "open"

        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:  # no username, no password
            client.shop.orders.insert_one({"sku": DOCUMENT, "n": 1})
            assert client.shop.orders.find_one({"sku": DOCUMENT})["n"] == 1
        shell = mongosh(uri, f"print(db.getSiblingDB('shop').orders.countDocuments({{sku: '{DOCUMENT}'}}))")
        assert shell.returncode == 0 and shell.stdout.strip().endswith("1"), shell.stderr[-2000:]
        node = node_driver(
            "const { MongoClient } = require('mongodb');"
            "(async () => { const c = new MongoClient(process.env.URI); await c.connect();"
            "const n = await c.db('shop').collection('orders').countDocuments({});"
            "console.log('count=' + n); await c.close(); })().catch(e => { console.error(e); process.exit(1); });",
            env={"URI": uri},
        )
        assert node.returncode == 0 and "count=1" in node.stdout, node.stderr[-2000:]

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            names = set(SessionCommand.objects.filter(session=session).values_list("command", flat=True))
            if {"insert", "find", "count"} <= names or {"insert", "find", "aggregate"} <= names:
                break
            time.sleep(0.2)
        assert "insert" in names and "find" in names, names
        assert DOCUMENT not in json.dumps(list(SessionCommand.objects.filter(session=session).values("summary")))

        # An open client connection, idle: Ctrl+C must close it within a second and end the session.
        port = int(uri.split(":")[2].split("/")[0])
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)
        time.sleep(0.2)
        interrupted = time.monotonic()
        interrupted_at = timezone.now()
        access.process.send_signal(signal.SIGINT)
        idle.settimeout(2)
        assert idle.recv(1) == b""
        closed_after = time.monotonic() - interrupted
        code = access.finish(timeout=10)
        exited_after = time.monotonic() - interrupted
    finally:
        if access.process.poll() is None:
            access.process.kill()
    print(f"Ctrl+C -> connection closed {closed_after * 1000:.0f} ms, pam exited {exited_after * 1000:.0f} ms")
    assert code == 0, access.text
    assert closed_after < 1.0
    session.refresh_from_db()
    assert session.state == "ended" and session.end_reason == "ended_by_user"
    assert (session.ended_at - interrupted_at).total_seconds() < 1.0  # ended through the API within a second
    assert "ended (ended by user)" in access.text
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_an_admin_kill_makes_the_cli_exit_with_the_reason(stack, logged_in, orm):
    from access.models.sessions import SessionEndReason
    from access.services.sessions import session_end

    access = stack.start("db-kill", "db", "access", "-r", "ferret", "-a", "app-rw", "--read-only")
    try:
        uri = _local_uri(access)
        session = _session_of(access)
        assert session.read_only
        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
            with pytest.raises(pymongo.errors.OperationFailure):
                client.shop.orders.insert_one({"sku": "refused"})  # read-only: the gateway refuses writes
            session_end(session=session, reason=SessionEndReason.KILLED, actor="security team")
            killed = time.monotonic()
            code = access.finish(timeout=10)
            print(f"admin kill -> pam exited after {(time.monotonic() - killed) * 1000:.0f} ms")
    finally:
        if access.process.poll() is None:
            access.process.kill()
    assert code == 5, access.text
    assert "pam: An administrator killed the session." in access.text


def test_an_approval_wait_completes_when_a_second_user_approves_in_the_portal(stack, logged_in, orm):
    from access.models import AccessRequest

    needs_reason = stack.pam("db", "access", "-r", "ferret", "-a", "app-gated")
    assert needs_reason.returncode == 4 and "--reason" in needs_reason.stderr and "boss" in needs_reason.stderr

    waiting = stack.start(
        "db-approval", "db", "access", "-r", "ferret", "-a", "app-gated", "--reason", "INC-77", "-d", "15m"
    )
    try:
        request_id = int(waiting.wait_for(r"request #(\d+)\); approvers: boss").group(1))
        waiting.wait_for(rf"Request #{request_id}: pending, waiting for boss to approve")
        assert AccessRequest.objects.get(pk=request_id).state == "pending"

        queue = stack.pam("requests", env=stack.boss_env())
        assert queue.returncode == 0 and "Waiting for your decision" in queue.stdout and "INC-77" in queue.stdout
        with chromium_browser() as browser:  # the second user approves in the portal's approval queue
            page = browser.new_page()
            _portal_sign_in(page, stack, "boss", stack.approver_key)
            page.goto(f"{stack.portal.url}/approvals/")
            card = f"[data-request='{request_id}']"
            assert "INC-77" in page.inner_text(card)
            page.fill(f"{card} textarea[name=comment]", "go")
            page.click(f"{card} button[value=approve]")
            page.wait_for_selector(".messages li.success")
            assert f"Request #{request_id} of eng is approved." in page.inner_text(".messages li.success")
            approved_at = time.monotonic()

        waiting.wait_for(rf"Request #{request_id} approved by boss")
        print(f"portal approval -> pam saw it after {(time.monotonic() - approved_at) * 1000:.0f} ms")
        _local_uri(waiting)
        session = _session_of(waiting)
        waiting.process.send_signal(signal.SIGTERM)
        code = waiting.finish(timeout=10)
    finally:
        if waiting.process.poll() is None:
            waiting.process.kill()
    assert code == 0, waiting.text
    session.refresh_from_db()
    assert session.state == "ended" and session.account.name == "app-gated"


EXEC_SCRIPT = """
import os, sys, pymongo
with pymongo.MongoClient(os.environ["MONGODB_URI"], serverSelectionTimeoutMS=5000) as client:
    client.admin.command("ping")
print("lease=" + os.environ["PAM_LEASE_ID"], flush=True)
sys.exit(3)
"""


def test_pam_exec_returns_the_command_exit_code_and_revokes_its_lease(stack, logged_in, orm):
    from access.models import Lease

    run = stack.pam("exec", "reporting", "--resource", "ferret", "--ttl", "1m", "--", sys.executable, "-c", EXEC_SCRIPT)
    assert run.returncode == 3, run.stderr
    lease_id = re.search(r"lease=(\S+)", run.stdout).group(1)
    lease = Lease.objects.get(lease_id=lease_id)
    assert lease.state == "revoked"


def test_a_killed_pam_exec_leaves_a_lease_that_expires_within_its_ttl(stack, logged_in, orm):
    from access.models import Lease

    started = stack.start("exec-killed", "exec", "reporting", "-r", "ferret", "--ttl", "8s", "--", "sleep", "60")
    children: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while not Lease.objects.filter(holder__username="eng", state="active").exists():
            assert time.monotonic() < deadline, started.text
            time.sleep(0.2)
        lease = Lease.objects.get(holder__username="eng", state="active")
        pid = started.process.pid
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        started.process.send_signal(signal.SIGKILL)
        started.finish(timeout=10)
        killed = time.monotonic()
        while time.monotonic() - killed < 30:
            lease.refresh_from_db()
            if lease.state in ("expired", "revoked"):
                break
            time.sleep(0.3)
    finally:
        for child in children:  # the command pam exec started, orphaned by the SIGKILL
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)
    print(f"SIGKILL -> lease {lease.state} after {time.monotonic() - killed:.1f} s (TTL 8 s)")
    assert lease.state in ("expired", "revoked")
    assert time.monotonic() - killed < 20


def test_db_connect_runs_mongosh_in_the_foreground_and_ends_the_session_when_it_exits(stack, logged_in, orm):
    from access.models import Session
    from tests.mongo.clients import _client_env

    mongosh_env = {key: _client_env()[key] for key in ("HOME", "MONGOSH_FORCE_DISABLE_TELEMETRY_FOR_TESTING")}
    script = f"print('count=' + db.getSiblingDB('shop').orders.countDocuments({{sku: '{DOCUMENT}'}}))"
    arguments = ["db", "connect", "-r", "ferret", "-a", "app-rw", "--", "--quiet", "--norc", "--eval", script]
    result = stack.pam(*arguments, env=stack.env(**mongosh_env), timeout=90)
    (stack.tmp / "pam-db-connect.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "count=1" in result.stdout
    public_id = re.search(r"Session ([0-9a-f-]{36}) on", result.stdout).group(1)
    session = Session.objects.get(public_id=public_id)
    assert session.state == "ended" and session.end_reason == "ended_by_user"
    deadline = time.monotonic() + 10  # the gateway writes the session's log in batches
    while not session.commands.filter(command__in=["count", "aggregate"]).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session.commands.filter(command__in=["count", "aggregate"]).exists()


def test_listening_beyond_loopback_demands_the_local_password_printed_once(stack, logged_in, orm):
    access = stack.start("db-listen", "db", "access", "-r", "ferret", "-a", "app-rw", "--listen", "127.0.0.2")
    try:
        uri = access.wait_for(r"Local proxy: (mongodb://127\.0\.0\.2:\d+/\?directConnection=true)").group(1)
        password = access.wait_for(r"this local password \(shown once\): (\S+)").group(1)
        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as anonymous:
            with pytest.raises(pymongo.errors.OperationFailure) as refused:
                anonymous.shop.orders.find_one({})
            assert refused.value.code == 13
        host_port = uri.split("//")[1].split("/")[0]
        with pymongo.MongoClient(f"mongodb://pam:{password}@{host_port}/?directConnection=true") as client:
            assert client.shop.orders.find_one({"sku": DOCUMENT})["n"] == 1
        with (
            pytest.raises(pymongo.errors.OperationFailure),
            pymongo.MongoClient(
                f"mongodb://pam:wrong-{password}@{host_port}/?directConnection=true", serverSelectionTimeoutMS=5000
            ) as wrong,
        ):
            wrong.shop.orders.find_one({})
        access.process.send_signal(signal.SIGTERM)
        assert access.finish(timeout=10) == 0
    finally:
        if access.process.poll() is None:
            access.process.kill()


@pytest.mark.wireserver
def test_scoped_access_asked_narrowed_and_used_from_the_terminal(stack, logged_in, orm, wire_server, gateway_process):
    """eng asks for readWrite on shop.orders and shop.customers; boss narrows it to read on shop.orders from his
    terminal (with a fresh code); the credentials (once) and a `pam db access --scoped` session read shop.orders
    through pymongo and are refused on shop.customers and on writes (the wire server enforces the request's role)."""
    from django.contrib.auth import get_user_model

    from access.models import Gateway, Lease
    from access.services.policies import access_policy_create
    from tests.factories import resource_on
    from tests.helpers import database_on, totp_code
    from tests.secret_scan import remember

    transcript: list[str] = []

    def pam(*args: str, **kwargs):
        """`pam` with a transcript, which the leak scan searches (the credentials' own output is left out)."""
        result = stack.pam(*args, **kwargs)
        if args[:2] != ("scoped", "creds") or result.returncode != 0:
            transcript.append(f"$ pam {' '.join(args)}\n{result.stdout}{result.stderr}")
        (stack.tmp / "pam-scoped.log").write_text("\n".join(transcript))
        return result

    orders, customers = [{"_id": 1, "sku": "cli-scoped-1"}], [{"_id": 1, "name": "Ada"}]
    with database_on(wire_server.uri, orders=orders, customers=customers) as shop:
        resource = resource_on(wire_server, name="wire", gateway=Gateway.objects.get(name=gateway_process.name))
        access_policy_create(
            actor="test",
            name="shop scoped",
            user=get_user_model().objects.get(username="eng"),
            scope_resource=resource,
            scope_databases=[shop],
            scope_levels=["read", "readWrite"],
            approval_required=True,
            max_duration=timedelta(hours=2),
        )
        catalogue = pam("catalogue")
        assert re.search(r"scoped\s+wire\s+\(you choose\)\s+needs approval.*pam scoped envelopes", catalogue.stdout)
        assert re.search(r"account\s+ferret\s+app-rw\s+usable now", catalogue.stdout), catalogue.stdout
        envelopes = pam("scoped", "envelopes", "-r", "wire", "--choices")
        assert envelopes.returncode == 0 and shop in envelopes.stdout and "read, readWrite" in envelopes.stdout
        assert f"  {shop} (whole database allowed): customers, orders" in envelopes.stdout, envelopes.stdout
        outside = pam("scoped", "request", "-r", "wire", "--database", "billing", "--level", "read", "--reason", "x")
        assert outside.returncode == 1 and "Outside what the policy allows" in outside.stderr, outside.stderr
        asked = pam(
            "scoped", "request", "-r", "wire", "--database", shop, "--collection", "orders",
            "--collection", "customers", "--level", "readWrite", "-d", "1h", "--reason", "INC-88 orders",
        )  # fmt: skip
        assert asked.returncode == 0, asked.stderr
        request_id = int(re.search(r"Scoped request #(\d+) ", asked.stdout).group(1))
        assert f"(readWrite on {shop}.orders, {shop}.customers on wire for 1h) is pending" in asked.stdout
        as_json = json.loads(pam("scoped", "show", str(request_id), "--json").stdout)
        assert as_json["state"] == "pending" and as_json["requested"]["level"] == "readWrite"
        assert f"readWrite on {shop}.orders, {shop}.customers" in pam("scoped", "list").stdout

        boss = stack.boss_env()
        queue = pam("scoped", env=boss)
        assert "Waiting for your decision" in queue.stdout and "INC-88 orders" in queue.stdout, queue.stdout
        approved = pam(
            "scoped", "approve", str(request_id), "--only", f"{shop}.orders", "--level", "read",
            "--comment", "read is enough", env=boss, input=totp_code(stack.approver_key, steps_ahead=1) + "\n",
        )  # fmt: skip
        assert approved.returncode == 0, approved.stderr
        assert f"Scoped request #{request_id} of eng is approved: read on {shop}.orders for 1h (narrowed)." in (
            approved.stdout
        )
        shown = pam("scoped", "show", str(request_id))
        assert f"granted: read on {shop}.orders (narrowed)" in shown.stdout and "active until" in shown.stdout

        issued = pam("scoped", "creds", str(request_id), "--format", "json")
        assert issued.returncode == 0, issued.stderr
        creds = json.loads(issued.stdout)
        remember(creds["password"])  # shown once on purpose; nowhere else
        with pymongo.MongoClient(creds["connection_string"], serverSelectionTimeoutMS=5000) as client:
            assert client[shop].orders.find_one({"_id": 1})["sku"] == "cli-scoped-1"
            for refused in (lambda: client[shop].customers.find_one(), lambda: client[shop].orders.insert_one({})):
                with pytest.raises(pymongo.errors.OperationFailure) as caught:
                    refused()
                assert caught.value.code == 13
        again = pam("scoped", "creds", str(request_id))
        assert again.returncode == 1 and "already shown once" in again.stderr

        access = stack.start("db-scoped", "db", "access", "--scoped", str(request_id), "-d", "20m")
        try:
            uri = _local_uri(access)
            session = _session_of(access)
            assert session.lease.request_id == request_id
            with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:  # no password: the proxy's
                assert client[shop].orders.count_documents({}) == 1
                with pytest.raises(pymongo.errors.OperationFailure) as caught:
                    client[shop].customers.find_one()
                assert caught.value.code == 13
            access.process.send_signal(signal.SIGTERM)
            assert access.finish(timeout=10) == 0, access.text
        finally:
            if access.process.poll() is None:
                access.process.kill()
        session.refresh_from_db()
        assert session.state == "ended" and "ended (ended by user)" in access.text

        given_up = pam("scoped", "cancel", str(request_id))
        assert given_up.returncode == 0 and "is cancelled" in given_up.stdout, given_up.stdout + given_up.stderr
        assert Lease.objects.get(request_id=request_id).state == "revoked"
        with (
            pytest.raises(pymongo.errors.OperationFailure),
            pymongo.MongoClient(creds["connection_string"], serverSelectionTimeoutMS=5000) as client,
        ):
            client[shop].orders.find_one()

        # A request denied (boss types one of his backup codes): its grant cannot be used.
        from access.services.mfa import mfa_backup_codes_generate

        backup = mfa_backup_codes_generate(user=get_user_model().objects.get(username="boss"))[0]
        remember(backup)
        second = pam(
            "scoped", "request", "-r", "wire", "--database", shop, "--level", "read", "--reason", "INC-89", "--json"
        )
        second_id = json.loads(second.stdout)["id"]
        denied = pam("scoped", "deny", str(second_id), "--comment", "not today", env=boss, input=backup + "\n")
        assert denied.returncode == 0 and f"Scoped request #{second_id} of eng is denied." in denied.stdout
        refused = pam("db", "access", "--scoped", str(second_id))
        assert refused.returncode == 4 and f"Scoped request #{second_id} has no active grant (denied)" in refused.stderr
        unknown = pam("scoped", "creds", "9999")
        assert unknown.returncode == 4 and "There is no scoped request #9999 you may see" in unknown.stderr


def test_logout_revokes_the_token_and_a_stolen_copy_is_refused(stack, logged_in):
    import requests

    token_file = stack.config_home / "pam" / "credentials.json"
    lapsed = json.loads(token_file.read_text())
    token_file.write_text(json.dumps({**lapsed, "expires_at": 0}))  # the access token has lapsed: pam refreshes it
    assert stack.pam("whoami").returncode == 0
    stored = json.loads(token_file.read_text())
    assert stored["access_token"] != lapsed["access_token"] and stored["refresh_token"] != lapsed["refresh_token"]
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    me = f"{stack.portal.url}/api/v1/me"
    assert requests.get(me, headers={"Authorization": f"Bearer {stored['access_token']}"}, timeout=10).ok
    out = stack.pam("logout")
    assert out.returncode == 0 and "login is revoked" in out.stdout, out.stderr
    assert not (stack.config_home / "pam" / "credentials.json").exists()
    stolen = requests.get(me, headers={"Authorization": f"Bearer {stored['access_token']}"}, timeout=10)
    assert stolen.status_code == 401 and "pam login" in stolen.json()["error"]["message"]
    refreshed = requests.post(
        f"{stack.portal.url}/oauth/token/",
        data={"grant_type": "refresh_token", "refresh_token": stored["refresh_token"], "client_id": "pam-cli"},
        timeout=10,
    )
    assert refreshed.status_code == 400
    # the stolen file put back: the CLI says what to do
    (stack.config_home / "pam" / "credentials.json").write_text(json.dumps(stored))
    os.chmod(stack.config_home / "pam" / "credentials.json", 0o600)
    again = stack.pam("sessions")
    assert again.returncode == 3 and "run `pam login` again" in again.stderr
