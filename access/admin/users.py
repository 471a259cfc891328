"""People, groups and sign-in lockouts in the admin, where ending someone's access ends it.

- `PamUserAdmin` (Django's user admin): deactivating a person (`is_active` off) ends their open gateway sessions,
  revokes their leases and API tokens (`user_access_end`, reason user_deactivated); deleting one goes through
  `user_delete` (the same, reason user_deleted, and the policies naming them deleted through the policy service).
  Groups removed on the person's form are handled where every membership removal passes (access.receivers).
- `PamGroupAdmin`: deleting a group deletes its policies through the policy service and checks its members' grants.
- `LockoutAdmin` (django-axes's failed attempts): lockouts are listed, and clearing them (deleting the attempts)
  is audited through `auth_lockout_clear`.
"""

from __future__ import annotations

from axes.admin import AccessAttemptAdmin
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.db.models import Q, Sum
from django.template.defaultfilters import pluralize

from access.models.sessions import SessionEndReason
from access.services.auth_events import auth_lockout_clear
from access.services.offboarding import group_delete, user_access_end, user_delete


def _count(count: int, noun: str) -> str:
    """`1 session`, `2 sessions`."""
    return f"{count} {noun}{pluralize(count)}"


class PamUserAdmin(UserAdmin):
    """Django's user admin; deactivating or deleting a person ends their access at once, audited."""

    def save_model(self, request, obj, form, change):
        was_active = change and type(obj)._default_manager.filter(pk=obj.pk, is_active=True).exists()
        super().save_model(request, obj, form, change)
        if was_active and not obj.is_active:
            report = user_access_end(user=obj, reason=SessionEndReason.USER_DEACTIVATED, actor=request.user)
            if report:
                self.message_user(
                    request,
                    f"{obj.get_username()} is deactivated: {_count(len(report.sessions), 'session')} ended, "
                    f"{_count(len(report.leases), 'lease')} being revoked, "
                    f"{_count(report.tokens, 'API token')} revoked.",
                    messages.WARNING,
                )

    def get_deleted_objects(self, objs, request):
        # A person's records (API tokens, access requests) are read-only in their own admins, which would make every
        # person who ever held one undeletable; they go with the person through `user_delete`, which this admin's
        # delete permission governs (audit events stay: they keep the person's name).
        deleted, model_count, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, model_count, set(), protected

    def delete_model(self, request, obj):
        user_delete(user=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for user in queryset:
            user_delete(user=user, actor=request.user)


class PamGroupAdmin(GroupAdmin):
    """Django's group admin; deleting a group deletes its policies (audited) and ends what they granted."""

    def delete_model(self, request, obj):
        group_delete(group=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for group in queryset:
            group_delete(group=group, actor=request.user)


def _locked_out(model) -> Q:
    """Attempts of a user name, or from an address, whose failures add up to the limit: what django-axes locks.

    django-axes keeps a row per (user name, address); it locks a name (or an address) on the sum of its rows, so
    a guess spread over many addresses shows as many rows of one failure each, all of them locked out."""
    limit = settings.AXES_FAILURE_LIMIT
    names = model.objects.values("username").annotate(total=Sum("failures_since_start")).filter(total__gte=limit)
    addresses = model.objects.values("ip_address").annotate(total=Sum("failures_since_start")).filter(total__gte=limit)
    return Q(username__in=names.values("username")) | Q(ip_address__in=addresses.values("ip_address"))


class LockedOutFilter(admin.SimpleListFilter):
    title = "locked out"
    parameter_name = "locked_out"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(_locked_out(queryset.model))
        if self.value() == "no":
            return queryset.exclude(_locked_out(queryset.model))
        return queryset


class LockoutAdmin(AccessAttemptAdmin):
    """django-axes's failed sign-in attempts: who or which address is locked out; deleting clears it, audited."""

    list_display = ["attempt_time", "username", "ip_address", "path_info", "failures_since_start", "status"]
    list_filter = [LockedOutFilter, "path_info"]

    @admin.display(description="status")
    def status(self, obj):
        model = type(obj)
        limit = settings.AXES_FAILURE_LIMIT
        by_name = model.objects.filter(username=obj.username).aggregate(n=Sum("failures_since_start"))["n"] or 0
        by_address = model.objects.filter(ip_address=obj.ip_address).aggregate(n=Sum("failures_since_start"))["n"] or 0
        locked = [what for what, count in (("user name", by_name), ("address", by_address)) if count >= limit]
        if locked:
            return "locked out (" + " and ".join(locked) + ")"
        return f"{_count(limit - max(by_name, by_address), 'attempt')} left"

    def delete_model(self, request, obj):
        auth_lockout_clear(attempts=type(obj)._default_manager.filter(pk=obj.pk), actor=request.user)

    def delete_queryset(self, request, queryset):
        auth_lockout_clear(attempts=queryset, actor=request.user)
