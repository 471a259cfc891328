"""Access requests in the admin: read-only records with approve, deny and post-review actions, and a filter for
break-glass grants nobody has reviewed yet.

The actions ask for a comment on an intermediate page, then call the request services one request at a time;
refusals (one's own request, already decided, no permission) are reported per request. A request is the record
of a decision: it is not edited or deleted here.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.template.defaultfilters import pluralize
from django.template.response import TemplateResponse

from access.admin.base import RecordAdmin
from access.models.policies import user_may_approve
from access.services import requests as request_services


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
        modeladmin.message_user(request, f"{verb.capitalize()}: {done} request{pluralize(done)}.", messages.SUCCESS)
    return None


def _decision_action(name: str, description: str, *, title: str, verb: str, service, comment_required: bool = False):
    """An approver's admin action (`name` is its key in the form) that asks for a comment and applies `service`."""

    def action(modeladmin, request, queryset):
        return _with_comment(
            modeladmin,
            request,
            queryset,
            title=title,
            verb=verb,
            comment_required=comment_required,
            service=service,
        )

    action.__name__ = action.__qualname__ = name
    return admin.action(description=description, permissions=["approve"])(action)


approve_requests = _decision_action(
    "approve_requests",
    "Approve selected requests",
    title="Approve access requests",
    verb="approved",
    service=lambda r, user, comment: request_services.access_request_approve(request=r, approver=user, comment=comment),
)
deny_requests = _decision_action(
    "deny_requests",
    "Deny selected requests",
    title="Deny access requests",
    verb="denied",
    service=lambda r, user, comment: request_services.access_request_deny(request=r, approver=user, comment=comment),
)
post_review_requests = _decision_action(
    "post_review_requests",
    "Record post-review of break-glass grants",
    title="Post-review break-glass access",
    verb="reviewed",
    comment_required=True,
    service=lambda r, user, comment: request_services.access_request_post_review(
        request=r, reviewer=user, comment=comment
    ),
)


class AccessRequestAdmin(RecordAdmin):
    """Requests with their decisions; approvers act on them through the actions above."""

    list_display = [
        "id",
        "requester",
        "target",
        "state",
        "break_glass",
        "duration",
        "created_at",
        "approver",
        "expires_at",
    ]
    list_filter = ["state", "break_glass", AwaitingPostReviewFilter]
    search_fields = ["requester__username", "reason"]
    actions = [approve_requests, deny_requests, post_review_requests]
    date_hierarchy = "created_at"

    def has_approve_permission(self, request):
        """The `access.approve_accessrequest` permission, for the actions above."""
        return user_may_approve(request.user)
