"""The server side of `pam login` and the requester API the CLI uses, in process: the device grant end to end (the
device page behind the second factor, explicit confirm, single use, expiry), bearer tokens from it on the API,
revocation from the portal, the admin and `pam logout`, audit rows with the client address, and approvals that
need a fresh one-time code."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.utils import timezone
from django_otp.oath import totp
from oauth2_provider.models import get_access_token_model, get_device_grant_model, get_refresh_token_model
from rest_framework.test import APIClient

from access.models import AuditAction, AuditEvent
from access.services.cli import CLI_CLIENT_ID
from tests.factories import AccessPolicyFactory, AccountFactory, UserFactory
from tests.helpers import make_approver, verified_client

pytestmark = pytest.mark.django_db

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _form(client: Client, url: str, data: dict):
    """POST as an OAuth client does: application/x-www-form-urlencoded."""
    return client.post(url, urlencode(data), content_type="application/x-www-form-urlencoded")


def _device_code(client_address: str = "198.51.100.7") -> dict:
    response = _form(Client(REMOTE_ADDR=client_address), "/oauth/device-authorization/", {"client_id": CLI_CLIENT_ID})
    assert response.status_code == 200, response.content
    return response.json()


def _exchange(device_code: str):
    return _form(
        Client(), "/oauth/token/", {"grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": CLI_CLIENT_ID}
    )


def _confirm(browser, user_code: str, decision: str = "approve"):
    page = browser.post("/device/", {"user_code": user_code})
    assert page.status_code == 200
    return browser.post("/device/", {"user_code": user_code, "decision": decision})


def _login(user, browser=None) -> dict:
    browser = browser or verified_client(user)
    codes = _device_code()
    _confirm(browser, codes["user_code"])
    response = _exchange(codes["device_code"])
    assert response.status_code == 200, response.content
    return response.json()


def _api(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_device_authorization_gives_short_lived_codes_and_an_absolute_verification_uri():
    codes = _device_code()
    assert codes["verification_uri"] == "http://testserver/device/"
    assert codes["verification_uri_complete"] == f"http://testserver/device/?user_code={codes['user_code']}"
    assert 0 < codes["expires_in"] <= 600 and len(codes["user_code"]) == 8
    event = AuditEvent.objects.get(action=AuditAction.CLI_DEVICE_REQUEST)
    assert event.ip == "198.51.100.7"


def test_device_page_needs_the_second_factor():
    user = UserFactory()
    codes = _device_code()
    password_only = Client()
    password_only.force_login(user)
    response = password_only.get(f"/device/?user_code={codes['user_code']}")
    assert response.status_code == 302 and response["Location"].startswith("/mfa/")
    response = password_only.post("/device/", {"user_code": codes["user_code"], "decision": "approve"})
    assert response.status_code == 302 and response["Location"].startswith("/mfa/")
    assert get_device_grant_model().objects.get().status == "authorization-pending"
    anonymous = Client().get("/device/")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


def test_the_confirm_page_shows_client_code_and_origin_and_needs_an_explicit_confirm():
    user = UserFactory()
    browser = verified_client(user)
    codes = _device_code("203.0.113.9")
    page = browser.post("/device/", {"user_code": codes["user_code"].lower()}).content.decode()
    assert "pam command line" in page and "203.0.113.9" in page
    assert f"{codes['user_code'][:4]}-{codes['user_code'][4:]}" in page
    assert _exchange(codes["device_code"]).json()["error"] == "authorization_pending"  # typing it is not confirming
    done = browser.post("/device/", {"user_code": codes["user_code"], "decision": "approve"})
    assert "The CLI is signed in" in done.content.decode()
    confirmed = AuditEvent.objects.get(action=AuditAction.CLI_DEVICE_CONFIRM)
    assert confirmed.actor == user


def test_a_denied_code_gives_nothing():
    browser = verified_client(UserFactory())
    codes = _device_code()
    _confirm(browser, codes["user_code"], decision="deny")
    response = _exchange(codes["device_code"])
    assert response.status_code == 400 and response.json()["error"] == "access_denied"
    assert AuditEvent.objects.filter(action=AuditAction.CLI_DEVICE_DENY).count() == 1


def test_a_device_code_is_exchanged_once_for_short_lived_tokens_and_the_login_is_audited():
    user = UserFactory()
    browser = verified_client(user)
    codes = _device_code()
    _confirm(browser, codes["user_code"])
    response = _form(
        Client(REMOTE_ADDR="192.0.2.44"),
        "/oauth/token/",
        {"grant_type": DEVICE_GRANT, "device_code": codes["device_code"], "client_id": CLI_CLIENT_ID},
    )
    tokens = response.json()
    assert response.status_code == 200 and tokens["refresh_token"] and tokens["expires_in"] <= 900
    again = _exchange(codes["device_code"])
    assert again.status_code == 400 and again.json()["error"] == "expired_token"
    login = AuditEvent.objects.get(action=AuditAction.CLI_LOGIN)
    assert login.actor == user and login.ip == "192.0.2.44"
    # the tokens are stored as digests only
    assert not get_access_token_model().objects.filter(token=tokens["access_token"]).exists()
    assert get_access_token_model().objects.get().token == ""
    assert _api(tokens["access_token"]).get("/api/v1/me").json()["username"] == user.username


def test_an_expired_device_code_is_refused_on_the_page_and_at_the_token_endpoint():
    browser = verified_client(UserFactory())
    codes = _device_code()
    get_device_grant_model().objects.update(expires=timezone.now() - timedelta(seconds=1))
    page = browser.post("/device/", {"user_code": codes["user_code"]}).content.decode()
    assert "unknown, used or expired" in page
    assert _exchange(codes["device_code"]).json()["error"] == "expired_token"


def test_a_code_confirmed_then_expired_before_the_exchange_is_refused():
    browser = verified_client(UserFactory())
    codes = _device_code()
    _confirm(browser, codes["user_code"])
    get_device_grant_model().objects.update(expires=timezone.now() - timedelta(seconds=1))
    assert _exchange(codes["device_code"]).json()["error"] == "expired_token"


def _poll_later(seconds: float) -> None:
    """As if `seconds` passed since the device code's last poll (moves its `last_checked` back)."""
    model = get_device_grant_model()
    for grant in model.objects.all():
        model.objects.filter(pk=grant.pk).update(last_checked=grant.last_checked - timedelta(seconds=seconds))


def test_polling_a_pending_code_faster_than_its_interval_is_told_to_slow_down_and_the_interval_grows():
    codes = _device_code()
    assert codes["interval"] == 5
    first = _exchange(codes["device_code"])  # the first poll, right after the code was issued: fine
    assert first.status_code == 400 and first.json()["error"] == "authorization_pending"
    hurried = _exchange(codes["device_code"])  # at once again: too soon
    assert hurried.status_code == 400 and hurried.json()["error"] == "slow_down"
    assert get_device_grant_model().objects.get().interval == 10  # RFC 8628 §3.5: +5 s, for all later polls
    _poll_later(4)  # under half the interval: too soon again
    assert _exchange(codes["device_code"]).json()["error"] == "slow_down"
    assert get_device_grant_model().objects.get().interval == 15
    _poll_later(10)
    assert _exchange(codes["device_code"]).json()["error"] == "authorization_pending"
    _confirm(verified_client(UserFactory()), codes["user_code"])
    tokens = _exchange(codes["device_code"])  # a confirmed code is exchanged whenever it is asked for
    assert tokens.status_code == 200, tokens.content


class _DjangoHttp:
    """What `pam` does with `requests.Session`, served by Django's test client (no network)."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}

    def post(self, url, data=None, timeout=None):
        return self.request("POST", url, data=data)

    def request(self, method, url, json=None, params=None, data=None, headers=None, timeout=None):
        import requests

        path = "/" + url.split("/", 3)[3]
        auth = (headers or {}).get("Authorization")
        client = Client(HTTP_AUTHORIZATION=auth) if auth else Client()
        if data is not None:
            answer = _form(client, path, data)
        else:
            answer = client.generic(method, path + (f"?{urlencode(params)}" if params else ""))
        response = requests.Response()
        response.status_code, response._content = answer.status_code, answer.content
        response.headers.update({key: value for key, value in answer.items()})
        return response


def test_pam_login_adds_five_seconds_to_its_interval_when_told_to_slow_down(monkeypatch, tmp_path):
    """The CLI's device login against the token endpoint, with a clock that only moves when it sleeps: the portal
    asks for 5 s, then raises the code's interval (as a busy server may); each slow_down adds 5 s to the CLI's wait."""
    import types

    import cli.api
    import cli.login

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setattr(cli.login.requests, "Session", _DjangoHttp)
    monkeypatch.setattr(cli.api.requests, "Session", _DjangoHttp)
    user, slept = UserFactory(), []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1:  # while the CLI waits for its first poll, the portal wants 20 s between polls
            get_device_grant_model().objects.update(interval=20, last_checked=timezone.now())
        _poll_later(seconds)
        if len(slept) == 4:
            grant = get_device_grant_model().objects.get()
            _confirm(verified_client(user), grant.user_code)

    clock = types.SimpleNamespace(sleep=sleep, monotonic=time.monotonic, time=time.time)
    monkeypatch.setattr(cli.login, "time", clock)
    done = cli.login.device_login("http://testserver", open_browser=False, echo=lambda text: None)
    assert done.username == user.username
    # 5 s (as told): 5 < 20/2, slow_down; 10 s: 10 < 25/2, slow_down; 15 s: pending; 15 s: confirmed
    assert slept == [5, 10, 15, 15]
    assert (tmp_path / "pam" / "credentials.json").exists()


def test_refresh_rotates_and_a_used_refresh_token_is_refused():
    tokens = _login(UserFactory())
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": CLI_CLIENT_ID}
    first = _form(Client(), "/oauth/token/", refresh)
    assert first.status_code == 200, first.content
    assert _form(Client(), "/oauth/token/", refresh).status_code == 400  # single use (rotation)


def test_a_login_ends_after_its_maximum_age_however_often_it_is_refreshed(settings):
    tokens = _login(UserFactory())
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": CLI_CLIENT_ID}
    rotated = _form(Client(), "/oauth/token/", refresh).json()
    get_refresh_token_model().objects.update(created=timezone.now() - timedelta(hours=13))
    settings.PAM_CLI_LOGIN_MAX_SECONDS = 12 * 3600
    refresh["refresh_token"] = rotated["refresh_token"]
    assert _form(Client(), "/oauth/token/", refresh).status_code == 400
    assert not get_refresh_token_model().objects.filter(revoked__isnull=True).exists()


def test_the_portal_lists_cli_logins_and_revoking_one_refuses_its_token():
    user = UserFactory()
    browser = verified_client(user)
    tokens = _login(user, browser)
    page = browser.get("/cli-logins/").content.decode()
    assert "Revoke" in page
    refresh = get_refresh_token_model().objects.get(revoked__isnull=True)
    browser.post(f"/cli-logins/{refresh.pk}/revoke/")
    refused = _api(tokens["access_token"]).get("/api/v1/me")
    assert refused.status_code == 401 and "run `pam login` again" in refused.json()["error"]["message"]
    assert AuditEvent.objects.filter(action=AuditAction.CLI_TOKEN_REVOKE, actor=user).count() == 1


def test_someone_else_cannot_revoke_a_login_from_the_portal():
    owner, other = UserFactory(), UserFactory()
    _login(owner)
    refresh = get_refresh_token_model().objects.get()
    assert verified_client(other).post(f"/cli-logins/{refresh.pk}/revoke/").status_code == 404


def test_the_admin_revokes_anyones_cli_login(otp_admin_client):
    tokens = _login(UserFactory())
    refresh = get_refresh_token_model().objects.get(revoked__isnull=True)
    response = otp_admin_client.post(
        "/admin/oauth2_provider/refreshtoken/",
        {"action": "revoke_cli_logins", "_selected_action": [refresh.pk]},
        follow=True,
    )
    assert "Revoked 1 CLI login" in response.content.decode()
    assert _api(tokens["access_token"]).get("/api/v1/me").status_code == 401


def test_logout_revokes_the_calling_login():
    tokens = _login(UserFactory())
    client = _api(tokens["access_token"])
    assert client.post("/api/v1/cli/logout").status_code == 204
    assert client.get("/api/v1/me").status_code == 401
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": CLI_CLIENT_ID}
    assert _form(Client(), "/oauth/token/", refresh).status_code == 400


def test_a_deactivated_user_is_refused_with_a_valid_token():
    user = UserFactory()
    tokens = _login(user)
    user.is_active = False
    user.save()
    assert _api(tokens["access_token"]).get("/api/v1/me").status_code == 401


def test_requests_api_files_a_request_and_an_approver_needs_a_fresh_code():
    requester, approver = UserFactory(), make_approver(UserFactory())
    account = AccountFactory()
    policy = AccessPolicyFactory(user=requester, account=account, approval_required=True)
    requester_api = _api(_login(requester)["access_token"])
    approver_browser = verified_client(approver)
    approver_api = _api(_login(approver, approver_browser)["access_token"])

    catalogue = requester_api.get("/api/v1/catalogue").json()["results"]
    entry = next(e for e in catalogue if e["policy"]["id"] == policy.pk)
    assert entry["usable_now"] is False and approver.username in entry["approvers"]
    filed = requester_api.post("/api/v1/requests", {"policy": policy.pk, "reason": "incident 42", "duration": "30m"})
    assert filed.status_code == 201, filed.content
    request_id = filed.json()["id"]
    assert requester_api.post(f"/api/v1/requests/{request_id}/approve", {"otp": "123456"}).status_code == 403

    no_code = approver_api.post(f"/api/v1/requests/{request_id}/approve", {})
    assert no_code.status_code == 403 and no_code.json()["error"]["field"] == "otp"
    wrong = approver_api.post(f"/api/v1/requests/{request_id}/approve", {"otp": "000000"})
    assert wrong.status_code == 403
    time.sleep(1.1)  # django-otp's back-off after one wrong code
    code = f"{totp(approver_browser.device.bin_key):06d}"
    approved = approver_api.post(f"/api/v1/requests/{request_id}/approve", {"otp": code, "comment": "ok"})
    assert approved.status_code == 200 and approved.json()["state"] == "approved"
    assert requester_api.get(f"/api/v1/requests/{request_id}").json()["approver"] == approver.username
    entry = next(e for e in requester_api.get("/api/v1/catalogue").json()["results"] if e["policy"]["id"] == policy.pk)
    assert entry["usable_now"] is True


def test_the_cli_package_imports_nothing_of_django():
    import subprocess
    import sys

    script = (
        "import sys, cli.main, cli.localproxy, cli.access, cli.login;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'access', 'portal', 'rest_framework'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)  # without the leak scan's sitecustomize
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_mfa_required_session_asks_for_a_code_and_accepts_a_fresh_one():
    user = UserFactory()
    account = AccountFactory(require_mfa=True)
    AccessPolicyFactory(user=user, account=account, approval_required=False)
    browser = verified_client(user)
    api = _api(_login(user, browser)["access_token"])
    asked = api.post("/api/v1/sessions", {"account": account.pk, "duration": "10m"}, format="json")
    assert asked.status_code == 403 and asked.json()["error"]["field"] == "otp"
    code = f"{totp(browser.device.bin_key):06d}"
    opened = api.post(
        "/api/v1/sessions",
        {"account": account.pk, "duration": "10m", "otp": code, "databases": ["app"]},
        format="json",
    )
    assert opened.status_code == 201, opened.content
    from access.models import Session

    assert Session.objects.get().database_allow_list == ["app"]
    audit = AuditEvent.objects.get(action=AuditAction.SESSION_OPEN)
    assert audit.data["via"] == "cli" and audit.data["databases"] == ["app"] and audit.ip == "127.0.0.1"


def test_deactivating_a_person_ends_their_cli_logins():
    from access.models.sessions import SessionEndReason
    from access.services.offboarding import user_access_end

    user = UserFactory()
    tokens = _login(user)
    user_access_end(user=user, reason=SessionEndReason.USER_DEACTIVATED, actor="security team")
    assert not get_refresh_token_model().objects.filter(user=user, revoked__isnull=True).exists()
    assert _api(tokens["access_token"]).get("/api/v1/me").status_code == 401


def test_pam_scoped_envelopes_says_why_the_choices_are_the_envelopes_own_names(monkeypatch, tmp_path):
    """When the server cannot be listed, `pam scoped envelopes --choices` shows the portal's reason (as the form
    does) above the names the envelope itself gives, instead of an unexplained short list."""
    from types import SimpleNamespace

    from click.testing import CliRunner

    import cli.api
    from access.services.tokens import api_token_create
    from cli.main import cli as pam
    from tests.helpers import scoped_envelope

    unreachable = SimpleNamespace(port=9, username="pam-admin", password="not-used-nothing-listens")
    envelope = scoped_envelope(unreachable, ["shop"], requester="eng", approver="boss", name="shop-readers")
    _token, raw = api_token_create(user=envelope["requester"])
    monkeypatch.setattr(cli.api.requests, "Session", _DjangoHttp)
    env = {"PAM_PORTAL": "http://testserver", "PAM_TOKEN": raw, "XDG_CONFIG_HOME": str(tmp_path)}
    result = CliRunner().invoke(pam, ["scoped", "envelopes", "--choices"], env=env)
    assert result.exit_code == 0, result.output
    said = [line.strip() for line in result.output.splitlines() if line.strip().startswith("(")]
    assert said and "127.0.0.1:9" in said[0], result.output  # the reason, in the portal's words
    assert "shop" in result.output.split(said[0], 1)[1]
    assert raw not in result.output
