"""django-q2 tasks for gateway sessions: backstops for when no gateway is running to notice.

A running gateway ends due sessions itself (`sessions_to_close`, polled every second or so); these
scheduled tasks end sessions that expired while no gateway asked, and the sessions of gateways that
stopped heartbeating without saying goodbye (a crash, a lost host). Schedules come from
`manage.py setup_schedules` (`access.services.schedules.SCHEDULES`).
"""

from __future__ import annotations

from datetime import timedelta

from access.services.gateway import gateways_lost_sweep
from access.services.sessions import sessions_end_orphaned, sessions_expire_due

LOST_GATEWAY_GRACE_SECONDS = 60  # matches Gateway.objects.alive()'s default grace


def expire_sessions() -> int:
    """End every open session past its expiry or without its account; return how many."""
    return sessions_expire_due() + sessions_end_orphaned()


def sweep_lost_gateways(grace_seconds: int = LOST_GATEWAY_GRACE_SECONDS) -> int:
    """End the open sessions of gateways silent for longer than `grace_seconds`; return how many."""
    return gateways_lost_sweep(grace=timedelta(seconds=grace_seconds))
