"""GET /metrics: the Prometheus exposition of access.metrics, for a bearer token or a loopback client.

With `PAM_METRICS_TOKEN` set, the request must carry `Authorization: Bearer <token>` (compared in constant time).
Without it, only a client on loopback that did not come through the reverse proxy (no X-Forwarded-For) is
answered: Prometheus running on the same host. Anything else gets 403 or 401, and no metric.
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from access.metrics import REGISTRY


def _loopback(request) -> bool:
    if request.META.get("HTTP_X_FORWARDED_FOR") or request.META.get("HTTP_X_REAL_IP"):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def _allowed(request) -> tuple[bool, int]:
    token = settings.PAM_METRICS_TOKEN
    if not token:
        return _loopback(request), 403
    scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    ok = scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    return ok, 401


@require_GET
def metrics(request):
    allowed, status = _allowed(request)
    if not allowed:
        response = HttpResponse(
            "Metrics need the bearer token (PAM_METRICS_TOKEN).\n", status=status, content_type="text/plain"
        )
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
