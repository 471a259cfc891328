"""Liveness for load balancers and `make run`."""

from django.db import connection
from django.http import JsonResponse


def healthz(request):
    """The database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True})
