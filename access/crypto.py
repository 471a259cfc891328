"""Encryption of secrets at rest, and the `Secret` wrapper that keeps them out of logs and pages.

Keys come from `settings.PAM_ENCRYPTION_KEYS` (Fernet keys, the first one encrypts, all of them
decrypt), so a key can be rotated by putting a new key first and running
`manage.py rotate_encryption_key`.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

MASK = "********"


class SecretDecryptionError(Exception):
    """A stored secret could not be decrypted with any configured key."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode() if isinstance(key, str) else key) for key in keys])


def fernet() -> MultiFernet:
    """The MultiFernet built from the configured keys."""
    return _fernet(tuple(settings.PAM_ENCRYPTION_KEYS))


def encrypt(plain: str) -> str:
    """Encrypt `plain` under the first key; the token is ASCII text."""
    return fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    """Decrypt a token made by `encrypt` with any configured key."""
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError(
            "A stored secret could not be decrypted: is the key that encrypted it still in PAM_ENCRYPTION_KEYS?"
        ) from None


def reencrypt(token: str) -> str:
    """Re-encrypt a token under the first key (MultiFernet.rotate)."""
    try:
        return fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError("A stored secret could not be re-encrypted: no configured key opens it.") from None


class Secret:
    """A secret value that never shows itself by accident.

    `str()`, `repr()` and templates see a mask; only `reveal()` returns the plain text. The value is
    decrypted lazily, so listing rows that carry secrets costs no decryption.
    """

    __slots__ = ("_plain", "_token")

    def __init__(self, *, plain: str | None = None, token: str | None = None):
        if (plain is None) == (token is None):
            raise ValueError("A Secret is built from exactly one of plain or token.")
        self._plain = plain
        self._token = token

    @classmethod
    def of(cls, value: str | Secret | None) -> Secret | None:
        """Wrap a plain string (or pass a Secret or None through)."""
        if value is None or isinstance(value, Secret):
            return value
        return cls(plain=value)

    def reveal(self) -> str:
        """The plain text: call it only where the secret is used or shown to its owner once."""
        if self._plain is None:
            self._plain = decrypt(self._token)
        return self._plain

    @property
    def token(self) -> str:
        """The encrypted form stored in the database."""
        if self._token is None:
            self._token = encrypt(self._plain) if self._plain else ""
        return self._token

    def __bool__(self) -> bool:
        return bool(self._token) if self._plain is None else bool(self._plain)

    def __str__(self) -> str:
        return MASK if self else ""

    def __repr__(self) -> str:
        return f"Secret({MASK!r})" if self else "Secret('')"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return self.reveal() == other.reveal()

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self):
        raise TypeError("Secrets are not pickled; store the token instead.")
