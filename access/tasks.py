"""django-q2 tasks: each fetches what it needs by id and calls one service.

Schedules are created by `manage.py setup_schedules` (see `access.services.schedules`); the lease sweeper
also enqueues its own successor so that revocation never waits for the scheduler's 30 s tick.
"""

from __future__ import annotations

import logging

from django_q.tasks import async_task

from access.models import Lease
from access.services.leases import lease_revoke
from access.services.offboarding import access_grants_reconcile
from access.services.reconcile import users_reconcile
from access.services.revocations import session_revocations_prune
from access.services.sweeper import lease_sweeper_run

log = logging.getLogger(__name__)

SWEEP_TASK = "access.tasks.sweep_leases"
LOOP_SECONDS = 10.0
"""How long one run of a looping task (the sweeper, sink delivery) holds its worker before its successor takes
over. A stopping qcluster waits for the task in hand, so this bounds how long a stop (Ctrl+C of `make run`,
`systemctl stop`) takes; a handover costs one broker round trip."""


def sweep_leases(run_for: float = LOOP_SECONDS) -> dict:
    """Run the lease sweeper loop; when it ran its full time, hand over to a successor at once."""
    report = lease_sweeper_run(run_for=run_for)
    if report.acquired and report.completed:
        async_task(SWEEP_TASK, run_for, task_name="lease-sweeper", group="lease-sweeper")
    return {"acquired": report.acquired, "handled": report.handled, "ticks": report.ticks}


def sweeper_kick() -> None:
    """Enqueue a sweeper run now (it exits at once if one already holds the lock): no wait for the 30 s scheduler."""
    async_task(SWEEP_TASK, task_name="lease-sweeper", group="lease-sweeper")


def revoke_lease(lease_pk: int, reason: str = "revoked") -> str:
    """Revoke one lease by primary key (used to revoke outside a request)."""
    lease = Lease.objects.filter(pk=lease_pk).first()
    if lease is None:
        return "missing"
    return lease_revoke(lease=lease, actor="system", reason=reason).state


def reconcile_users() -> dict:
    """Drop users this system created that no live lease explains, on every MongoDB resource."""
    report = users_reconcile(actor="reconciler")
    return report.as_dict()


def reconcile_access() -> dict:
    """End what no grant explains any more, for everyone (a user deactivated or a membership removed by any code
    path, a window closed while no sweeper ran); prune the gateways' old session-end rows."""
    report = access_grants_reconcile(actor="reconciler")
    return {**report.as_dict(), "revocation_rows_pruned": session_revocations_prune()}
