"""Where the current request came from (IP, request id), for audit rows written deep inside services."""

from __future__ import annotations

import contextvars
import uuid
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RequestContext:
    ip: str | None = None
    request_id: str = ""
    client: str = ""  # "cli" for calls made with a `pam login` token (audit rows then say so)


_EMPTY = RequestContext()
_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("pam_request_context", default=None)


def current() -> RequestContext:
    return _current.get() or _EMPTY


def bind(*, ip: str | None, request_id: str | None = None) -> contextvars.Token:
    return _current.set(RequestContext(ip=ip, request_id=request_id or uuid.uuid4().hex))


def mark_client(client: str) -> None:
    """Name the client of the current request (the middleware's reset ends it with the request)."""
    _current.set(replace(current(), client=client))


def reset(token: contextvars.Token) -> None:
    _current.reset(token)
