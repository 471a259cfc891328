"""Attack: guess passwords on the portal's and the admin's login pages, one user from many addresses (a botnet)
and many users from one address (password spraying).

Refused: after PAM_LOGIN_FAILURE_LIMIT (5) failures for a user name, or from an address, django-axes locks that
name or address out: even the right password is refused (429). The lockout is audited, listed in the admin, and
cleared there (audited too), after which the person signs in again.
"""

from __future__ import annotations

import pytest
from django.test import Client

from access.models import AuditAction, AuditEvent
from tests.factories import UserFactory
from tests.helpers import totp_code

PASSWORD = "correct horse battery staple"
LIMIT = 5


def _login(username: str, password: str, address: str, path: str = "/accounts/login/", **extra):
    return Client(REMOTE_ADDR=address).post(path, {"username": username, "password": password, **extra})


def test_one_user_guessed_from_many_addresses_is_locked_out(db):
    victim = UserFactory(username="victim")
    for n in range(LIMIT):  # the fifth failure locks at once
        assert _login("victim", f"guess-{n}", f"198.51.100.{n + 1}").status_code == (429 if n == LIMIT - 1 else 200)
    refused = _login("victim", PASSWORD, "203.0.113.77")
    assert refused.status_code == 429
    assert "Too many failed sign-ins" in refused.content.decode()
    assert "_auth_user_id" not in refused.wsgi_request.session
    lockout = AuditEvent.objects.filter(action=AuditAction.AUTH_LOCKOUT).first()
    assert lockout is not None and lockout.target_name == "victim" and lockout.target_id == str(victim.pk)


def test_many_users_sprayed_from_one_address_lock_the_address(db):
    UserFactory(username="bystander")
    for n in range(LIMIT):
        assert _login(f"user-{n}", "Winter2026!", "192.0.2.10").status_code == (429 if n == LIMIT - 1 else 200)
    assert _login("bystander", PASSWORD, "192.0.2.10").status_code == 429
    assert _login("bystander", PASSWORD, "192.0.2.11").status_code == 302  # the person, from elsewhere


def test_the_admin_login_is_throttled_too(db):
    staff = UserFactory(username="sec-staff", is_staff=True, is_superuser=True)
    from access.otp import totp_device_create

    device = totp_device_create(user=staff)
    for n in range(LIMIT):
        response = _login("sec-staff", f"guess-{n}", "198.51.100.50", "/admin/login/", otp_token="000000")
        assert response.status_code == (429 if n == LIMIT - 1 else 200)
    refused = _login("sec-staff", PASSWORD, "198.51.100.50", "/admin/login/", otp_token=totp_code(device))
    assert refused.status_code == 429


def test_a_lockout_is_listed_and_cleared_in_the_admin_and_both_are_audited(otp_admin_client, staff_user):
    UserFactory(username="locked-person")
    for n in range(LIMIT):
        _login("locked-person", f"guess-{n}", f"198.51.100.{n + 60}")
    assert _login("locked-person", PASSWORD, "198.51.100.99").status_code == 429

    listing = otp_admin_client.get("/admin/axes/accessattempt/?locked_out=yes")
    assert listing.status_code == 200 and "locked-person" in listing.content.decode()
    from axes.models import AccessAttempt

    ids = list(AccessAttempt.objects.filter(username="locked-person").values_list("pk", flat=True))
    cleared = otp_admin_client.post(
        "/admin/axes/accessattempt/", {"action": "delete_selected", "_selected_action": ids, "post": "yes"}
    )
    assert cleared.status_code == 302
    assert not AccessAttempt.objects.filter(username="locked-person").exists()
    row = AuditEvent.objects.filter(action=AuditAction.AUTH_LOCKOUT_CLEAR, target_name="locked-person").first()
    assert row is not None and row.actor == staff_user
    assert _login("locked-person", PASSWORD, "198.51.100.99").status_code == 302


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_failed_sign_ins_are_audited_without_the_password(db, path):
    UserFactory(username="typo")
    _login("typo", "Not-The-Password-91", "198.51.100.200", path, otp_token="123456")
    row = AuditEvent.objects.get(action=AuditAction.AUTH_LOGIN_FAILED)
    assert row.target_name == "typo" and row.ip == "198.51.100.200"
    assert row.data["via"] == ("admin" if path.startswith("/admin/") else "portal")
    assert "Not-The-Password-91" not in str(row.data) + row.actor_name
