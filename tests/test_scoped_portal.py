"""Scoped access in the portal and the admin, against the in-repo wire server: the catalogue entry, the request form
listing the server's databases inside the envelope, the approver's narrowing (a tampered wider form is refused by
the service), the credentials once, a gateway session through the request's user, permission levels and envelopes
in the admin, and the access review showing what each scoped grant covered."""

from __future__ import annotations

import re
from datetime import timedelta

import pymongo
import pytest

from access.models import AccessPolicy, AccessRequest, AuditEvent, PermissionLevel
from access.models.leases import LeaseState
from access.services.requests import access_request_approve, access_request_create
from access.services.scoped import scoped_lease_of
from tests.helpers import database_on, scoped_envelope, verified_client

pytestmark = pytest.mark.wireserver


@pytest.fixture
def shop(wire_server):
    with database_on(wire_server.uri, orders=[{"_id": 1}, {"_id": 2}], customers=[{"_id": 1}]) as name:
        yield name


@pytest.fixture
def world(db, wire_server, shop):
    world = scoped_envelope(wire_server, [shop], requester="rita", approver="alan", name="shop-oncall")
    return {
        "resource": world["resource"],
        "rita": world["requester"],
        "alan": world["approver"],
        "policy": world["policy"],
    }


def _text(response) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


def test_ask_in_the_portal_narrow_as_approver_and_use_the_grant(world, shop, wire_server):
    rita, alan, policy = verified_client(world["rita"]), verified_client(world["alan"]), world["policy"]
    catalogue = _text(rita.get("/catalogue/"))
    assert f'data-scoped="{policy.pk}"' in catalogue and f"Scoped access: {shop}" in catalogue

    form = _text(rita.get(f"/requests/scoped/{policy.pk}/"))
    assert f'value="{shop}"' in form  # the whole database
    assert f'value="{shop}.orders"' in form and f'value="{shop}.customers"' in form
    assert 'value="admin"' not in form

    refused = rita.post(
        f"/requests/scoped/{policy.pk}/",
        {"other": "billing.invoices", "level": "read", "duration": "1h", "reason": "look"},
    )
    assert refused.status_code == 200 and "outside the policy&#x27;s databases" in refused.content.decode()
    sent = rita.post(
        f"/requests/scoped/{policy.pk}/",
        {"resources": [f"{shop}.orders", f"{shop}.customers"], "level": "readWrite", "duration": "1h", "reason": "x"},
    )
    request = AccessRequest.objects.get(requester=world["rita"])
    assert sent.status_code == 302 and sent["Location"] == f"/requests/{request.pk}/"

    page = _text(alan.get(f"/requests/{request.pk}/"))
    assert 'id="scoped-decision"' in page and f"{shop}.customers" in page
    # A tampered form asking for more than was asked is refused by the service, and nothing is granted.
    wider = alan.post(
        f"/requests/{request.pk}/scoped/decide/",
        {"resources": [f"{shop}.orders"], "level": "readWrite", "duration": "3h", "decision": "approve"},
        follow=True,
    )
    assert "An approver may shorten the time, never lengthen it" in _text(wider)
    request.refresh_from_db()
    assert request.state == "pending"
    approved = alan.post(
        f"/requests/{request.pk}/scoped/decide/",
        {"resources": [f"{shop}.orders"], "level": "read", "duration": "30m", "decision": "approve", "comment": "ok"},
        follow=True,
    )
    assert "is approved" in _text(approved)
    request.refresh_from_db()
    assert request.scope["resources"] == [{"db": shop, "collection": "orders"}] and request.scope["level"] == "read"
    lease = scoped_lease_of(request)
    assert lease.state == LeaseState.ACTIVE

    detail = _text(rita.get(f"/requests/{request.pk}/"))
    assert "narrowed by the approver" in detail and 'id="scoped-credentials"' in detail
    shown = rita.get(f"/leases/{lease.pk}/")
    assert shown["X-One-Time-Secret"] == "1"
    password = re.search(r'id="lease-password">([^<]+)<', shown.content.decode()).group(1)
    uri = wire_server.uri_for(lease.username, password, "admin")
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=3000) as client:
        assert client[shop].orders.count_documents({}) == 2
        with pytest.raises(pymongo.errors.OperationFailure):
            client[shop].customers.find_one()
    assert 'id="lease-password"' not in rita.get(f"/leases/{lease.pk}/").content.decode()  # once

    session_page = rita.post(f"/requests/{request.pk}/scoped/session/")
    assert session_page.status_code == 200 and session_page["X-One-Time-Secret"] == "1"
    assert f"Session on {world['resource'].name}: read on {shop}.orders" in _text(session_page)


def test_permission_levels_and_envelopes_in_the_admin_and_the_access_review(world, shop, otp_admin_client):
    refused = otp_admin_client.post(
        "/admin/access/permissionlevel/add/", {"name": "auditor", "description": "", "actions": "find, readAll"}
    )
    assert refused.status_code == 200
    assert "Unknown MongoDB privilege action: readAll" in refused.content.decode()
    made = otp_admin_client.post(
        "/admin/access/permissionlevel/add/", {"name": "auditor", "description": "reads", "actions": "find, collStats"}
    )
    assert made.status_code == 302 and PermissionLevel.objects.get(name="auditor").actions == ["find", "collStats"]
    assert AuditEvent.objects.filter(action="permissionlevel.create").exists()

    page = otp_admin_client.get("/admin/access/accesspolicy/add/").content.decode()
    assert 'name="scope_levels"' in page and 'value="auditor"' in page
    saved = otp_admin_client.post(
        "/admin/access/accesspolicy/add/",
        {
            "name": "auditors",
            "user": world["rita"].pk,
            "scope_resource": world["resource"].pk,
            "scope_databases": f"{shop}, reports_*",
            "scope_collections": "",
            "scope_levels": ["auditor"],
            "max_duration": "2h",
            "approval_required": "on",
            "is_enabled": "on",
        },
    )
    assert saved.status_code == 302, saved.content.decode()[:3000]
    policy = AccessPolicy.objects.get(name="auditors")
    assert policy.scope_databases == [shop, "reports_*"] and policy.scope_levels == ["auditor"]

    access_request_create(
        requester=world["rita"],
        policy=world["policy"],
        reason="x",
        duration=timedelta(hours=1),
        scope={"resources": [f"{shop}.orders"], "level": "read"},
    )
    granted = access_request_approve(request=AccessRequest.objects.get(policy=world["policy"]), approver=world["alan"])
    lease = scoped_lease_of(granted)
    review = _text(otp_admin_client.get("/admin/access/accesspolicy/review/"))
    assert "scoped on" in review and f"{shop}, reports_*" in review
    assert f'data-lease="{lease.pk}"' in review and f"read on {shop}.orders" in review
    assert lease.server_role in review
