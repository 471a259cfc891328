"""Routes of the Vault-shaped API under /api/v1/: mongodb/{resource}/... and sys/leases/... (slash optional)."""

from django.urls import re_path

from access.api import vault

_NAME = r"[-a-zA-Z0-9_]+"

urlpatterns = [
    re_path(
        rf"^mongodb/(?P<resource>{_NAME})/config/connection/?$",
        vault.ConnectionConfigApi.as_view(),
        name="vault-config-connection",
    ),
    re_path(
        rf"^mongodb/(?P<resource>{_NAME})/config/lease/?$", vault.LeaseConfigApi.as_view(), name="vault-config-lease"
    ),
    re_path(rf"^mongodb/(?P<resource>{_NAME})/roles/?$", vault.RoleListApi.as_view(), name="vault-roles"),
    re_path(rf"^mongodb/(?P<resource>{_NAME})/roles/(?P<name>{_NAME})/?$", vault.RoleApi.as_view(), name="vault-role"),
    re_path(
        rf"^mongodb/(?P<resource>{_NAME})/creds/(?P<role>{_NAME})/?$", vault.CredsApi.as_view(), name="vault-creds"
    ),
    re_path(r"^sys/leases/renew/?$", vault.LeaseRenewApi.as_view(), name="vault-lease-renew"),
    re_path(r"^sys/leases/renew/(?P<lease_id>.+?)/?$", vault.LeaseRenewApi.as_view(), name="vault-lease-renew-id"),
    re_path(r"^sys/leases/revoke/?$", vault.LeaseRevokeApi.as_view(), name="vault-lease-revoke"),
    re_path(r"^sys/leases/revoke/(?P<lease_id>.+?)/?$", vault.LeaseRevokeApi.as_view(), name="vault-lease-revoke-id"),
    re_path(
        r"^sys/leases/revoke-prefix/(?P<prefix>.+)$",
        vault.LeaseRevokePrefixApi.as_view(),
        name="vault-lease-revoke-prefix",
    ),
    re_path(r"^sys/leases/lookup/?$", vault.LeaseLookupApi.as_view(), name="vault-lease-lookup"),
]
