"""Access policies in the admin: who may reach which account or role, written through the policy services; and
the access review (who holds which standing policy and when they last used it, as a page or a CSV file).

Saving calls `access_policy_create`/`access_policy_update` and deleting `access_policy_delete`. When a policy
was last used is recorded by the grant services and shown, not edited. The databases its gateway sessions may use
are typed as a list of names; the privileged command families it allows are ticked (none by default). A scope
envelope (scoped access) is a resource, database and collection names or patterns typed as lists, and the
permission levels ticked. The access review also lists the scoped grants made and what each covered.
"""

from __future__ import annotations

import csv
import re

from django import forms
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from access.admin.base import ServiceAdmin
from access.durations import format_duration
from access.models import AccessPolicy
from access.models.policies import PRIVILEGED_COMMAND_CHOICES
from access.selectors.requests import access_review_rows
from access.selectors.scoped import scoped_grants
from access.services import policies as policy_services

CSV_COLUMNS = [
    "user",
    "email",
    "policy",
    "via",
    "target_kind",
    "target",
    "approval_required",
    "mfa_required",
    "break_glass_allowed",
    "max_duration",
    "user_last_used_at",
    "policy_last_used_at",
]


class DatabaseListField(forms.CharField):
    """A list of database names typed with commas, spaces or new lines; stored as a JSON list."""

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return ", ".join(value)
        return value

    def to_python(self, value):
        text = super().to_python(value) or ""
        return [name for name in re.split(r"[\s,]+", text) if name]


class AccessPolicyForm(forms.ModelForm):
    database_allow_list = DatabaseListField(
        label="Databases",
        required=False,
        help_text="The databases its gateway sessions may use, separated by commas; empty: every database.",
    )
    privileged_commands = forms.MultipleChoiceField(
        label="Privileged commands",
        choices=PRIVILEGED_COMMAND_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Privileged command families its gateway sessions may run; none unless ticked.",
    )

    scope_databases = DatabaseListField(
        label="Databases",
        required=False,
        help_text="Scoped access: database names or patterns (shop, reports_*), separated by commas.",
    )
    scope_collections = DatabaseListField(
        label="Collections",
        required=False,
        help_text="Optional: <database>.<collection> names or patterns (shop.orders, *.audit_*); when set, "
        "requests must name collections.",
    )
    scope_levels = forms.MultipleChoiceField(
        label="Permission levels",
        choices=(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The levels a requester may pick: built in, or custom permission levels.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from access.scopes import level_names_known

        known = level_names_known()
        current = list(getattr(self.instance, "scope_levels", None) or [])
        self.fields["scope_levels"].choices = [
            (name, name) for name in [*known, *(n for n in current if n not in known)]
        ]

    class Meta:
        model = AccessPolicy
        fields = list(policy_services.POLICY_FIELDS)  # what the services accept is what the form edits


_SESSION_DETAIL_FIELDS = frozenset({"read_only", "database_allow_list", "privileged_commands"})
_ENVELOPE_DETAIL_FIELDS = frozenset({"scope_databases", "scope_collections", "scope_levels"})


class AccessPolicyAdmin(ServiceAdmin):
    form = AccessPolicyForm
    # Every policy field but the gateway-session details, which the policy's own page shows.
    list_display = [
        *(
            name
            for name in policy_services.POLICY_FIELDS
            if name not in _SESSION_DETAIL_FIELDS and name not in _ENVELOPE_DETAIL_FIELDS
        ),
        "last_used_at",
    ]
    list_filter = ["approval_required", "mfa_required", "break_glass_allowed", "is_enabled"]
    search_fields = ["name", "user__username", "group__name"]
    autocomplete_fields = ["user", "group"]
    readonly_fields = ["last_used_at", "created_at"]
    fieldsets = [
        (None, {"fields": ["name", "user", "group", "is_enabled"]}),
        ("What it grants", {"fields": ["account", "role"]}),
        (
            "Scoped access (a scope envelope)",
            {
                "fields": ["scope_resource", "scope_databases", "scope_collections", "scope_levels"],
                "description": "Instead of (or besides) an account or role: requesters pick databases, collections "
                "and a level inside this envelope, and get a database user and role made for their request.",
            },
        ),
        (
            "Terms",
            {
                "fields": [
                    "max_duration",
                    "approval_required",
                    "mfa_required",
                    "break_glass_allowed",
                    "read_only",
                    "database_allow_list",
                    "privileged_commands",
                ]
            },
        ),
        ("Use", {"fields": ["last_used_at", "created_at"]}),
    ]

    def service_create(self, request, fields):
        return policy_services.access_policy_create(actor=request.user, **fields)

    def service_update(self, request, obj, fields):
        return policy_services.access_policy_update(actor=request.user, policy=obj, **fields)

    def service_delete(self, request, obj):
        policy_services.access_policy_delete(actor=request.user, policy=obj)

    def get_urls(self):
        review = path(
            "review/",
            self.admin_site.admin_view(self.access_review_view),
            name="access_accesspolicy_review",
        )
        return [review, *super().get_urls()]

    def access_review_view(self, request):
        """Every holder of every enabled policy: a page, or with `?format=csv` a file for the auditors."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        rows = access_review_rows()
        if request.GET.get("format") == "csv":
            return _review_csv(rows)
        context = {
            **self.admin_site.each_context(request),
            "title": "Access review",
            "rows": rows,
            "scoped": scoped_grants(),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/access/accesspolicy/review.html", context)


def _review_csv(rows) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="access-review-{stamp}.csv"'
    writer = csv.writer(response)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        policy = row.policy
        writer.writerow(
            [
                row.username,
                row.email,
                policy.name,
                row.via,
                "account" if policy.account_id else "role" if policy.role_id else "scoped",
                policy.grants_text,
                policy.approval_required,
                policy.mfa_required,
                policy.break_glass_allowed,
                format_duration(policy.max_duration),
                row.user_last_used_at.isoformat() if row.user_last_used_at else "",
                policy.last_used_at.isoformat() if policy.last_used_at else "",
            ]
        )
    return response
