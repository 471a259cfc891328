"""API tokens in the admin: listed with when they were made, last used and revoked; revoked through the service.

A token is created by its owner (shown once) and is a record here: no add, no edit, no delete. "Revoke" calls
`api_token_revoke`, which stamps the revocation and writes its audit row.
"""

from __future__ import annotations

from django.contrib import admin, messages

from access.admin.base import RecordAdmin, may
from access.services.tokens import api_token_revoke

REVOKE_PERMISSION = "access.change_apitoken"


@admin.action(description="Revoke selected tokens", permissions=["revoke"])
def revoke_tokens(modeladmin, request, queryset):
    revoked = sum(api_token_revoke(token=token, actor=request.user) for token in queryset.select_related("user"))
    modeladmin.message_user(
        request, f"Revoked {revoked} token(s); they stop working at their next call.", messages.SUCCESS
    )


class ApiTokenAdmin(RecordAdmin):
    list_display = ["prefix", "name", "user", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["prefix", "name", "user__username"]
    list_select_related = ["user"]
    fields = ["prefix", "name", "user", "created_at", "last_used_at", "expires_at", "revoked_at"]
    actions = [revoke_tokens]

    def has_revoke_permission(self, request):
        return may(request, REVOKE_PERMISSION)
