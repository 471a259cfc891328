"""Single sign-on in a real browser: Debian's chromium (Playwright) → a real daphne → the real oidc-provider → back.

The portal runs with SSO only on (password sign-in kept for the break-glass admin), the identity provider's second
factor trusted, and a mapping from the provider's "dba" group to the Django group a policy grants. Flow 1: a person
signs in at the identity provider's form and lands on the portal's dashboard with the group's account in their
catalogue; the provider then drops them from the group and their next sign-in ends the session the group granted.
Flow 2: the password form refuses a normal user and lets the break-glass admin in (portal and admin, with a code).
Screenshots go to test-output/screenshots/<test>/.
"""

from __future__ import annotations

import re
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Group

from access.models import Session, SsoGroupMapping
from access.models.sessions import SessionEndReason, SessionState
from access.otp import totp_device_create
from portal.sso_forms import SSO_ONLY_MESSAGE
from tests.factories import AccessPolicyFactory, AccountFactory, UserFactory
from tests.gateway_fixtures import free_port
from tests.helpers import daphne_start, process_stop, totp_code
from tests.oidc import OidcProvider
from tests.profile import subprocess_env
from tests.test_portal_browser import Steps, browser, chromium_path  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

IDP_PASSWORD = "idp password 7Rk"
LOCAL_PASSWORD = "correct horse battery staple"


class SsoPortal:
    """daphne serving the portal with single sign-on through `idp`, on the test database."""

    def __init__(self, port: int, idp: OidcProvider, log_path: Path) -> None:
        self.port, self.idp, self.log_path = port, idp, log_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> SsoPortal:
        env = subprocess_env(
            **self.idp.sso_settings(
                PAM_OIDC_TRUST_IDP_MFA="true",
                PAM_SSO_ONLY="true",
                PAM_SSO_BREAK_GLASS_USERS="breakglass",
                PAM_MFA_METHOD="totp",
            )
        )
        self.process = daphne_start(port=self.port, env=env, log_path=self.log_path, timeout=timeout)
        return self

    def stop(self) -> None:
        process_stop(self.process)


@pytest.fixture(scope="module")
def idp_and_portal(django_db_setup, django_db_blocker, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sso-browser")
    port = free_port()
    idp = OidcProvider(workdir, redirect_uris=[f"http://127.0.0.1:{port}/sso/callback/"]).start()
    portal = SsoPortal(port, idp, workdir / "daphne.log")
    try:
        with django_db_blocker.unblock():
            portal.start()
        yield idp, portal
    finally:
        portal.stop()
        idp.stop()


@pytest.fixture
def steps(request) -> Steps:
    return Steps(request.node.name)


def sign_in_at_the_identity_provider(page, steps, idp, username: str, shot: str) -> None:
    page.click("#sso-button")
    page.wait_for_url(re.compile(re.escape(idp.issuer) + r"/interaction/"))
    steps.shot(page, shot)
    page.fill("#idp-username", username)
    page.fill("#idp-password", IDP_PASSWORD)
    page.click("#idp-submit")


def test_sign_in_through_the_identity_provider_with_groups_mapped_then_removed(
    browser,  # noqa: F811
    idp_and_portal,
    steps,
):
    from access.services.usage import access_session_open

    idp, portal = idp_and_portal
    dba = Group.objects.create(name="dba-team")
    SsoGroupMapping.objects.create(claim_value="dba", group=dba)
    account = AccountFactory(name="orders-rw")
    AccessPolicyFactory(name="orders for DBAs", user=None, group=dba, account=account, approval_required=False)
    idp.set_user("iris", password=IDP_PASSWORD, groups=["dba"], amr=["pwd", "mfa"], name="Iris Lee")

    context = browser.new_context()
    page = steps.watch(context.new_page())
    page.goto(portal.url + "/")
    assert "/accounts/login/" in page.url
    assert page.is_visible("#sso-button") and not page.is_visible("#id_password")  # SSO only: the form is folded
    steps.shot(page, "login-page-sso-only")
    sign_in_at_the_identity_provider(page, steps, idp, "iris", "identity-provider-form")
    # The identity provider asserted a second factor and it is trusted: straight to the dashboard.
    page.wait_for_selector("h1:has-text('Hello Iris')")
    assert page.url == portal.url + "/"
    steps.shot(page, "dashboard-after-sso")
    page.click("nav >> text=Catalogue")
    assert "orders-rw" in page.inner_text("#catalogue") and "via group dba-team" in page.inner_text("#catalogue")
    steps.shot(page, "catalogue-through-the-mapped-group")

    from django.contrib.auth import get_user_model

    iris = get_user_model().objects.get(username="iris")
    assert list(iris.groups.values_list("name", flat=True)) == ["dba-team"]
    session = access_session_open(user=iris, account=account, duration=timedelta(minutes=30)).session
    page.goto(portal.url + "/")
    assert "orders-rw" in page.inner_text("main")
    context.close()

    # Removed from "dba" at the identity provider: the next sign-in takes the group, and its session, away.
    idp.set_user("iris", password=IDP_PASSWORD, groups=[], amr=["pwd", "mfa"], name="Iris Lee")
    again = steps.watch(browser.new_context().new_page())
    again.goto(portal.url + "/accounts/login/")
    sign_in_at_the_identity_provider(again, steps, idp, "iris", "identity-provider-again")
    again.wait_for_selector("h1:has-text('Hello Iris')")
    assert "No open sessions." in again.inner_text("main")
    steps.shot(again, "dashboard-group-removed")
    again.click("nav >> text=Catalogue")
    assert "orders-rw" not in again.inner_text("main")
    session = Session.objects.get(pk=session.pk)
    assert (session.state, session.end_reason) == (SessionState.ENDED, SessionEndReason.GRANT_REMOVED)
    assert not iris.groups.exists()


def test_sso_only_refuses_a_password_and_lets_the_break_glass_admin_in(
    browser,  # noqa: F811
    idp_and_portal,
    steps,
):
    _idp, portal = idp_and_portal
    UserFactory(username="nina")
    breakglass = UserFactory(username="breakglass", is_staff=True, is_superuser=True)
    device = totp_device_create(user=breakglass)

    page = steps.watch(browser.new_context().new_page())
    page.goto(portal.url + "/accounts/login/")
    page.click("#local-sign-in summary")
    page.fill("#id_username", "nina")
    page.fill("#id_password", LOCAL_PASSWORD)
    page.click("#local-sign-in button[type=submit]")
    page.wait_for_selector(f"text={SSO_ONLY_MESSAGE}")
    assert "/accounts/login/" in page.url
    steps.shot(page, "password-refused-sso-only")

    page.fill("#id_username", "breakglass")
    page.fill("#id_password", LOCAL_PASSWORD)
    page.click("#local-sign-in button[type=submit]")
    page.wait_for_url(re.compile(r"/mfa/"))
    page.fill("#id_token", totp_code(device))
    page.click("form:has(#id_token) button[type=submit]")
    page.wait_for_selector("h1:has-text('Hello breakglass')")
    steps.shot(page, "break-glass-in-the-portal")

    admin = steps.watch(browser.new_context().new_page())
    admin.goto(portal.url + "/admin/")
    assert admin.is_visible("#sso-button")
    steps.shot(admin, "admin-login-with-sso")
    admin.fill("#id_username", "breakglass")
    admin.fill("#id_password", LOCAL_PASSWORD)
    admin.fill("#id_otp_token", totp_code(device, steps_ahead=1))
    admin.click("#login-form [type=submit]")
    admin.wait_for_selector("#site-name")
    assert admin.url.rstrip("/").endswith("/admin")
    steps.shot(admin, "admin-index-break-glass")
