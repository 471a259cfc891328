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
from django.contrib import messages
from django.contrib.auth.admin import GroupAdmin, UserAdmin

from access.models.sessions import SessionEndReason
from access.services.auth_events import auth_lockout_clear
from access.services.offboarding import group_delete, user_access_end, user_delete


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
                    f"{obj.get_username()} is deactivated: {len(report.sessions)} session(s) ended, "
                    f"{len(report.leases)} lease(s) being revoked, {report.tokens} API token(s) revoked.",
                    messages.WARNING,
                )

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


class LockoutAdmin(AccessAttemptAdmin):
    """django-axes's failed sign-in attempts: who or which address is locked out; deleting clears it, audited."""

    def delete_model(self, request, obj):
        auth_lockout_clear(attempts=type(obj)._default_manager.filter(pk=obj.pk), actor=request.user)

    def delete_queryset(self, request, queryset):
        auth_lockout_clear(attempts=queryset, actor=request.user)
