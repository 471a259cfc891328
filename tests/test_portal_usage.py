"""Using access from the portal against the in-repo wire server: a lease's password shown once with a working
connection string, renew and revoke; a gateway session's one-time secret and connection details, its end;
the policy's last use recorded for the access review; no secret in the audit trail."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pymongo
import pytest
from django.urls import reverse
from pymongo.errors import OperationFailure

from access.models import AccessPolicy, Lease, Session
from access.models.leases import LeaseState
from access.models.sessions import SessionState
from tests.factories import AccessPolicyFactory, AccountFactory, DynamicRoleFactory, UserFactory
from tests.helpers import audit_text, verified_client

pytestmark = [pytest.mark.django_db, pytest.mark.wireserver]


@pytest.fixture
def wire_role(wire_resource):
    return DynamicRoleFactory(resource=wire_resource, name="reports-rw", db="reports", roles=["readWrite"])


def test_lease_password_is_shown_once_works_and_the_lease_renews_and_revokes(wire_role):
    user = UserFactory(username="lena")
    policy = AccessPolicyFactory(
        user=user, account=None, role=wire_role, approval_required=False, max_duration=timedelta(hours=2)
    )
    client = verified_client(user)
    response = client.post(reverse("portal:role-use", args=[wire_role.pk]), {"ttl": "10m"})
    lease = Lease.objects.get(holder=user)
    assert response.status_code == 302 and response["Location"] == reverse("portal:lease-detail", args=[lease.pk])

    first = client.get(response["Location"])
    html = first.content.decode()
    password = unescape(re.search(r'<code id="lease-password">([^<]+)</code>', html).group(1))
    uri = unescape(re.search(r'<code id="lease-uri">([^<]+)</code>', html).group(1))
    assert "no-store" in first["Cache-Control"]
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=3000) as mongo:
        mongo.reports.items.insert_one({"ok": 1})

    second = client.get(response["Location"]).content.decode()
    assert password not in second and lease.username in second and "shown once" in second
    lease.refresh_from_db()
    assert lease.revealed_at is not None
    policy.refresh_from_db()
    assert policy.last_used_at is not None

    before = lease.expires_at
    client.post(reverse("portal:lease-renew", args=[lease.pk]), {"increment": "30m"})
    lease.refresh_from_db()
    assert lease.expires_at > before

    client.post(reverse("portal:lease-revoke", args=[lease.pk]))
    lease.refresh_from_db()
    assert lease.state == LeaseState.REVOKED
    with pytest.raises(OperationFailure), pymongo.MongoClient(uri, serverSelectionTimeoutMS=3000) as mongo:
        mongo.reports.command("ping")
    assert password not in audit_text()


def test_a_role_behind_an_approval_policy_needs_an_approved_request(wire_role):
    user = UserFactory(username="lou")
    AccessPolicyFactory(user=user, account=None, role=wire_role, approval_required=True)
    client = verified_client(user)
    response = client.get(reverse("portal:role-use", args=[wire_role.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("portal:catalogue")
    client.post(reverse("portal:role-use", args=[wire_role.pk]), {"ttl": "10m"})
    assert not Lease.objects.exists()


def test_session_secret_and_connection_are_shown_once_and_the_session_ends(db, settings):
    settings.PAM_GATEWAY_HOST = "gw.example.net:27018"
    user = UserFactory(username="sara")
    account = AccountFactory(name="orders")
    policy = AccessPolicyFactory(user=user, account=account, approval_required=False, max_duration=timedelta(hours=1))
    client = verified_client(user)
    page = client.post(reverse("portal:account-use", args=[account.pk]), {"duration": "20m"})
    assert page.status_code == 200 and "no-store" in page["Cache-Control"]
    html = page.content.decode()
    session = Session.objects.get(user=user)
    secret = unescape(re.search(r'<code id="session-secret">([^<]+)</code>', html).group(1))
    assert session.username in html and "mongosh 'mongodb://" in unescape(html)
    assert "gw.example.net:27018" in html and "directConnection=true" in html
    assert 19 * 60 < (session.expires_at - session.started_at).total_seconds() <= 20 * 60
    assert f'data-replace-url="{reverse("portal:session-detail", args=[session.public_id])}"' in html

    detail = client.get(reverse("portal:session-detail", args=[session.public_id])).content.decode()
    assert secret not in detail and f"/ws/sessions/{session.public_id}/" in detail
    assert AccessPolicy.objects.get(pk=policy.pk).last_used_at is not None

    client.post(reverse("portal:session-end", args=[session.public_id]))
    session.refresh_from_db()
    assert session.state == SessionState.ENDED and session.end_reason == "ended_by_user"
    assert (
        "This session has ended"
        in client.get(reverse("portal:session-detail", args=[session.public_id])).content.decode()
    )
    assert secret not in audit_text()


def test_dashboard_lists_live_leases_sessions_and_pending_requests(db):
    from tests.factories import LeaseFactory, SessionFactory

    user = UserFactory(username="dana")
    lease = LeaseFactory(holder=user)
    session = SessionFactory(user=user)
    SessionFactory(user=UserFactory(username="other"), username="s-notmine")
    page = verified_client(user).get("/").content.decode()
    assert lease.username in page and session.username in page and "s-notmine" not in page
    assert lease.password.reveal() not in page
