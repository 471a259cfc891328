"""The django-q2 Schedule rows the portal needs, created or updated idempotently by `manage.py setup_schedules`."""

from __future__ import annotations

from django.db import transaction
from django_q.models import Schedule

from access.models import AuditAction
from access.services.audit import audit_record

SCHEDULES = (
    {
        "name": "pam: lease sweeper",
        "func": "access.tasks.sweep_leases",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "help": "starts the sweeper loop if none holds its lock (it chains itself otherwise)",
    },
    {
        "name": "pam: reconcile users",
        "func": "access.tasks.reconcile_users",
        "schedule_type": Schedule.MINUTES,
        "minutes": 15,
        "help": "drops tagged users that no live lease explains",
    },
    {
        "name": "pam: reconcile access",
        "func": "access.tasks.reconcile_access",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "help": "ends sessions and leases no grant explains (deactivated users, removed grants), whatever the path",
    },
    {
        "name": "pam: expire sessions",
        "func": "access.tasks_sessions.expire_sessions",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "help": "ends gateway sessions past their expiry when no gateway noticed",
    },
    {
        "name": "pam: lost gateways",
        "func": "access.tasks_sessions.sweep_lost_gateways",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "help": "ends the sessions of gateways whose heartbeat stopped",
    },
    {
        "name": "pam: sink delivery",
        "func": "access.tasks_sinks.deliver_sinks",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "help": "starts the sink delivery loop if none serves the sinks (it chains itself otherwise)",
    },
    {
        "name": "pam: notifications",
        "func": "access.tasks_sinks.send_due_notifications",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "help": "retries chat and webhook notifications whose backoff has passed",
    },
)


def schedules_setup(*, actor="manage.py") -> list[tuple[str, bool]]:
    """Create the portal's schedules, or bring them back to their definition; return (name, created) pairs."""
    results = []
    with transaction.atomic():
        for spec in SCHEDULES:
            fields = {k: v for k, v in spec.items() if k not in ("name", "help")}
            existing = Schedule.objects.filter(name=spec["name"]).order_by("pk")
            schedule = existing.first()
            if schedule is None:
                Schedule.objects.create(name=spec["name"], repeats=-1, **fields)
                results.append((spec["name"], True))
                continue
            existing.exclude(pk=schedule.pk).delete()  # duplicates from hand edits would double the work
            changed = any(getattr(schedule, key) != value for key, value in fields.items()) or schedule.repeats != -1
            if changed:
                for key, value in fields.items():
                    setattr(schedule, key, value)
                schedule.repeats = -1
                schedule.save()
            results.append((spec["name"], False))
        created = [name for name, was_created in results if was_created]
        if created:
            audit_record(action=AuditAction.SCHEDULES_SETUP, actor=actor, data={"created": created})
    return results
