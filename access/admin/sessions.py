"""Gateway sessions in the admin: watch them live, read their command logs, kill them.

Sessions and their commands are what the session services and the gateway recorded: read-only here (no add, no
save, no delete). Killing calls `session_end` (the gateway drops the connections within 2 s) and needs
`access.change_session`; the session's SCRAM verifiers are never shown.
"""

from __future__ import annotations

import json
from datetime import UTC

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.template.defaultfilters import pluralize
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from access.admin.base import ReadOnly, RecordAdmin, may
from access.events import chatter_q
from access.models import Session, SessionCommand
from access.models.sessions import SessionEndReason, SessionState
from access.services import sessions as session_services

KILL_PERMISSION = "access.change_session"


def _when(moment) -> str:
    """A recorded time to the millisecond, in UTC: `2026-05-01 14:03:09.123 UTC`."""
    if moment is None:
        return "—"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}.{moment.microsecond // 1000:03d} UTC"


class CommandColumns:
    """How a command reads in the admin: its time, outcome (with a refusal's reason), latency and wrapped summary."""

    @admin.display(description="time (UTC)", ordering="at")
    def when(self, obj):
        return _when(obj.at)

    @admin.display(description="namespace")
    def namespace(self, obj):
        return f"{obj.database}.{obj.collection}" if obj.collection else obj.database

    @admin.display(description="outcome")
    def outcome(self, obj):
        if obj.refused:
            return format_html('<strong style="color:#ba2121">refused</strong>: {}', obj.error_message or "by policy")
        if not obj.ok:
            return format_html("error {}: {}", obj.error_code or "", obj.error_message)
        return "ok"

    @admin.display(description="latency", ordering="latency_us")
    def latency(self, obj):
        return f"{obj.latency_us / 1000:.1f} ms"

    @admin.display(description="summary (redacted)")
    def summary_text(self, obj):
        text = json.dumps(obj.summary, separators=(",", ":"), sort_keys=True, default=str) if obj.summary else ""
        return format_html('<code class="pam-summary">{}</code>', text)


class _CommandInline(CommandColumns, ReadOnly, admin.TabularInline):
    model = SessionCommand
    fields = ["when", "command", "namespace", "outcome", "n", "latency", "summary_text"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0
    show_change_link = True


class SessionCommandInline(_CommandInline):
    """What the person ran: the log without the drivers' handshake."""

    verbose_name = "command"
    verbose_name_plural = "Commands the person ran"

    def get_queryset(self, request):
        return super().get_queryset(request).exclude(chatter_q())


class HandshakeCommandInline(_CommandInline):
    """What the drivers and the shell sent on their own (hello, buildInfo, getParameter, ...): grouped, collapsed."""

    verbose_name = "driver handshake command"
    verbose_name_plural = "Driver and shell handshake (buildInfo, getParameter, atlasVersion, …)"
    classes = ["collapse"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(chatter_q())


class LiveSessionFilter(admin.SimpleListFilter):
    """Sessions whose credentials still log in (open and not expired), or the rest."""

    title = "live"
    parameter_name = "live"

    def lookups(self, request, model_admin):
        return [("yes", "Live"), ("no", "Not live")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.live()
        if self.value() == "no":
            return queryset.exclude(pk__in=Session.objects.live().values("pk"))
        return queryset


@admin.action(description="Kill selected sessions", permissions=["kill"])
def kill_sessions(modeladmin, request, queryset):
    killed = session_services.session_end_many(sessions=queryset, reason=SessionEndReason.KILLED, actor=request.user)
    modeladmin.message_user(
        request, f"Killed {killed} session{pluralize(killed)}; their connections close within 2 seconds."
    )


class SessionAdmin(RecordAdmin):
    list_display = [
        "username",
        "user_name",
        "account",
        "gateway",
        "state",
        "read_only",
        "started",
        "expires",
        "ended",
        "end_reason",
        "commands_count",
        "live_view_link",
    ]
    list_filter = [LiveSessionFilter, "state", "end_reason", "read_only", "gateway"]
    list_select_related = ["account__resource", "gateway"]
    search_fields = ["username", "user_name", "client_address"]
    date_hierarchy = "started_at"
    exclude = ["verifiers"]
    inlines = [SessionCommandInline, HandshakeCommandInline]
    actions = [kill_sessions]
    change_form_template = "admin/access/session/change_form.html"

    def has_kill_permission(self, request, obj=None):
        return may(request, KILL_PERMISSION)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/kill/", view(self.kill_view), name="access_session_kill"),
            path("<path:object_id>/live/", view(self.live_view), name="access_session_live"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        context = {**(extra_context or {}), "can_kill": self.has_kill_permission(request)}
        return super().change_view(request, object_id, form_url, context)

    @admin.display(description="started (UTC)", ordering="started_at")
    def started(self, obj):
        return _when(obj.started_at)

    @admin.display(description="expires (UTC)", ordering="expires_at")
    def expires(self, obj):
        return _when(obj.expires_at)

    @admin.display(description="ended (UTC)", ordering="ended_at")
    def ended(self, obj):
        return _when(obj.ended_at)

    @admin.display(description="live view")
    def live_view_link(self, obj):
        return format_html('<a href="{}">watch</a>', reverse("admin:access_session_live", args=[obj.pk]))

    def kill_view(self, request, object_id):
        session = self.get_object(request, object_id)
        if session is None:
            raise Http404
        if request.method != "POST" or not self.has_kill_permission(request, session):
            raise PermissionDenied
        if session.state == SessionState.OPEN:
            session_services.session_end(session=session, reason=SessionEndReason.KILLED, actor=request.user)
            self.message_user(request, f"Killed session {session.username}.")
        else:
            self.message_user(request, f"Session {session.username} had already ended.", messages.WARNING)
        return redirect("admin:access_session_change", session.pk)

    def live_view(self, request, object_id):
        session = self.get_object(request, object_id)
        if session is None:
            raise Http404
        if not self.has_view_permission(request, session):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Live: {session.username}",
            "session_obj": session,
            "ws_path": f"/ws/sessions/{session.public_id}/",
            "can_kill": session.state == SessionState.OPEN and self.has_kill_permission(request, session),
        }
        return TemplateResponse(request, "admin/access/session/live.html", context)


class ChatterFilter(admin.SimpleListFilter):
    """The person's own commands, or the drivers' handshake chatter."""

    title = "who sent it"
    parameter_name = "sent_by"

    def lookups(self, request, model_admin):
        return [("person", "The person"), ("driver", "Driver or shell handshake")]

    def queryset(self, request, queryset):
        if self.value() == "person":
            return queryset.exclude(chatter_q())
        if self.value() == "driver":
            return queryset.filter(chatter_q())
        return queryset


class SessionCommandAdmin(CommandColumns, RecordAdmin):
    list_display = ["when", "session", "command", "namespace", "outcome", "n", "latency", "summary_text"]
    list_filter = [ChatterFilter, "command", "ok", "refused"]
    search_fields = ["session__username", "database", "collection", "command"]
    date_hierarchy = "at"
    list_select_related = ["session"]
    show_full_result_count = False
