"""Signing in to the portal: password, then the second factor the organisation or the user chose (TOTP with a QR
enrolment and backup codes, or an email code), throttled wrong codes, and step-up for targets that require MFA."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from access.models import AuditEvent, UserProfile
from tests.factories import AccessPolicyFactory, AccountFactory, UserFactory
from tests.helpers import totp_code, verified_client

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"


def signed_in(username: str = "erin", email: str = "erin@example.com") -> tuple[Client, object]:
    user = UserFactory(username=username, email=email)
    client = Client()
    response = client.post(reverse("portal:login"), {"username": username, "password": PASSWORD})
    assert response.status_code == 302, response.content[:500]
    return client, user


def test_anonymous_visitors_are_sent_to_the_login_page():
    response = Client().get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_signed_in_but_unverified_users_are_sent_to_the_second_factor():
    client, _user = signed_in()
    for url in ["/", reverse("portal:catalogue"), reverse("portal:lease-list")]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("portal:mfa-verify"))


def test_enforced_totp_enrolment_with_qr_then_backup_codes_that_work_once(settings):
    settings.PAM_MFA_METHOD = "totp"
    client, user = signed_in()
    response = client.get(reverse("portal:mfa-verify"), {"next": "/"})
    assert response.status_code == 302 and response["Location"].startswith(reverse("portal:mfa-enrol"))
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert b"data:image/svg+xml;base64," in page.content and b"otpauth://totp/" in page.content
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    wrong = client.post(page.request["PATH_INFO"], {"token": "000000" if totp_code(device) != "000000" else "111111"})
    assert b"That code is not right" in wrong.content
    time.sleep(1.1)  # one wrong code means a one-second back-off
    done = client.post(reverse("portal:mfa-enrol"), {"token": totp_code(device), "next": "/"})
    assert done.status_code == 200 and "no-store" in done["Cache-Control"]
    codes = re.findall(r"<li>([a-z0-9]{8,})</li>", done.content.decode())
    assert len(codes) == 10
    assert client.get("/").status_code == 200
    assert UserProfile.objects.get(user=user).mfa_method == "totp"
    assert AuditEvent.objects.filter(action="mfa.totp_enrol").exists()

    # A backup code signs in once; the same code does not work twice.
    for attempt in range(2):
        fresh = Client()
        fresh.post(reverse("portal:login"), {"username": user.username, "password": PASSWORD})
        response = fresh.post(reverse("portal:mfa-verify"), {"token": codes[0], "next": "/"})
        if attempt == 0:
            assert response.status_code == 302 and fresh.get("/").status_code == 200
        else:
            assert response.status_code == 200 and b"token-errors" in response.content


def test_totp_sign_in_after_enrolment(settings):
    settings.PAM_MFA_METHOD = "totp"
    client, user = signed_in()
    device = TOTPDevice.objects.create(user=user, name="app", confirmed=True)
    page = client.get(reverse("portal:mfa-verify"))
    assert b"authenticator app" in page.content
    response = client.post(reverse("portal:mfa-verify"), {"token": totp_code(device), "next": "/catalogue/"})
    assert response.status_code == 302 and response["Location"] == "/catalogue/"


def test_wrong_codes_are_throttled_with_a_message(settings):
    settings.PAM_MFA_METHOD = "totp"
    client, user = signed_in()
    device = TOTPDevice.objects.create(user=user, name="app", confirmed=True)
    good = totp_code(device)
    bad = f"{(int(good) + 1) % 1_000_000:06d}"
    client.post(reverse("portal:mfa-verify"), {"token": bad})
    second = client.post(reverse("portal:mfa-verify"), {"token": bad})
    assert b"Too many wrong codes" in second.content
    # While throttled even the right code is refused, and the page says why.
    third = client.post(reverse("portal:mfa-verify"), {"token": good})
    assert third.status_code == 200 and b"Too many wrong codes" in third.content


def test_email_is_the_default_method_and_sends_a_code():
    client, user = signed_in()
    page = client.get(reverse("portal:mfa-verify"))
    assert page.status_code == 200 and b"emailed" in page.content
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [user.email]
    code = re.search(r"\b(\d{6})\b", mail.outbox[0].body).group(1)
    response = client.post(reverse("portal:mfa-verify"), {"token": code, "next": "/"})
    assert response.status_code == 302 and client.get("/").status_code == 200


def test_the_users_own_method_applies_when_the_organisation_enforces_none(settings):
    settings.PAM_MFA_METHOD = ""
    client, user = signed_in()
    UserProfile.objects.create(user=user, mfa_method="totp")
    response = client.get(reverse("portal:mfa-verify"))
    assert response["Location"].startswith(reverse("portal:mfa-enrol"))
    assert not mail.outbox


def test_email_fallback_for_a_totp_user():
    client, user = signed_in()
    UserProfile.objects.create(user=user, mfa_method="totp")
    TOTPDevice.objects.create(user=user, name="app", confirmed=True)
    client.post(reverse("portal:mfa-email"), {"next": "/"})
    code = re.search(r"\b(\d{6})\b", mail.outbox[0].body).group(1)
    assert client.post(reverse("portal:mfa-verify"), {"token": code}).status_code == 302


def test_step_up_asks_for_a_fresh_code_on_an_mfa_account_after_five_minutes():
    user = UserFactory(username="sam")
    account = AccountFactory(name="payments", require_mfa=True)
    AccessPolicyFactory(user=user, account=account, approval_required=False, max_duration=timedelta(hours=1))
    client = verified_client(user, verified_at=time.time() - 301)
    url = reverse("portal:account-use", args=[account.pk])
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("portal:mfa-step-up"))
    step_up = client.get(response["Location"])
    assert b"fresh one-time code" in step_up.content
    back = client.post(response["Location"], {"token": totp_code(client.device, steps_ahead=1), "next": url})
    assert back.status_code == 302 and back["Location"] == url
    assert client.get(url).status_code == 200


def test_no_step_up_within_five_minutes_or_for_targets_without_mfa():
    user = UserFactory(username="sue")
    mfa_account = AccountFactory(name="payments", require_mfa=True)
    plain = AccountFactory(name="catalog")
    AccessPolicyFactory(user=user, account=mfa_account, approval_required=False)
    AccessPolicyFactory(user=user, account=plain, approval_required=False)
    recent = verified_client(user, verified_at=time.time() - 60)
    assert recent.get(reverse("portal:account-use", args=[mfa_account.pk])).status_code == 200
    sid = UserFactory(username="sid")
    AccessPolicyFactory(user=sid, account=plain, approval_required=False)
    stale = verified_client(sid, verified_at=time.time() - 3600)
    assert stale.get(reverse("portal:account-use", args=[plain.pk])).status_code == 200


def test_step_up_also_guards_roles_and_policies_marked_mfa_required():
    from tests.factories import DynamicRoleFactory

    user = UserFactory(username="ray")
    mfa_role = DynamicRoleFactory(name="payments-rw", require_mfa=True)
    policy_role = DynamicRoleFactory(name="ledger-rw")
    AccessPolicyFactory(user=user, account=None, role=mfa_role, approval_required=False)
    AccessPolicyFactory(user=user, account=None, role=policy_role, approval_required=False, mfa_required=True)
    client = verified_client(user, verified_at=time.time() - 600)
    for role in (mfa_role, policy_role):
        response = client.get(reverse("portal:role-use", args=[role.pk]))
        assert response.status_code == 302 and response["Location"].startswith(reverse("portal:mfa-step-up"))
        # Posting straight to the form does not skip the step-up either.
        assert client.post(reverse("portal:role-use", args=[role.pk]), {"ttl": "5m"}).status_code == 302


def test_a_user_who_never_chose_but_has_an_app_is_asked_for_the_app_code():
    client, user = signed_in()
    TOTPDevice.objects.create(user=user, name="app", confirmed=True)
    page = client.get(reverse("portal:mfa-verify"))
    assert b"authenticator app" in page.content and not mail.outbox
