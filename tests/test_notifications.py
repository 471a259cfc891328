"""Chat and webhook notifications against a real HTTP receiver: each payload's shape, links, retries, no blocking.

The receiver is a real http.server on loopback (tests/sink_receivers.py); the generic webhook's receiver verifies
the HMAC signature as a receiver would. Notifications are queued on commit as django-q2 tasks (the test checks the
broker got them) and the task function is then run as a worker would run it.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from django_q.brokers import get_broker

from access.generators import new_token
from access.models import Notification
from access.models.notifications import NotificationEvent, NotificationKind, NotificationState
from access.services.leases import lease_revoke
from access.services.notifications import notification_target_create, notifications_send_due
from access.services.requests import access_request_approve, access_request_create, access_request_deny
from access.tasks_sinks import send_notification
from connectors.base import ConnectorError
from tests.factories import AccessPolicyFactory, LeaseFactory, UserFactory
from tests.sink_receivers import HttpReceiver

pytestmark = pytest.mark.django_db

PORTAL = "https://pam.example.test"


@pytest.fixture
def receivers():
    chat = HttpReceiver().start()
    key = new_token(nbytes=32)
    hook = HttpReceiver(hmac_key=key).start()
    hook.key = key
    yield chat, hook
    chat.stop()
    hook.stop()


@pytest.fixture
def targets(receivers, settings):
    settings.PAM_PORTAL_URL = PORTAL
    chat, hook = receivers
    policy = AccessPolicyFactory(approval_required=True, break_glass_allowed=True, user__email="dev@example.com")
    made = {
        kind: notification_target_create(
            actor="test", name=kind, kind=kind, webhook_url=f"{chat.url}/{kind}", policy=policy
        )
        for kind in (NotificationKind.SLACK, NotificationKind.TEAMS, NotificationKind.TEAMS_MESSAGECARD)
    }
    made["webhook"] = notification_target_create(
        actor="test", name="hook", kind=NotificationKind.WEBHOOK, webhook_url=f"{hook.url}/pam", hmac_key=hook.key
    )  # no scope: every policy and resource
    return policy, made


def _send_all() -> None:
    for pk in Notification.objects.filter(state=NotificationState.PENDING).order_by("pk").values_list("pk", flat=True):
        send_notification(pk)


def _posted(chat, kind: str) -> dict:
    [payload] = [body for path, _headers, body in chat.requests if path == f"/{kind}"]
    return payload


def test_an_access_request_is_posted_to_slack_teams_and_a_signed_webhook_with_portal_links(
    targets, receivers, django_capture_on_commit_callbacks
):
    policy, _ = targets
    chat, hook = receivers
    UserFactory(username="approver", is_staff=True, is_superuser=True, email="sec@example.com")
    queued_before = get_broker().queue_size()
    with django_capture_on_commit_callbacks(execute=True):
        request = access_request_create(
            requester=policy.user, policy=policy, reason="incident 42", duration=timedelta(hours=1)
        )
        assert Notification.objects.count() == 4 and get_broker().queue_size() == queued_before  # not before commit
    assert get_broker().queue_size() == queued_before + 4  # one django-q2 task per target
    _send_all()

    approvals = f"{PORTAL}/approvals/"
    detail = f"{PORTAL}/requests/{request.pk}/"
    slack = _posted(chat, "slack")
    assert "asks for access" in slack["text"] and approvals in slack["text"]
    assert slack["blocks"][0]["type"] == "header"
    [actions] = [block for block in slack["blocks"] if block["type"] == "actions"]
    assert [button["url"] for button in actions["elements"]] == [approvals, detail]
    fields = {field["text"].split("\n")[0] for block in slack["blocks"] for field in block.get("fields", [])}
    assert {"*Requester*", "*Target*", "*Duration*", "*Reason*"} <= fields

    teams = _posted(chat, "teams")
    assert teams["type"] == "message"
    [attachment] = teams["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["body"][0]["type"] == "TextBlock"
    assert [action["url"] for action in card["actions"] if action["type"] == "Action.OpenUrl"] == [approvals, detail]

    messagecard = _posted(chat, "teams_messagecard")
    assert messagecard["@type"] == "MessageCard" and messagecard["summary"]
    assert messagecard["potentialAction"][0]["@type"] == "OpenUri"
    assert messagecard["potentialAction"][0]["targets"][0]["uri"] == approvals

    [(_path, headers, body)] = hook.requests
    assert hook.rejected == [] and headers["X-PAM-Signature"].startswith("sha256=")  # the signature verified
    assert body["event"] == "request.create" and body["data"]["request"] == request.pk
    assert body["links"] == [{"label": "Approve or deny it", "url": approvals}, {"label": "Open it", "url": detail}]
    assert set(Notification.objects.values_list("state", flat=True)) == {NotificationState.SENT}

    [email] = mail.outbox
    assert approvals in email.body and detail in email.body  # the email carries the same links


def test_approval_denial_and_break_glass_are_posted(targets, receivers, django_capture_on_commit_callbacks):
    policy, _ = targets
    chat, hook = receivers
    approver = UserFactory(username="approver", is_staff=True, is_superuser=True)
    with django_capture_on_commit_callbacks(execute=True):
        first = access_request_create(requester=policy.user, policy=policy, reason="a", duration=timedelta(hours=1))
        second = access_request_create(requester=policy.user, policy=policy, reason="b", duration=timedelta(hours=1))
        access_request_approve(request=first, approver=approver, comment="ok")
        access_request_deny(request=second, approver=approver, comment="no")
        glass = access_request_create(
            requester=policy.user, policy=policy, reason="prod down", duration=timedelta(hours=1), break_glass=True
        )
    _send_all()
    events = [body["event"] for _path, _headers, body in hook.requests]
    assert events == ["request.create", "request.create", "request.approve", "request.deny", "request.break_glass"]
    slack_texts = [body["text"] for path, _headers, body in chat.requests if path == "/slack"]
    assert any(f"Request #{first.pk} approved by approver" in text for text in slack_texts)
    assert any(f"Request #{second.pk} denied by approver" in text for text in slack_texts)
    [glass_post] = [body for _path, _headers, body in hook.requests if body["event"] == "request.break_glass"]
    review = f"{PORTAL}/admin/access/accessrequest/?post_review=awaiting"
    assert glass_post["title"].startswith("BREAK-GLASS") and glass_post["data"]["request"] == glass.pk
    assert review in [link["url"] for link in glass_post["links"]]


class _FailingConnector:
    def drop_user(self, **kwargs):
        raise ConnectorError("server unreachable", kind="unreachable")


def test_a_revocation_failure_is_posted_to_the_resources_targets(
    receivers, settings, django_capture_on_commit_callbacks
):
    settings.PAM_PORTAL_URL = PORTAL
    chat, _hook = receivers
    lease = LeaseFactory()
    notification_target_create(
        actor="test", name="db-team", kind=NotificationKind.SLACK, webhook_url=f"{chat.url}/db", resource=lease.resource
    )
    notification_target_create(
        actor="test",
        name="other-team",
        kind=NotificationKind.SLACK,
        webhook_url=f"{chat.url}/other",
        resource=LeaseFactory().resource,
    )
    with django_capture_on_commit_callbacks(execute=True):
        revoked = lease_revoke(lease=lease, actor="test", connector=_FailingConnector())
    assert revoked.state == "revoke_failed"
    _send_all()
    [(path, _headers, body)] = chat.requests  # only the lease's resource's target
    assert path == "/db" and f"Revocation failed for lease {lease.lease_id}" in body["text"]
    assert f"{PORTAL}/admin/access/lease/{lease.pk}/change/" in body["text"]


def test_a_failing_webhook_is_retried_and_never_blocks_the_request(
    targets, receivers, django_capture_on_commit_callbacks
):
    policy, _ = targets
    chat, hook = receivers
    hook.fail_with, chat.delay = 500, 3.0  # the webhook refuses; the chat endpoints take 3 s each
    started = time.monotonic()
    with django_capture_on_commit_callbacks(execute=True):
        access_request_create(requester=policy.user, policy=policy, reason="x", duration=timedelta(hours=1))
    assert time.monotonic() - started < 2.0  # sending happens in the task, not in the request
    chat.delay = 0
    _send_all()
    failed = Notification.objects.get(target__kind=NotificationKind.WEBHOOK)
    assert failed.state == NotificationState.PENDING and failed.attempts == 1
    assert failed.last_error == f"127.0.0.1:{hook.port} answered HTTP 500"
    assert failed.next_attempt_at > timezone.now()
    assert notifications_send_due() == 0  # its backoff has not passed

    hook.fail_with = None
    Notification.objects.filter(pk=failed.pk).update(next_attempt_at=timezone.now())  # the backoff has passed
    assert notifications_send_due() == 1
    failed.refresh_from_db()
    assert failed.state == NotificationState.SENT and failed.attempts == 2 and failed.last_error == ""
    assert [body["event"] for _p, _h, body in hook.requests] == [NotificationEvent.REQUEST_CREATE]


def test_a_target_of_another_policy_hears_nothing(receivers, settings, django_capture_on_commit_callbacks):
    chat, _hook = receivers
    mine, other = AccessPolicyFactory(approval_required=True), AccessPolicyFactory()
    notification_target_create(actor="test", name="t", kind="slack", webhook_url=f"{chat.url}/x", policy=other)
    with django_capture_on_commit_callbacks(execute=True):
        access_request_create(requester=mine.user, policy=mine, reason="x", duration=timedelta(hours=1))
    assert Notification.objects.count() == 0
