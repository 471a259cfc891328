"""CLI logins in the admin: the refresh tokens of `pam login`, listed per person, revoked through the service.

django-oauth-toolkit registers editable admins for its tokens; here they are replaced: a token is a record (no add,
no edit, no delete), and "Revoke" calls `cli_login_revoke`, which deletes the access token at once and writes the
audit row. The security team can revoke anyone's login; the raw tokens are never stored (digests only).
"""

from __future__ import annotations

import oauth2_provider.admin  # noqa: F401  (registers the toolkit's admins first, so they can be replaced here)
from django.contrib import admin, messages
from oauth2_provider.models import get_access_token_model, get_grant_model, get_id_token_model

from access.admin.base import RecordAdmin, may
from access.selectors.cli import REVOKE_PERMISSION
from access.services.cli import cli_login_revoke


@admin.action(description="Revoke selected CLI logins", permissions=["revoke"])
def revoke_cli_logins(modeladmin, request, queryset):
    revoked = sum(
        cli_login_revoke(refresh_token=token, actor=request.user)
        for token in queryset.filter(revoked__isnull=True).select_related("user")
    )
    modeladmin.message_user(
        request, f"Revoked {revoked} CLI login(s); their tokens are refused from the next call.", messages.SUCCESS
    )


class CliLoginAdmin(RecordAdmin):
    list_display = ["user", "application", "created", "revoked", "token_family"]
    list_filter = ["revoked", "application"]
    search_fields = ["user__username"]
    list_select_related = ["user", "application"]
    fields = ["user", "application", "created", "updated", "revoked", "token_family"]
    actions = [revoke_cli_logins]

    def has_revoke_permission(self, request):
        return may(request, REVOKE_PERMISSION)


def unregister_toolkit_token_admins(site) -> None:
    """Drop the toolkit's editable token admins (access tokens, grants, ID tokens; refresh tokens are re-registered)."""
    for model in (get_access_token_model(), get_grant_model(), get_id_token_model()):
        if site.is_registered(model):
            site.unregister(model)
