"""Prometheus metrics of the portal and its workers, computed from the database when scraped.

Built on the official client library (prometheus-client) with a custom collector, not django-prometheus: what
matters here is state every process shares (leases by state, revocation failures, the sweeper's lag, open sessions
per gateway, the task queue, sink lag), and reading it from the database at scrape time makes every daphne
instance report the same numbers whichever worker did the work, with no per-process counters to aggregate and no
multiprocess directory to share between hosts. django-prometheus would add per-process request and query counters
and middleware on every request, which this portal does not need. The one per-process metric is the lease issue
latency histogram, observed where leases are issued (the portal's API and pages, i.e. the daphne that is scraped);
sum it over instances. Database-derived series carry the same value on every instance: use `max` over instances.

Counters derived from the audit trail (append-only) only grow; latency summaries over the last five minutes are
gauges with a `quantile` label.
"""

from __future__ import annotations

import logging
import statistics
import time
from datetime import timedelta

from django.db.models import Count, Min, Sum
from django.utils import timezone
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

WINDOW = timedelta(minutes=5)
QUANTILES = (0.5, 0.9, 0.99)
COUNTED_ACTIONS = (
    "lease.issue",
    "lease.issue_failed",
    "lease.renew",
    "lease.revoke",
    "lease.revoke_failed",
    "session.open",
    "session.end",
    "request.create",
    "request.approve",
    "request.deny",
    "request.break_glass",
)

REGISTRY = CollectorRegistry()  # no auto-describe: that would query the database at import
"""The registry /metrics exposes: the database collector below and this process's own histograms."""

LEASE_ISSUE_SECONDS = Histogram(
    "pam_lease_issue_seconds",
    "Time to issue a lease (create the database user), in this process.",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)


def _quantiles(values: list[float]) -> dict[float, float]:
    if not values:
        return {}
    if len(values) == 1:
        return {q: values[0] for q in QUANTILES}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {q: cuts[round(q * 100) - 1] for q in QUANTILES}


def _by_state(name: str, text: str, model, states) -> GaugeMetricFamily:
    """How many rows of `model` are in each of `states` (every state named, 0 when none is)."""
    counts = dict(model.objects.order_by().values_list("state").annotate(n=Count("id")))
    family = GaugeMetricFamily(name, text, labels=["state"])
    for state in states:
        family.add_metric([state.value], counts.get(state.value, 0))
    return family


def _window_summary(name: str, seconds: list[float], text: str, count_text: str):
    """A window's quantiles (`<name>_seconds`, by quantile) and how many values they cover (`<name>_window_count`)."""
    summary = GaugeMetricFamily(f"{name}_seconds", text, labels=["quantile"])
    for q, value in _quantiles(seconds).items():
        summary.add_metric([str(q)], value)
    yield summary
    count = GaugeMetricFamily(f"{name}_window_count", count_text)
    count.add_metric([], len(seconds))
    yield count


class DatabaseCollector(Collector):
    """Reads the shared state from the database on each scrape; a failing part is logged and left out."""

    def collect(self):
        started = time.monotonic()
        now = timezone.now()
        for part in (self._leases, self._audit, self._sessions, self._queue, self._sinks, self._notifications):
            try:
                yield from part(now)
            except Exception:  # one broken part (e.g. Redis down for the queue depth) must not hide the rest
                log.warning("metrics: %s failed", part.__name__, exc_info=True)
        duration = GaugeMetricFamily("pam_metrics_scrape_seconds", "Time spent reading the metrics from the database.")
        duration.add_metric([], time.monotonic() - started)
        yield duration

    # -- leases and the sweeper ------------------------------------------------------------------------------
    def _leases(self, now):
        from access.models import BackgroundLock, Lease
        from access.models.leases import LeaseState

        yield _by_state("pam_leases", "Leases by state.", Lease, LeaseState)

        retries = Lease.objects.filter(attempts__gt=1).aggregate(total=Sum("attempts"), n=Count("id"))
        retried = CounterMetricFamily(
            "pam_lease_revoke_retries", "Revocation attempts beyond each lease's first (retries after a failure)."
        )
        retried.add_metric([], (retries["total"] or 0) - (retries["n"] or 0))
        yield retried

        oldest_due = Lease.objects.filter(state=LeaseState.ACTIVE, expires_at__lte=now).aggregate(
            oldest=Min("expires_at")
        )["oldest"]
        lag = GaugeMetricFamily(
            "pam_sweeper_lag_seconds", "How long the oldest expired lease has waited for the sweeper (0: none waits)."
        )
        lag.add_metric([], (now - oldest_due).total_seconds() if oldest_due else 0.0)
        yield lag

        expired = Lease.objects.filter(state=LeaseState.EXPIRED, revoked_at__gte=now - WINDOW).values_list(
            "expires_at", "revoked_at"
        )
        lags = sorted(max(0.0, (revoked - expires).total_seconds()) for expires, revoked in expired)
        yield from _window_summary(
            "pam_lease_expiry_revoke_lag",
            lags,
            "From a lease's expiry to its confirmed revocation, over the last 5 minutes.",
            "Leases revoked at expiry in the last 5 minutes.",
        )

        locks = GaugeMetricFamily(
            "pam_background_lock_held",
            "1 while a live worker holds the named lock (lease-sweeper, sink:<id>).",
            labels=["name"],
        )
        for name, expires_at in BackgroundLock.objects.values_list("name", "expires_at"):
            locks.add_metric([name], 1.0 if expires_at > now else 0.0)
        yield locks

    # -- the audit trail: counts and revoke latency ------------------------------------------------------------
    def _audit(self, now):
        from access.models import AuditEvent

        counts = dict(
            AuditEvent.objects.order_by()
            .filter(action__in=COUNTED_ACTIONS)
            .values_list("action")
            .annotate(n=Count("id"))
        )
        events = CounterMetricFamily("pam_audit_events", "Audit events recorded, by action.", labels=["action"])
        for action in COUNTED_ACTIONS:
            events.add_metric([action], counts.get(action, 0))
        yield events
        for name, action, text in (
            ("pam_lease_issues", "lease.issue", "Leases issued."),
            ("pam_lease_revocations", "lease.revoke", "Lease revocations confirmed on the server."),
            ("pam_lease_revoke_failures", "lease.revoke_failed", "Failed revocation attempts (each is retried)."),
        ):
            family = CounterMetricFamily(name, text)
            family.add_metric([], counts.get(action, 0))
            yield family

        recent = AuditEvent.objects.filter(
            action__in=("lease.revoke", "lease.revoke_failed"), created_at__gte=now - WINDOW
        ).values_list("data", flat=True)[:20000]
        durations = sorted(
            data["duration_ms"] / 1000.0 for data in recent if isinstance(data, dict) and "duration_ms" in data
        )
        yield from _window_summary(
            "pam_lease_revoke_duration",
            durations,
            "Time one revocation attempt took on the server, over the last 5 minutes.",
            "Revocation attempts in the last 5 minutes.",
        )

    # -- gateways and sessions ---------------------------------------------------------------------------------
    def _sessions(self, now):
        from access.models import Gateway, Session

        open_by_gateway = dict(Session.objects.open().order_by().values_list("gateway__name").annotate(n=Count("id")))
        sessions = GaugeMetricFamily("pam_sessions_open", "Open gateway sessions, by gateway.", labels=["gateway"])
        heartbeat = GaugeMetricFamily(
            "pam_gateway_heartbeat_age_seconds", "Seconds since each gateway's last heartbeat.", labels=["gateway"]
        )
        for name, last in Gateway.objects.values_list("name", "last_heartbeat"):
            sessions.add_metric([name], open_by_gateway.pop(name, 0))
            if last is not None:
                heartbeat.add_metric([name], max(0.0, (now - last).total_seconds()))
        if open_by_gateway.get(None):
            sessions.add_metric([""], open_by_gateway[None])  # opened, no gateway connected yet
        yield sessions
        yield heartbeat

    # -- the task queue ------------------------------------------------------------------------------------------
    def _queue(self, now):
        from django_q.brokers import get_broker
        from django_q.models import Failure

        broker = get_broker()
        depth = GaugeMetricFamily("pam_task_queue_depth", "Background tasks queued and not yet taken by a worker.")
        depth.add_metric([], broker.queue_size() or 0)
        yield depth
        failures = GaugeMetricFamily("pam_task_failures", "Failed background tasks kept by django-q2.")
        failures.add_metric([], Failure.objects.count())
        yield failures

    # -- sinks ---------------------------------------------------------------------------------------------------
    def _sinks(self, now):
        from access.models import SinkCursor
        from access.selectors.sinks import sink_statuses

        statuses = sink_statuses(now=now)
        lag = GaugeMetricFamily(
            "pam_sink_lag_records", "Records not yet delivered, by sink and stream.", labels=["sink", "stream"]
        )
        stuck = GaugeMetricFamily(
            "pam_sink_stuck",
            "1 when records have waited and the cursor has not moved for PAM_SINK_STUCK_MINUTES.",
            labels=["sink", "stream"],
        )
        failures = GaugeMetricFamily(
            "pam_sink_failures", "Failed attempts in a row (0 after a success).", labels=["sink", "stream"]
        )
        last = GaugeMetricFamily(
            "pam_sink_last_delivery_timestamp_seconds",
            "When the last batch was confirmed (Unix time).",
            labels=["sink", "stream"],
        )
        enabled = GaugeMetricFamily("pam_sink_enabled", "1 for an enabled sink.", labels=["sink"])
        seen = set()
        for status in statuses:
            labels = [status.sink.name, status.stream]
            lag.add_metric(labels, status.lag)
            stuck.add_metric(labels, 1.0 if status.stuck else 0.0)
            failures.add_metric(labels, status.failures)
            if status.last_delivered_at:
                last.add_metric(labels, status.last_delivered_at.timestamp())
            if status.sink.pk not in seen:
                seen.add(status.sink.pk)
                enabled.add_metric([status.sink.name], 1.0 if status.sink.enabled else 0.0)
        yield from (lag, stuck, failures, last, enabled)
        delivered = CounterMetricFamily(
            "pam_sink_delivered_records",
            "Records confirmed by each sink (resends included).",
            labels=["sink", "stream"],
        )
        for name, stream, total in SinkCursor.objects.values_list("sink__name", "stream", "delivered_total"):
            delivered.add_metric([name, stream], total)
        yield delivered

    # -- notifications and requests --------------------------------------------------------------------------------
    def _notifications(self, now):
        from access.models import AccessRequest, Notification
        from access.models.notifications import NotificationState
        from access.models.policies import RequestState

        yield _by_state("pam_notifications", "Chat/webhook notifications by state.", Notification, NotificationState)
        oldest = Notification.objects.filter(state=NotificationState.PENDING).aggregate(oldest=Min("created_at"))
        age = GaugeMetricFamily("pam_notification_oldest_pending_seconds", "Age of the oldest unsent notification.")
        age.add_metric([], (now - oldest["oldest"]).total_seconds() if oldest["oldest"] else 0.0)
        yield age
        pending = GaugeMetricFamily("pam_access_requests_pending", "Access requests awaiting a decision.")
        pending.add_metric([], AccessRequest.objects.filter(state=RequestState.PENDING).count())
        yield pending


REGISTRY.register(DatabaseCollector())
