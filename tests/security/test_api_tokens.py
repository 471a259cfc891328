"""Attack: make or keep an API token that outlives or outranks its owner: mint one from a password-only session,
use an expired, revoked or deactivated owner's token, keep staff powers after they were taken away.

Refused: tokens are made only on OTP-verified pages (the portal with a fresh code, the admin), shown once, expire
(90 days by default, never beyond PAM_API_TOKEN_MAX_DAYS), and act as their owner as the owner stands at each call.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.test import Client, override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from access.models import ApiToken, AuditAction, AuditEvent
from access.services.tokens import api_token_create
from tests.factories import UserFactory
from tests.helpers import otp_login, verified_client

PASSWORD = "correct horse battery staple"


def _api(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def staff(db):
    return UserFactory(username="token-owner", is_staff=True, is_superuser=True)


def test_a_new_token_expires_in_90_days_and_never_later_than_the_maximum(staff):
    token, _raw = api_token_create(user=staff, name="ci")
    assert timedelta(days=89, hours=23) < token.expires_at - timezone.now() <= timedelta(days=90)
    with override_settings(PAM_API_TOKEN_MAX_DAYS=30), pytest.raises(ValidationError) as caught:
        api_token_create(user=staff, name="forever", lifetime=timedelta(days=31))
    assert "at most 30 days" in str(caught.value)


def test_a_password_only_session_cannot_mint_a_token(staff):
    browser = Client()
    assert browser.post("/accounts/login/", {"username": staff.username, "password": PASSWORD}).status_code == 302
    response = browser.post("/tokens/", {"name": "stolen", "days": "30"})
    assert response.status_code == 302 and response["Location"].startswith("/mfa/")
    assert not ApiToken.objects.exists()


def test_minting_a_token_needs_a_fresh_code_and_shows_it_once(staff):
    stale = verified_client(staff, verified_at=time.time() - 3600)
    response = stale.post("/tokens/", {"name": "cli", "days": "30"})
    assert response.status_code == 302 and response["Location"].startswith("/mfa/step-up/")
    assert not ApiToken.objects.exists()

    fresh = verified_client(staff)
    created = fresh.post("/tokens/", {"name": "cli", "days": "30"})
    assert created.status_code == 200 and created["X-One-Time-Secret"] == "1"
    assert "no-store" in created["Cache-Control"]
    token = ApiToken.objects.get()
    raw = created.context["raw"]
    assert raw.startswith(token.prefix) and raw in created.content.decode()
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    listing = fresh.get("/tokens/").content.decode()
    assert token.prefix in listing and raw not in listing
    assert _api(raw).get("/api/v1/resources").status_code == 200


def test_the_admin_mints_a_token_only_for_the_signed_in_staff_member(staff):
    admin = Client()
    otp_login(admin, staff)
    response = admin.post("/admin/access/apitoken/create/", {"name": "ops", "days": "7", "user": "999"})
    assert response.status_code == 200 and response["X-One-Time-Secret"] == "1"
    token = ApiToken.objects.get()
    assert token.user == staff and response.context["raw"] in response.content.decode()
    password_only = Client()
    password_only.force_login(staff)  # no second factor: the OTP admin sends it to its login page
    assert password_only.get("/admin/access/apitoken/create/").status_code == 302


def test_expired_revoked_and_deactivated_owners_tokens_stop_at_once(staff):
    expired, raw_expired = api_token_create(user=staff, name="old")
    ApiToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert _api(raw_expired).get("/api/v1/resources").status_code == 401

    revoked, raw_revoked = api_token_create(user=staff, name="revoked")
    portal = verified_client(staff)
    assert portal.post(f"/tokens/{revoked.pk}/revoke/").status_code == 302
    assert _api(raw_revoked).get("/api/v1/resources").status_code == 401

    _token, raw = api_token_create(user=staff, name="live")
    assert _api(raw).get("/api/v1/resources").status_code == 200
    staff.is_active = False
    staff.save(update_fields=["is_active"])
    assert _api(raw).get("/api/v1/resources").status_code == 401


def test_a_token_loses_what_its_owner_loses_at_the_next_call(staff):
    _token, raw = api_token_create(user=staff, name="ops")
    client = _api(raw)
    assert client.get("/api/v1/resources").status_code == 200
    staff.is_superuser = staff.is_staff = False
    staff.save(update_fields=["is_superuser", "is_staff"])
    assert client.get("/api/v1/resources").status_code == 403
    assert client.post("/api/v1/resources", {"name": "x", "uri": "mongodb://db1"}, format="json").status_code == 403


def test_a_tokens_first_use_is_audited_once_and_its_last_use_recorded(staff):
    token, raw = api_token_create(user=staff, name="first-use")
    client = _api(raw)
    for _ in range(3):
        assert client.get("/api/v1/resources").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None
    first = AuditEvent.objects.filter(action=AuditAction.API_TOKEN_FIRST_USE)
    assert first.count() == 1 and first.get().target_id == str(token.pk)
    assert raw not in str(first.get().data)
