"""Admin pieces for access requests and policies: approve/deny/post-review actions, the break-glass filter,
and the access review (who holds which standing policy and when they last used it, exportable as CSV).

The actions ask for a comment on an intermediate page, then call the request services one request at a time;
refusals (one's own request, already decided, no permission) are reported per request.
"""

from __future__ import annotations

import csv

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from access.durations import format_duration
from access.selectors.requests import access_review_rows
from access.services import requests as request_services

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


class AwaitingPostReviewFilter(admin.SimpleListFilter):
    """Break-glass grants nobody has reviewed yet."""

    title = "post-review"
    parameter_name = "post_review"

    def lookups(self, request, model_admin):
        return [("awaiting", "Awaiting post-review"), ("done", "Reviewed")]

    def queryset(self, request, queryset):
        if self.value() == "awaiting":
            return queryset.awaiting_post_review()
        if self.value() == "done":
            return queryset.filter(break_glass=True, post_reviewed_at__isnull=False)
        return queryset


def _with_comment(modeladmin, request, queryset, *, title: str, verb: str, service, comment_required: bool = False):
    """Ask for a comment on an intermediate page, then apply `service` to each selected request."""
    if "apply" not in request.POST:
        context = {
            **modeladmin.admin_site.each_context(request),
            "title": title,
            "queryset": queryset,
            "action": request.POST.get("action"),
            "verb": verb,
            "comment_required": comment_required,
            "opts": modeladmin.model._meta,
        }
        return TemplateResponse(request, "admin/access/accessrequest/decide.html", context)
    comment = request.POST.get("comment", "")
    done = 0
    for access_request in queryset.select_related("requester"):
        try:
            service(access_request, request.user, comment)
            done += 1
        except (PermissionDenied, ValidationError) as exc:
            text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            modeladmin.message_user(request, f"Request #{access_request.pk}: {text}", messages.ERROR)
    if done:
        modeladmin.message_user(request, f"{verb.capitalize()}: {done} request(s).", messages.SUCCESS)
    return None


@admin.action(description="Approve selected requests", permissions=["approve"])
def approve_requests(modeladmin, request, queryset):
    return _with_comment(
        modeladmin,
        request,
        queryset,
        title="Approve access requests",
        verb="approved",
        service=lambda r, user, comment: request_services.access_request_approve(
            request=r, approver=user, comment=comment
        ),
    )


@admin.action(description="Deny selected requests", permissions=["approve"])
def deny_requests(modeladmin, request, queryset):
    return _with_comment(
        modeladmin,
        request,
        queryset,
        title="Deny access requests",
        verb="denied",
        service=lambda r, user, comment: request_services.access_request_deny(
            request=r, approver=user, comment=comment
        ),
    )


@admin.action(description="Record post-review of break-glass grants", permissions=["approve"])
def post_review_requests(modeladmin, request, queryset):
    return _with_comment(
        modeladmin,
        request,
        queryset,
        title="Post-review break-glass access",
        verb="reviewed",
        comment_required=True,
        service=lambda r, user, comment: request_services.access_request_post_review(
            request=r, reviewer=user, comment=comment
        ),
    )


class ApproveRequestsAdminMixin:
    """`has_approve_permission` for the actions above: the `access.approve_accessrequest` permission."""

    def has_approve_permission(self, request):
        return request_services.user_may_approve(request.user)


class AccessReviewAdminMixin:
    """Adds `review/` to the AccessPolicy admin: every holder of every enabled policy, as a page or a CSV file."""

    def get_urls(self):
        review = path(
            "review/",
            self.admin_site.admin_view(self.access_review_view),
            name="access_accesspolicy_review",
        )
        return [review, *super().get_urls()]

    def access_review_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        rows = access_review_rows()
        if request.GET.get("format") == "csv":
            return _review_csv(rows)
        context = {
            **self.admin_site.each_context(request),
            "title": "Access review",
            "rows": rows,
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
                "account" if policy.account_id else "role",
                str(policy.target),
                policy.approval_required,
                policy.mfa_required,
                policy.break_glass_allowed,
                format_duration(policy.max_duration),
                row.user_last_used_at.isoformat() if row.user_last_used_at else "",
                policy.last_used_at.isoformat() if policy.last_used_at else "",
            ]
        )
    return response
