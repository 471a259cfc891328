"""The audit trail in the admin: append-only events, filtered and paged without full scans of a large table.

Events are read-only (no add, no save, no delete); only staff with `access.view_auditevent` (or superusers) read them.
"""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from access.admin.base import RecordAdmin
from access.admin.scale import EstimatedCountPaginator, IndexedValuesListFilter


class AuditEventAdmin(RecordAdmin):
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
