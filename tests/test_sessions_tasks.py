"""Scheduled session backstops: expiry without a gateway, and sessions of gateways that went silent."""

from __future__ import annotations

from datetime import timedelta
from pydoc import locate

import pytest
from django.utils import timezone
from django_q.models import Schedule

from access.models.sessions import SessionEndReason, SessionState
from access.services.schedules import schedules_setup
from access.tasks_sessions import expire_sessions, sweep_lost_gateways
from tests.factories import GatewayFactory, SessionFactory

pytestmark = pytest.mark.django_db


def test_expire_task_ends_due_sessions():
    due = SessionFactory(expires_at=timezone.now() - timedelta(seconds=5))
    live = SessionFactory()

    assert expire_sessions() == 1
    assert expire_sessions() == 0

    due.refresh_from_db()
    live.refresh_from_db()
    assert (due.state, due.end_reason) == (SessionState.ENDED, SessionEndReason.EXPIRED)
    assert live.state == SessionState.OPEN


def test_lost_gateway_task_ends_sessions_of_silent_gateways_only():
    silent = SessionFactory(gateway=GatewayFactory(last_heartbeat=timezone.now() - timedelta(minutes=5)))
    healthy = SessionFactory(gateway=GatewayFactory(last_heartbeat=timezone.now()))

    assert sweep_lost_gateways() == 1

    silent.refresh_from_db()
    healthy.refresh_from_db()
    assert silent.end_reason == SessionEndReason.GATEWAY_LOST
    assert healthy.state == SessionState.OPEN


def test_session_schedules_are_set_up_and_point_at_real_functions():
    schedules_setup()

    for name in ("pam: expire sessions", "pam: lost gateways"):
        schedule = Schedule.objects.get(name=name)
        assert schedule.schedule_type == Schedule.MINUTES and schedule.repeats == -1
        assert callable(locate(schedule.func))
