"""Where the current request came from (IP, request id), for audit rows written deep inside services."""

from __future__ import annotations

import contextvars
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestContext:
    ip: str | None = None
    request_id: str = ""


_EMPTY = RequestContext()
_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("pam_request_context", default=None)


def current() -> RequestContext:
    return _current.get() or _EMPTY


def bind(*, ip: str | None, request_id: str | None = None) -> contextvars.Token:
    return _current.set(RequestContext(ip=ip, request_id=request_id or uuid.uuid4().hex))


def reset(token: contextvars.Token) -> None:
    _current.reset(token)
