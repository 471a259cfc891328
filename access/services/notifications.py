"""Chat and webhook notifications of access events: targets (configured, audited) and sending with retries.

The services that make the events (access requests, break-glass, lease revocation) call `notifications_dispatch`
inside their transaction: it renders one `Notification` per matching target and, once the transaction commits,
queues the django-q2 task that posts it (access.tasks_sinks.send_notification). The request that caused
the event never waits for a webhook. A failed post is retried with backoff (`notification_send` reschedules it, the
minute schedule `notifications_send_due` picks it up) up to `MAX_ATTEMPTS`, then marked failed.

Payloads: Slack gets `text` (the fallback and the notification text) and Block Kit `blocks` with a button into the
portal; Teams gets an Adaptive Card in a message attachment (Workflows webhooks) or a MessageCard (the Office 365
connector); a generic webhook gets the event as JSON, signed like the webhook sink (X-PAM-Signature). Links lead
to the portal, where approving still needs the approver's second factor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import requests
from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from access.durations import format_duration
from access.models import AuditAction, Notification, NotificationTarget
from access.models.notifications import NotificationEvent, NotificationKind, NotificationState
from access.services.audit import audit_record
from access.services.changes import changes_refuse_unknown, changes_save
from access.transports import USER_AGENT, DeliveryError, json_bytes, network_error, peer_of, signed_headers

log = logging.getLogger(__name__)

TARGET_FIELDS = frozenset({"name", "kind", "webhook_url", "hmac_key", "events", "policy", "resource", "enabled"})
MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 15
BACKOFF_CAP_SECONDS = 30 * 60
SEND_TIMEOUT_SECONDS = 10
SEND_TASK = "access.tasks_sinks.send_notification"
_COLORS = {"good": "2EB886", "warning": "DAA038", "attention": "A30200"}


# -- targets ------------------------------------------------------------------------------------------------------
def _refuse_unknown(fields: dict[str, Any]) -> None:
    changes_refuse_unknown(fields, allowed=TARGET_FIELDS, noun="a notification target")


def notification_target_create(*, actor, **fields: Any) -> NotificationTarget:
    """Add a Slack/Teams channel or webhook for a policy, a resource or everything."""
    _refuse_unknown(fields)
    with transaction.atomic():
        target = NotificationTarget()
        changes_save(target, fields, action=AuditAction.NOTIFICATIONTARGET_CREATE, actor=actor)
    return target


def notification_target_update(*, actor, target: NotificationTarget, **fields: Any) -> NotificationTarget:
    _refuse_unknown(fields)
    with transaction.atomic():
        changes_save(target, fields, action=AuditAction.NOTIFICATIONTARGET_UPDATE, actor=actor)
    return target


def notification_target_delete(*, actor, target: NotificationTarget) -> None:
    with transaction.atomic():
        audit_record(
            action=AuditAction.NOTIFICATIONTARGET_DELETE,
            actor=actor,
            target=target,
            data={"kind": target.kind, "scope": target.scope},
        )
        target.delete()


# -- messages -----------------------------------------------------------------------------------------------------
def portal_url(path: str) -> str:
    """An absolute link into the portal (PAM_PORTAL_URL + path)."""
    return settings.PAM_PORTAL_URL + path


@dataclass
class Message:
    """What an event says, before a target's kind shapes it: a title, lines of text, facts, links, a tone."""

    event: str
    title: str
    text: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, absolute URL)
    tone: str = "warning"  # good | warning | attention
    data: dict[str, Any] = field(default_factory=dict)


def request_message(
    *, request, event: str, links: list[tuple[str, str]], actor_name: str = "", comment: str = ""
) -> Message:
    """The message for an access request event (created, approved, denied, break-glass), with the links its email
    carries (access.services.requests: the next step's page first, then the request's own page)."""
    requester = request.requester.get_username()
    target = str(request.target)
    facts = [
        ("Requester", requester),
        ("Target", target),
        ("Duration", format_duration(request.duration)),
        ("Reason", request.reason),
    ]
    if event == NotificationEvent.REQUEST_CREATE:
        title, text, tone = (
            f"{requester} asks for access to {target}",
            "An access request awaits a decision.",
            "warning",
        )
    elif event == NotificationEvent.BREAK_GLASS:
        title = f"BREAK-GLASS: {requester} took access to {target} without approval"
        text, tone = "Break-glass access was used; record a post-review.", "attention"
    elif event == NotificationEvent.REQUEST_APPROVE:
        title, text, tone = f"Request #{request.pk} approved by {actor_name}", f"{target} for {requester}.", "good"
    else:
        title, text, tone = f"Request #{request.pk} denied by {actor_name}", f"{target} for {requester}.", "attention"
    if comment:
        facts.append(("Comment", comment))
    return Message(
        event=event,
        title=title,
        text=text,
        facts=facts,
        links=links,
        tone=tone,
        data={"request": request.pk, "requester": requester, "target": target, "state": request.state},
    )


def revoke_failed_message(*, resource, leases: list) -> Message:
    """The message for lease revocations that failed on one resource (one message per resource and batch)."""
    first = leases[0]
    title = (
        f"Revocation failed for lease {first.lease_id}"
        if len(leases) == 1
        else f"Revocation failed for {len(leases)} leases on {resource.name}"
    )
    facts = [("Resource", resource.name), ("Error", first.last_error or "unknown"), ("Attempt", str(first.attempts))]
    facts += [("Lease", lease.lease_id) for lease in leases[:5]]
    links = [("Lease in the admin", portal_url(reverse("admin:access_lease_change", args=[first.pk])))]
    if len(leases) > 1:
        links.append(
            ("Failed revocations", portal_url(reverse("admin:access_lease_changelist") + "?state=revoke_failed"))
        )
    return Message(
        event=NotificationEvent.REVOKE_FAILED,
        title=title,
        text="The database user may still exist; the sweeper retries with backoff.",
        facts=facts,
        links=links,
        tone="attention",
        data={"resource": resource.name, "leases": [lease.lease_id for lease in leases]},
    )


def render_payload(kind: str, message: Message) -> dict[str, Any]:
    """The JSON body a target of `kind` expects for `message`."""
    if kind == NotificationKind.SLACK:
        return _slack(message)
    if kind == NotificationKind.TEAMS:
        return _teams_adaptive(message)
    if kind == NotificationKind.TEAMS_MESSAGECARD:
        return _teams_messagecard(message)
    return {
        "event": message.event,
        "system": settings.PAM_SYSTEM_ID,
        "title": message.title,
        "text": message.text,
        "facts": dict(message.facts),
        "links": [{"label": label, "url": url} for label, url in message.links],
        "data": message.data,
        "occurred_at": timezone.now().isoformat(),
    }


def _slack_escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack(message: Message) -> dict[str, Any]:
    fields = [{"type": "mrkdwn", "text": f"*{_slack_escape(k)}*\n{_slack_escape(v)[:1900]}"} for k, v in message.facts]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": message.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(message.text)}},
    ]
    for start in range(0, len(fields), 10):  # Slack allows 10 fields per section
        blocks.append({"type": "section", "fields": fields[start : start + 10]})
    if message.links:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": label[:75]}, "url": url}
                    for label, url in message.links
                ],
            }
        )
    link_text = " ".join(f"<{url}|{_slack_escape(label)}>" for label, url in message.links)
    return {"text": f"{message.title}. {message.text} {link_text}".strip(), "blocks": blocks}


def _teams_adaptive(message: Message) -> dict[str, Any]:
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": message.title,
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
                "color": message.tone,
            },
            {"type": "TextBlock", "text": message.text, "wrap": True},
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in message.facts]},
        ],
        "actions": [{"type": "Action.OpenUrl", "title": label, "url": url} for label, url in message.links],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def _teams_messagecard(message: Message) -> dict[str, Any]:
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": message.title,
        "themeColor": _COLORS.get(message.tone, _COLORS["warning"]),
        "title": message.title,
        "text": message.text,
        "sections": [{"facts": [{"name": k, "value": v} for k, v in message.facts]}],
        "potentialAction": [
            {"@type": "OpenUri", "name": label, "targets": [{"os": "default", "uri": url}]}
            for label, url in message.links
        ],
    }


# -- dispatch and send --------------------------------------------------------------------------------------------
def notifications_dispatch(*, message: Message, policy=None, resource=None) -> list[Notification]:
    """Make one Notification per matching target, in the caller's transaction; queue their sending on commit."""
    targets = NotificationTarget.objects.matching(event=message.event, policy=policy, resource=resource)
    if not targets:
        return []
    notifications = Notification.objects.bulk_create(
        [
            Notification(
                target=target,
                event=message.event,
                title=message.title[:255],
                payload=render_payload(target.kind, message),
            )
            for target in targets
        ]
    )
    ids = [notification.pk for notification in notifications]
    transaction.on_commit(lambda: _queue(ids))
    return notifications


def notifications_revoke_failed(*, leases: list) -> None:
    """Tell the targets of each resource about its leases whose revocation just failed: one message per resource,
    on a lease's first failure and every tenth after it (the sweeper retries with backoff meanwhile)."""
    from access.models.leases import LeaseState

    failed = [
        lease
        for lease in leases
        if lease.state == LeaseState.REVOKE_FAILED and (lease.attempts == 1 or lease.attempts % 10 == 0)
    ]
    by_resource: dict[int, list] = {}
    for lease in failed:
        by_resource.setdefault(lease.resource_id, []).append(lease)
    for group in by_resource.values():
        resource = group[0].resource
        notifications_dispatch(message=revoke_failed_message(resource=resource, leases=group), resource=resource)


def _queue(ids: list[int]) -> None:
    from django_q.tasks import async_task

    for pk in ids:
        try:
            async_task(SEND_TASK, pk, task_name=f"notification-{pk}", group="notifications")
        except Exception:  # the broker is down: the minute schedule sends it (it is `due` already)
            log.warning("notification %s: could not queue; the schedule will send it", pk, exc_info=True)


def notification_backoff(attempts: int) -> timedelta:
    """15 s, 30 s, 1 min … capped at 30 minutes."""
    return timedelta(seconds=min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1)))


def _post(target: NotificationTarget, payload: dict[str, Any]) -> None:
    url = target.webhook_url.reveal()
    body = json_bytes(payload)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if target.kind == NotificationKind.WEBHOOK:
        headers.update(signed_headers(key=target.hmac_key.reveal(), body=body))
    try:
        response = requests.post(url, data=body, headers=headers, timeout=SEND_TIMEOUT_SECONDS, allow_redirects=False)
    except requests.RequestException as exc:
        raise network_error(exc, _host(url)) from None
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"{_host(url)} answered HTTP {response.status_code}")


def _host(url: str) -> str:
    return peer_of(url)


def notification_send(*, notification_id: int) -> str:
    """Post one pending notification now; on failure schedule its retry (or give up after MAX_ATTEMPTS).

    Returns its state. Claims the row with a conditional update first, so two workers never post it twice at once.
    """
    now = timezone.now()
    claim_until = now + timedelta(seconds=SEND_TIMEOUT_SECONDS * 3)
    claimed = Notification.objects.filter(
        pk=notification_id, state=NotificationState.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=claim_until)
    notification = Notification.objects.select_related("target").filter(pk=notification_id).first()
    if notification is None:
        return "missing"
    if not claimed:
        return notification.state
    attempts = notification.attempts + 1
    try:
        _post(notification.target, notification.payload)
    except DeliveryError as exc:
        gave_up = attempts >= MAX_ATTEMPTS
        Notification.objects.filter(pk=notification.pk).update(
            attempts=attempts,
            last_error=str(exc)[:500],
            state=NotificationState.FAILED if gave_up else NotificationState.PENDING,
            next_attempt_at=timezone.now() + notification_backoff(attempts),
        )
        log.warning(
            "notification %s to %s failed (attempt %d): %s", notification.pk, notification.target, attempts, exc
        )
        return NotificationState.FAILED if gave_up else NotificationState.PENDING
    Notification.objects.filter(pk=notification.pk).update(
        attempts=attempts, last_error="", state=NotificationState.SENT, sent_at=timezone.now()
    )
    return NotificationState.SENT


def notifications_send_due(*, limit: int = 200) -> int:
    """Send every pending notification whose (re)try time has come; return how many were tried."""
    ids = list(Notification.objects.due().order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    for pk in ids:
        notification_send(notification_id=pk)
    return len(ids)
