"""The security team's admin: every model with useful columns, filters and search; secrets write-only.

Changes made here are audited in the same transaction; audit events and session commands are read-only.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from access.admin_actions import ACCOUNT_ACTIONS, RESOURCE_ACTIONS  # also registers ConnectorActionAdmin
from access.admin_leases import (
    LEASE_ACTIONS,
    ROOT_ROTATION_ACTIONS,
    pending_root_password,
    revocation_status,
)
from access.admin_requests import (
    AccessReviewAdminMixin,
    ApproveRequestsAdminMixin,
    AwaitingPostReviewFilter,
    approve_requests,
    deny_requests,
    post_review_requests,
)
from access.admin_scale import EstimatedCountPaginator, IndexedValuesListFilter
from access.durations import format_duration
from access.fields import EncryptedTextField
from access.models import (
    AccessPolicy,
    AccessRequest,
    Account,
    ApiToken,
    AuditEvent,
    DynamicRole,
    Gateway,
    Lease,
    Resource,
    Session,
    SessionCommand,
)
from access.models.sessions import SessionEndReason, SessionState
from access.services import sessions as session_services
from access.services.audit import audit_record


class AuditedModelAdmin(admin.ModelAdmin):
    """Saves and deletes through the admin write an audit event in the same transaction."""

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            secret_names = {f.name for f in obj._meta.fields if isinstance(f, EncryptedTextField)}
            data = {
                "changed": sorted(form.changed_data),
                "write_only_changed": sorted(secret_names & set(form.changed_data)),
            }
            action = f"{obj._meta.model_name}.{'update' if change else 'create'}"
            audit_record(action=action, actor=request.user, target=obj, data=data)

    def delete_model(self, request, obj):
        with transaction.atomic():
            audit_record(action=f"{obj._meta.model_name}.delete", actor=request.user, target=obj)
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for obj in queryset:
                audit_record(action=f"{obj._meta.model_name}.delete", actor=request.user, target=obj)
            super().delete_queryset(request, queryset)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records that are written by the system only."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Gateway)
class GatewayAdmin(AuditedModelAdmin):
    list_display = ["name", "address", "last_heartbeat", "created_at"]
    search_fields = ["name", "public_host"]


class AccountInline(admin.TabularInline):
    model = Account
    fields = ["name", "username", "require_mfa"]
    extra = 0
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Resource)
class ResourceAdmin(AuditedModelAdmin):
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
    actions = [*RESOURCE_ACTIONS, *ROOT_ROTATION_ACTIONS]
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

    @admin.display(description="pending admin password")
    def pending_rotation(self, obj):
        return pending_root_password(obj)

    @admin.display(description="default TTL", ordering="default_ttl")
    def default_ttl_human(self, obj):
        return format_duration(obj.default_ttl)

    @admin.display(description="max TTL", ordering="max_ttl")
    def max_ttl_human(self, obj):
        return format_duration(obj.max_ttl)


@admin.register(Account)
class AccountAdmin(AuditedModelAdmin):
    list_display = ["name", "resource", "username", "require_mfa", "last_rotated_at", "updated_at"]
    list_filter = ["resource", "require_mfa"]
    search_fields = ["name", "username", "description", "resource__name"]
    list_select_related = ["resource"]
    readonly_fields = ["last_rotated_at", "created_at", "updated_at"]
    actions = [*ACCOUNT_ACTIONS]
    fields = [
        "resource",
        "name",
        "description",
        "username",
        "password",
        "require_mfa",
        "rotation_period",
        "last_rotated_at",
        "created_at",
        "updated_at",
    ]


@admin.register(DynamicRole)
class DynamicRoleAdmin(AuditedModelAdmin):
    list_display = ["name", "resource", "db", "roles", "default_ttl", "max_ttl", "require_mfa"]
    list_filter = ["resource", "require_mfa"]
    search_fields = ["name", "db", "resource__name"]
    list_select_related = ["resource"]


@admin.register(Lease)
class LeaseAdmin(admin.ModelAdmin):
    list_display = [
        "lease_id",
        "username",
        "holder_name",
        "role",
        "state",
        "issued_at",
        "expires_at",
        "attempts",
        "revocation",
    ]
    list_filter = ["state", "resource", "role"]
    actions = [*LEASE_ACTIONS]
    search_fields = ["lease_id", "username", "holder_name"]
    date_hierarchy = "issued_at"
    list_select_related = ["role__resource", "resource"]
    readonly_fields = [f.name for f in Lease._meta.fields if f.name != "password"]
    exclude = ["password"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    fieldsets = [
        (None, {"fields": ["lease_id", "role", "resource", "holder", "holder_name", "db", "username", "revealed_at"]}),
        ("Lifetime", {"fields": ["state", "issued_at", "expires_at", "max_expires_at", "revoked_at", "revoke_reason"]}),
        ("Revocation attempts", {"fields": ["attempts", "next_attempt_at", "last_error"]}),
    ]

    @admin.display(description="revocation")
    def revocation(self, obj):
        return revocation_status(obj)


@admin.register(AccessPolicy)
class AccessPolicyAdmin(AccessReviewAdminMixin, AuditedModelAdmin):
    list_display = [
        "name",
        "user",
        "group",
        "account",
        "role",
        "max_duration",
        "approval_required",
        "mfa_required",
        "break_glass_allowed",
        "is_enabled",
        "last_used_at",
    ]
    list_filter = ["approval_required", "mfa_required", "break_glass_allowed", "is_enabled"]
    search_fields = ["name", "user__username", "group__name"]
    autocomplete_fields = ["user", "group"]


@admin.register(AccessRequest)
class AccessRequestAdmin(ApproveRequestsAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "requester",
        "target",
        "state",
        "break_glass",
        "duration",
        "created_at",
        "approver",
        "expires_at",
    ]
    list_filter = ["state", "break_glass", AwaitingPostReviewFilter]
    search_fields = ["requester__username", "reason"]
    actions = [approve_requests, deny_requests, post_review_requests]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in AccessRequest._meta.fields]

    def has_add_permission(self, request):
        return False


class SessionCommandInline(admin.TabularInline):
    model = SessionCommand
    fields = ["at", "database", "collection", "command", "ok", "error_code", "n", "latency_us", "refused"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0
    show_change_link = True


class LiveSessionFilter(admin.SimpleListFilter):
    """Sessions whose credentials still log in (open and not expired), or the rest."""

    title = "live"
    parameter_name = "live"

    def lookups(self, request, model_admin):
        return [("yes", "Live"), ("no", "Not live")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.live()
        if self.value() == "no":
            return queryset.exclude(pk__in=Session.objects.live().values("pk"))
        return queryset


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    """Gateway sessions: watch them live, read their command logs, kill them (the gateway drops them within 2 s)."""

    list_display = [
        "username",
        "user_name",
        "account",
        "gateway",
        "state",
        "read_only",
        "started_at",
        "expires_at",
        "ended_at",
        "end_reason",
        "commands_count",
        "live_view_link",
    ]
    list_filter = [LiveSessionFilter, "state", "end_reason", "read_only", "gateway"]
    list_select_related = ["account__resource", "gateway"]
    search_fields = ["username", "user_name", "client_address"]
    date_hierarchy = "started_at"
    readonly_fields = [f.name for f in Session._meta.fields if f.name != "verifiers"]
    exclude = ["verifiers"]
    inlines = [SessionCommandInline]
    actions = ["kill_sessions"]
    change_form_template = "admin/access/session/change_form.html"

    def has_add_permission(self, request):
        return False

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/kill/", view(self.kill_view), name="access_session_kill"),
            path("<path:object_id>/live/", view(self.live_view), name="access_session_live"),
            *super().get_urls(),
        ]

    @admin.display(description="live view")
    def live_view_link(self, obj):
        return format_html('<a href="{}">watch</a>', reverse("admin:access_session_live", args=[obj.pk]))

    @admin.action(description="Kill selected sessions", permissions=["change"])
    def kill_sessions(self, request, queryset):
        killed = session_services.session_end_many(
            sessions=queryset, reason=SessionEndReason.KILLED, actor=request.user
        )
        self.message_user(request, f"Killed {killed} session(s); their connections close within 2 seconds.")

    def kill_view(self, request, object_id):
        session = self.get_object(request, object_id)
        if session is None:
            raise Http404
        if request.method != "POST" or not self.has_change_permission(request, session):
            raise PermissionDenied
        if session.state == SessionState.OPEN:
            session_services.session_end(session=session, reason=SessionEndReason.KILLED, actor=request.user)
            self.message_user(request, f"Killed session {session.username}.")
        else:
            self.message_user(request, f"Session {session.username} had already ended.", messages.WARNING)
        return redirect("admin:access_session_change", session.pk)

    def live_view(self, request, object_id):
        session = self.get_object(request, object_id)
        if session is None:
            raise Http404
        if not self.has_view_permission(request, session):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Live: {session.username}",
            "session_obj": session,
            "ws_path": f"/ws/sessions/{session.public_id}/",
            "can_kill": session.state == SessionState.OPEN and self.has_change_permission(request, session),
        }
        return TemplateResponse(request, "admin/access/session/live.html", context)


@admin.register(SessionCommand)
class SessionCommandAdmin(ReadOnlyAdmin):
    list_display = ["at", "session", "database", "collection", "command", "ok", "error_code", "latency_us"]
    list_filter = ["command", "ok", "refused"]
    search_fields = ["session__username", "database", "collection", "command"]
    date_hierarchy = "at"
    list_select_related = ["session"]
    show_full_result_count = False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = [
        "seq",
        "created_at",
        "actor_name",
        "action",
        "target_type",
        "target_name",
        "ip",
        "short_hash",
    ]
    list_filter = [("action", IndexedValuesListFilter), ("target_type", IndexedValuesListFilter)]
    search_fields = ["actor_name", "action", "target_name", "request_id"]
    date_hierarchy = "created_at"
    paginator = EstimatedCountPaginator
    # The chain's order (created_at grows with seq): leading with the indexed time keeps a date drill-down an
    # index range instead of sorting most of a million rows by seq.
    ordering = ["-created_at", "-seq"]
    show_full_result_count = False
    readonly_fields = [
        "seq",
        "created_at",
        "actor",
        "actor_name",
        "action",
        "target_type",
        "target_id",
        "target_name",
        "data",
        "ip",
        "request_id",
        "prev_hash",
        "hash",
    ]

    def has_view_permission(self, request, obj=None):
        return (
            request.user.is_active
            and request.user.is_staff
            and (request.user.is_superuser or request.user.has_perm("access.view_auditevent"))
        )

    @admin.display(description="hash")
    def short_hash(self, obj):
        return format_html("<code>{}</code>", obj.hash[:12])


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "user", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "name", "user__username"]
    readonly_fields = ["prefix", "digest", "created_at", "last_used_at", "user"]

    def has_add_permission(self, request):
        return False
