"""The error type command handlers raise, carrying mongod's code, message and code name."""

from __future__ import annotations

CODE_NAMES = {
    1: "InternalError",
    2: "BadValue",
    6: "HostUnreachable",
    7: "HostNotFound",
    9: "FailedToParse",
    11: "UserNotFound",
    13: "Unauthorized",
    13435: "NotPrimaryNoSecondaryOk",
    14: "TypeMismatch",
    18: "AuthenticationFailed",
    26: "NamespaceNotFound",
    31: "RoleNotFound",
    40: "ConflictingUpdateOperators",
    43: "CursorNotFound",
    48: "NamespaceExists",
    49: "InvalidRoleModification",
    50: "MaxTimeMSExpired",
    59: "CommandNotFound",
    72: "InvalidOptions",
    73: "InvalidNamespace",
    89: "NetworkTimeout",
    91: "ShutdownInProgress",
    96: "OperationFailed",
    189: "PrimarySteppedDown",
    262: "ExceededTimeLimit",
    238: "NotImplemented",
    352: "UnsupportedOpQueryCommand",
    10107: "NotWritablePrimary",
    11600: "InterruptedAtShutdown",
    11602: "InterruptedDueToReplStateChange",
    11000: "DuplicateKey",
    51002: "Location51002",
    51003: "Location51003",
}


class CommandError(Exception):
    """A command failed; the server turns it into ``{ok: 0, errmsg, code, codeName}``."""

    def __init__(
        self, code: int, errmsg: str, code_name: str | None = None, *, labels: list[str] | None = None, **extra
    ) -> None:
        super().__init__(errmsg)
        self.code = code
        self.errmsg = errmsg
        self.code_name = code_name if code_name is not None else CODE_NAMES.get(code, "")
        self.labels = labels or []
        self.extra = extra

    def to_document(self) -> dict:
        """The reply document mongod would send for this failure (with ``errorLabels`` and extra fields if any)."""
        document = {"ok": 0.0, "errmsg": self.errmsg, "code": self.code, "codeName": self.code_name, **self.extra}
        if self.labels:
            document["errorLabels"] = list(self.labels)
        return document


def bad_value(message: str) -> CommandError:
    """A ``BadValue`` (2) error."""
    return CommandError(2, message)


def type_mismatch(message: str) -> CommandError:
    """A ``TypeMismatch`` (14) error."""
    return CommandError(14, message)
