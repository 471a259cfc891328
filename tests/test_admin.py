"""The admin: OTP required, every model browsable, secrets write-only, changes audited."""

import re
import time

import pytest
from django.urls import reverse

from access.models import Account, AuditAction, AuditEvent, Resource
from tests.factories import (
    AccessPolicyFactory,
    AccountFactory,
    DynamicRoleFactory,
    GatewayFactory,
    LeaseFactory,
    SessionFactory,
)

SECRET = "Adm1n-Page-Secret-5521"


def test_staff_without_a_verified_device_is_sent_to_the_otp_login(client, staff_user):
    client.force_login(staff_user)
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    login_page = client.get(response["Location"])
    assert b"otp_token" in login_page.content


def test_admin_login_needs_a_current_totp_code(client, staff_user):
    from django_otp.oath import totp

    from access.otp import totp_device_create

    device = totp_device_create(user=staff_user)
    form = {
        "username": "sec-admin",
        "password": "correct horse battery staple",
        "otp_device": device.persistent_id,
    }
    wrong = client.post("/admin/login/", {**form, "otp_token": "000000"})
    assert wrong.status_code == 200 and not wrong.wsgi_request.user.is_verified()
    time.sleep(1.1)  # django-otp throttles after a wrong code: 1 s after the first failure
    code = f"{totp(device.bin_key, device.step, device.t0, device.digits):06d}"
    right = client.post("/admin/login/?next=/admin/", {**form, "otp_token": code})
    assert right.status_code == 302
    assert client.get("/admin/").status_code == 200


@pytest.mark.parametrize(
    "model",
    [
        "gateway",
        "resource",
        "account",
        "dynamicrole",
        "lease",
        "accesspolicy",
        "accessrequest",
        "session",
        "sessioncommand",
        "auditevent",
        "apitoken",
    ],
)
def test_every_changelist_renders_for_verified_staff(otp_admin_client, model):
    response = otp_admin_client.get(reverse(f"admin:access_{model}_changelist"))
    assert response.status_code == 200


def test_secrets_never_render_in_admin_pages(otp_admin_client):
    account = AccountFactory(password=SECRET, resource__admin_password=SECRET + "-root")
    lease = LeaseFactory(password=SECRET + "-lease")
    GatewayFactory()
    DynamicRoleFactory(resource=account.resource)
    AccessPolicyFactory(account=account)
    SessionFactory(account=account)
    pages = [
        reverse("admin:access_account_changelist"),
        reverse("admin:access_account_change", args=[account.pk]),
        reverse("admin:access_resource_changelist"),
        reverse("admin:access_resource_change", args=[account.resource.pk]),
        reverse("admin:access_lease_changelist"),
        reverse("admin:access_lease_change", args=[lease.pk]),
        reverse("admin:access_auditevent_changelist"),
    ]
    for page in pages:
        html = otp_admin_client.get(page).content.decode()
        assert SECRET not in html, page
        assert "gAAAA" not in html, f"{page} shows ciphertext"


def test_editing_an_account_with_blank_password_keeps_it_and_is_audited(otp_admin_client):
    account = AccountFactory(password=SECRET)
    url = reverse("admin:access_account_change", args=[account.pk])
    response = otp_admin_client.post(
        url,
        {
            "resource": account.resource.pk,
            "name": account.name,
            "username": account.username,
            "password": "",
            "description": "edited in the admin",
            "rotation_period": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    account = Account.objects.get(pk=account.pk)
    assert account.description == "edited in the admin"
    assert account.password.reveal() == SECRET
    event = AuditEvent.objects.get(action="account.update")
    assert event.data["write_only_changed"] == []


def test_admin_refuses_a_resource_uri_with_credentials(otp_admin_client):
    response = otp_admin_client.post(
        reverse("admin:access_resource_add"),
        {
            "name": "bad",
            "kind": "mongodb",
            "uri": "mongodb://root:pw@db1:27017",
            "auth_database": "admin",
            "atlas_base_url": "https://cloud.mongodb.com",
            "default_ttl": "1h",
            "max_ttl": "24h",
            "accounts-TOTAL_FORMS": "0",
            "accounts-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert "Remove the username and password" in response.content.decode()
    assert not Resource.objects.filter(name="bad").exists()


def test_admin_creates_a_resource_with_human_durations(otp_admin_client):
    response = otp_admin_client.post(
        reverse("admin:access_resource_add"),
        {
            "name": "orders",
            "kind": "mongodb",
            "uri": "mongodb://db1:27017",
            "auth_database": "admin",
            "tls": "on",
            "tls_verify": "on",
            "admin_username": "root",
            "admin_password": SECRET,
            "atlas_base_url": "https://cloud.mongodb.com",
            "default_ttl": "30m",
            "max_ttl": "8h",
            "accounts-TOTAL_FORMS": "0",
            "accounts-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, re.findall(r"errorlist.*?</ul>", response.content.decode())
    resource = Resource.objects.get(name="orders")
    assert resource.default_ttl.total_seconds() == 1800
    assert resource.admin_password.reveal() == SECRET
    assert AuditEvent.objects.filter(action="resource.create", target_name="orders").exists()


def test_audit_events_are_read_only_in_the_admin(otp_admin_client):
    from access.services.audit import audit_record

    event = audit_record(action=AuditAction.SCHEDULES_SETUP)
    assert otp_admin_client.get(reverse("admin:access_auditevent_change", args=[event.pk])).status_code == 200
    assert (
        otp_admin_client.post(reverse("admin:access_auditevent_delete", args=[event.pk]), {"post": "yes"}).status_code
        == 403
    )
    assert AuditEvent.objects.filter(pk=event.pk).exists()
