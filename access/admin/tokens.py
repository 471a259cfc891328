"""API tokens in the admin: listed with when they were made, last used and revoked; revoked through the service.

A token is a record here: no add, no edit, no delete. "Revoke" calls `api_token_revoke`, which stamps the
revocation and writes its audit row. "Create my token" (the admin is behind OTP) makes a token for the signed-in
staff member only, through `api_token_create`, and shows it once: a token acts as its owner, so nobody makes one
that acts as someone else.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.template.defaultfilters import pluralize
from django.template.response import TemplateResponse
from django.urls import path

from access.admin.base import RecordAdmin, may
from access.services.tokens import DEFAULT_TOKEN_DAYS, api_token_create, api_token_revoke

REVOKE_PERMISSION = "access.change_apitoken"


@admin.action(description="Revoke selected tokens", permissions=["revoke"])
def revoke_tokens(modeladmin, request, queryset):
    revoked = sum(api_token_revoke(token=token, actor=request.user) for token in queryset.select_related("user"))
    stops = "it stops working at its" if revoked == 1 else "they stop working at their"
    modeladmin.message_user(
        request, f"Revoked {revoked} token{pluralize(revoked)}; {stops} next call.", messages.SUCCESS
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

    def get_urls(self):
        create = path("create/", self.admin_site.admin_view(self.create_token_view), name="access_apitoken_create_own")
        return [create, *super().get_urls()]

    def create_token_view(self, request):
        """Create a token for the signed-in staff member and show it once."""
        from portal.forms import ApiTokenForm

        form = ApiTokenForm(
            request.POST or None,
            initial={"days": min(DEFAULT_TOKEN_DAYS, settings.PAM_API_TOKEN_MAX_DAYS)},
            max_days=settings.PAM_API_TOKEN_MAX_DAYS,
        )
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "form": form, "raw": None}
        if request.method == "POST" and form.is_valid():
            try:
                token, raw = api_token_create(
                    user=request.user,
                    name=form.cleaned_data["name"],
                    actor=request.user,
                    lifetime=timedelta(days=form.cleaned_data["days"]),
                )
            except ValidationError as exc:
                form.add_error("days", " ".join(exc.messages))
            else:
                context.update(token=token, raw=raw)
                response = TemplateResponse(request, "admin/access/apitoken/create.html", context)
                response["Cache-Control"] = "no-store"
                response["X-One-Time-Secret"] = "1"  # the one page that shows this token
                return response
        return TemplateResponse(request, "admin/access/apitoken/create.html", context)
