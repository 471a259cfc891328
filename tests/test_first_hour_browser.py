"""The first hour in a real browser (issue 16): Debian's chromium driven by Playwright.

- The API docs (Swagger UI and ReDoc) render from the portal's own static files and load nothing from another host.
- The demo walked as a newcomer, on the processes `make run HTTP=… GATEWAY=…` starts (FerretDB, daphne, a
  qcluster and a gateway, with its own database under the test's temporary directory): read the printed
  credentials; the engineer requests a gateway session and a lease, the approver approves both; the engineer gets
  the lease (asking for more than allowed: capped, with a warning), opens a read-only session, runs mongosh through
  the gateway, sees their commands live (the drivers' handshake grouped apart, a refused write with its reason),
  reloads (the same latency format), ends it and revokes the lease; the admin sees the grouped index, the command log
  and the audit trail. Every page is screenshotted under the test's temporary directory and copied to
  /tmp/issue16-shots/ for people to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.helpers import token_client, totp_code
from tests.mongo.paths import free_loopback_port, port_is_open
from tests.profile import embedded_env
from tests.secret_scan import remember, scan_page
from tests.test_make_run import OutputReader, ctrl_c, make_run, processes_with
from tests.test_portal_browser import browser, chromium_path  # noqa: F401 - the module's Playwright fixtures

pytestmark = [pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
SHOTS_FOR_PEOPLE = Path("/tmp/issue16-shots")
ERROR_MARKERS = ("Server Error (500)", "Traceback (most recent call last)", "Exception Value:")


class Shots:
    """Numbered full-page screenshots of one walk, checked for error pages and secrets as they are taken."""

    def __init__(self, folder: Path, copy_to: Path | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.copy_to = copy_to
        self.count = 0
        self.server_errors: list[str] = []
        self.off_host: list[str] = []

    def watch(self, page, host: str):
        def on_request(request):
            url = urlsplit(request.url)
            if url.scheme in ("http", "https", "ws", "wss") and url.hostname not in (None, host):
                self.off_host.append(request.url)

        def on_failed(request):
            # The page's Content-Security-Policy stopped it in the browser: nothing left for another host.
            failure = (request.failure or "").lower()
            if ("csp" in failure or "blocked_by_csp" in failure) and request.url in self.off_host:
                self.off_host.remove(request.url)

        page.on("request", on_request)
        page.on("requestfailed", on_failed)
        page.on("response", lambda r: r.status >= 500 and self.server_errors.append(f"{r.status} {r.url}"))
        page.set_default_timeout(20_000)
        return page

    def shot(self, page, name: str) -> None:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if self.copy_to is not None:
            self.copy_to.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.copy_to / path.name)
        assert not self.server_errors, self.server_errors
        assert not self.off_host, f"requests to other hosts: {self.off_host}"
        content = page.content()
        for marker in ERROR_MARKERS:
            assert marker not in content, f"error page at {page.url}: {marker}"
        scan_page(page)


# -- API docs ----------------------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_api_docs_and_redoc_render_in_chromium_from_the_portal_alone(browser, live_server, staff_user, tmp_path):  # noqa: F811
    raw_token = token_client(staff_user).raw_token
    host = urlsplit(live_server.url).hostname
    shots = Shots(tmp_path / "shots", SHOTS_FOR_PEOPLE / "api-docs")
    context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {raw_token}"})
    page = shots.watch(context.new_page(), host)
    page.goto(live_server.url + "/api/docs/")
    page.wait_for_selector(".swagger-ui .info .title:has-text('MongoDB access portal API')")
    page.wait_for_selector(".opblock-summary-path:has-text('/api/v1/sessions')")
    shots.shot(page, "swagger-ui")
    response = page.goto(live_server.url + "/api/redoc/")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("h1:has-text('MongoDB access portal API')")
    page.wait_for_load_state("networkidle")
    shots.shot(page, "redoc")
    scripts = page.eval_on_selector_all("script[src]", "nodes => nodes.map(n => n.src)")
    assert scripts and all(urlsplit(src).hostname == host for src in scripts), scripts
    context.close()


# -- the demo, walked as a newcomer ------------------------------------------------------------------------------
class Demo:
    """`make run` on free ports with its own var/ directory (database, logs, FerretDB); its printed credentials."""

    def __init__(self, tmp_path: Path) -> None:
        self.http_port, self.gateway_port = free_loopback_port(), free_loopback_port()
        self.var = tmp_path / "var"
        self.env = {**embedded_env(), "PAM_VAR_DIR": str(self.var), "PYTHONUNBUFFERED": "1", "DJANGO_DEBUG": "true"}
        self.env.pop("MONGODB_URI", None)
        self.env["PAM_MFA_METHOD"] = "totp"
        self.process: subprocess.Popen | None = None
        self.people: dict[str, tuple[str, str]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> str:
        """`make run HTTP=… GATEWAY=…`, then the credentials it printed once (remembered by the leak scan)."""
        self.process = make_run(self.env, http=f"127.0.0.1:{self.http_port}", gateway=f"127.0.0.1:{self.gateway_port}")
        self.reader = OutputReader(self.process)
        output = self.reader.wait_for(r"Press Ctrl\+C to stop everything", timeout=240)
        for name, password, uri in re.findall(
            r"username: (\S+)\s.*?\n\s+password: (\S+)\n.*?(otpauth://totp/\S+)", output, re.S
        ):
            remember(password)  # printed once on the terminal: never on a page or in a log
            self.people[name] = (password, uri)
        return output

    def stop(self) -> None:
        """Ctrl+C, as in the terminal; make and the demo exit once every child is gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            ctrl_c(self.process)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.reader.thread.join(timeout=5)

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in (self.var / "log").glob("*.log"))


def portal_sign_in(page, demo: Demo, username: str) -> None:
    password, otpauth = demo.people[username]
    page.goto(demo.url + "/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/mfa/"))
    page.fill("#id_token", totp_code(otpauth))
    page.click("form:has(#id_token) button[type=submit]")
    page.wait_for_selector("h1:has-text('Hello')")


def single_lines(page, selector: str) -> bool:
    """Whether every element matching `selector` is one line high (a button whose words wrap is twice as high)."""
    heights = [box["height"] for box in (el.bounding_box() for el in page.query_selector_all(selector)) if box]
    line = page.evaluate("parseFloat(getComputedStyle(document.body).lineHeight) || 22")
    return bool(heights) and max(heights) < 2 * line


@pytest.mark.ferretdb
@pytest.mark.slow
def test_a_newcomer_walks_the_demo_on_make_runs_processes(browser, tmp_path, ferretdb_uri, mongosh):  # noqa: F811
    from tests.mongo.clients import mongosh_eval

    shots = Shots(tmp_path / "shots", SHOTS_FOR_PEOPLE / "demo")
    shutil.rmtree(SHOTS_FOR_PEOPLE / "demo", ignore_errors=True)
    demo = Demo(tmp_path)
    try:
        output = demo.start()
        assert set(demo.people) == {"admin", "engineer", "approver"}, output[-3000:]
        assert f"http://127.0.0.1:{demo.http_port}/api/docs/" in output
        assert "no MongoDB roles" in output  # the demo's role on FerretDB says what it is
        engineer_ctx, approver_ctx, admin_ctx = (browser.new_context() for _ in range(3))
        erin = shots.watch(engineer_ctx.new_page(), "127.0.0.1")

        # The engineer signs in and asks for a gateway session and for credentials.
        erin.goto(demo.url + "/")
        shots.shot(erin, "login")
        assert erin.get_attribute("link[rel=icon]", "href").endswith("favicon.svg")
        portal_sign_in(erin, demo, "engineer")
        shots.shot(erin, "engineer-dashboard")
        erin.click("nav >> text=Catalogue")
        erin.wait_for_selector("#catalogue")
        assert "no MongoDB roles" in erin.inner_text("#catalogue")
        shots.shot(erin, "catalogue")
        for target, reason in (("demo-app", "INC-7: look at the demo notes"), ("readwrite", "INC-7: a report")):
            erin.goto(demo.url + "/catalogue/")
            erin.click(f"#catalogue tr:has-text('{target}') >> text=Request access")
            erin.fill("#id_reason", reason)
            erin.fill("#id_duration", "30m")
            shots.shot(erin, f"request-{target}")
            erin.click("text=Send request")
            erin.wait_for_selector("h1 .state-pending")
        erin.goto(demo.url + "/requests/")
        assert erin.locator("#requests tr[data-request]").count() == 2
        shots.shot(erin, "my-requests")

        # The approver approves both.
        adam = shots.watch(approver_ctx.new_page(), "127.0.0.1")
        portal_sign_in(adam, demo, "approver")
        adam.wait_for_selector("#approver-card:has-text('2 requests waiting')")
        shots.shot(adam, "approver-dashboard")
        adam.click("#approver-card >> text=Open the approval queue")
        shots.shot(adam, "approval-queue")
        for _ in range(2):
            adam.click(".card[data-request] button[value=approve] >> nth=0")
            adam.wait_for_selector(".messages li.success")
        shots.shot(adam, "approved")

        # The emails link to the page where the action happens (the console backend writes them to daphne's log).
        logs = demo.logs()
        assert f"Approve or deny it: {demo.url}/approvals/" in logs
        assert f"Open a session: {demo.url}/db-accounts/" in logs

        # The engineer's catalogue: usable now, the action buttons on one line.
        erin.goto(demo.url + "/catalogue/")
        assert erin.locator("#catalogue .state-approved").count() == 2
        erin.set_viewport_size({"width": 900, "height": 800})  # a narrow window: the buttons still do not wrap
        assert single_lines(erin, "#catalogue td.actions .button")
        erin.set_viewport_size({"width": 1280, "height": 800})
        shots.shot(erin, "catalogue-approved")

        # A lease asked for longer than the policy allows: granted capped, with a warning that names the maximum.
        erin.click("#catalogue tr:has-text('readwrite') >> text=Get credentials")
        erin.fill("#id_ttl", "3h")
        erin.click("button:has-text('Get credentials')")
        erin.wait_for_selector("#lease-password")
        warning = erin.inner_text(".messages li.warning")
        assert "The TTL was capped: you asked for 3h" in warning and "UTC" in warning, warning
        lease_password = erin.inner_text("#lease-password")
        lease_uri = unescape(erin.inner_text("#lease-uri"))
        shots.shot(erin, "lease-capped-and-revealed-once")
        remember(lease_password)
        result = mongosh_eval(lease_uri, "db.getSiblingDB('demo').notes.insertOne({by: 'lease'}); print('ok')")
        assert result.returncode == 0, result.stderr[-1500:].replace(lease_password, "<password>")

        # A read-only gateway session: mongosh through the gateway, its commands live, a refused write with its reason.
        erin.goto(demo.url + "/catalogue/")
        erin.click("#catalogue tr:has-text('demo-app') >> text=Open session")
        erin.fill("#id_duration", "20m")
        erin.check("#id_read_only")
        erin.click("#open-session")
        erin.wait_for_selector("#session-secret")
        secret = erin.inner_text("#session-secret")
        uri = unescape(erin.inner_text("#session-uri"))
        assert f"127.0.0.1:{demo.gateway_port}" in uri
        erin.wait_for_selector("#live-status.connected")
        shots.shot(erin, "session-open")
        script = (
            "const d = db.getSiblingDB('demo'); print(d.notes.countDocuments({}));"
            "try { d.notes.insertOne({by: 'session'}) } catch (e) { print('refused') }"
        )
        result = mongosh_eval(uri, script, timeout=90)
        assert result.returncode == 0, result.stderr[-1500:].replace(secret, "<secret>")
        remember(secret)
        erin.one_time_secret = True  # the reveal page keeps showing the secret until it is reloaded
        erin.wait_for_selector("#commands tr.refused:has-text('refused:')")
        mine = "#commands tr[data-command-id]:not(.chatter)"
        live_latencies = [erin.inner_text(f"{mine} >> nth={i} >> td >> nth=5") for i in range(2)]
        assert erin.is_hidden("#commands tr.chatter >> nth=0")  # the handshake is grouped away
        assert int(erin.inner_text("#chatter-count")) >= 2
        shots.shot(erin, "session-live-commands")
        erin.check("#show-chatter")
        assert erin.is_visible("#commands tr.chatter >> nth=0")
        shots.shot(erin, "session-live-with-handshake")
        erin.reload()
        erin.one_time_secret = False  # reloaded: the secret is gone from the page, which is scanned again
        erin.wait_for_selector("#commands tr.refused")
        reloaded = [erin.inner_text(f"{mine} >> nth={i} >> td >> nth=5") for i in range(2)]
        assert reloaded == live_latencies and all(re.fullmatch(r"\d+\.\d ms", value) for value in reloaded)
        assert "refused:" in erin.inner_text("#commands tr.refused")
        erin.click("#end-session")
        erin.wait_for_selector("#ended-banner:not([hidden])")
        shots.shot(erin, "session-ended")

        # The lease: revoke it; its page no longer says "Renewable until".
        erin.goto(demo.url + "/leases/")
        erin.click("#leases a >> nth=0")
        erin.click("#revoke")
        erin.wait_for_selector("#lease-state .state-revoked")
        assert "Renewable until" not in erin.inner_text("main")
        shots.shot(erin, "lease-revoked")
        for listing in ("/leases/", "/sessions/", "/requests/"):
            erin.goto(demo.url + listing)
            erin.wait_for_selector("#list-filter")
            assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", erin.inner_text("main table"))
            shots.shot(erin, "list" + listing.replace("/", "-").rstrip("-"))

        # The security team's admin: grouped by work, the command log with the handshake apart, the audit trail.
        admin = shots.watch(admin_ctx.new_page(), "127.0.0.1")
        password, otpauth = demo.people["admin"]
        admin.goto(demo.url + "/admin/login/")
        admin.fill("#id_username", "admin")
        admin.fill("#id_password", password)
        admin.fill("#id_otp_token", totp_code(otpauth))
        admin.click("input[type=submit]")
        admin.wait_for_selector("#site-name")
        captions = admin.locator("#content-main caption a.section").all_inner_texts()
        assert [c.strip().lower() for c in captions] == [
            "access",
            "sessions",
            "leases",
            "audit",
            "connectors",
            "settings",
        ]
        assert "OTP_EMAIL" not in admin.content() and "Api tokens" not in admin.content()
        shots.shot(admin, "admin-index")
        admin.goto(demo.url + "/admin/access/session/")
        admin.click("#result_list tbody tr >> nth=0 >> th a")
        admin.wait_for_selector("text=Commands the person ran")
        shots.shot(admin, "admin-session-command-log")
        admin.goto(demo.url + "/admin/access/auditevent/")
        width = admin.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        assert width, "the audit changelist is wider than the page"
        shots.shot(admin, "admin-audit-trail")
        admin.goto(demo.url + "/api/docs/")
        admin.wait_for_selector(".swagger-ui .info .title")
        shots.shot(admin, "api-docs")
        for context in (engineer_ctx, approver_ctx, admin_ctx):
            context.close()
    finally:
        demo.stop()
    assert "Stopped." in demo.reader.text and processes_with(f"PAM_VAR_DIR={demo.var}") == []
    assert not port_is_open(demo.http_port) and not port_is_open(demo.gateway_port)
    assert all(password not in demo.logs() for password, _uri in demo.people.values())
