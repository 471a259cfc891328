"""The gateway's counters and their Prometheus text exposition, served on ``--metrics HOST:PORT``.

Plain integers bumped on the event loop thread (no locks, no dependency); :func:`serve_metrics` answers
``GET /metrics`` with the text format Prometheus scrapes (version 0.0.4).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("gatewayproxy.metrics")

#: Latency histogram bucket bounds, in seconds.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BUCKETS_US = tuple(int(bound * 1_000_000) for bound in LATENCY_BUCKETS)


class GatewayMetrics:
    """What ``/metrics`` reports: connections, logins, commands, bytes, errors and command latency."""

    def __init__(self) -> None:
        self.connections_open = 0
        self.connections_total = 0
        self.sessions_live = 0
        self.logins = 0
        self.auth_failures = 0
        self.connections_unauthenticated = 0
        self.prelogin_refused = 0
        self.login_deadline_closed = 0
        self.login_unknown = 0
        self.logins_throttled = 0
        self.commands = 0
        self.errors = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self._latency_counts = [0] * (len(_BUCKETS_US) + 1)
        self._latency_sum_us = 0

    def observe_latency(self, latency_us: int) -> None:
        """Count one command's round trip through the upstream, in microseconds."""
        self._latency_counts[bisect.bisect_left(_BUCKETS_US, latency_us)] += 1
        self._latency_sum_us += latency_us

    def snapshot(self) -> dict[str, Any]:
        """The counters as plain values (each worker of a multi-process gateway sends its own to the supervisor)."""
        return {name: list(value) if isinstance(value, list) else value for name, value in vars(self).items()}

    def add_up(self, snapshots: Iterable[dict[str, Any]], *, sessions_live: int) -> None:
        """Set these counters to the sum of the workers' ``snapshots`` (``sessions_live`` counts sessions once)."""
        totals = GatewayMetrics().snapshot()
        for snapshot in snapshots:
            for name, value in snapshot.items():
                if isinstance(value, list):
                    totals[name] = [a + b for a, b in zip(totals.get(name, [0] * len(value)), value, strict=False)]
                elif isinstance(value, int | float):
                    totals[name] = totals.get(name, 0) + value
        totals["sessions_live"] = sessions_live
        for name, value in totals.items():
            setattr(self, name, value)

    def exposition(self) -> str:
        """The metrics in Prometheus' text format."""
        lines = []

        def metric(name: str, kind: str, help_text: str, value: float) -> None:
            lines.extend((f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"))

        metric("pam_gateway_connections_open", "gauge", "Client connections open now.", self.connections_open)
        metric("pam_gateway_connections_total", "counter", "Client connections accepted.", self.connections_total)
        metric("pam_gateway_sessions_live", "gauge", "Sessions with a logged-in connection.", self.sessions_live)
        metric("pam_gateway_logins_total", "counter", "Successful client logins.", self.logins)
        metric("pam_gateway_auth_failures_total", "counter", "Failed client logins.", self.auth_failures)
        metric(
            "pam_gateway_connections_unauthenticated",
            "gauge",
            "Client connections that have not logged in yet.",
            self.connections_unauthenticated,
        )
        metric(
            "pam_gateway_prelogin_refused_total",
            "counter",
            "Connections closed at once: too many unauthenticated connections from the address or in all.",
            self.prelogin_refused,
        )
        metric(
            "pam_gateway_login_deadline_closed_total",
            "counter",
            "Connections closed because they did not log in before the deadline.",
            self.login_deadline_closed,
        )
        metric(
            "pam_gateway_login_unknown_total",
            "counter",
            "Logins naming an unknown session username.",
            self.login_unknown,
        )
        metric(
            "pam_gateway_logins_throttled_total",
            "counter",
            "Logins refused because their address failed too often.",
            self.logins_throttled,
        )
        metric("pam_gateway_commands_total", "counter", "Commands relayed or refused.", self.commands)
        metric("pam_gateway_errors_total", "counter", "Commands that failed or were refused.", self.errors)
        metric("pam_gateway_bytes_in_total", "counter", "Bytes received from clients.", self.bytes_in)
        metric("pam_gateway_bytes_out_total", "counter", "Bytes sent to clients.", self.bytes_out)
        name = "pam_gateway_command_latency_seconds"
        lines.append(f"# HELP {name} Command round trip through the upstream.")
        lines.append(f"# TYPE {name} histogram")
        cumulative = 0
        for bound, count in zip(LATENCY_BUCKETS, self._latency_counts, strict=False):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        cumulative += self._latency_counts[-1]
        lines.append(f'{name}_bucket{{le="+Inf"}} {cumulative}')
        lines.append(f"{name}_sum {self._latency_sum_us / 1_000_000}")
        lines.append(f"{name}_count {cumulative}")
        return "\n".join(lines) + "\n"


async def serve_metrics(metrics: GatewayMetrics, host: str, port: int) -> asyncio.base_events.Server:
    """Listen on ``host:port`` and answer ``GET /metrics`` (anything else gets 404)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.split()
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
                body = metrics.exposition().encode()
                head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            else:
                body = b"not found\n"
                head = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
            writer.write(head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    server = await asyncio.start_server(handle, host, port)
    log.info("event=metrics_listening address=%s:%s", host, port)
    return server
