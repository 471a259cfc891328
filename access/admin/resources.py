"""Resources in the admin: MongoDB deployments and Atlas projects, written through the resource services.

Saving calls `resource_create`/`resource_update` and deleting `resource_delete` (its accounts' open sessions end
first), exactly as the API does. Secrets are write-only. Actions: verify the connection and rotate the admin
("root") password, both services of their own.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import models

from access.admin.actions import verify_resource_connection
from access.admin.base import ServiceAdmin
from access.durations import format_duration
from access.models import Account
from access.services import resources as resource_services
from access.services.root_rotation import RootRotationError, resource_rotate_root


@admin.action(description="Rotate root password (change, verify by logging in, then store)", permissions=["change"])
def rotate_root_password(modeladmin, request, queryset):
    for resource in queryset:
        try:
            resource_rotate_root(resource=resource, actor=request.user)
        except RootRotationError as exc:
            modeladmin.message_user(request, f"{resource.name}: {exc}", messages.ERROR)
        else:
            modeladmin.message_user(request, f"{resource.name}: admin password rotated and verified.", messages.SUCCESS)


def pending_root_password(resource) -> str:
    """Whether a rotated admin password awaits verification (both passwords are then kept)."""
    pending = resource.pending_admin_password
    if pending is not None and pending.token:
        return "A new admin password was set but not verified: both the old and the new one are kept."
    return "—"


class AccountInline(admin.TabularInline):
    """The resource's accounts, listed; they are edited on their own page (through the account services)."""

    model = Account
    fields = ["name", "username", "require_mfa"]
    extra = 0
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ResourceAdmin(ServiceAdmin):
    list_display = [
        "name",
        "kind",
        "uri",
        "gateway",
        "tls",
        "default_ttl_human",
        "max_ttl_human",
        "updated_at",
    ]
    list_filter = ["kind", "tls", "tls_verify", "gateway"]
    search_fields = ["name", "uri", "description", "atlas_group_id"]
    date_hierarchy = "created_at"
    readonly_fields = ["root_rotation_error", "pending_rotation", "created_at", "updated_at"]
    inlines = [AccountInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    actions = [verify_resource_connection, rotate_root_password]
    fieldsets = [
        (None, {"fields": ["name", "kind", "description", "gateway"]}),
        (
            "MongoDB",
            {
                "fields": [
                    "uri",
                    "auth_database",
                    "tls",
                    "tls_verify",
                    "ca_certificate",
                    "admin_username",
                    "admin_password",
                    "root_rotation_error",
                    "pending_rotation",
                ]
            },
        ),
        (
            "Atlas",
            {
                "fields": ["atlas_group_id", "atlas_public_key", "atlas_private_key", "atlas_base_url"],
                "classes": ["collapse"],
            },
        ),
        ("Leases and logging", {"fields": ["default_ttl", "max_ttl", "full_command_logging"]}),
        ("Record", {"fields": ["created_at", "updated_at"]}),
    ]

    def service_create(self, request, fields):
        return resource_services.resource_create(actor=request.user, **fields)

    def service_update(self, request, obj, fields):
        return resource_services.resource_update(actor=request.user, resource=obj, **fields)

    def service_delete(self, request, obj):
        resource_services.resource_delete(actor=request.user, resource=obj)

    @admin.display(description="pending admin password")
    def pending_rotation(self, obj):
        return pending_root_password(obj)

    @admin.display(description="default TTL", ordering="default_ttl")
    def default_ttl_human(self, obj):
        return format_duration(obj.default_ttl)

    @admin.display(description="max TTL", ordering="max_ttl")
    def max_ttl_human(self, obj):
        return format_duration(obj.max_ttl)
