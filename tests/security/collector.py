"""An attacker's host for the tests: a TCP listener that records every connection and the bytes it was sent.

A resource pointed at it must never make the portal connect (stored credentials must not leave); the listener
answers nothing and closes each connection, so a driver that does connect fails fast instead of waiting.
"""

from __future__ import annotations

import socket
import threading


class Collector:
    """Listens on 127.0.0.1:<port>; `.connections` counts who came, `.received` holds what they sent."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self.received = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="collector", daemon=True)
        self._thread.start()

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _address = self._listener.accept()
            except OSError:
                continue
            self.connections += 1
            conn.settimeout(0.5)
            try:
                self.received += conn.recv(65536)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._listener.close()
