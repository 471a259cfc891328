"""Resources in the admin: MongoDB deployments and Atlas projects, written through the resource services.

Saving calls `resource_create`/`resource_update` and deleting `resource_delete` (its accounts' open sessions end
first), exactly as the API does. Secrets are write-only. Actions: verify the connection and rotate the admin
("root") password, both services of their own.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models

from access.admin.actions import verify_resource_connection
from access.admin.base import ReadOnly, ServiceAdmin, _form_fields
from access.durations import format_duration
from access.models import Account, Resource
from access.services import resources as resource_services
from access.services.connections import resource_changes_need_verification, resource_changes_verify
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


class AccountInline(ReadOnly, admin.TabularInline):
    """The resource's accounts, listed; they are edited on their own page (through the account services)."""

    model = Account
    fields = ["name", "username", "require_mfa"]
    extra = 0
    show_change_link = True
    can_delete = False


_USERINFO = re.compile(r"^(mongodb(?:\+srv)?://)[^/?#]*@", re.IGNORECASE)
_SECRET_OPTION = re.compile(r"(?i)\b([a-z]*(?:password|secret|token|properties)[a-z]*=)[^&;]*")


def uri_without_secrets(value: str) -> str:
    """A URI as it may be shown back in a page: no user:password@, no value of an option that may hold a secret."""
    text = unquote_plus(str(value or "")) if "%40" in str(value or "") else str(value or "")
    return _SECRET_OPTION.sub(r"\1…", _USERINFO.sub(r"\1", text))


class UriInput(forms.TextInput):
    """The URI box: a refused URI is shown back without the credentials or secret options it carried."""

    def format_value(self, value):
        return uri_without_secrets(super().format_value(value) or "") or None


class ResourceAdminForm(forms.ModelForm):
    """The resource form: the model's validation (the API's too), and before saving, the same verification as the
    API (access.services.connections) when the settings where credentials go change."""

    verify_connection = forms.BooleanField(
        label="Verify the connection before saving",
        required=False,
        initial=True,
        help_text="Log in with the admin account over the new settings first. Without it, changed hosts or TLS "
        "settings are saved but no stored credential is sent to them until 'Verify connection' succeeds.",
    )

    class Meta:
        model = Resource
        # The admin builds its form from the fieldsets (atlas_base_url included, with its https default); these
        # are the fields of this base class.
        fields = [
            "name",
            "kind",
            "description",
            "gateway",
            "uri",
            "auth_database",
            "tls",
            "tls_verify",
            "ca_certificate",
            "admin_username",
            "admin_password",
            "atlas_group_id",
            "atlas_public_key",
            "atlas_private_key",
            "default_ttl",
            "max_ttl",
            "full_command_logging",
            "allow_secondary_reads",
        ]
        widgets = {"uri": UriInput(attrs={"size": 80, "autocomplete": "off", "spellcheck": "false"})}

    verified_fingerprint = ""

    def clean(self):
        cleaned = super().clean()
        if self.errors or not cleaned.get("verify_connection"):
            return cleaned
        stored = self.instance if self.instance.pk else None
        fields = _form_fields(self, self.changed_data if stored is not None else self.fields)
        if resource_changes_need_verification(resource=stored, fields=fields):
            try:
                self.verified_fingerprint = resource_changes_verify(resource=stored, fields=fields)
            except ValidationError as exc:
                self.add_error("uri", exc.message_dict.get("uri", exc.messages))
        return cleaned


class ResourceAdmin(ServiceAdmin):
    form = ResourceAdminForm
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
    readonly_fields = ["root_rotation_error", "pending_rotation", "connection_state", "created_at", "updated_at"]
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
                    "allow_secondary_reads",
                    "admin_username",
                    "admin_password",
                    "verify_connection",
                    "connection_state",
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

    def save_model(self, request, obj, form, change):
        request.pam_verified_fingerprint = form.verified_fingerprint
        super().save_model(request, obj, form, change)

    def service_create(self, request, fields):
        verified = getattr(request, "pam_verified_fingerprint", "")
        return resource_services.resource_create(actor=request.user, verified_fingerprint=verified, **fields)

    def service_update(self, request, obj, fields):
        verified = getattr(request, "pam_verified_fingerprint", "")
        return resource_services.resource_update(
            actor=request.user, resource=obj, verified_fingerprint=verified, **fields
        )

    @admin.display(description="connection settings")
    def connection_state(self, obj):
        if obj.pk is None:
            return "—"
        if obj.connection_verified:
            return "verified: stored credentials may be used" + (
                f" (last verification {obj.verified_at:%Y-%m-%d %H:%M} UTC)" if obj.verified_at else ""
            )
        return "changed since verified: no stored credential is sent until 'Verify connection' succeeds"

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
