"""Admin actions for leases and root rotation: thin wrappers that call the lease and rotation services.

"Revoke now" and "Retry revocation" on leases; "Rotate root password" on resources. Results and problems
are reported as admin messages in words (never with a secret); each service writes its own audit rows.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html

from access.models.leases import LIVE_LEASE_STATES, LeaseState
from access.services.leases import lease_revoke
from access.services.root_rotation import RootRotationError, resource_rotate_root


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
            request, f"{done} lease(s) revoked: users dropped and confirmed gone.", messages.SUCCESS
        )
    for line in failed:
        modeladmin.message_user(request, f"Revocation failed, will be retried: {line}", messages.ERROR)
    if not done and not failed:
        modeladmin.message_user(request, "Nothing to revoke: the selected leases were already ended.", messages.INFO)


@admin.action(description="Revoke now (drop the user, end its connections, confirm)", permissions=["change"])
def revoke_leases_now(modeladmin, request, queryset):
    done, failed = _revoke_each(request, queryset.filter(state__in=LIVE_LEASE_STATES).select_related("resource"))
    _report_revocations(modeladmin, request, done, failed)


@admin.action(description="Retry revocation of failed leases now", permissions=["change"])
def retry_lease_revocation(modeladmin, request, queryset):
    done, failed = _revoke_each(request, queryset.filter(state=LeaseState.REVOKE_FAILED).select_related("resource"))
    _report_revocations(modeladmin, request, done, failed)


@admin.action(description="Rotate root password (change, verify by logging in, then store)", permissions=["change"])
def rotate_root_password(modeladmin, request, queryset):
    for resource in queryset:
        try:
            resource_rotate_root(resource=resource, actor=request.user)
        except RootRotationError as exc:
            modeladmin.message_user(request, f"{resource.name}: {exc}", messages.ERROR)
        else:
            modeladmin.message_user(request, f"{resource.name}: admin password rotated and verified.", messages.SUCCESS)


LEASE_ACTIONS = [revoke_leases_now, retry_lease_revocation]
ROOT_ROTATION_ACTIONS = [rotate_root_password]


def revocation_status(lease) -> str:
    """One line for the lease list: where revocation stands (attempts, next try, error)."""
    if lease.state == LeaseState.REVOKE_FAILED:
        when = timezone.localtime(lease.next_attempt_at).strftime("%H:%M:%S") if lease.next_attempt_at else "soon"
        return format_html(
            '<strong style="color:#ba2121">failed {} time(s), next try {}</strong><br><small>{}</small>',
            lease.attempts,
            when,
            lease.last_error[:160],
        )
    if lease.state == LeaseState.REVOKING:
        return "revoking…"
    if lease.state in (LeaseState.REVOKED, LeaseState.EXPIRED) and lease.attempts > 1:
        return f"done after {lease.attempts} attempts"
    return ""


def pending_root_password(resource) -> str:
    """Whether a rotated admin password awaits verification (both passwords are then kept)."""
    pending = resource.pending_admin_password
    if pending is not None and pending.token:
        return "A new admin password was set but not verified: both the old and the new one are kept."
    return "—"
