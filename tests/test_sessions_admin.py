"""The admin's session pages: kill action and button, live filter, live view."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from access.models import AuditEvent
from access.models.sessions import SessionEndReason, SessionState
from access.services.gateway import session_commands_record
from access.services.sessions import session_open
from tests.factories import AccessPolicyFactory, SessionFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/access/session/"


def test_kill_action_ends_the_selected_open_sessions(otp_admin_client, staff_user):
    first, second, spared = SessionFactory(), SessionFactory(), SessionFactory()

    response = otp_admin_client.post(
        CHANGELIST, {"action": "kill_sessions", "_selected_action": [first.pk, second.pk]}, follow=True
    )

    assert response.status_code == 200
    assert "Killed 2 sessions;" in response.content.decode()
    for session in (first, second, spared):
        session.refresh_from_db()
    assert first.end_reason == second.end_reason == SessionEndReason.KILLED
    assert spared.state == SessionState.OPEN
    assert AuditEvent.objects.filter(action="session.end", actor=staff_user, data__reason="killed").count() == 2


def test_change_page_kill_button_posts_to_the_kill_view(otp_admin_client):
    session = SessionFactory()
    change_url = f"{CHANGELIST}{session.pk}/change/"

    page = otp_admin_client.get(change_url).content.decode()
    assert "Kill session" in page and f"{CHANGELIST}{session.pk}/kill/" in page
    assert otp_admin_client.get(f"{CHANGELIST}{session.pk}/kill/").status_code == 403

    response = otp_admin_client.post(f"{CHANGELIST}{session.pk}/kill/")
    assert response.status_code == 302 and response["Location"].endswith(change_url)
    session.refresh_from_db()
    assert session.end_reason == SessionEndReason.KILLED
    assert "Kill session" not in otp_admin_client.get(change_url).content.decode()


def test_live_filter_shows_only_open_unexpired_sessions(otp_admin_client):
    live = SessionFactory(username="s-livelive")
    SessionFactory(username="s-expired0", expires_at=timezone.now() - timedelta(minutes=1))
    SessionFactory(username="s-ended000", state=SessionState.ENDED, ended_at=timezone.now())

    page = otp_admin_client.get(CHANGELIST, {"live": "yes"}).content.decode()

    assert live.username in page
    assert "s-expired0" not in page and "s-ended000" not in page
    assert "s-livelive" not in otp_admin_client.get(CHANGELIST, {"live": "no"}).content.decode()


def test_live_view_page_streams_the_session_without_secrets(otp_admin_client):
    policy = AccessPolicyFactory(approval_required=False)
    session, secret = session_open(user=policy.user, account=policy.account, duration=timedelta(hours=1))
    session_commands_record(commands=[{"session_id": session.pk, "command": "find", "database": "app"}])

    response = otp_admin_client.get(f"{CHANGELIST}{session.pk}/live/")

    page = response.content.decode()
    assert response.status_code == 200
    assert f"/ws/sessions/{session.public_id}/" in page
    assert session.username in page and "Kill session" in page
    assert secret not in page
    assert "watch" in otp_admin_client.get(CHANGELIST).content.decode()


def test_session_pages_need_the_otp_admin_login(client, staff_user):
    session = SessionFactory()
    client.force_login(staff_user)  # password only, no verified OTP device

    response = client.post(f"{CHANGELIST}{session.pk}/kill/")

    assert response.status_code == 302 and "/login/" in response["Location"]
    session.refresh_from_db()
    assert session.state == SessionState.OPEN
