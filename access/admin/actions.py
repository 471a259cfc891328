"""Connector actions in the admin: the action records (read-only, with a "Roll back" button), a form to grant or
revoke a role or create a read-only user, and admin actions on accounts (rotate password, lock, unlock, drop
user) and resources (verify connection).

Everything here validates input and calls `access.services.actions`; messages name what happened and never
show a password. The account actions are offered on the account list (access.admin.accounts), the connection
check on the resource list (access.admin.resources). Action records are read-only: no add, no save, no delete.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import redirect
from django.template.defaultfilters import pluralize
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from access.admin.base import RecordAdmin, may
from access.models import ConnectorAction, Resource
from access.models.actions import ActionKind, ActionState
from access.services.actions import action_rollback, action_run, resource_verify_connection
from access.validators import parse_roles
from connectors import ConnectorError

RUN_PERMISSION = "access.add_connectoraction"
FORM_KINDS = [
    (ActionKind.GRANT_ROLE, ActionKind.GRANT_ROLE.label),
    (ActionKind.REVOKE_ROLE, ActionKind.REVOKE_ROLE.label),
    (ActionKind.CREATE_READ_ONLY_USER, ActionKind.CREATE_READ_ONLY_USER.label),
]


def _may_run(request) -> bool:
    return may(request, RUN_PERMISSION)


def _action_link(action: ConnectorAction) -> str:
    return format_html(
        '<a href="{}">{}</a>', reverse("admin:access_connectoraction_change", args=[action.pk]), f"action #{action.pk}"
    )


def _report(modeladmin, request, action: ConnectorAction, done: str) -> None:
    """One message per action: what was done, or the connector's error, with a link to the record."""
    if action.state == ActionState.FAILED:
        modeladmin.message_user(
            request,
            format_html(
                "{} failed for {}: {} ({})",
                action.get_kind_display(),
                action.username,
                action.error,
                _action_link(action),
            ),
            messages.ERROR,
        )
    else:
        modeladmin.message_user(request, format_html("{} ({})", done, _action_link(action)), messages.SUCCESS)


# -- admin actions on accounts and resources --------------------------------------------------------------
def _confirm(modeladmin, request, queryset, *, title: str, warning: str):
    """An intermediate page asking to confirm an action that cannot be undone; None once confirmed."""
    if not _may_run(request):
        raise PermissionDenied
    if request.POST.get("confirmed") == "yes":
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "warning": warning,
        "objects": queryset,
        "opts": modeladmin.model._meta,
        "action_name": request.POST.get("action"),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/access/connector_action_confirm.html", context)


def _run_on_accounts(modeladmin, request, queryset, kind: str, describe, *, confirm: tuple[str, str] | None = None):
    """Run `kind` on each selected account's database user; `confirm` (title, warning): ask first (_confirm)."""
    if confirm is not None:
        title, warning = confirm
        page = _confirm(modeladmin, request, queryset, title=title, warning=warning)
        if page is not None:
            return page
    if not _may_run(request):
        raise PermissionDenied
    for account in queryset.select_related("resource"):
        try:
            action = action_run(
                resource=account.resource,
                kind=kind,
                db=account.resource.auth_database or "admin",
                username=account.username,
                actor=request.user,
            )
        except ValidationError as exc:
            modeladmin.message_user(request, f"{account}: {' '.join(exc.messages)}", messages.ERROR)
            continue
        _report(modeladmin, request, action, describe(account, action))
    return None


def _connections(action) -> str:
    """`1 connection` / `3 connections`: how many live connections an action ended."""
    count = action.result.get("connections_ended", 0)
    return f"{count} connection{pluralize(count)}"


@admin.action(description="Rotate the database password (ends live connections)")
def rotate_account_password(modeladmin, request, queryset):
    return _run_on_accounts(
        modeladmin,
        request,
        queryset,
        ActionKind.ROTATE_PASSWORD,
        lambda account, action: f"Rotated the password of {account.username}; {_connections(action)} ended",
        confirm=(
            "Rotate database passwords?",
            "Each user gets a new random password, stored in its account; the old one is not kept, so this "
            "cannot be rolled back. Live connections of these users are ended.",
        ),
    )


@admin.action(description="Lock the database user (ends live connections)")
def lock_account_user(modeladmin, request, queryset):
    _run_on_accounts(
        modeladmin,
        request,
        queryset,
        ActionKind.LOCK_USER,
        lambda account, action: f"Locked {account.username}; {_connections(action)} ended",
    )


@admin.action(description="Unlock the database user")
def unlock_account_user(modeladmin, request, queryset):
    _run_on_accounts(
        modeladmin, request, queryset, ActionKind.UNLOCK_USER, lambda account, action: f"Unlocked {account.username}"
    )


@admin.action(description="Drop the database user (keeps the account record)")
def drop_account_user(modeladmin, request, queryset):
    return _run_on_accounts(
        modeladmin,
        request,
        queryset,
        ActionKind.DROP_USER,
        lambda account, action: (
            f"Dropped {account.username}" if action.result.get("dropped") else f"{account.username} was already gone"
        ),
        confirm=(
            "Drop database users?",
            "Each database user is dropped from its server and its live connections are ended. Its definition "
            "is kept in the action record, but a drop cannot be rolled back.",
        ),
    )


ACCOUNT_ACTIONS = [rotate_account_password, lock_account_user, unlock_account_user, drop_account_user]


@admin.action(description="Verify connection (admin login and user-management privilege)")
def verify_resource_connection(modeladmin, request, queryset):
    for resource in queryset:
        try:
            summary = resource_verify_connection(resource=resource, actor=request.user)
        except ConnectorError as exc:
            modeladmin.message_user(request, f"{resource.name}: {exc.kind_title} problem: {exc}", messages.ERROR)
            continue
        modeladmin.message_user(
            request,
            f"{resource.name}: connected to {summary['server']} {summary['version']} ({summary['topology']}) "
            f"as {summary['user']}, who may manage users.",
            messages.SUCCESS,
        )


# -- the run form --------------------------------------------------------------------------------------
class ConnectorActionRunForm(forms.Form):
    """Grant or revoke roles, or create a read-only user: what the admin form asks for."""

    resource = forms.ModelChoiceField(queryset=Resource.objects.mongodb())
    kind = forms.ChoiceField(label="action", choices=FORM_KINDS)
    db = forms.CharField(
        label="database",
        max_length=64,
        initial="admin",
        help_text="The user's database; for a read-only user, the database it may read "
        "(the user itself is created in the resource's auth database).",
    )
    username = forms.CharField(max_length=255)
    roles = forms.CharField(
        required=False,
        help_text="For grant/revoke: role names separated by commas (readWrite, read) or JSON such as "
        '[{"role": "read", "db": "reports"}].',
    )
    account_name = forms.SlugField(
        required=False, max_length=64, help_text="For a read-only user: the name of the account that stores it."
    )

    def clean(self):
        data = super().clean()
        kind = data.get("kind")
        text = (data.get("roles") or "").strip()
        if kind in (ActionKind.GRANT_ROLE, ActionKind.REVOKE_ROLE):
            if not text:
                raise ValidationError({"roles": "Name at least one role."})
            roles = parse_roles(text) if text.startswith("[") else [r.strip() for r in text.split(",") if r.strip()]
            data["params"] = {"roles": roles}
        elif kind == ActionKind.CREATE_READ_ONLY_USER:
            data["params"] = {"account_name": data["account_name"]} if data.get("account_name") else {}
        return data


# -- the records -------------------------------------------------------------------------------------------
class ConnectorActionAdmin(RecordAdmin):
    """Connector actions, read-only, with "Roll back" on the record and "Run an action" on the list."""

    list_display = ["id", "created_at", "kind", "resource", "username", "db", "state", "actor_name", "rolled_back_at"]
    list_filter = ["kind", "state", "resource"]
    search_fields = ["username", "db", "actor_name", "resource__name", "error"]
    date_hierarchy = "created_at"
    list_select_related = ["resource"]
    readonly_fields = [f.name for f in ConnectorAction._meta.fields]
    change_form_template = "admin/access/connectoraction/change_form.html"
    change_list_template = "admin/access/connectoraction/change_list.html"

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("run/", view(self.run_view), name="access_connectoraction_run"),
            path("<path:object_id>/rollback/", view(self.rollback_view), name="access_connectoraction_rollback"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {**(extra_context or {}), "may_run": _may_run(request)})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), "may_run": _may_run(request)}
        )

    def rollback_view(self, request, object_id):
        action = self.get_object(request, object_id)
        if action is None:
            raise Http404
        if request.method != "POST" or not _may_run(request):
            raise PermissionDenied
        try:
            action = action_rollback(action=action, actor=request.user)
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
            return redirect("admin:access_connectoraction_change", action.pk)
        if action.state == ActionState.ROLLED_BACK:
            self.message_user(request, f"Rolled back: {action}.", messages.SUCCESS)
        else:
            self.message_user(request, f"Rollback failed: {action.error}", messages.ERROR)
        return redirect("admin:access_connectoraction_change", action.pk)

    def run_view(self, request):
        if not _may_run(request):
            raise PermissionDenied
        form = ConnectorActionRunForm(request.POST or None, initial=request.GET.dict() or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                action = action_run(
                    resource=data["resource"],
                    kind=data["kind"],
                    db=data["db"],
                    username=data["username"],
                    params=data.get("params") or {},
                    actor=request.user,
                )
            except ValidationError as exc:
                for field, errors in getattr(exc, "message_dict", {"__all__": exc.messages}).items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                done = f"{action.get_kind_display()}: {action.username}"
                _report(self, request, action, f"Done: {done}")
                return redirect("admin:access_connectoraction_change", action.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Run a connector action",
            "form": form,
        }
        return TemplateResponse(request, "admin/access/connectoraction/run.html", context)
