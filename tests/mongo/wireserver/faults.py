"""Fault injection for reliability tests: refused connections, dropped connections, slow and failing commands.

One :class:`Faults` object per server holds the active faults; the server consults it on every accept,
message and reply. Tests set faults through ``WireServer`` methods (thread-safe) or, from any client
authenticated with ``root``, through the admin command ``wireserverFault`` (see ``admin.py``)::

    {wireserverFault: "refuseConnections", mode: "close" | "stop" | "off"}
    {wireserverFault: "closeAfter", messages: N}           # N: null to turn off
    {wireserverFault: "delay", ms: X, command: "find"}     # command optional: all commands
    {wireserverFault: "failCommand", command: "insert", code: 91, errmsg: "...", times: 2,
                      closeConnection: false}              # times optional: always
    {wireserverFault: "clear"}
    {wireserverFault: "status"}

``closeAfter N``: each connection serves N commands after its login, then is closed when the next one
arrives (the client sees a network error on that request). The handshake and login (hello, isMaster,
saslStart, saslContinue) never count, so monitoring connections are untouched and the count does not
depend on a driver's authentication steps. ``delay`` without a command holds every reply except
those; naming a command (even ``hello``) delays exactly that command. ``wireserverFault`` itself is
never delayed, failed or counted, so a test can always clear faults.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

REFUSE_MODES = ("off", "close", "stop")
# The handshake and login do not count as "messages" for closeAfter, nor get a blanket delay.
UNCOUNTED = frozenset({"hello", "isMaster", "ismaster", "saslStart", "saslContinue", "wireserverFault"})


@dataclass
class CommandFailure:
    """Fail ``command`` with ``code``/``errmsg``; ``times`` None means always."""

    code: int
    errmsg: str
    times: int | None = None
    close_connection: bool = False
    code_name: str = ""


@dataclass
class Faults:
    """The active faults of one server; every accessor takes the lock so test threads may set them."""

    refuse: str = "off"
    close_after: int | None = None
    delay_ms: float = 0.0
    delay_command: str | None = None
    failures: dict[str, CommandFailure] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_refuse(self, mode: str) -> None:
        if mode not in REFUSE_MODES:
            raise ValueError(f"refuse mode must be one of {REFUSE_MODES}, not {mode!r}")
        with self._lock:
            self.refuse = mode

    def set_close_after(self, messages: int | None) -> None:
        if messages is not None and messages < 0:
            raise ValueError("messages must be >= 0")
        with self._lock:
            self.close_after = messages

    def set_delay(self, ms: float, command: str | None = None) -> None:
        if ms < 0:
            raise ValueError("delay must be >= 0 ms")
        with self._lock:
            self.delay_ms = float(ms)
            self.delay_command = command

    def set_failure(self, command: str, failure: CommandFailure | None) -> None:
        with self._lock:
            if failure is None:
                self.failures.pop(command, None)
            else:
                self.failures[command] = failure

    def clear(self) -> None:
        with self._lock:
            self.refuse = "off"
            self.close_after = None
            self.delay_ms = 0.0
            self.delay_command = None
            self.failures.clear()

    # -- consulted by the server -------------------------------------------------------------
    def should_close(self, counted_messages: int) -> bool:
        """True once a connection has received more counted messages than ``close_after`` allows."""
        with self._lock:
            return self.close_after is not None and counted_messages > self.close_after

    def delay_for(self, command: str) -> float:
        """Seconds to hold the reply to ``command``."""
        if command == "wireserverFault":
            return 0.0
        with self._lock:
            if not self.delay_ms:
                return 0.0
            if self.delay_command == command or (self.delay_command is None and command not in UNCOUNTED):
                return self.delay_ms / 1000.0
            return 0.0

    def take_failure(self, command: str) -> CommandFailure | None:
        """The failure to apply to this run of ``command``, consuming one of its ``times``."""
        if command == "wireserverFault":
            return None
        with self._lock:
            failure = self.failures.get(command)
            if failure is None:
                return None
            if failure.times is not None:
                failure.times -= 1
                if failure.times <= 0:
                    del self.failures[command]
            return failure

    def status(self) -> dict:
        with self._lock:
            return {
                "refuseConnections": self.refuse,
                "closeAfter": self.close_after,
                "delayMs": self.delay_ms,
                "delayCommand": self.delay_command,
                "failCommands": {
                    name: {"code": f.code, "errmsg": f.errmsg, "times": f.times, "closeConnection": f.close_connection}
                    for name, f in self.failures.items()
                },
            }
