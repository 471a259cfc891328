"""django-q2 tasks of the integrations: the sink delivery loop and sending chat/webhook notifications.

Each fetches what it needs by id and calls one service. The delivery loop works like the lease sweeper: a run
serves the sinks whose locks it takes for `run_for` seconds and then queues its successor, so records leave within
a second or two; the minute schedule (access.services.schedules) starts a run when none is going (after a worker
died, its locks expire and the scheduled run takes the sinks over).
"""

from __future__ import annotations

from django_q.tasks import async_task

from access.services.notifications import notification_send, notifications_send_due
from access.services.sinks import sinks_deliver_run
from access.tasks import LOOP_SECONDS

DELIVER_TASK = "access.tasks_sinks.deliver_sinks"


def deliver_sinks(run_for: float = LOOP_SECONDS) -> dict:
    """Deliver to the sinks whose locks are free for `run_for` seconds; chain a successor if it served any."""
    report = sinks_deliver_run(run_for=run_for)
    if report.sinks and report.completed:
        async_task(DELIVER_TASK, run_for, task_name="sink-delivery", group="sink-delivery")
    return {"sinks": sorted(report.sinks), "delivered": report.delivered, "failures": report.failures}


def send_notification(notification_id: int) -> str:
    """Post one notification (queued on commit by `notifications_dispatch`)."""
    return notification_send(notification_id=notification_id)


def send_due_notifications() -> int:
    """Retry the notifications whose backoff has passed (and any whose queueing failed)."""
    return notifications_send_due()
