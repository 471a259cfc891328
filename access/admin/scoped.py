"""Custom permission levels in the admin: named sets of MongoDB privilege actions that scope envelopes offer.

Saving calls `permission_level_create`/`permission_level_update` and deleting `permission_level_delete`
(access.services.scoped), so a level naming an unknown action is refused here as in the API, and a level a policy
still offers is not deleted. The actions are typed as a list (commas, spaces or new lines).
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError

from access.admin.base import ServiceAdmin
from access.admin.policies import DatabaseListField
from access.models import PermissionLevel
from access.mongodb_actions import BUILTIN_LEVELS
from access.services import scoped as scoped_services


class PermissionLevelForm(forms.ModelForm):
    actions = DatabaseListField(
        label="Actions",
        help_text="MongoDB privilege actions, separated by commas (e.g. find, listIndexes, collStats). Built-in "
        "levels: " + "; ".join(f"{name}: {', '.join(sorted(actions))}" for name, actions in BUILTIN_LEVELS.items()),
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    class Meta:
        model = PermissionLevel
        fields = ["name", "description", "actions"]


class PermissionLevelAdmin(ServiceAdmin):
    form = PermissionLevelForm
    list_display = ["name", "description", "action_list", "updated_at"]
    search_fields = ["name", "description"]

    def get_readonly_fields(self, request, obj=None):
        return ["name"] if obj is not None else []

    @staticmethod
    def action_list(obj) -> str:
        return ", ".join(obj.actions or [])

    def service_create(self, request, fields):
        return scoped_services.permission_level_create(actor=request.user, **fields)

    def service_update(self, request, obj, fields):
        return scoped_services.permission_level_update(actor=request.user, level=obj, **fields)

    def service_delete(self, request, obj):
        scoped_services.permission_level_delete(actor=request.user, level=obj)

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except ValidationError as exc:
            from django.shortcuts import redirect

            self.message_user(request, " ".join(exc.messages), messages.ERROR)
            return redirect("admin:access_permissionlevel_change", object_id)
