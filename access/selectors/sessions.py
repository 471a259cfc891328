"""Reading gateway sessions: who may see which, how a client connects to one, and its command log."""

from __future__ import annotations

import shlex
from urllib.parse import quote_plus

from django.conf import settings
from django.core.exceptions import ValidationError

from access.events import COMMAND_FIELDS, command_event_fields
from access.models import Account, Session, SessionCommand

EVENTS_BATCH = 200

# Who may see or end a session is `Session.objects.visible_to(user, action)` (access/models/visibility.py):
# the owner, or active staff holding `access.view_session` / `access.change_session`. Nothing else spells it.


def sessions_visible(*, user, action: str = "view"):
    """Sessions `user` may see (or, with action="change", end), with what a listing shows, newest first."""
    return (
        Session.objects.visible_to(user, action)
        .select_related("account__resource", "lease", "gateway", "user")
        .order_by("-started_at")
    )


def sessions_of(user):
    """The user's own sessions, newest first: the portal shows nobody else's, not even to staff (they use the admin)."""
    return sessions_visible(user=user).filter(user=user)


def accounts_granted_to(user):
    """Accounts a policy names for `user`: the ones the portal lets them open sessions on."""
    return Account.objects.granted_to(user).select_related("resource")


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
    if not otp_verified:
        return None
    try:
        return Session.objects.visible_to(user).select_related("account__resource", "gateway").get(public_id=public_id)
    except (Session.DoesNotExist, ValueError, ValidationError):
        return None


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
