"""Gateways in the admin: the hosts that run `manage.py runproxy`, written through the gateway services.

A gateway's heartbeat is the gateway's own record and is not editable; deleting a gateway ends its open sessions.
"""

from __future__ import annotations

from access.admin.base import ServiceAdmin
from access.services import resources as resource_services


class GatewayAdmin(ServiceAdmin):
    list_display = ["name", "address", "last_heartbeat", "created_at"]
    search_fields = ["name", "public_host"]
    fields = ["name", "public_host", "public_port", "description", "last_heartbeat", "created_at"]
    readonly_fields = ["last_heartbeat", "created_at"]

    def service_create(self, request, fields):
        return resource_services.gateway_create(actor=request.user, **fields)

    def service_update(self, request, obj, fields):
        return resource_services.gateway_update(actor=request.user, gateway=obj, **fields)

    def service_delete(self, request, obj):
        resource_services.gateway_delete(actor=request.user, gateway=obj)
