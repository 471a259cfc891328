"""Accounts in the admin: stored credentials for one database user, written through the account services.

Saving calls `account_create`/`account_update` (an account needs its password; naming another database user or
resource ends the account's open sessions) and deleting `account_delete` (its open sessions end first), exactly
as the API does. The password is write-only. Actions: rotate the password, lock, unlock and drop the database
user (connector actions, in access.admin.actions).
"""

from __future__ import annotations

from access.admin.actions import ACCOUNT_ACTIONS
from access.admin.base import ServiceAdmin
from access.services import resources as resource_services


class AccountAdmin(ServiceAdmin):
    list_display = ["name", "resource", "username", "require_mfa", "last_rotated_at", "updated_at"]
    list_filter = ["resource", "require_mfa"]
    search_fields = ["name", "username", "description", "resource__name"]
    list_select_related = ["resource"]
    readonly_fields = list(resource_services.ACCOUNT_RECORDED_FIELDS)
    actions = [*ACCOUNT_ACTIONS]
    fields = [*resource_services.ACCOUNT_FIELDS, *resource_services.ACCOUNT_RECORDED_FIELDS]

    def service_create(self, request, fields):
        return resource_services.account_create(actor=request.user, **fields)

    def service_update(self, request, obj, fields):
        return resource_services.account_update(actor=request.user, account=obj, **fields)

    def service_delete(self, request, obj):
        resource_services.account_delete(actor=request.user, account=obj)
