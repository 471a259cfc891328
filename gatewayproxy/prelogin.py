"""Before login, a client costs almost nothing: the limits on connections that have not proved a secret.

A connection that has not logged in is answered by the gateway alone (hello, SCRAM) and holds no upstream
connection. :class:`LoginLimits` bounds what such connections may cost, and :class:`PreLoginGuard` applies the
bounds for a :class:`~gatewayproxy.server.GatewayServer`:

- at most ``per_address`` unauthenticated connections from one client address and ``total`` in all; a
  connection over either cap is closed as soon as it is accepted;
- messages before login are at most ``max_message`` bytes (a handshake fits in a few hundred);
- the login must finish within ``deadline`` seconds, or the connection closes. A driver's monitoring connection
  never logs in (it only sends hellos): it may stay while its address has a logged-in connection here;
- after ``failures`` failed logins (unknown session name, wrong secret, refused session) from one address in
  ``window`` seconds, that address's logins are refused at once, without asking the database, until the window
  has passed. Failures are counted in the metrics; each is audited until the throttle starts, then one audit
  row per window says the address is throttled.

Nothing here does I/O; the server calls it on the event loop.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class LoginLimits:
    """What a connection may cost before it proves a session secret (settings ``PAM_GATEWAY_LOGIN_*``)."""

    deadline: float = 10.0
    max_message: int = 8 * 1024
    per_address: int = 512
    total: int = 4096
    failures: int = 10
    window: float = 60.0

    def shared_by(self, workers: int) -> LoginLimits:
        """The limits of one of ``workers`` processes sharing the port: the caps and the failure count divided, so
        the gateway as a whole stays within them (the kernel spreads new connections evenly over the workers)."""
        if workers <= 1:
            return self
        return replace(
            self,
            per_address=max(1, self.per_address // workers),
            total=max(1, self.total // workers),
            failures=max(1, self.failures // workers),
        )


class PreLoginGuard:
    """Counts unauthenticated connections and failed logins per client address."""

    def __init__(self, limits: LoginLimits) -> None:
        self.limits = limits
        self.unauthenticated = 0
        self._by_address: collections.Counter[str] = collections.Counter()
        self._failures: dict[str, collections.deque[float]] = {}
        self._throttle_audited: dict[str, float] = {}

    def admit(self, address: str) -> bool:
        """Count a new unauthenticated connection from ``address``; False (not counted) when over a cap."""
        if self.unauthenticated >= self.limits.total or self._by_address[address] >= self.limits.per_address:
            return False
        self.unauthenticated += 1
        self._by_address[address] += 1
        return True

    def release(self, address: str) -> None:
        """An admitted connection logged in or closed (call once per admitted connection)."""
        self.unauthenticated -= 1
        left = self._by_address[address] - 1
        if left > 0:
            self._by_address[address] = left
        else:
            del self._by_address[address]

    def unauthenticated_from(self, address: str) -> int:
        return self._by_address.get(address, 0)

    def throttled_for(self, address: str, now: float | None = None) -> float:
        """Seconds until ``address`` may try to log in again (0.0 when it may now)."""
        failures = self._failures.get(address)
        if not failures or len(failures) < self.limits.failures:
            return 0.0
        now = time.monotonic() if now is None else now
        while failures and now - failures[0] >= self.limits.window:
            failures.popleft()
        if len(failures) < self.limits.failures:
            return 0.0
        return max(0.0, self.limits.window - (now - failures[0]))

    def failed(self, address: str, now: float | None = None) -> bool:
        """Count a failed login from ``address``; True while it should still be audited one by one."""
        now = time.monotonic() if now is None else now
        audit = self.throttled_for(address, now) == 0.0
        failures = self._failures.setdefault(address, collections.deque(maxlen=max(1, self.limits.failures)))
        failures.append(now)
        return audit

    def throttle_audit_due(self, address: str, now: float | None = None) -> bool:
        """Whether a throttled attempt from ``address`` should be audited (once per window)."""
        now = time.monotonic() if now is None else now
        last = self._throttle_audited.get(address)
        if last is not None and now - last < self.limits.window:
            return False
        self._throttle_audited[address] = now
        return True

    def prune(self, now: float | None = None) -> None:
        """Forget addresses whose failures are older than the window (called by the server's control loop)."""
        now = time.monotonic() if now is None else now
        window = self.limits.window
        for address in [a for a, failures in self._failures.items() if not failures or now - failures[-1] >= window]:
            del self._failures[address]
        for address in [a for a, at in self._throttle_audited.items() if now - at >= window]:
            del self._throttle_audited[address]
