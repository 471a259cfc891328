"""What every connector shares: the error it raises, with a kind a caller can act on and a message a person can read.

Connectors change users and roles on a target (a MongoDB deployment, an Atlas project). Whatever goes
wrong underneath (DNS, TLS, a refused login, a missing privilege, a server that does not answer) reaches
the domain as one `ConnectorError`, whose message names the problem in words and never carries a secret.
"""

from __future__ import annotations

ERROR_KINDS = frozenset(
    {"dns", "tls", "auth", "permission", "timeout", "unreachable", "not_found", "conflict", "server", "config"}
)

_KIND_TITLES = {
    "dns": "DNS",
    "tls": "TLS",
    "auth": "authentication",
    "permission": "permission",
    "timeout": "timeout",
    "unreachable": "unreachable",
    "not_found": "not found",
    "conflict": "conflict",
    "server": "server",
    "config": "configuration",
}


class ConnectorError(Exception):
    """A connector operation failed; `.kind` says how (one of ERROR_KINDS), `str()` says it in words.

    `.code` keeps the server's error code when there was one (e.g. 18 AuthenticationFailed, 13
    Unauthorized). The message is written for the security team and never contains a password.
    """

    def __init__(self, message: str, *, kind: str = "server", code: int | None = None):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown connector error kind: {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.message = message

    @property
    def kind_title(self) -> str:
        """A short human label for the kind, for admin messages ("TLS", "authentication")."""
        return _KIND_TITLES[self.kind]

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"ConnectorError(kind={self.kind!r}, message={self.message!r})"
