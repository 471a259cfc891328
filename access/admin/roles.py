"""Dynamic roles in the admin: templates for on-demand database users, written through the role services.

Saving calls `dynamic_role_save` and deleting `dynamic_role_delete`, as the Vault-shaped API does. A role is
named by its resource and name (the API's `mongodb/<resource>/roles/<name>`), so neither changes once created.
"""

from __future__ import annotations

from access.admin.base import ServiceAdmin
from access.services import roles as role_services


class DynamicRoleAdmin(ServiceAdmin):
    list_display = ["name", "resource", "db", "roles", "default_ttl", "max_ttl", "require_mfa"]
    list_filter = ["resource", "require_mfa"]
    search_fields = ["name", "db", "resource__name"]
    list_select_related = ["resource"]

    def get_readonly_fields(self, request, obj=None):
        return ["resource", "name"] if obj is not None else []

    def service_create(self, request, fields):
        return self._save(request, fields.pop("resource"), fields.pop("name"), fields)

    def service_update(self, request, obj, fields):
        return self._save(request, obj.resource, obj.name, fields)

    def service_delete(self, request, obj):
        role_services.dynamic_role_delete(actor=request.user, role=obj)

    @staticmethod
    def _save(request, resource, name, fields):
        role, _created = role_services.dynamic_role_save(actor=request.user, resource=resource, name=name, **fields)
        return role
