"""What the admin's pages share: configuration is written through the services, records are only read.

- `ServiceAdmin`: the form validates (the model's own validation, which the services run again) and hands its
  fields to the entity's create, update and delete services, so a change made here is validated, audited and
  followed by the same side effects (sessions ended, ...) as the same change made through the API.
- `RecordAdmin`: what the system records (leases, sessions, their commands, audit events, connector actions,
  access requests, API tokens) is viewed, never added, changed or deleted here; the actions that act on a record
  (revoke a lease, kill a session, approve a request) call services and need a permission of their own.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import models


def _form_fields(form, names) -> dict[str, Any]:
    """The cleaned values of the named model fields of `form` (what a service takes as keyword arguments)."""
    model_fields = {field.name for field in form._meta.model._meta.concrete_fields}
    return {name: form.cleaned_data[name] for name in names if name in model_fields and name in form.cleaned_data}


class ServiceAdmin(admin.ModelAdmin):
    """A ModelAdmin whose saves and deletes call the entity's services (one door per behaviour).

    Subclasses implement `service_create`, `service_update` and `service_delete`. A new record gets every field
    of the form; a changed one gets only the fields the form saw change, read back from the database first so
    that the service (and its audit row) compares against what is stored, not against the edited form.
    """

    def service_create(self, request, fields: dict[str, Any]) -> models.Model:
        raise NotImplementedError

    def service_update(self, request, obj: models.Model, fields: dict[str, Any]) -> models.Model:
        raise NotImplementedError

    def service_delete(self, request, obj: models.Model) -> None:
        raise NotImplementedError

    def save_model(self, request, obj, form, change):
        if change:
            stored = self.model._default_manager.get(pk=obj.pk)
            saved = self.service_update(request, stored, _form_fields(form, form.changed_data))
        else:
            saved = self.service_create(request, _form_fields(form, form.fields))
        # The admin goes on with `obj` (its change message, log entry and redirect): make it the saved record.
        obj.pk = saved.pk
        obj._state.adding = False
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        self.service_delete(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.service_delete(request, obj)


class ReadOnly:
    """No add, no save, no delete in the admin: for a model admin or an inline that only shows records."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class RecordAdmin(ReadOnly, admin.ModelAdmin):
    """Records written by the system: no add, no save, no delete (nor the bulk delete action) in the admin."""


def may(request, permission: str) -> bool:
    """Whether the admin user holds `permission` (an active staff member; superusers hold every permission)."""
    user = request.user
    return user.is_active and user.is_staff and user.has_perm(permission)
