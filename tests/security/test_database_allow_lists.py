"""Database allow-lists are usable (issue 12, section 3): set on a policy in the admin, narrowed in a portal request,
when opening a session in the portal or through the API, shown on the session page, and enforced by the gateway.

Refused: a request or a session that asks for a database its policy does not allow; through the gateway, a command
on a database outside the session's list (the session took it from the policy it was opened under).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from access.models import AccessPolicy, AccessRequest, AuditAction, AuditEvent, Session
from access.services.requests import access_request_approve
from access.services.usage import access_session_open
from tests.factories import AccessPolicyFactory, AccountFactory, DynamicRoleFactory, UserFactory
from tests.gateway_fixtures import account_on
from tests.helpers import make_approver, token_client, unique_name, verified_client


def test_the_admin_sets_databases_and_privileged_commands_on_a_policy(otp_admin_client, staff_user, db):
    engineer, account = UserFactory(), AccountFactory()
    form = {
        "name": "reports only",
        "user": engineer.pk,
        "account": account.pk,
        "max_duration": "2h",
        "is_enabled": "on",
        "database_allow_list": "reports, analytics",
        "privileged_commands": ["user_management"],
    }
    page = otp_admin_client.get(reverse("admin:access_accesspolicy_add")).content.decode()
    assert "Databases" in page and "Role management" in page  # the fields are on the form
    created = otp_admin_client.post(reverse("admin:access_accesspolicy_add"), form)
    assert created.status_code == 302, created.content.decode()[:2000]
    policy = AccessPolicy.objects.get(name="reports only")
    assert policy.database_allow_list == ["reports", "analytics"]
    assert policy.privileged_commands == ["user_management"]
    changed = AuditEvent.objects.get(action=AuditAction.ACCESSPOLICY_CREATE).data["changed"]
    assert changed["database_allow_list"] == ["reports", "analytics"]
    bad = otp_admin_client.post(
        reverse("admin:access_accesspolicy_change", args=[policy.pk]), {**form, "database_allow_list": "a.b, ok"}
    )
    assert bad.status_code == 200 and "is not a database name" in bad.content.decode()
    on_role = otp_admin_client.post(
        reverse("admin:access_accesspolicy_add"),
        {**form, "name": "role", "account": "", "role": DynamicRoleFactory().pk},
    )
    assert "Databases narrow gateway sessions" in on_role.content.decode()


def test_a_portal_request_narrows_the_databases_and_the_session_shows_them(db):
    requester, approver = UserFactory(), make_approver(UserFactory())
    policy = AccessPolicyFactory(user=requester, approval_required=True, database_allow_list=["app", "reports"])
    client = verified_client(requester)
    url = reverse("portal:request-new", args=[policy.pk])
    form = client.get(url).content.decode()
    assert "this policy allows app, reports" in form
    outside = client.post(url, {"reason": "month end", "duration": "1h", "databases": "app, secret"})
    assert outside.status_code == 200 and "Outside this policy" in outside.content.decode()
    assert not AccessRequest.objects.exists()
    sent = client.post(url, {"reason": "month end", "duration": "1h", "databases": "reports"})
    assert sent.status_code == 302
    access_request = AccessRequest.objects.get()
    assert access_request.database_allow_list == ["reports"]
    access_request_approve(request=access_request, approver=approver)
    opened = client.post(reverse("portal:account-use", args=[policy.account.pk]), {"duration": "30m"})
    assert opened.status_code == 200, opened.content.decode()[:2000]
    session = Session.objects.get(user=requester)
    assert session.database_allow_list == ["reports"]  # the request narrowed the policy's list
    page = client.get(reverse("portal:session-detail", args=[session.public_id])).content.decode()
    assert "<dt>Databases</dt><dd>reports</dd>" in page


def test_the_api_opens_a_session_on_fewer_databases_and_shows_them(db):
    policy = AccessPolicyFactory(approval_required=False, database_allow_list=["app", "reports"])
    client = token_client(policy.user)
    wider = client.post(
        "/api/v1/sessions",
        {"account": policy.account.pk, "duration": "1h", "databases": ["secret"]},
        format="json",
    )
    assert wider.status_code == 400 and "Outside the databases your access allows" in wider.content.decode()
    opened = client.post(
        "/api/v1/sessions", {"account": policy.account.pk, "duration": "1h", "databases": ["app"]}, format="json"
    )
    assert opened.status_code == 201, opened.content
    assert opened.json()["databases"] == ["app"] and opened.json()["privileged_commands"] == []
    listed = client.get(f"/api/v1/sessions/{opened.json()['session_id']}").json()
    assert listed["databases"] == ["app"]
    default = client.post("/api/v1/sessions", {"account": policy.account.pk, "duration": "1h"}, format="json")
    assert default.json()["databases"] == ["app", "reports"]  # the policy's list, not every database


@pytest.mark.wireserver
@pytest.mark.django_db(transaction=True)
def test_the_gateway_enforces_the_databases_a_policy_gave_the_session(wire_server, gateway, gateway_proxy):
    app, other = unique_name("app"), unique_name("secret")
    with MongoClient(wire_server.uri, serverSelectionTimeoutMS=5000) as admin:
        admin[app].items.insert_one({"where": "app"})
        admin[other].items.insert_one({"where": "secret", "card": "4111-1111-1111-1111"})
    account = account_on(wire_server)
    account.resource.gateway = gateway
    account.resource.save()
    policy = AccessPolicyFactory(
        user=UserFactory(),
        account=account,
        approval_required=False,
        database_allow_list=[app],
        max_duration=timedelta(hours=1),
    )
    opened = access_session_open(user=policy.user, account=account, duration=timedelta(minutes=30))
    session = opened.session
    assert session.database_allow_list == [app]
    with MongoClient(gateway_proxy.uri(session.username, opened.secret), serverSelectionTimeoutMS=5000) as driver:
        assert driver[app].items.find_one({}, {"_id": 0}) == {"where": "app"}
        with pytest.raises(OperationFailure) as failure:
            driver[other].items.find_one({})
        assert failure.value.code == 13 and "outside this session's databases" in str(failure.value)
        assert "4111" not in str(failure.value)
