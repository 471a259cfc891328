"""Live session events: what the proxy and the services tell the admin's and the owner's open session pages.

Two transports, one event shape. The processes that produce events (`runproxy` records commands,
daphne and the qcluster end sessions) are separate from the daphne process that holds the
websocket, so an event must cross processes:

* Embedded default (no `REDIS_URL`): the channel layer is in-memory and stays inside one process, so
  the database is the bus. SessionCommand rows and the Session's state are already written there;
  the consumer tails them (`id > last_seen`, indexed, every ~300 ms, only while a socket is open).
  `publish_session_event` does nothing in this mode.
* With Redis (`channels_redis`), `publish_session_event` does `group_send` to the session's group and
  the consumer relays messages as they arrive, without polling.

`PAM_SESSION_EVENTS = "database" | "channel_layer"` in settings overrides the choice (tests use it).
Either way the consumer first sends a snapshot read from the database, so nothing depends on an
event being delivered exactly once: commands carry their row id and the consumer drops repeats.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

logger = logging.getLogger(__name__)

COMMAND_EVENT = "session.command"
ENDED_EVENT = "session.ended"
COMMAND_FIELDS = (
    "id",
    "at",
    "connection_id",
    "database",
    "collection",
    "command",
    "summary",
    "ok",
    "n",
    "error_code",
    "error_message",
    "refused",
    "latency_us",
)


# What drivers and shells send on their own when they connect or close (the gateway answers hello itself, so it
# rarely shows): the pages group these apart so that the person's own commands stand out. `ping` is left out: people
# type it too.
DRIVER_CHATTER_COMMANDS = frozenset(
    {
        "hello",
        "isMaster",
        "ismaster",
        "buildInfo",
        "buildinfo",
        "getParameter",
        "getLog",
        "getCmdLineOpts",
        "atlasVersion",
        "hostInfo",
        "connectionStatus",
        "whatsmyuri",
        "getFreeMonitoringStatus",
        "endSessions",
        "saslStart",
        "saslContinue",
        "logout",
    }
)
SHELL_CHATTER_NAMESPACES = frozenset({("admin", "atlascli")})
"""mongosh's own aggregate at start-up (`admin.atlascli`, asking whether the server is an Atlas cluster)."""


def command_is_chatter(command: str, database: str = "", collection: str = "") -> bool:
    """Whether a logged command is a driver's or shell's own handshake chatter rather than something a person ran."""
    return command in DRIVER_CHATTER_COMMANDS or (database, collection) in SHELL_CHATTER_NAMESPACES


def chatter_q():
    """`command_is_chatter` as a filter on SessionCommand rows."""
    from django.db.models import Q

    query = Q(command__in=DRIVER_CHATTER_COMMANDS)
    for database, collection in SHELL_CHATTER_NAMESPACES:
        query |= Q(database=database, collection=collection)
    return query


def session_events_use_channel_layer() -> bool:
    """True when events travel through the channel layer (it crosses processes), False when the database is the bus."""
    mode = settings.PAM_SESSION_EVENTS
    if mode:
        return mode == "channel_layer"
    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
    return bool(backend) and not backend.endswith("InMemoryChannelLayer")


def session_group_name(public_id) -> str:
    """The channel-layer group of one session's viewers."""
    return f"session.{getattr(public_id, 'hex', str(public_id).replace('-', ''))}"


def command_event_fields(command) -> dict:
    """The JSON-safe, already-redacted fields of a SessionCommand (a model instance or a `values()` dict)."""
    row = command if isinstance(command, dict) else {name: getattr(command, name) for name in COMMAND_FIELDS}
    data = {name: row.get(name) for name in COMMAND_FIELDS}
    if data["at"] is not None and hasattr(data["at"], "isoformat"):
        data["at"] = data["at"].isoformat()
    data["chatter"] = command_is_chatter(data["command"] or "", data["database"] or "", data["collection"] or "")
    return data


def publish_session_event(session, event: dict) -> None:
    """Send `event` ({"type": "session.command"|"session.ended", ...}) to the session's live viewers.

    Call it from synchronous code after the rows it describes are committed. A failure to publish
    is logged and swallowed: the database already holds the truth and the snapshot recovers it.
    """
    if not session_events_use_channel_layer():
        return
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(session_group_name(session.public_id), event)
    except Exception as exc:  # the live view is best effort; never fail the caller's write
        logger.warning("session event not published: %s", exc.__class__.__name__, extra={"session": session.pk})
