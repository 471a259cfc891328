"""Websocket test helpers: a socket as a browser that passed the OTP check would open it."""

from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator


def otp_browser_session(user) -> dict:
    """A browser session's content after `user` verified a (new) TOTP device; call it outside async code."""
    from django_otp import DEVICE_ID_SESSION_KEY

    from access.otp import totp_device_create

    return {DEVICE_ID_SESSION_KEY: totp_device_create(user=user).persistent_id}


def session_socket(session, user, browser_session: dict) -> WebsocketCommunicator:
    """A communicator on ws/sessions/<public_id>/ for `user` with `browser_session`."""
    from portal.routing import websocket_urlpatterns

    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/sessions/{session.public_id}/")
    communicator.scope["user"] = user
    communicator.scope["session"] = browser_session
    return communicator
