"""Attack: sign in, fail, guess codes and probe the gateways, hoping to leave no trace.

Refused: every authentication step is an audit row, on the hash chain, with who, from where and why (never a
password or a code): password accepted or refused, second factor passed or failed, step-up, email code sent, API
token created, first used and revoked, gateway login failed. The admin filters them as one category.
"""

from __future__ import annotations

import asyncio
import re
import time

from django.core import mail
from django.test import Client

from access.gateway_bridge import GatewayBridge
from access.models import AuditAction, AuditEvent
from access.otp import totp_device_create
from access.services.tokens import api_token_create, api_token_revoke
from tests.factories import UserFactory
from tests.helpers import token_client, totp_code

PASSWORD = "correct horse battery staple"


def _actions() -> list[str]:
    return list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))


def test_each_portal_sign_in_step_is_audited(db):
    user = UserFactory(username="audited")
    device = totp_device_create(user=user)
    browser = Client(REMOTE_ADDR="198.51.100.7")
    browser.post("/accounts/login/", {"username": "audited", "password": "wrong-password-Qx1"})
    browser.post("/accounts/login/", {"username": "audited", "password": PASSWORD})
    browser.post("/mfa/", {"token": "000000" if totp_code(device) != "000000" else "111111"})
    time.sleep(1.1)  # django-otp's back-off after one wrong code
    browser.post("/mfa/", {"token": totp_code(device)})
    browser.post("/mfa/step-up/", {"token": totp_code(device, steps_ahead=1)})

    assert _actions() == [
        AuditAction.AUTH_LOGIN_FAILED,
        AuditAction.AUTH_LOGIN,
        AuditAction.AUTH_MFA_FAILED,
        AuditAction.AUTH_MFA_PASSED,
        AuditAction.AUTH_STEP_UP,
    ]
    rows = AuditEvent.objects.all()
    assert {row.ip for row in rows} == {"198.51.100.7"}
    assert all(row.target_name == "audited" for row in rows)
    assert "wrong-password-Qx1" not in str([row.data for row in rows])


def test_an_email_code_sent_is_audited(db, settings):
    settings.PAM_MFA_METHOD = "email"
    UserFactory(username="by-email", email="by-email@example.com")
    browser = Client()
    browser.post("/accounts/login/", {"username": "by-email", "password": PASSWORD})
    assert browser.get("/mfa/").status_code == 200
    assert len(mail.outbox) == 1
    row = AuditEvent.objects.get(action=AuditAction.AUTH_EMAIL_CODE_SENT)
    code = re.search(r"\b\d{6}\b", mail.outbox[0].body).group()
    assert row.target_name == "by-email" and code not in str(row.data)


def test_the_admin_login_audits_its_second_factor(db):
    staff = UserFactory(username="adm", is_staff=True, is_superuser=True)
    device = totp_device_create(user=staff)
    admin = Client()
    admin.post("/admin/login/", {"username": "adm", "password": PASSWORD, "otp_token": "99999999"})
    time.sleep(1.1)  # django-otp's back-off after one wrong code
    admin.post("/admin/login/", {"username": "adm", "password": PASSWORD, "otp_token": totp_code(device)})
    assert _actions() == [AuditAction.AUTH_MFA_FAILED, AuditAction.AUTH_MFA_PASSED, AuditAction.AUTH_LOGIN]
    assert AuditEvent.objects.get(action=AuditAction.AUTH_LOGIN).data["via"] == "admin"


def test_token_creation_first_use_and_revocation_are_audited(db):
    user = UserFactory(username="tok")
    token, raw = api_token_create(user=user, name="script")
    token_client(user)  # another token, unused
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    client.get("/api/v1/sessions")
    client.get("/api/v1/sessions")
    api_token_revoke(token=token, actor=user)
    mine = [row.action for row in AuditEvent.objects.for_target(token).order_by("seq")]
    assert mine == [AuditAction.API_TOKEN_CREATE, AuditAction.API_TOKEN_FIRST_USE, AuditAction.API_TOKEN_REVOKE]
    assert raw not in str(list(AuditEvent.objects.values_list("data", flat=True)))


def test_a_failed_gateway_login_is_audited_with_the_client_address(transactional_db):
    bridge = GatewayBridge(gateway_id=0)
    asyncio.run(bridge.login_failed("s-nosuchuser", "203.0.113.9:51234", "unknown session user"))
    row = AuditEvent.objects.get(action=AuditAction.GATEWAY_LOGIN_FAILED)
    assert row.target_name == "s-nosuchuser" and row.ip == "203.0.113.9"
    assert row.data == {
        "via": "gateway",
        "username": "s-nosuchuser",
        "client_address": "203.0.113.9:51234",
        "reason": "unknown session user",
    }


def test_the_admin_filters_authentication_events(otp_admin_client):
    from access.services.audit import audit_record

    audit_record(action=AuditAction.RESOURCE_CREATE, target_name="not-an-auth-event")
    Client().post("/accounts/login/", {"username": "nobody-here", "password": "x"})
    page = otp_admin_client.get("/admin/access/auditevent/?category=authentication").content.decode()
    assert "nobody-here" in page and "not-an-auth-event" not in page
