"""Reading gateway sessions: who may see which, how a client connects to one, and its command log."""

from __future__ import annotations

import shlex
from urllib.parse import quote_plus

from django.conf import settings
from django.core.exceptions import ValidationError

from access.events import COMMAND_FIELDS, command_event_fields
from access.models import Session, SessionCommand

VIEW_ALL_PERMISSION = "access.view_session"
EVENTS_BATCH = 200


def session_visible_to(user):
    """Sessions `user` may see: their own, or every session for staff holding the `view_session` permission."""
    sessions = Session.objects.select_related("account__resource", "lease", "gateway", "user")
    if not user or not user.is_authenticated or not user.is_active:
        return sessions.none()
    if user.is_staff and user.has_perm(VIEW_ALL_PERMISSION):
        return sessions
    return sessions.filter(user=user)


def session_may_view(*, user, session: Session) -> bool:
    """Whether `user` may watch `session` (its owner, or staff with `view_session`)."""
    if not user or not user.is_authenticated or not user.is_active:
        return False
    return session.user_id == user.pk or (user.is_staff and user.has_perm(VIEW_ALL_PERMISSION))


def session_gateway_address(session: Session) -> str:
    """`host:port` clients connect to: the session's gateway, else `settings.PAM_GATEWAY_HOST`."""
    if session.gateway_id is not None and session.gateway is not None:
        return session.gateway.address
    address = settings.PAM_GATEWAY_HOST
    return address if ":" in address.rsplit("]", 1)[-1] else f"{address}:27018"


def session_connection_info(session: Session, secret: str) -> dict[str, str]:
    """The connection string and mongosh command for a session's one-time secret (show them once)."""
    uri = (
        f"mongodb://{quote_plus(session.username)}:{quote_plus(secret)}@{session_gateway_address(session)}"
        "/?authSource=admin&directConnection=true"
    )
    return {"connection_string": uri, "mongosh": f"mongosh {shlex.quote(uri)}"}


def session_commands(session: Session):
    """The session's recorded commands, oldest first."""
    return SessionCommand.objects.filter(session=session).order_by("at", "id")


def session_for_viewer(*, user, public_id, otp_verified: bool) -> Session | None:
    """The session with `public_id` if `user` may watch it live, else None (unknown and forbidden look alike).

    Its owner and staff with `view_session` may, and only from a browser session that passed the OTP
    check (`otp_verified`), as the portal and the admin require for every page.
    """
    try:
        session = Session.objects.select_related("account__resource", "gateway").get(public_id=public_id)
    except (Session.DoesNotExist, ValueError, ValidationError):
        return None
    if not session_may_view(user=user, session=session):
        return None
    return session if otp_verified else None


def browser_session_otp_verified(*, user, browser_session) -> bool:
    """Whether a Django browser session (e.g. a websocket's `scope["session"]`) holds `user`'s verified OTP device."""
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.models import Device

    persistent_id = browser_session.get(DEVICE_ID_SESSION_KEY) if browser_session is not None else None
    if not persistent_id or not getattr(user, "is_authenticated", False):
        return False
    device = Device.from_persistent_id(persistent_id, for_verify=False)
    return device is not None and device.user_id == user.pk


def session_state_fields(session: Session) -> dict:
    """The session's state for a live view, JSON-safe; never the verifiers."""
    return {
        "session_id": str(session.public_id),
        "username": session.username,
        "user": session.user_name,
        "account": str(session.account) if session.account_id else None,
        "read_only": session.read_only,
        "state": session.state,
        "started_at": _iso(session.started_at),
        "expires_at": _iso(session.expires_at),
        "first_connected_at": _iso(session.first_connected_at),
        "ended_at": _iso(session.ended_at),
        "end_reason": session.end_reason,
        "connections": session.connections,
        "commands_count": session.commands_count,
    }


def session_live_snapshot(session: Session, *, limit: int = 100) -> dict:
    """What a live view shows first: the session's state and its last `limit` commands, oldest first."""
    recent = list(SessionCommand.objects.filter(session=session).order_by("-id").values(*COMMAND_FIELDS)[:limit])
    return {
        "type": "snapshot",
        "session": session_state_fields(session),
        "commands": [command_event_fields(row) for row in reversed(recent)],
    }


def session_events_since(
    *, session_id: int, after_command_id: int, limit: int = EVENTS_BATCH
) -> tuple[list[dict], dict | None]:
    """Commands of a session with an id above `after_command_id` (oldest first), and its current end state.

    Two indexed queries, cheap enough to run every few hundred milliseconds per open live view.
    """
    rows = (
        SessionCommand.objects.filter(session_id=session_id, id__gt=after_command_id)
        .order_by("id")
        .values(*COMMAND_FIELDS)[:limit]
    )
    state = Session.objects.filter(pk=session_id).values("state", "ended_at", "end_reason").first()
    return [command_event_fields(row) for row in rows], state


def _iso(value):
    return value.isoformat() if value is not None else None
