"""The one place the portal makes secrets: passwords for MongoDB users, session secrets and API tokens.

Every service that needs a fresh secret calls `new_password` or `new_token`, so there is a single spot to
reason about randomness (the `secrets` module, a CSPRNG) and a single spot to watch. Watchers registered with
`secret_watch` are told each new value; the test suite uses this to search logs, HTML and the database for any
secret the run generated (tests/secret_scan.py). Nothing registers a watcher in production.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

_watchers: list[Callable[[str], None]] = []


def secret_watch(callback: Callable[[str], None]) -> Callable[[], None]:
    """Call `callback(value)` with every secret generated from now on; return a function that stops it."""
    _watchers.append(callback)

    def unwatch() -> None:
        if callback in _watchers:
            _watchers.remove(callback)

    return unwatch


def _generated(value: str) -> str:
    for callback in tuple(_watchers):
        callback(value)
    return value


def new_password(*, length: int, alphabet: str, accept: Callable[[str], bool] | None = None) -> str:
    """A random string of `length` characters from `alphabet`, drawn again until `accept(value)` holds."""
    while True:
        value = "".join(secrets.choice(alphabet) for _ in range(length))
        if accept is None or accept(value):
            return _generated(value)


def new_token(*, nbytes: int, prefix: str = "") -> str:
    """`prefix` followed by `nbytes` random bytes in URL-safe base64 (about 1.3 characters per byte)."""
    return _generated(prefix + secrets.token_urlsafe(nbytes))
