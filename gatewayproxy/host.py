"""What the gateway needs from the process that runs it, as types: a session's login and the domain's calls.

The proxy imports nothing of Django. ``manage.py runproxy`` hands :class:`~gatewayproxy.server.GatewayServer`
an object that satisfies :class:`Domain` (``access.gateway_bridge.GatewayBridge``, which runs the services
of ``access.services.gateway`` in worker threads); a login lookup answers with a :class:`SessionLogin` the
Django side fills in. Unit tests pass fakes of the same shape.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from gatewayproxy.commandlog import CommandRecord


class Password:
    """A password the gateway holds until its upstream login uses it.

    ``repr``/``str`` show a mask, so a login printed in a log line or a traceback never shows it;
    :meth:`reveal` is called once, where the SCRAM client needs the text.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The plain text: only for the upstream login."""
        return self._value

    def __repr__(self) -> str:
        return "Password('********')"

    __str__ = __repr__


@dataclass(frozen=True)
class UpstreamTarget:
    """Where and as whom the gateway logs in upstream for a session (the account's or the lease's user)."""

    uri: str
    auth_database: str
    tls: bool
    tls_verify: bool
    ca_certificate: str
    username: str
    password: Password = field(repr=False)
    #: Reads whose read preference is secondary or secondaryPreferred may go to a secondary (a replica set).
    secondary_reads: bool = False


@dataclass(frozen=True)
class SessionLogin:
    """Everything the gateway needs to accept a session's login and run its connections.

    ``verifiers`` maps a SCRAM mechanism to ``ScramCredentials.to_dict()`` output (rebuild one with
    ``ScramCredentials.from_dict``); ``session_id`` is the Session's primary key, used in every later call
    to the domain; ``public_id`` is the id people see in the portal and the admin.

    A session that may no longer log in (ended, expired, killed) is still looked up, so that a client who
    proves its secret learns why: ``refusal`` then says it in words ("the session was killed by alice") and
    ``upstream`` is None (its password is never decrypted). ``privileged_commands`` names the privileged
    command families its access policy allows (``gatewayproxy.policy.PRIVILEGED_FAMILIES``).
    """

    session_id: int
    public_id: uuid.UUID
    username: str
    verifiers: dict[str, dict[str, Any]] = field(repr=False)
    expires_at: datetime.datetime
    read_only: bool
    database_allow_list: list[str]
    command_deny_list: list[str]
    full_command_logging: bool
    upstream: UpstreamTarget | None
    privileged_commands: list[str] = field(default_factory=list)
    refusal: str = ""


class EndedSession(Protocol):
    """A session the domain ended: the gateways close its connections and tell the client ``description``."""

    session_id: int | None
    description: str


class Domain(Protocol):
    """The gateway's calls into the domain. Async methods must not block the event loop (run in a thread).

    A domain may also carry ``login_limits`` (a :class:`gatewayproxy.prelogin.LoginLimits` from its settings),
    which the server applies unless it was given its own.
    """

    async def lookup_login(self, username: str) -> SessionLogin | None:
        """The session logging in as ``username`` (with ``refusal`` set when it may no longer log in), or None."""
        ...

    async def session_access_problem(self, session_id: int) -> str | None:
        """Asked at every login once the client proved the secret: None while the session's user and grant
        still allow it, else why not, in words ("the user was deactivated")."""
        ...

    async def login_failed(self, username: str, client_address: str, reason: str) -> None:
        """Audit a client login the gateway refused (never with a secret)."""
        ...

    async def ended_sessions_since(self, cursor: int | None) -> tuple[list[EndedSession], int]:
        """Sessions ended after ``cursor`` (None: the last few seconds) and the next cursor; polled often."""
        ...

    async def session_connected(self, session_id: int, client_address: str) -> None:
        """Count a client connection that logged in to the session."""
        ...

    async def sessions_to_close(self, session_ids: list[int]) -> dict[int, str]:
        """Which of these sessions must close now, with why in words (what clients are told); ids to keep absent."""
        ...

    async def heartbeat(self) -> None:
        """Record this gateway alive (and end the sessions of gateways that went silent)."""
        ...

    async def end_sessions(self, reason: str) -> int:
        """End every open session of this gateway (it is stopping); return how many ended."""
        ...

    def record_commands(self, records: list[CommandRecord]) -> None:
        """Store a batch of completed command records (called by the command log's writer, off the event loop)."""
        ...
