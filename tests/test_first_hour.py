"""The first hour of a newcomer (issue 16), checked on what they would read: the demo's role works on FerretDB and a
failed issue reads as a failed attempt; nothing silently changes what was asked (capped TTLs, renewals and
durations come with a warning, in the API's `warnings` and in the portal); API credentials carry their auth
database and a connection string; pages after revocation, refusals and latencies read right; the admin is grouped
by work with readable labels; emails link to the page where the action happens; lists page and filter.

Browser checks (API docs with no third-party script, the demo walked end to end) are in
tests/test_first_hour_browser.py.
"""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pymongo
import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from access.models import AccessRequest, Lease
from access.models.leases import LeaseState
from tests.factories import (
    AccessPolicyFactory,
    AccountFactory,
    DynamicRoleFactory,
    ResourceFactory,
    SessionFactory,
    UserFactory,
    resource_on,
)
from tests.helpers import make_approver, token_client, verified_client

pytestmark = pytest.mark.django_db


def _messages(response) -> list[str]:
    return [unescape(m) for m in re.findall(r'<ul class="messages">(.*?)</ul>', response.content.decode(), re.S)]


def _text(response) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", response.content.decode()))


# -- the demo on FerretDB ---------------------------------------------------------------------------------------
@pytest.mark.ferretdb
def test_the_demo_role_issues_leases_on_ferretdb_and_its_people_show_the_approval_flow(ferretdb_server):
    from django.contrib.auth import get_user_model

    from access.models import AccessPolicy
    from access.services.usage import access_lease_issue
    from portal import demo

    people = demo.demo_people_ensure()
    assert [p.username for p in people] == ["admin", "engineer", "approver"]
    assert all(p.password and p.otpauth_uri.startswith("otpauth://totp/") for p in people)
    resource = demo.demo_resource_ensure(demo.split_admin_uri(ferretdb_server.uri), tls=False)
    User = get_user_model()
    admin, engineer, approver = (User.objects.get(username=p.username) for p in people)
    account = demo.demo_account_ensure(resource, admin)

    # FerretDB has no authorization: the role carries no MongoDB roles there, and says so.
    role = resource.roles.get(name=demo.DEMO_ROLE)
    assert role.roles == [] and "FerretDB" in role.description and "no MongoDB roles" in role.description
    issued = access_lease_issue(user=admin, role=role, ttl=timedelta(minutes=5))
    assert issued.lease.state == LeaseState.ACTIVE and issued.warnings == ()
    with pymongo.MongoClient(
        f"mongodb://127.0.0.1:{ferretdb_server.port}/?directConnection=true",
        username=issued.lease.username,
        password=issued.password,
        authSource=issued.lease.db,
        serverSelectionTimeoutMS=5000,
    ) as client:
        client[demo.DEMO_DATABASE].notes.insert_one({"hello": "demo"})

    # The engineer has no staff rights and needs an approval; the approver may decide; the admin has standing access.
    assert not engineer.is_staff and not engineer.is_superuser
    assert approver.has_perm("access.approve_accessrequest") and not approver.is_staff
    engineer_policies = AccessPolicy.objects.filter(user=engineer)
    assert {p.target for p in engineer_policies} == {account, role}
    assert all(p.approval_required for p in engineer_policies)
    assert not AccessPolicy.objects.filter(user=admin, approval_required=True).exists()

    # A second run reuses the people (no new passwords) and keeps one set of policies.
    again = demo.demo_people_ensure()
    assert all(p.password is None for p in again)
    demo.demo_account_ensure(resource, admin)
    assert AccessPolicy.objects.filter(user=engineer).count() == 2


@pytest.mark.ferretdb
def test_the_next_make_run_points_the_demo_resource_at_its_new_port_and_sessions_still_log_in(ferretdb_server):
    """Each `make run` starts the demo server on a new port: the moved resource must be verified, not held back
    (which refused every gateway login with "its stored credentials are held back")."""
    from access.models import AuditEvent
    from access.services.connections import resource_credentials_may_go
    from portal import demo

    first = demo.demo_resource_ensure(demo.split_admin_uri(ferretdb_server.uri), tls=False)
    moved_uri = ferretdb_server.uri.replace("127.0.0.1", "localhost")  # another address of the same server
    assert moved_uri != ferretdb_server.uri
    moved = demo.demo_resource_ensure(demo.split_admin_uri(moved_uri), tls=False)
    assert moved.pk == first.pk and "localhost" in moved.uri
    assert moved.connection_verified and resource_credentials_may_go(moved)
    update = AuditEvent.objects.filter(action="resource.update").latest("seq")
    assert update.data["connection"] == "verified"


@pytest.mark.ferretdb
def test_a_failed_issue_shows_as_a_failed_attempt_not_a_revoked_lease(ferretdb_server):
    # A role with MongoDB roles on FerretDB: its createUser refuses roles, so the issue fails on a real server.
    role = DynamicRoleFactory(resource=resource_on(ferretdb_server), name="rw", db="admin", roles=["readWrite"])
    user = UserFactory(username="fay")
    AccessPolicyFactory(user=user, account=None, role=role, approval_required=False, max_duration=timedelta(hours=1))
    client = verified_client(user)

    response = client.post(reverse("portal:role-use", args=[role.pk]), {"ttl": "10m"})
    assert response.status_code == 200 and "could not be created" in _text(response)
    lease = Lease.objects.get(holder=user)
    assert lease.state == LeaseState.FAILED and lease.revoked_at is None

    page = client.get(reverse("portal:lease-list")).content.decode()
    listing = unescape(re.search(r'<table id="leases">.*?</table>', page, re.S).group(0))
    assert "Issue failed" in listing and "Revoked" not in listing and "Could not create user" in listing
    detail = _text(client.get(reverse("portal:lease-detail", args=[lease.pk])))
    assert "Issue failed" in detail and "no database user was created" in detail
    assert "Revoked" not in detail and "Renewable until" not in detail
    failed_only = _text(client.get(reverse("portal:lease-list") + "?state=failed"))
    assert lease.username in failed_only
    assert lease.username not in _text(client.get(reverse("portal:lease-list") + "?state=revoked"))


# -- nothing silently changes what was asked ---------------------------------------------------------------------
@pytest.fixture
def wire_role(db, wire_server):
    return DynamicRoleFactory(
        resource=resource_on(wire_server), name="reports", db="reports", roles=["readWrite"], max_ttl=timedelta(hours=4)
    )


def _grant_reports_1h(user, role) -> None:
    """A policy "reports 1h" that lets `user` take leases on `role` without approval for at most an hour."""
    AccessPolicyFactory(
        name="reports 1h", user=user, account=None, role=role, approval_required=False, max_duration=timedelta(hours=1)
    )


def test_api_creds_above_the_policy_maximum_are_capped_with_a_warning_and_carry_a_connection_string(wire_role):
    user = UserFactory(username="api-user")
    _grant_reports_1h(user, wire_role)
    api = token_client(user)
    response = api.post(f"/api/v1/mongodb/{wire_role.resource.name}/creds/reports", {"ttl": "3h"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["lease_duration"] == 3600
    (warning,) = body["warnings"]
    assert "you asked for 3h" in warning and "“reports 1h” allows at most 1h" in warning and "UTC" in warning
    data = body["data"]
    assert data["auth_database"] == "reports" == data["db"]
    with pymongo.MongoClient(data["connection_string"], serverSelectionTimeoutMS=5000) as client:
        client.reports.items.insert_one({"ok": 1})

    renewed = api.put("/api/v1/sys/leases/renew", {"lease_id": body["lease_id"], "increment": "2h"}, format="json")
    assert renewed.status_code == 200, renewed.content
    (renew_warning,) = renewed.json()["warnings"]
    # The lease's maximum (1h from issue: the policy's) is the limit named.
    assert "The renewal was capped: you asked for 2h, but the lease cannot be renewed past" in renew_warning

    within = api.post(f"/api/v1/mongodb/{wire_role.resource.name}/creds/reports", {"ttl": "10m"}, format="json")
    assert within.json()["warnings"] is None and within.json()["lease_duration"] == 600


def test_portal_says_when_a_lease_or_its_renewal_was_capped_and_hides_renewable_until_after_revocation(wire_role):
    user = UserFactory(username="pia")
    _grant_reports_1h(user, wire_role)
    client = verified_client(user)
    response = client.post(reverse("portal:role-use", args=[wire_role.pk]), {"ttl": "5h"}, follow=True)
    (shown,) = _messages(response)
    assert "The TTL was capped: you asked for 5h" in shown and "at most 1h" in shown
    lease = Lease.objects.get(holder=user)
    assert lease.expires_at - lease.issued_at == timedelta(hours=1)
    assert "Renewable until" in _text(response)

    renewed = client.post(reverse("portal:lease-renew", args=[lease.pk]), {"increment": "3h"}, follow=True)
    assert "The renewal was capped: you asked for 3h" in " ".join(_messages(renewed))

    revoked = client.post(reverse("portal:lease-revoke", args=[lease.pk]), follow=True)
    text = _text(revoked)
    assert "Revoked" in text and "Renewable until" not in text


def test_a_session_longer_than_the_policy_allows_opens_capped_with_a_warning(db):
    account = AccountFactory(resource=ResourceFactory(name="shop"), name="shop-rw")
    user = UserFactory(username="sam")
    AccessPolicyFactory(
        name="shop 30m", user=user, account=account, approval_required=False, max_duration=timedelta(minutes=30)
    )
    client = verified_client(user)
    response = client.post(reverse("portal:account-use", args=[account.pk]), {"duration": "2h"})
    assert response.status_code == 200 and response["X-One-Time-Secret"] == "1"
    assert "The session's duration was capped: you asked for 2h, but the policy “shop 30m” allows at most 30m" in (
        _text(response)
    )

    api = token_client(user)
    opened = api.post("/api/v1/sessions", {"account": account.pk, "duration": "1h"}, format="json")
    assert opened.status_code == 201, opened.content
    assert "allows at most 30m" in opened.json()["warnings"][0]


# -- what pages say ------------------------------------------------------------------------------------------------
def test_the_session_page_groups_handshake_chatter_shows_refusal_reasons_and_formats_latency(db):
    from access.models import SessionCommand

    user = UserFactory(username="rae")
    session = SessionFactory(user=user)
    rows = [
        {"command": "buildInfo", "database": "admin", "latency_us": 700},
        {"command": "aggregate", "database": "admin", "collection": "atlascli", "latency_us": 900},
        {"command": "find", "database": "shop", "collection": "orders", "latency_us": 1234},
        {
            "command": "dropDatabase",
            "database": "shop",
            "ok": False,
            "refused": True,
            "error_message": "dropDatabase is on this resource's deny list",
        },
    ]
    for row in rows:
        SessionCommand.objects.create(session=session, **row)
    html = verified_client(user).get(reverse("portal:session-detail", args=[session.public_id])).content.decode()
    assert html.count('class="chatter ') == 2 and 'id="chatter-count">2<' in html
    assert "refused: dropDatabase is on this resource&#x27;s deny list" in html
    assert "1.2 ms" in html  # as portal.js writes it live: (latency_us / 1000).toFixed(1) + " ms"


def test_the_admin_index_is_grouped_by_work_with_readable_labels(otp_admin_client):
    html = otp_admin_client.get("/admin/").content.decode()
    captions = re.findall(r'<caption>\s*<a [^>]*class="section"[^>]*>([^<]+)</a>', html)
    assert captions == ["Access", "Sessions", "Leases", "Audit", "Connectors", "Settings"]
    for label in ("Access requests", "Gateway sessions", "Session command log", "Audit trail", "API tokens"):
        assert f">{label}</a>" in html
    for raw in ("OTP_EMAIL", "OTP_TOTP", "Otp_Email", "Api tokens", "Api token"):
        assert raw not in html
    assert "favicon.svg" in html


def test_the_admin_command_log_sets_the_handshake_apart_and_reads_well(otp_admin_client, staff_user):
    from access.models import SessionCommand

    session = SessionFactory(user=staff_user)
    SessionCommand.objects.create(session=session, command="getParameter", database="admin")
    SessionCommand.objects.create(
        session=session, command="insert", database="shop", collection="orders", summary={"insert": "x" * 400}
    )
    SessionCommand.objects.create(
        session=session,
        command="dropDatabase",
        database="shop",
        ok=False,
        refused=True,
        error_message="denied by policy",
    )
    html = otp_admin_client.get(f"/admin/access/session/{session.pk}/change/").content.decode()
    person, handshake = html.split("Driver and shell handshake", 1)
    assert "insert" in person and "getParameter" not in person and "getParameter" in handshake
    assert "refused</strong>: denied by policy" in html
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC", html)
    assert 'class="pam-summary"' in html
    people_only = otp_admin_client.get("/admin/access/sessioncommand/?sent_by=person").content.decode()
    people_only = re.search(r'<table id="result_list">.*?</table>', people_only, re.S).group(0)
    assert "insert" in people_only and "getParameter" not in people_only


def test_the_audit_changelist_shows_target_address_and_an_expandable_hash(otp_admin_client, staff_user):
    from access import context
    from access.models import AuditAction, AuditEvent
    from access.services.audit import audit_record

    token = context.bind(ip="10.1.2.3", request_id="req-1")
    try:
        audit_record(action=AuditAction.ACCESSPOLICY_CREATE, actor=staff_user, target=staff_user)
    finally:
        context.reset(token)
    event = AuditEvent.objects.latest("seq")
    html = otp_admin_client.get("/admin/access/auditevent/").content.decode()
    assert "10.1.2.3" in html and event.hash in html and f"{event.hash[:12]}…" in html
    assert '<details class="pam-expand">' in html and staff_user.username in html


def test_emails_link_to_the_page_where_the_action_happens(db, settings, django_capture_on_commit_callbacks):
    from access.services.requests import access_request_approve, access_request_create

    settings.PAM_PORTAL_URL = "https://pam.example.com"
    account = AccountFactory(resource=ResourceFactory(name="db1"), name="db1-rw")
    requester = UserFactory(username="ria", email="ria@example.com")
    approver = make_approver(UserFactory(username="abe", email="abe@example.com"))
    policy = AccessPolicyFactory(user=requester, account=account, approval_required=True)
    with django_capture_on_commit_callbacks(execute=True):
        request = access_request_create(requester=requester, policy=policy, reason="INC-1", duration=timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        access_request_approve(request=request, approver=approver, comment="ok")
    asked, approved = mail.outbox
    assert f"https://pam.example.com/requests/{request.pk}/" in asked.body
    assert "Approve or deny it: https://pam.example.com/approvals/" in asked.body
    assert f"Open a session: https://pam.example.com/db-accounts/{account.pk}/use/" in approved.body


def test_the_email_code_page_says_a_code_was_emailed(db, client, settings):
    settings.PAM_MFA_METHOD = "email"
    user = UserFactory(username="eve", email="eve@example.com")
    user.set_password("pw-for-eve-123")
    user.save()
    client.force_login(user)
    page = client.get(reverse("portal:mfa-verify"), follow=True)
    text = _text(page)
    assert "We emailed you a code." in text and "We emailed a code to ev…@example.com" in text
    (sent,) = mail.outbox
    assert "/mfa/" in sent.body and sent.subject == "Your sign-in code for the MongoDB access portal"


def test_portal_lists_page_filter_and_show_seconds(db):
    user = UserFactory(username="lou")
    role = DynamicRoleFactory(name="pages")
    now = timezone.now()
    for index in range(30):
        Lease.objects.create(
            lease_id=f"x/{index}",
            role=role,
            resource=role.resource,
            holder=user,
            holder_name=user.username,
            db="admin",
            username=f"lease-user-{index:02d}",
            password="p",
            issued_at=now - timedelta(minutes=index),
            expires_at=now - timedelta(minutes=index) + timedelta(seconds=5),
            max_expires_at=now + timedelta(hours=1),
            state=LeaseState.EXPIRED if index % 2 else LeaseState.ACTIVE,
        )
    client = verified_client(user)
    first = client.get(reverse("portal:lease-list")).content.decode()
    assert first.count("<tr data-lease=") == 25 and "page 1 of 2" in first and 'rel="next"' in first
    assert re.search(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</td>", first)
    second = client.get(reverse("portal:lease-list") + "?page=2").content.decode()
    assert second.count("<tr data-lease=") == 5
    expired = client.get(reverse("portal:lease-list") + "?state=expired&q=user-0").content.decode()
    assert expired.count("<tr data-lease=") == 5  # 01, 03, 05, 07, 09

    AccessRequest.objects.create(
        requester=user,
        policy=AccessPolicyFactory(user=user, role=role, account=None),
        role=role,
        reason="why",
        duration=timedelta(minutes=30),
    )
    requests_page = client.get(reverse("portal:request-list") + "?state=pending").content.decode()
    assert requests_page.count("<tr data-request=") == 1 and "1 request" in requests_page
    assert client.get(reverse("portal:session-list") + "?state=open&q=nothing").status_code == 200


def test_a_superusers_approval_bypass_is_labelled_where_it_happens(db):
    role = DynamicRoleFactory(name="guarded")
    boss = UserFactory(username="boss", is_superuser=True, is_staff=True)
    AccessPolicyFactory(user=boss, account=None, role=role, approval_required=True)
    client = verified_client(boss)
    catalogue = _text(client.get(reverse("portal:catalogue")))
    assert "superuser bypass" in catalogue
    use = _text(client.get(reverse("portal:role-use", args=[role.pk])))
    assert "Superuser bypass:" in use


def test_api_docs_and_redoc_load_their_scripts_from_the_portal_itself(api_client):
    for path in ("/api/docs/", "/api/redoc/"):
        html = api_client.get(path).content.decode()
        sources = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
        assert any(src.startswith("/static/drf_spectacular_sidecar/") for src in sources), sources
        assert not [src for src in sources if src.startswith(("http:", "https:", "//"))], sources
