"""Authorization matrix of the portal: nobody reaches another user's lease, request or session by guessing ids
(404), approving needs the permission (403), every form needs its CSRF token, and the admin needs a verified
OTP device even for staff."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from django.urls import reverse

from access.models import AccessRequest, Lease, Session
from access.models.leases import LeaseState
from access.models.policies import RequestState
from access.models.sessions import SessionState
from access.services.requests import access_request_create
from tests.factories import (
    AccessPolicyFactory,
    AccountFactory,
    DynamicRoleFactory,
    LeaseFactory,
    SessionFactory,
    UserFactory,
)
from tests.helpers import make_approver, otp_browser_session, session_socket, verified_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob_things():
    """Bob's lease, request, session and policies; Alice holds nothing of his."""
    bob = UserFactory(username="bob")
    policy = AccessPolicyFactory(user=bob, account=AccountFactory(name="bobs-account"), max_duration=timedelta(hours=1))
    role = DynamicRoleFactory(name="bobs-role")
    AccessPolicyFactory(user=bob, account=None, role=role, approval_required=False)
    return {
        "bob": bob,
        "policy": policy,
        "role": role,
        "lease": LeaseFactory(holder=bob, role=role),
        "request": access_request_create(requester=bob, policy=policy, reason="x", duration=timedelta(minutes=10)),
        "session": SessionFactory(user=bob, account=policy.account),
    }


@pytest.fixture
def alice():
    return verified_client(UserFactory(username="alice"))


def _urls(things) -> dict[str, tuple[str, str]]:
    lease, request, session = things["lease"], things["request"], things["session"]
    return {
        "lease detail": ("get", reverse("portal:lease-detail", args=[lease.pk])),
        "lease renew": ("post", reverse("portal:lease-renew", args=[lease.pk])),
        "lease revoke": ("post", reverse("portal:lease-revoke", args=[lease.pk])),
        "request detail": ("get", reverse("portal:request-detail", args=[request.pk])),
        "request cancel": ("post", reverse("portal:request-cancel", args=[request.pk])),
        "session detail": ("get", reverse("portal:session-detail", args=[session.public_id])),
        "session end": ("post", reverse("portal:session-end", args=[session.public_id])),
        "request under bob's policy": ("get", reverse("portal:request-new", args=[things["policy"].pk])),
        "use bob's account": ("get", reverse("portal:account-use", args=[things["policy"].account_id])),
        "use bob's role": ("get", reverse("portal:role-use", args=[things["role"].pk])),
    }


@pytest.mark.parametrize(
    "name",
    [
        "lease detail",
        "lease renew",
        "lease revoke",
        "request detail",
        "request cancel",
        "session detail",
        "session end",
        "request under bob's policy",
        "use bob's account",
        "use bob's role",
    ],
)
def test_another_users_objects_are_not_found(alice, bob_things, name):
    method, url = _urls(bob_things)[name]
    response = getattr(alice, method)(url)
    assert response.status_code == 404
    assert bob_things["lease"].password.reveal() not in response.content.decode()
    assert Lease.objects.get(pk=bob_things["lease"].pk).state == LeaseState.ACTIVE
    assert Lease.objects.get(pk=bob_things["lease"].pk).revealed_at is None
    assert AccessRequest.objects.get(pk=bob_things["request"].pk).state == RequestState.PENDING
    assert Session.objects.get(pk=bob_things["session"].pk).state == SessionState.OPEN


def test_guessed_ids_of_missing_objects_are_not_found_either(alice):
    import uuid

    for url in [
        reverse("portal:lease-detail", args=[999999]),
        reverse("portal:request-detail", args=[999999]),
        reverse("portal:session-detail", args=[uuid.uuid4()]),
    ]:
        assert alice.get(url).status_code == 404


def test_approving_without_the_permission_is_forbidden(alice, bob_things):
    assert alice.get(reverse("portal:approvals")).status_code == 403
    response = alice.post(reverse("portal:approval-decide", args=[bob_things["request"].pk]), {"decision": "approve"})
    assert response.status_code == 403
    assert AccessRequest.objects.get(pk=bob_things["request"].pk).state == RequestState.PENDING


def test_an_approver_may_read_and_decide_others_requests(bob_things):
    carol = verified_client(make_approver(UserFactory(username="carol")))
    assert carol.get(reverse("portal:request-detail", args=[bob_things["request"].pk])).status_code == 200
    carol.post(reverse("portal:approval-decide", args=[bob_things["request"].pk]), {"decision": "deny"})
    assert AccessRequest.objects.get(pk=bob_things["request"].pk).state == RequestState.DENIED
    # ...but an approver still cannot see or end someone else's session or lease in the portal.
    assert carol.get(reverse("portal:session-detail", args=[bob_things["session"].public_id])).status_code == 404
    assert carol.post(reverse("portal:lease-revoke", args=[bob_things["lease"].pk])).status_code == 404


def test_the_live_stream_of_another_users_session_is_refused(bob_things):
    alice = UserFactory(username="alice")
    alice_browser = otp_browser_session(alice)  # even with a verified device, another user's stream is closed

    async def connect():
        communicator = session_socket(bob_things["session"], alice, alice_browser)
        await communicator.connect()
        output = await communicator.receive_output(timeout=3)
        await communicator.disconnect()
        return output

    output = async_to_sync(connect)()
    assert output == {"type": "websocket.close", "code": 4403}


@pytest.mark.parametrize(
    "url_name,args",
    [
        ("portal:session-end", "session"),
        ("portal:lease-revoke", "lease"),
        ("portal:approval-decide", "request"),
        ("portal:request-cancel", "request"),
    ],
)
def test_posts_without_a_csrf_token_are_refused(bob_things, url_name, args):
    bob = bob_things["bob"]
    make_approver(bob)
    client = verified_client(bob)
    client.handler.enforce_csrf_checks = True
    target = bob_things[args]
    response = client.post(reverse(url_name, args=[getattr(target, "public_id", target.pk)]), {"decision": "deny"})
    assert response.status_code == 403 and b"CSRF" in response.content
    assert Session.objects.get(pk=bob_things["session"].pk).state == SessionState.OPEN
    assert Lease.objects.get(pk=bob_things["lease"].pk).state == LeaseState.ACTIVE
    assert AccessRequest.objects.get(pk=bob_things["request"].pk).state == RequestState.PENDING


def test_login_form_needs_a_csrf_token():
    UserFactory(username="dave")
    client = Client(enforce_csrf_checks=True)
    response = client.post(reverse("portal:login"), {"username": "dave", "password": "correct horse battery staple"})
    assert response.status_code == 403


def test_staff_without_a_verified_device_cannot_reach_the_admin(staff_user):
    client = Client()
    client.force_login(staff_user)
    for url in [
        "/admin/",
        reverse("admin:access_accessrequest_changelist"),
        reverse("admin:access_accesspolicy_review"),
    ]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_staff_with_a_verified_device_reach_the_admin(otp_admin_client):
    assert otp_admin_client.get("/admin/").status_code == 200


def test_no_view_of_the_portal_is_csrf_exempt():
    from django.urls import get_resolver

    from portal.urls import portal_patterns

    for pattern in portal_patterns:
        view = pattern.callback
        assert not getattr(view, "csrf_exempt", False), pattern.name
    assert get_resolver() is not None
