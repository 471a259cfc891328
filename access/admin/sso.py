"""Single sign-on in the admin: the group mapping the security team edits, and who signed in through SSO.

- `SsoGroupMappingAdmin`: a value of the identity provider's groups claim and the Django group it grants, written
  through the mapping services (audited). Changes apply at each person's next sign-in: a group some mapping names
  is then added or removed to match the claim, and a removal ends the sessions and leases it explained.
- `SsoIdentityAdmin`: the link between a person and their identity provider account (issuer, subject), with the
  groups their last sign-in carried; a record, read only.
"""

from __future__ import annotations

from django.contrib import admin

from access.admin.base import RecordAdmin, ServiceAdmin
from access.services import sso as sso_services


class SsoGroupMappingAdmin(ServiceAdmin):
    list_display = ["claim_value", "group", "description", "created_at"]
    list_select_related = ["group"]
    search_fields = ["claim_value", "group__name", "description"]
    list_filter = ["group"]
    fields = ["claim_value", "group", "description"]

    def service_create(self, request, fields):
        return sso_services.sso_group_mapping_create(actor=request.user, **fields)

    def service_update(self, request, obj, fields):
        return sso_services.sso_group_mapping_update(actor=request.user, mapping=obj, **fields)

    def service_delete(self, request, obj):
        sso_services.sso_group_mapping_delete(actor=request.user, mapping=obj)


class SsoIdentityAdmin(RecordAdmin):
    list_display = ["user", "issuer", "subject", "last_login_at", "claim_groups"]
    list_select_related = ["user"]
    search_fields = ["user__username", "subject"]
    fields = ["user", "issuer", "subject", "created_at", "last_login_at", "last_claim_groups"]

    @admin.display(description="groups claim at last sign-in")
    def claim_groups(self, obj) -> str:
        return ", ".join(obj.last_claim_groups or []) or "—"
