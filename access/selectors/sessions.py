"""Reading gateway sessions: who may see which, how a client connects to one, and its command log."""

from __future__ import annotations

import shlex
from urllib.parse import quote_plus

from django.conf import settings

from access.models import Session, SessionCommand

VIEW_ALL_PERMISSION = "access.view_session"


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
