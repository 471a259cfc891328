"""The requester portal in a real browser: Debian's chromium driven by Playwright, against a real daphne process
and a real `runproxy` gateway, both sharing the test database (a file) with this process.

Flow 1: an engineer enrols TOTP (codes computed from the secret on the page), requests access, a second user
approves it, the engineer opens a gateway session and runs mongosh through the gateway, sees the command appear
on the live page, ends the session, and a second tab on the same session changes at once (websocket).
Flow 2: dynamic credentials on FerretDB: the password is revealed once and logs in, renew, revoke (the user is
dropped). Every step is screenshotted under test-output/screenshots/<test>/ and fails on any 5xx or error page.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pymongo
import pytest
from pymongo.errors import OperationFailure

from tests.gateway_fixtures import free_port
from tests.helpers import daphne_start, process_stop, totp_code
from tests.mongo.fixtures import running_in_ci
from tests.profile import subprocess_env
from tests.secret_scan import remember, scan_page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("PAM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
PASSWORD = "correct horse battery staple"
ACCOUNT_PASSWORD = "browser-acct-pass-4Qw"
ERROR_PAGE_MARKERS = ("Server Error (500)", "Traceback (most recent call last)", "Exception Value:", "OperationalError")


# -- processes -------------------------------------------------------------------------------------------------
class PortalServer:
    """daphne serving the portal on a free port, on the test database, with TOTP enforced."""

    def __init__(self, log_path: Path, gateway_address: str) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.gateway_address = gateway_address
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> PortalServer:
        env = subprocess_env(PAM_MFA_METHOD="totp", PAM_GATEWAY_HOST=self.gateway_address)
        self.process = daphne_start(port=self.port, env=env, log_path=self.log_path, timeout=timeout)
        return self

    def stop(self) -> None:
        process_stop(self.process)
        self.process = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: run tests/install-browser.sh (apt-get install chromium)"
        if running_in_ci():
            pytest.fail(f"{message} (CI=true: a missing browser fails the run)", pytrace=False)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def portal_server(django_db_setup, django_db_blocker, gateway_process, tmp_path_factory) -> Iterator[PortalServer]:
    server = PortalServer(tmp_path_factory.mktemp("daphne") / "daphne.log", gateway_process.address)
    with django_db_blocker.unblock():
        server.start()
    yield server
    server.stop()


@contextlib.contextmanager
def chromium_browser(path: Path = CHROMIUM) -> Iterator:
    """Debian's chromium through Playwright (never a downloaded browser), closed on the way out.

    Playwright's sync API keeps an asyncio loop on this thread while it runs; the ORM calls of the tests (and
    pytest-django's flushes between them) are plain blocking calls all the same, so Django is told to allow them.
    """
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(path), headless=True, args=CHROMIUM_ARGS)
            try:
                yield chromium
            finally:
                chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def browser(chromium_path):
    with chromium_browser(chromium_path) as chromium:
        yield chromium


# -- a watched browser tab ---------------------------------------------------------------------------------------
class Steps:
    """Numbered screenshots of one test, and the server errors any page of it met."""

    def __init__(self, name: str) -> None:
        self.folder = SCREENSHOTS / name
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.server_errors: list[str] = []

    def watch(self, page):
        page.on(
            "response",
            lambda response: response.status >= 500 and self.server_errors.append(f"{response.status} {response.url}"),
        )
        page.set_default_timeout(15_000)
        return page

    def shot(self, page, step: str) -> None:
        """Screenshot the page as step NN, after checking it is no error page."""
        self.count += 1
        page.screenshot(path=str(self.folder / f"{self.count:02d}-{step}.png"), full_page=True)
        self.check(page)

    def check(self, page) -> None:
        assert not self.server_errors, f"server errors: {self.server_errors}"
        text = page.content()
        for marker in ERROR_PAGE_MARKERS:
            assert marker not in text, f"error page at {page.url}: {marker}"
        scan_page(page)  # no secret remembered so far may show on this page


@pytest.fixture
def steps(request) -> Steps:
    return Steps(request.node.name)


def sign_in(page, base_url: str, username: str) -> None:
    page.goto(base_url + "/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")


def enter_code(page, code: str) -> None:
    page.fill("#id_token", code)
    page.click("form:has(#id_token) button[type=submit]")


# -- flow 1 --------------------------------------------------------------------------------------------------------
def test_enrol_request_approve_open_session_run_mongosh_watch_live_and_end(
    browser, portal_server, steps, gateway, wire_server, mongosh
):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from access.models import AccessRequest, Session
    from tests.factories import AccessPolicyFactory, AccountFactory, ResourceFactory, UserFactory
    from tests.helpers import make_approver
    from tests.mongo.clients import mongosh_eval

    wire_server.create_user("browser-acct", ACCOUNT_PASSWORD, [{"role": "root", "db": "admin"}])
    resource = ResourceFactory(name="shop-db", uri=f"mongodb://{wire_server.host_port}", tls=False, gateway=gateway)
    account = AccountFactory(resource=resource, name="shop-rw", username="browser-acct", password=ACCOUNT_PASSWORD)
    engineer = UserFactory(username="erin")
    AccessPolicyFactory(
        name="shop on-call", user=engineer, account=account, approval_required=True, max_duration=timedelta(hours=2)
    )
    approver = make_approver(UserFactory(username="adam"))
    approver_device = TOTPDevice.objects.create(user=approver, name="app", confirmed=True)

    erin_context = browser.new_context()
    erin = steps.watch(erin_context.new_page())
    erin.goto(portal_server.url + "/")
    assert "/accounts/login/" in erin.url
    steps.shot(erin, "login-page")
    sign_in(erin, portal_server.url, "erin")

    # Enrol TOTP: the secret comes from the otpauth URI the QR code encodes.
    erin.wait_for_url(re.compile(r"/mfa/enrol/"))
    erin.wait_for_selector("#totp-qr img")
    steps.shot(erin, "totp-enrolment")
    otpauth = erin.get_attribute("#totp-qr", "data-otpauth")
    secret = parse_qs(urlparse(otpauth).query)["secret"][0]
    assert erin.inner_text("#totp-secret") == secret
    enter_code(erin, totp_code(secret))
    erin.wait_for_selector("#backup-codes")
    assert len(erin.query_selector_all("#backup-codes li")) == 10
    steps.shot(erin, "backup-codes-once")
    erin.click("text=I saved them")
    erin.wait_for_selector("h1:has-text('Hello')")
    steps.shot(erin, "dashboard")

    # Request access.
    erin.click("nav >> text=Catalogue")
    steps.shot(erin, "catalogue")
    erin.click("#catalogue >> text=Request access")
    erin.fill("#id_reason", "INC-2041: orders stuck in pending")
    erin.fill("#id_duration", "30m")
    steps.shot(erin, "request-form")
    erin.click("text=Send request")
    erin.wait_for_selector("h1 .state-pending")
    steps.shot(erin, "request-pending")
    request_id = AccessRequest.objects.get(requester=engineer).pk

    # A second user approves it.
    adam_context = browser.new_context()
    adam = steps.watch(adam_context.new_page())
    sign_in(adam, portal_server.url, "adam")
    adam.wait_for_url(re.compile(r"/mfa/"))
    enter_code(adam, totp_code(approver_device))
    adam.wait_for_selector("#approver-card")
    steps.shot(adam, "approver-dashboard")
    adam.click("#approver-card >> text=Open the approval queue")
    card = f"[data-request='{request_id}']"
    adam.fill(f"{card} textarea[name=comment]", "Go ahead, INC-2041 is real")
    steps.shot(adam, "approval-queue")
    adam.click(f"{card} button[value=approve]")
    adam.wait_for_selector(".messages li.success")
    steps.shot(adam, "approved")
    adam_context.close()

    # Open a gateway session.
    erin.reload()
    erin.wait_for_selector("h1 .state-approved")
    steps.shot(erin, "request-approved")
    erin.click("text=Open session")
    erin.fill("#id_duration", "20m")
    erin.click("#open-session")
    erin.wait_for_selector("#session-secret")
    session = Session.objects.get(user=engineer)
    mongosh_command = erin.inner_text("#session-mongosh")
    uri = unescape(erin.inner_text("#session-uri"))
    session_secret = erin.inner_text("#session-secret")
    assert mongosh_command.startswith("mongosh ") and gateway.address in uri
    erin.wait_for_selector("#live-status.connected")
    assert erin.url.endswith(f"/sessions/{session.public_id}/")  # the secret's URL is replaced in history
    steps.shot(erin, "session-open-with-secret")

    # A second tab watches the same session: it must change when the session ends elsewhere.
    watcher = steps.watch(erin_context.new_page())
    watcher.goto(f"{portal_server.url}/sessions/{session.public_id}/")
    watcher.wait_for_selector("#live-status.connected")
    assert session_secret not in watcher.content()

    # Run mongosh through the gateway and see the command appear live.
    result = mongosh_eval(
        uri,
        "const orders = db.getSiblingDB('shop').orders;"
        "orders.insertOne({sku: 'PAGE-SKU-9'}); print(orders.countDocuments({}))",
    )
    # Assert on plain values: a CompletedProcess's repr would print the URI, secret included.
    exit_code, stderr = result.returncode, result.stderr[-2000:].replace(session_secret, "<secret>")
    assert exit_code == 0, stderr
    mongosh_done = time.monotonic()
    erin.wait_for_selector("#commands tr[data-command-id] >> text=insert", timeout=15_000)
    print(f"mongosh exit -> insert shown on the live page: {(time.monotonic() - mongosh_done) * 1000:.0f} ms")
    erin.wait_for_selector("#commands tr[data-command-id] >> text=shop.orders")
    assert "PAGE-SKU-9" not in erin.inner_text("#commands")  # document values are redacted
    steps.shot(erin, "command-appears-live")
    # This tab leaves the one page allowed to show the secret (made by daphne): the leak scan now searches for it.
    remember(session_secret)

    # End the session: this page reloads as ended, the other tab changes at once through the websocket.
    ending = time.monotonic()
    erin.click("#end-session")
    erin.wait_for_selector("#ended-banner:not([hidden])")
    steps.shot(erin, "session-ended")
    watcher.wait_for_selector("#ended-banner:not([hidden])", timeout=5_000)
    print(f"end clicked -> the other tab shows the end: {(time.monotonic() - ending) * 1000:.0f} ms")
    assert watcher.is_hidden("#end-session")
    steps.shot(watcher, "other-tab-ended-live")
    # The gateway refuses the ended session's credentials within seconds (it caches a login for 2 s).
    deadline = time.monotonic() + 10
    while True:
        after_code = mongosh_eval(uri, "db.getSiblingDB('shop').orders.countDocuments({})", timeout=30).returncode
        if after_code != 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert after_code != 0, "the ended session's credentials still log in through the gateway"
    erin_context.close()


# -- flow 2 --------------------------------------------------------------------------------------------------------
def test_lease_reveal_once_renew_and_revoke_on_ferretdb(browser, portal_server, steps, ferretdb_server):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from access.models import Lease
    from tests.factories import AccessPolicyFactory, DynamicRoleFactory, UserFactory, resource_on

    resource = resource_on(ferretdb_server, name="ferret")
    role = DynamicRoleFactory(
        resource=resource, name="analytics", db="admin", roles=[], default_ttl=timedelta(minutes=10)
    )
    user = UserFactory(username="lee")
    device = TOTPDevice.objects.create(user=user, name="app", confirmed=True)
    AccessPolicyFactory(
        name="analytics standing",
        user=user,
        account=None,
        role=role,
        approval_required=False,
        max_duration=timedelta(hours=1),
    )

    context = browser.new_context()
    page = steps.watch(context.new_page())
    sign_in(page, portal_server.url, "lee")
    page.wait_for_url(re.compile(r"/mfa/"))
    enter_code(page, totp_code(device))
    page.wait_for_selector("h1:has-text('Hello')")
    page.click("nav >> text=Catalogue")
    page.click("#catalogue >> text=Get credentials")
    page.fill("#id_ttl", "5m")
    steps.shot(page, "lease-form")
    page.click("button:has-text('Get credentials')")
    page.wait_for_selector("#lease-password")
    steps.shot(page, "lease-revealed-once")
    password = page.inner_text("#lease-password")
    remember(password)  # the reveal page is behind us: the leak scan searches every later page and log for it
    uri = unescape(page.inner_text("#lease-uri"))
    lease = Lease.objects.get(holder=user)
    assert page.inner_text("#lease-username") == lease.username
    countdown = page.inner_text("#lease-countdown")
    assert re.fullmatch(r"\d+:\d\d", countdown), countdown

    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        client.admin.command("ping")

    page.reload()
    page.wait_for_selector("#password-hidden")
    assert password not in page.content() and page.inner_text("#lease-username-plain") == lease.username
    steps.shot(page, "lease-only-username-after-reload")

    before = page.inner_text("#lease-expires-at")
    page.fill("#id_increment", "30m")
    page.click("#renew")
    page.wait_for_selector(".messages li.success")
    assert page.inner_text("#lease-expires-at") != before
    steps.shot(page, "lease-renewed")

    page.click("#revoke")
    page.wait_for_selector("#lease-state .state-revoked")
    steps.shot(page, "lease-revoked")
    with pytest.raises(OperationFailure), pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        client.admin.command("ping")
    context.close()


# -- flow 3 --------------------------------------------------------------------------------------------------------
def test_break_glass_session_killed_in_the_admin_updates_the_owners_page_and_is_post_reviewed(
    browser, portal_server, steps, gateway, staff_user
):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from access.models import AccessRequest, Session
    from tests.factories import AccessPolicyFactory, AccountFactory, ResourceFactory, UserFactory

    account = AccountFactory(resource=ResourceFactory(name="billing-db", gateway=gateway), name="billing-rw")
    engineer = UserFactory(username="kim")
    engineer_device = TOTPDevice.objects.create(user=engineer, name="app", confirmed=True)
    admin_device = TOTPDevice.objects.create(user=staff_user, name="app", confirmed=True)
    AccessPolicyFactory(
        name="billing emergency", user=engineer, account=account, approval_required=True, break_glass_allowed=True
    )

    kim = steps.watch(browser.new_context().new_page())
    sign_in(kim, portal_server.url, "kim")
    kim.wait_for_url(re.compile(r"/mfa/"))
    enter_code(kim, totp_code(engineer_device))
    kim.wait_for_selector("h1:has-text('Hello')")
    kim.goto(portal_server.url + "/catalogue/")
    kim.click("#catalogue >> text=Request access")
    kim.fill("#id_reason", "billing run failing, nobody answers")
    kim.fill("#id_duration", "15m")
    kim.check("#id_break_glass")
    steps.shot(kim, "break-glass-form")
    kim.click("text=Send request")
    kim.wait_for_selector(".messages li.warning")
    steps.shot(kim, "break-glass-granted")
    kim.click("text=Open session")
    kim.click("#open-session")
    kim.wait_for_selector("#live-status.connected")
    session = Session.objects.get(user=engineer)

    security = steps.watch(browser.new_context().new_page())
    security.goto(portal_server.url + "/admin/login/")
    security.fill("#id_username", staff_user.username)
    security.fill("#id_password", PASSWORD)
    security.fill("#id_otp_token", totp_code(admin_device))
    security.click("input[type=submit]")
    security.wait_for_selector("#site-name")
    security.goto(portal_server.url + "/admin/access/accessrequest/?post_review=awaiting")
    assert security.locator("#result_list tbody tr").count() == 1
    steps.shot(security, "admin-awaiting-post-review")

    security.goto(f"{portal_server.url}/admin/access/session/{session.pk}/change/")
    security.once("dialog", lambda dialog: dialog.accept())  # "Kill this session?"
    started = time.monotonic()
    security.click("form[action$='/kill/'] [type=submit]")
    kim.wait_for_selector("#ended-banner:not([hidden])", timeout=5_000)
    print(f"admin kill -> owner's page shows the end: {(time.monotonic() - started) * 1000:.0f} ms")
    assert "killed" in kim.inner_text("#ended-banner")
    steps.shot(kim, "owner-page-after-admin-kill")

    security.goto(portal_server.url + "/admin/access/accessrequest/?post_review=awaiting")
    security.check("#result_list input[name=_selected_action]")
    security.select_option("select[name=action]", "post_review_requests")
    security.click("button[name=index]")
    security.fill("#id_comment", "Justified: billing outage INC-77")
    steps.shot(security, "admin-post-review-form")
    security.click("input[type=submit][value=Reviewed]")
    security.wait_for_selector("ul.messagelist li.success")
    assert security.locator("#result_list tbody tr").count() == 0 or "0 access requests" in security.content()
    steps.shot(security, "admin-post-reviewed")
    assert AccessRequest.objects.get(requester=engineer).post_reviewed_by == staff_user

    security.goto(portal_server.url + "/admin/access/accesspolicy/")
    security.click("text=Access review")
    security.wait_for_selector("#access-review")
    assert "kim" in security.inner_text("#access-review")
    steps.shot(security, "admin-access-review")
