"""Sinks and notification targets in the admin: configured through their services, watched for lag and errors.

A sink's page lists each stream's lag (records behind), last delivered id, last error and whether it is stuck; the
same status feeds the alert line on the admin index (access/templatetags/pam_admin.py) and the metrics. Secrets
(the HEC token, HMAC keys, chat webhook URLs) are write-only inputs: blank keeps the stored value. Notifications
sent are records: read-only, with their state and last error.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from access.admin.base import RecordAdmin, ServiceAdmin, may
from access.models.notifications import NotificationEvent, all_notification_events
from access.models.sinks import SinkStream
from access.selectors.sinks import sink_statuses
from access.services import notifications as notification_services
from access.services import sinks as sink_services


def _statuses(sink) -> list:
    """The sink's stream statuses, read once per row (sinks are few; each status is a handful of indexed reads)."""
    if not hasattr(sink, "_pam_statuses"):
        sink._pam_statuses = sink_statuses(sinks=[sink])
    return sink._pam_statuses


class SinkAdmin(ServiceAdmin):
    list_display = ["name", "kind", "enabled", "streams_sent", "lag", "last_delivered", "health"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "host", "url", "path"]
    readonly_fields = ["stream_status", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "enabled", "stream_audit", "stream_commands"]}),
        ("Syslog (TLS or RELP over TLS)", {"fields": ["syslog_protocol", "host", "port", "syslog_facility"]}),
        ("HTTP (Splunk HEC, webhook)", {"fields": ["url", "hec_token", "hec_index", "hec_sourcetype", "hmac_key"]}),
        ("TLS", {"fields": ["ca_certificate", "tls_verify"]}),
        ("JSON-lines file", {"fields": ["path"]}),
        ("Delivery", {"fields": ["batch_size", "timeout_seconds", "stream_status", "created_at", "updated_at"]}),
    ]
    change_form_template = "admin/access/sink/change_form.html"
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    @admin.display(description="streams")
    def streams_sent(self, obj):
        return ", ".join(obj.streams())

    @admin.display(description="lag (records behind)")
    def lag(self, obj):
        statuses = _statuses(obj)
        return ", ".join(f"{s.stream}: {s.lag}" for s in statuses) or "-"

    @admin.display(description="last delivered")
    def last_delivered(self, obj):
        statuses = _statuses(obj)
        return ", ".join(s.last_delivered_id or f"{s.stream}: none yet" for s in statuses) or "-"

    @admin.display(description="health")
    def health(self, obj):
        statuses = _statuses(obj)
        stuck = [s for s in statuses if s.stuck]
        failing = [s for s in statuses if s.last_error]
        if stuck:
            return format_html('<strong style="color:#ba2121">stuck</strong>: {}', stuck[0].last_error or "no progress")
        if failing:
            return format_html('<span style="color:#b36b00">retrying</span>: {}', failing[0].last_error)
        return "ok" if obj.enabled else "disabled"

    @admin.display(description="streams")
    def stream_status(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    s.stream,
                    s.position,
                    s.lag,
                    s.last_delivered_id or "-",
                    s.last_delivered_at or "-",
                    "STUCK" if s.stuck else ("retrying" if s.last_error else "ok"),
                    s.last_error or "-",
                )
                for s in _statuses(obj)
            ),
        )
        return format_html(
            "<table><thead><tr><th>stream</th><th>position</th><th>lag</th><th>last delivered id</th>"
            "<th>at</th><th>state</th><th>last error</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/rewind/", view(self.rewind_view), name="access_sink_rewind"),
            *super().get_urls(),
        ]

    def rewind_view(self, request, object_id):
        """Move one stream's cursor (POST stream, position): resend from there, or skip a backlog."""
        sink = self.get_object(request, object_id)
        if sink is None or request.method != "POST" or not may(request, "access.change_sink"):
            raise PermissionDenied
        try:
            stream = SinkStream(request.POST.get("stream", ""))
            position = int(request.POST.get("position", ""))
            sink_services.sink_rewind(actor=request.user, sink=sink, stream=stream, position=position)
        except (ValueError, ValidationError) as exc:
            self.message_user(request, f"Not moved: {exc}", messages.ERROR)
        else:
            self.message_user(request, f"{stream.label} of {sink} will continue after position {position}.")
        return redirect("admin:access_sink_change", sink.pk)

    def service_create(self, request, fields):
        return sink_services.sink_create(actor=request.user, **fields)

    def service_update(self, request, obj, fields):
        return sink_services.sink_update(actor=request.user, sink=obj, **fields)

    def service_delete(self, request, obj):
        sink_services.sink_delete(actor=request.user, sink=obj)


class NotificationTargetForm(forms.ModelForm):
    events = forms.MultipleChoiceField(
        choices=NotificationEvent.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=all_notification_events,
        help_text="Which events are posted.",
    )


class NotificationTargetAdmin(ServiceAdmin):
    form = NotificationTargetForm
    list_display = ["name", "kind", "scope", "event_list", "enabled", "last_sent"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name"]
    fields = ["name", "kind", "webhook_url", "hmac_key", "events", "policy", "resource", "enabled"]

    @admin.display(description="events")
    def event_list(self, obj):
        labels = dict(NotificationEvent.choices)
        return ", ".join(labels.get(event, event) for event in obj.events or [])

    @admin.display(description="last sent")
    def last_sent(self, obj):
        last = obj.notifications.order_by("-created_at").first()
        if last is None:
            return "-"
        url = reverse("admin:access_notification_change", args=[last.pk])
        return format_html('<a href="{}">{}</a> ({})', url, last.get_state_display(), last.created_at)

    def service_create(self, request, fields):
        return notification_services.notification_target_create(actor=request.user, **fields)

    def service_update(self, request, obj, fields):
        return notification_services.notification_target_update(actor=request.user, target=obj, **fields)

    def service_delete(self, request, obj):
        notification_services.notification_target_delete(actor=request.user, target=obj)


class NotificationAdmin(RecordAdmin):
    list_display = ["created_at", "event", "title", "target", "state", "attempts", "last_error", "sent_at"]
    list_filter = ["state", "event", "target"]
    search_fields = ["title"]
    date_hierarchy = "created_at"
    list_select_related = ["target"]
