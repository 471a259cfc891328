"""Attack: use the REST API from a browser session that gave only the password (no second factor), and make a
browser issue a lease with a GET (a link, an <img>) or a POST without the CSRF token.

Refused: every API route answers 403 to a password-only session, whatever the method; a verified session reads the
API, but `creds/<role>` needs POST with the CSRF token from a browser; token clients keep Vault's GET.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver

from access.api import urls as api_urls
from access.models import Lease, Session
from tests.factories import AccessPolicyFactory, AccountFactory, DynamicRoleFactory, UserFactory, resource_on
from tests.helpers import otp_login, token_client

PASSWORD = "correct horse battery staple"
_SAMPLES = {
    "public_id": str(uuid.uuid4()),
    "resource": "wire",
    "role": "reader",
    "name": "reader",
    "pk": "1",
    "policy": "1",
    "lease_id": "mongodb/creds/reader/x",
    "prefix": "mongodb/",
}


def _api_paths() -> list[str]:
    """One concrete path for every route under /api/v1/ (named groups filled with sample values)."""
    paths = []

    def walk(patterns, prefix=""):
        for pattern in patterns:
            regex = prefix + str(pattern.pattern).lstrip("^")
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, regex)
            elif isinstance(pattern, URLPattern):
                path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: _SAMPLES.get(m.group(1), "x"), regex)
                path = path.replace("/?$", "/").replace("$", "").replace("/?", "/").replace("\\", "")
                paths.append("/api/v1/" + path)

    walk(api_urls.urlpatterns)
    return sorted(set(paths))


@pytest.fixture
def engineer(db):
    return UserFactory(username="engineer-2fa", is_staff=True, is_superuser=True)


def _password_only_client(user) -> Client:
    """A browser that signed in on the portal's login page with the right password and stopped there."""
    client = Client()
    response = client.post("/accounts/login/", {"username": user.get_username(), "password": PASSWORD})
    assert response.status_code == 302  # on to the second factor
    return client


def test_every_api_route_refuses_a_session_that_skipped_the_second_factor(engineer):
    client = _password_only_client(engineer)
    session = Session.objects.create(
        user=engineer, account=AccountFactory(), username="s-2faattack", expires_at=_in(hours=1)
    )
    paths = [*_api_paths(), f"/api/v1/sessions/{session.public_id}/", f"/api/v1/sessions/{session.public_id}/end/"]
    assert len(paths) >= 20
    for path in paths:
        for method in ("get", "post", "put", "patch", "delete"):
            body = {} if method in ("get", "delete") else {"data": "{}", "content_type": "application/json"}
            response = getattr(client, method)(path, **body)
            assert response.status_code == 403, (method, path, response.status_code)
            assert "second factor" in response.json()["error"]["message"]
    assert Session.objects.get(pk=session.pk).state == "open"


def test_a_session_that_passed_the_second_factor_reads_the_api(engineer):
    client = Client()
    otp_login(client, engineer)
    assert client.get("/api/v1/resources").status_code == 200


@pytest.fixture
def lease_setup(db, wire_server):
    resource = resource_on(wire_server, name="wire")
    role = DynamicRoleFactory(resource=resource, name="reader", db="reports", roles=["read"])
    user = UserFactory(username="browser-user")
    AccessPolicyFactory(user=user, account=None, role=role, approval_required=False, max_duration=timedelta(hours=1))
    return role, user


def test_a_browser_cannot_issue_a_lease_with_get_or_without_csrf_but_can_with_post_and_csrf(lease_setup):
    _role, user = lease_setup
    browser = Client(enforce_csrf_checks=True)
    otp_login(browser, user)
    creds = "/api/v1/mongodb/wire/creds/reader"

    followed_link = browser.get(creds)
    assert followed_link.status_code == 405
    assert "POST" in followed_link.json()["error"]["message"]
    forged = browser.post(creds, {}, content_type="application/json")
    assert forged.status_code == 403 and "CSRF" in forged.json()["error"]["message"]
    assert not Lease.objects.exists()

    browser.get("/")  # any portal page hands out the CSRF cookie
    token = browser.cookies["csrftoken"].value
    issued = browser.post(creds, {}, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert issued.status_code == 200, issued.content
    assert issued.json()["data"]["username"] == Lease.objects.get().username


def test_token_clients_keep_vaults_get_on_creds(lease_setup):
    _role, user = lease_setup
    response = token_client(user).get("/api/v1/mongodb/wire/creds/reader")
    assert response.status_code == 200, response.content
    assert Lease.objects.filter(holder=user).count() == 1


def _in(**delta):
    from django.utils import timezone

    return timezone.now() + timedelta(**delta)
