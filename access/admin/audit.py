"""The audit trail in the admin: append-only events, filtered and paged without full scans of a large table.

Events are read-only (no add, no save, no delete); only staff with `access.view_auditevent` (or superusers) read them.
"""

from __future__ import annotations

from datetime import UTC

from django.contrib import admin
from django.utils.html import format_html

from access.admin.base import RecordAdmin
from access.admin.scale import EstimatedCountPaginator, IndexedValuesListFilter
from access.models import AuditAction


class EventCategoryFilter(admin.SimpleListFilter):
    """Authentication events at once (sign-ins, second factor, lockouts, tokens, gateway logins): action IN (...)
    over the (action, created_at) index."""

    title = "category"
    parameter_name = "category"

    def lookups(self, request, model_admin):
        return [("authentication", "Authentication")]

    def queryset(self, request, queryset):
        if self.value() == "authentication":
            return queryset.filter(action__in=[action.value for action in AuditAction.authentication()])
        return queryset


class AuditEventAdmin(RecordAdmin):
    list_display = ["seq", "when", "actor_name", "action_label", "target", "address", "short_hash"]
    list_filter = [
        EventCategoryFilter,
        ("action", IndexedValuesListFilter),
        ("target_type", IndexedValuesListFilter),
    ]
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

    @admin.display(description="time (UTC)", ordering="created_at")
    def when(self, obj):
        return f"{obj.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"

    @admin.display(description="action", ordering="action")
    def action_label(self, obj):
        return format_html('{}<br><code class="pam-wrap">{}</code>', obj.get_action_display(), obj.action)

    @admin.display(description="target")
    def target(self, obj):
        if not obj.target_type:
            return obj.target_name or "—"
        return format_html(
            '<span class="pam-wrap">{}</span><br><small>{} #{}</small>',
            obj.target_name or "—",
            obj.target_type,
            obj.target_id or "",
        )

    @admin.display(description="address", ordering="ip")
    def address(self, obj):
        return obj.ip or "—"

    @admin.display(description="hash")
    def short_hash(self, obj):
        """The first 12 characters; a click shows the whole hash and the previous one it chains to."""
        return format_html(
            '<details class="pam-expand"><summary>{}…</summary><code>hash {}</code><code>prev {}</code></details>',
            obj.hash[:12],
            obj.hash,
            obj.prev_hash or "—",
        )
