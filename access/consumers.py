"""Websocket consumers: the live view of one gateway session (`ws/sessions/<public_id>/`).

The consumer sends a snapshot (the session's state and its recent commands), then one message per
new command (`{"type": "command", ...}`, already redacted by the gateway) and finally
`{"type": "ended", "reason", "ended_at"}`. How new events reach it depends on the deployment; see
`access.events`: with a cross-process channel layer (Redis) it joins the session's group, otherwise
it tails the database while the socket is open. Only the session's owner and staff with the
`view_session` permission whose browser session passed the OTP check may watch; anyone else is
closed with code 4403.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.utils import timezone

from access.events import session_events_use_channel_layer, session_group_name
from access.models.sessions import SessionState
from access.selectors.sessions import (
    EVENTS_BATCH,
    browser_session_otp_verified,
    session_events_since,
    session_for_viewer,
    session_live_snapshot,
)
from access.services.sessions import session_expire_if_due

logger = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403
POLL_SECONDS = 0.3


class SessionEventsConsumer(AsyncJsonWebsocketConsumer):
    """Streams one session's commands and its end to an authorised viewer."""

    poll_seconds = POLL_SECONDS

    async def connect(self):
        self.session_pk = None
        self.group = None
        self.last_command_id = 0
        self.ended_sent = False
        self.poller = None
        self.expiry_timer = None
        public_id = self.scope["url_route"]["kwargs"]["public_id"]
        session = await database_sync_to_async(self._authorised_session)(public_id)
        await self.accept()
        if session is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.session_pk = session.pk
        if session_events_use_channel_layer() and self.channel_layer is not None:
            # Join before reading the snapshot so nothing falls between the two; repeats are dropped by id.
            self.group = session_group_name(session.public_id)
            await self.channel_layer.group_add(self.group, self.channel_name)
        snapshot = await database_sync_to_async(session_live_snapshot)(session)
        if snapshot["commands"]:
            self.last_command_id = snapshot["commands"][-1]["id"]
        await self.send_json(snapshot)
        state = snapshot["session"]
        if state["state"] == SessionState.ENDED:
            await self._send_ended(state["end_reason"], state["ended_at"])
            return
        if self.group is None:
            self.poller = asyncio.ensure_future(self._tail_database())
        # Without a connected gateway nobody notices the expiry before the minute sweep; the view does.
        delay = max((session.expires_at - timezone.now()).total_seconds(), 0) + 0.05
        self.expiry_timer = asyncio.ensure_future(self._expire_after(delay))

    def _authorised_session(self, public_id):
        user = self.scope.get("user")
        verified = browser_session_otp_verified(user=user, browser_session=self.scope.get("session"))
        return session_for_viewer(user=user, public_id=public_id, otp_verified=verified)

    async def disconnect(self, code):
        for task in (self.poller, self.expiry_timer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        """Viewers only listen; anything they send is ignored."""

    # Channel-layer messages: access.events.COMMAND_EVENT ("session.command") and ENDED_EVENT ("session.ended").
    async def session_command(self, message):
        await self._send_command(message["command"])

    async def session_ended(self, message):
        await self._send_ended(message.get("reason"), message.get("ended_at"))

    async def _send_command(self, command: dict) -> None:
        if command["id"] <= self.last_command_id:
            return
        self.last_command_id = command["id"]
        await self.send_json({"type": "command", **command})

    async def _send_ended(self, reason, ended_at) -> None:
        if self.ended_sent:
            return
        self.ended_sent = True
        await self.send_json({"type": "ended", "reason": reason, "ended_at": ended_at})

    async def _expire_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self.ended_sent:
            await database_sync_to_async(session_expire_if_due)(session_id=self.session_pk)

    async def _tail_database(self) -> None:
        """Poll for commands above the last one sent and for the session's end, until it ends or the socket closes."""
        fetch = database_sync_to_async(session_events_since)
        while not self.ended_sent:
            await asyncio.sleep(self.poll_seconds)
            try:
                commands, state = await fetch(session_id=self.session_pk, after_command_id=self.last_command_id)
            except Exception:  # a busy or restarting database must not kill the live view
                logger.warning("session live view: polling failed", exc_info=True)
                continue
            for command in commands:
                await self._send_command(command)
            # An ended session may still have a backlog of commands: send them all before "ended".
            if state is None or (state["state"] == SessionState.ENDED and len(commands) < EVENTS_BATCH):
                ended_at = state["ended_at"].isoformat() if state and state["ended_at"] else None
                await self._send_ended(state["end_reason"] if state else "killed", ended_at)
