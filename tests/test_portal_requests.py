"""Access requests through the services, the portal pages and the admin: approval, denial, break-glass,
emails at each step, the approval clock, post-review and the access review."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from access.models import AccessRequest, AuditEvent
from access.models.policies import RequestState
from access.selectors.policies import access_grant_for
from access.services.requests import (
    access_request_approve,
    access_request_cancel,
    access_request_create,
    access_request_deny,
    access_request_post_review,
)
from tests.factories import AccessPolicyFactory, AccountFactory, SessionFactory, UserFactory
from tests.helpers import make_approver, verified_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def requester():
    return UserFactory(username="rita")


@pytest.fixture
def approver():
    return make_approver(UserFactory(username="alan"))


@pytest.fixture
def policy(requester):
    return AccessPolicyFactory(
        name="orders-oncall", user=requester, account=AccountFactory(name="orders"), max_duration=timedelta(hours=2)
    )


def test_request_waits_for_approval_and_the_clock_starts_at_approval(requester, approver, policy):
    request = access_request_create(requester=requester, policy=policy, reason="INC-42", duration=timedelta(hours=1))
    assert request.state == RequestState.PENDING and request.expires_at is None
    assert access_grant_for(user=requester, account=policy.account) is None
    later = timezone.now()
    approved = access_request_approve(request=request, approver=approver, comment="ok")
    assert approved.state == RequestState.APPROVED and approved.approver == approver
    assert approved.expires_at == approved.decided_at + timedelta(hours=1) and approved.decided_at >= later
    grant = access_grant_for(user=requester, account=policy.account)
    assert grant is not None and grant.request.pk == request.pk
    actions = list(
        AuditEvent.objects.filter(target_id=str(request.pk)).order_by("seq").values_list("action", flat=True)
    )
    assert actions == ["request.create", "request.approve"]


def test_duration_above_the_policy_maximum_is_refused(requester, policy):
    with pytest.raises(ValidationError) as excinfo:
        access_request_create(requester=requester, policy=policy, reason="x", duration=timedelta(hours=3))
    assert "duration" in excinfo.value.message_dict


def test_a_policy_that_does_not_name_the_user_cannot_be_requested(policy):
    with pytest.raises(PermissionDenied):
        access_request_create(requester=UserFactory(), policy=policy, reason="x", duration=timedelta(minutes=5))


def test_nobody_approves_their_own_request_even_with_the_permission(requester, policy):
    make_approver(requester)
    request = access_request_create(requester=requester, policy=policy, reason="x", duration=timedelta(minutes=5))
    with pytest.raises(PermissionDenied):
        access_request_approve(request=request, approver=requester)
    request.refresh_from_db()
    assert request.state == RequestState.PENDING


def test_the_database_refuses_self_approval_too(requester, policy):
    request = access_request_create(requester=requester, policy=policy, reason="x", duration=timedelta(minutes=5))
    with pytest.raises(IntegrityError), transaction.atomic():
        AccessRequest.objects.filter(pk=request.pk).update(approver=requester)


def test_approving_needs_the_permission(requester, policy):
    request = access_request_create(requester=requester, policy=policy, reason="x", duration=timedelta(minutes=5))
    with pytest.raises(PermissionDenied):
        access_request_approve(request=request, approver=UserFactory())


def test_a_decided_request_cannot_be_decided_again(requester, approver, policy):
    request = access_request_create(requester=requester, policy=policy, reason="x", duration=timedelta(minutes=5))
    access_request_deny(request=request, approver=approver, comment="no ticket")
    with pytest.raises(ValidationError):
        access_request_approve(request=request, approver=approver)
    assert access_grant_for(user=requester, account=policy.account) is None


def test_requester_and_approvers_get_an_email_at_each_step(
    requester, approver, policy, django_capture_on_commit_callbacks
):
    other_approver = make_approver(UserFactory(username="ana"), through_group=False)
    with django_capture_on_commit_callbacks(execute=True):
        request = access_request_create(requester=requester, policy=policy, reason="INC-7", duration=timedelta(hours=1))
    assert len(mail.outbox) == 1
    assert set(mail.outbox[0].to) == {requester.email, approver.email, other_approver.email}
    assert "asks for access" in mail.outbox[0].subject
    with django_capture_on_commit_callbacks(execute=True):
        access_request_approve(request=request, approver=approver, comment="go")
    assert len(mail.outbox) == 2 and "approved" in mail.outbox[1].subject
    assert requester.email in mail.outbox[1].to


def test_break_glass_is_approved_at_once_flagged_and_told(
    requester, approver, policy, django_capture_on_commit_callbacks
):
    policy.break_glass_allowed = True
    policy.save()
    with django_capture_on_commit_callbacks(execute=True):
        request = access_request_create(
            requester=requester, policy=policy, reason="prod down", duration=timedelta(minutes=30), break_glass=True
        )
    assert request.state == RequestState.APPROVED and request.break_glass and request.approver is None
    assert access_grant_for(user=requester, account=policy.account) is not None
    assert "BREAK-GLASS" in mail.outbox[0].subject and approver.email in mail.outbox[0].to
    assert AccessRequest.objects.awaiting_post_review().filter(pk=request.pk).exists()
    with pytest.raises(ValidationError):
        access_request_post_review(request=request, reviewer=approver, comment="")
    access_request_post_review(request=request, reviewer=approver, comment="justified: INC-9")
    assert not AccessRequest.objects.awaiting_post_review().exists()


def test_break_glass_needs_a_policy_that_allows_it(requester, policy):
    with pytest.raises(PermissionDenied):
        access_request_create(
            requester=requester, policy=policy, reason="x", duration=timedelta(minutes=5), break_glass=True
        )


def test_cancelling_an_approved_request_closes_its_window(requester, approver, policy):
    request = access_request_create(requester=requester, policy=policy, reason="x", duration=timedelta(hours=1))
    access_request_approve(request=request, approver=approver)
    access_request_cancel(request=request, user=requester)
    assert access_grant_for(user=requester, account=policy.account) is None


# -- pages -------------------------------------------------------------------------------------------------
def test_portal_request_then_approval_through_the_pages(requester, approver, policy):
    rita = verified_client(requester)
    page = rita.get(reverse("portal:catalogue"))
    assert page.status_code == 200 and b"orders" in page.content and b"Request access" in page.content
    response = rita.post(
        reverse("portal:request-new", args=[policy.pk]), {"reason": "INC-1 investigate", "duration": "45m"}
    )
    request = AccessRequest.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("portal:request-detail", args=[request.pk])
    assert request.duration == timedelta(minutes=45)

    alan = verified_client(approver)
    queue = alan.get(reverse("portal:approvals"))
    assert b"INC-1 investigate" in queue.content
    dashboard = alan.get(reverse("portal:dashboard"))
    assert b'id="queue-badge">1<' in dashboard.content
    alan.post(reverse("portal:approval-decide", args=[request.pk]), {"decision": "approve", "comment": "fine"})
    request.refresh_from_db()
    assert request.state == RequestState.APPROVED and request.approver == approver

    page = rita.get(reverse("portal:catalogue"))
    assert b"Open session" in page.content


def test_the_request_form_shows_the_policy_maximum_error(requester, policy):
    rita = verified_client(requester)
    response = rita.post(reverse("portal:request-new", args=[policy.pk]), {"reason": "x", "duration": "5h"})
    assert response.status_code == 200 and b"At most 2h" in response.content
    assert not AccessRequest.objects.exists()


def test_approving_ones_own_request_in_the_portal_is_refused_with_a_message(requester, policy):
    make_approver(requester)
    request = access_request_create(requester=requester, policy=policy, reason="x", duration=timedelta(minutes=5))
    rita = verified_client(requester)
    response = rita.post(reverse("portal:approval-decide", args=[request.pk]), {"decision": "approve"}, follow=True)
    assert b"Nobody approves or denies their own request" in response.content
    request.refresh_from_db()
    assert request.state == RequestState.PENDING


# -- admin -------------------------------------------------------------------------------------------------
def test_admin_actions_approve_with_a_comment_and_list_break_glass_until_reviewed(
    otp_admin_client, staff_user, requester, policy
):
    request = access_request_create(requester=requester, policy=policy, reason="x", duration=timedelta(minutes=5))
    url = reverse("admin:access_accessrequest_changelist")
    confirm = otp_admin_client.post(url, {"action": "approve_requests", "_selected_action": [request.pk]})
    assert confirm.status_code == 200 and b'name="comment"' in confirm.content
    otp_admin_client.post(
        url, {"action": "approve_requests", "_selected_action": [request.pk], "apply": "1", "comment": "by admin"}
    )
    request.refresh_from_db()
    assert request.state == RequestState.APPROVED and request.decision_comment == "by admin"

    policy.break_glass_allowed = True
    policy.save()
    glass = access_request_create(
        requester=requester, policy=policy, reason="fire", duration=timedelta(minutes=5), break_glass=True
    )
    awaiting = otp_admin_client.get(url, {"post_review": "awaiting"})
    assert list(awaiting.context["cl"].result_list) == [glass]
    otp_admin_client.post(
        url,
        {"action": "post_review_requests", "_selected_action": [glass.pk], "apply": "1", "comment": "ok, INC-9"},
    )
    assert list(otp_admin_client.get(url, {"post_review": "awaiting"}).context["cl"].result_list) == []


def test_access_review_lists_direct_and_group_holders_with_last_use_and_exports_csv(otp_admin_client, requester):
    from django.contrib.auth.models import Group

    group = Group.objects.create(name="dba")
    member = UserFactory(username="gina")
    member.groups.add(group)
    account = AccountFactory(name="billing")
    AccessPolicyFactory(name="billing-dba", user=None, group=group, account=account, approval_required=False)
    AccessPolicyFactory(name="rita-billing", user=requester, account=account)
    SessionFactory(user=member, account=account)

    page = otp_admin_client.get(reverse("admin:access_accesspolicy_review"))
    assert page.status_code == 200 and b"group dba" in page.content
    changelist = otp_admin_client.get(reverse("admin:access_accesspolicy_changelist"))
    assert reverse("admin:access_accesspolicy_review").encode() in changelist.content

    export = otp_admin_client.get(reverse("admin:access_accesspolicy_review"), {"format": "csv"})
    assert export["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    by_user = {row["user"]: row for row in rows}
    assert by_user["gina"]["via"] == "group dba" and by_user["gina"]["user_last_used_at"]
    assert by_user["rita"]["via"] == "direct" and by_user["rita"]["user_last_used_at"] == ""
