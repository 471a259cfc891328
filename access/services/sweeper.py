"""The lease sweeper: a loop that revokes leases within about a second of their expiry.

django-q2's scheduler only looks at its Schedule table every 30 s, so a scheduled task alone would revoke
up to a minute late. Instead one sweeper loop runs continuously: each run holds the `lease-sweeper`
BackgroundLock for `run_for` seconds, and every `interval` (0.5 s) revokes what `Lease.objects.due()`
returns, in a thread pool with one cached connector per resource; the task then enqueues its successor
(access.tasks.sweep_leases), so there is no gap between runs. A minute-by-minute Schedule starts a run
too: it finds the lock held and returns at once, unless the chain broke (a worker died), in which case
the lock has expired (it is renewed each tick and lives `LOCK_TTL`) and the scheduled run takes over.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from access.services.leases import ConnectorCache, leases_revoke_due
from access.services.locks import background_lock_acquire, background_lock_release, background_lock_renew
from access.services.offboarding import access_windows_end_due

log = logging.getLogger(__name__)

SWEEPER_LOCK = "lease-sweeper"
LOCK_TTL = timedelta(seconds=15)
WINDOW_LOOKBACK = timedelta(minutes=2)  # a new run also ends windows that closed while no sweeper ran


def _windows_end(*, since: datetime) -> datetime:
    """End what approved windows that closed since the last tick granted (access.services.offboarding)."""
    now = timezone.now()
    try:
        access_windows_end_due(since=since, now=now)
    except Exception:  # the minute's reconcile task is the backstop; the error is in the log
        log.exception("ending closed access windows failed")
        return since
    return now


@dataclass
class SweepReport:
    """What one sweeper run did: whether it held the lock, how many leases it handled, whether it ran its time."""

    acquired: bool
    handled: int = 0
    ticks: int = 0
    completed: bool = False


def lease_sweeper_run(
    *,
    run_for: float = 50.0,
    interval: float = 0.5,
    batch_size: int = 200,
    threads: int = 16,
    holder: str | None = None,
) -> SweepReport:
    """Revoke due leases every `interval` seconds for `run_for` seconds, if no other sweeper is running.

    Returns at once (acquired=False) when another live sweeper holds the lock. `completed` is False when the
    lock was lost midway (this run stalled past LOCK_TTL and another took over): then no successor is needed.
    """
    holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    if not background_lock_acquire(name=SWEEPER_LOCK, holder=holder, ttl=LOCK_TTL):
        return SweepReport(acquired=False)
    report = SweepReport(acquired=True)
    deadline = time.monotonic() + run_for
    windows_checked = timezone.now() - WINDOW_LOOKBACK
    try:
        with ConnectorCache() as connectors, ThreadPoolExecutor(threads, thread_name_prefix="lease-revoke") as pool:
            while time.monotonic() < deadline:
                if not background_lock_renew(name=SWEEPER_LOCK, holder=holder, ttl=LOCK_TTL):
                    log.warning("lease sweeper %s lost its lock; stopping", holder)
                    return report
                report.ticks += 1
                try:
                    handled = leases_revoke_due(limit=batch_size, connectors=connectors, pool=pool)
                except Exception:  # keep the loop alive: the next tick retries, the error is in the log
                    log.exception("lease sweeper tick failed")
                    handled = 0
                windows_checked = _windows_end(since=windows_checked)
                report.handled += handled
                if handled < batch_size:
                    time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
        report.completed = True
    finally:
        background_lock_release(name=SWEEPER_LOCK, holder=holder)
    return report
