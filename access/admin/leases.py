"""Leases in the admin: read-only records of generated credentials, with "Revoke now" and "Retry revocation".

A lease is what the lease services recorded (issue, renewal, revocation attempts); nothing here edits or deletes
one. The actions call `lease_revoke`, need `access.change_lease` (as the API's revoke-prefix does) and report in
words, never with a secret; the service writes the audit rows.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.template.defaultfilters import pluralize
from django.utils import timezone
from django.utils.html import format_html

from access.admin.base import RecordAdmin, may
from access.models.leases import LIVE_LEASE_STATES, LeaseState
from access.services.leases import lease_revoke

REVOKE_PERMISSION = "access.change_lease"


def _revoke_each(request, leases) -> tuple[int, list[str]]:
    done, failed = 0, []
    for lease in leases:
        result = lease_revoke(lease=lease, actor=request.user, reason="revoked by admin")
        if result.state in (LeaseState.REVOKED, LeaseState.EXPIRED):
            done += 1
        elif result.state == LeaseState.REVOKE_FAILED:
            failed.append(f"{result.lease_id}: {result.last_error}")
    return done, failed


def _report_revocations(modeladmin, request, done: int, failed: list[str]) -> None:
    if done:
        modeladmin.message_user(
            request, f"{done} lease{pluralize(done)} revoked: users dropped and confirmed gone.", messages.SUCCESS
        )
    for line in failed:
        modeladmin.message_user(request, f"Revocation failed, will be retried: {line}", messages.ERROR)
    if not done and not failed:
        modeladmin.message_user(request, "Nothing to revoke: the selected leases were already ended.", messages.INFO)


@admin.action(description="Revoke now (drop the user, end its connections, confirm)", permissions=["revoke"])
def revoke_leases_now(modeladmin, request, queryset):
    done, failed = _revoke_each(request, queryset.filter(state__in=LIVE_LEASE_STATES).select_related("resource"))
    _report_revocations(modeladmin, request, done, failed)


@admin.action(description="Retry revocation of failed leases now", permissions=["revoke"])
def retry_lease_revocation(modeladmin, request, queryset):
    done, failed = _revoke_each(request, queryset.filter(state=LeaseState.REVOKE_FAILED).select_related("resource"))
    _report_revocations(modeladmin, request, done, failed)


def revocation_status(lease) -> str:
    """One line for the lease list: where revocation stands (attempts, next try, error)."""
    if lease.state == LeaseState.REVOKE_FAILED:
        when = timezone.localtime(lease.next_attempt_at).strftime("%H:%M:%S") if lease.next_attempt_at else "soon"
        return format_html(
            '<strong style="color:#ba2121">failed {} time{}, next try {}</strong><br><small>{}</small>',
            lease.attempts,
            pluralize(lease.attempts),
            when,
            lease.last_error[:160],
        )
    if lease.state == LeaseState.REVOKING:
        return "revoking…"
    if lease.state in (LeaseState.REVOKED, LeaseState.EXPIRED) and lease.attempts > 1:
        return f"done after {lease.attempts} attempts"
    return ""


class LeaseAdmin(RecordAdmin):
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
    actions = [revoke_leases_now, retry_lease_revocation]
    search_fields = ["lease_id", "username", "holder_name"]
    date_hierarchy = "issued_at"
    list_select_related = ["role__resource", "resource"]
    show_full_result_count = False
    # The password is never shown: it is not in these fields (a lease page is view-only, so these are all it shows).
    fieldsets = [
        (None, {"fields": ["lease_id", "role", "resource", "holder", "holder_name", "db", "username", "revealed_at"]}),
        ("Lifetime", {"fields": ["state", "issued_at", "expires_at", "max_expires_at", "revoked_at", "revoke_reason"]}),
        ("Revocation attempts", {"fields": ["attempts", "next_attempt_at", "last_error"]}),
    ]

    def has_revoke_permission(self, request):
        return may(request, REVOKE_PERMISSION)

    @admin.display(description="revocation")
    def revocation(self, obj):
        return revocation_status(obj)
