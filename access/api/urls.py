"""Routes of /api/v1/."""

from django.urls import include, re_path
from rest_framework.routers import SimpleRouter

from access.api.actions import ConnectorActionDetailApi, ConnectorActionListCreateApi, ConnectorActionRollbackApi
from access.api.me import CliLogoutApi, MeApi, MfaVerifyApi, MyLeasesApi
from access.api.requests import (
    CatalogueApi,
    RequestApproveApi,
    RequestCancelApi,
    RequestDenyApi,
    RequestDetailApi,
    RequestListCreateApi,
)
from access.api.scoped import (
    AccessPolicyViewSet,
    EnvelopeChoicesApi,
    EnvelopeListApi,
    PermissionLevelViewSet,
    ScopedCredentialsApi,
    ScopedGrantRetryApi,
    ScopedRequestApproveApi,
    ScopedRequestCancelApi,
    ScopedRequestDenyApi,
    ScopedRequestDetailApi,
    ScopedRequestListCreateApi,
    ScopedSessionOpenApi,
)
from access.api.sessions import SessionCommandsApi, SessionDetailApi, SessionEndApi, SessionListCreateApi
from access.api.views import AccountViewSet, ResourceViewSet


class OptionalSlashRouter(SimpleRouter):
    """Routes that answer with and without a trailing slash (Vault clients send none)."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("resources", ResourceViewSet, basename="resource")
router.register("accounts", AccountViewSet, basename="account")
router.register("policies", AccessPolicyViewSet, basename="policy")
router.register("permission-levels", PermissionLevelViewSet, basename="permission-level")

_SESSION = r"^sessions/(?P<public_id>[0-9a-fA-F-]{36})"
session_urlpatterns = [
    re_path(r"^sessions/?$", SessionListCreateApi.as_view(), name="session-list"),
    re_path(_SESSION + r"/?$", SessionDetailApi.as_view(), name="session-detail"),
    re_path(_SESSION + r"/end/?$", SessionEndApi.as_view(), name="session-end"),
    re_path(_SESSION + r"/commands/?$", SessionCommandsApi.as_view(), name="session-commands"),
]

_ACTIONS = r"^mongodb/(?P<resource>[-a-zA-Z0-9_]+)/actions"
connector_action_urlpatterns = [
    re_path(_ACTIONS + r"/?$", ConnectorActionListCreateApi.as_view(), name="connector-action-list"),
    re_path(_ACTIONS + r"/(?P<pk>[0-9]+)/?$", ConnectorActionDetailApi.as_view(), name="connector-action-detail"),
    re_path(
        _ACTIONS + r"/(?P<pk>[0-9]+)/rollback/?$",
        ConnectorActionRollbackApi.as_view(),
        name="connector-action-rollback",
    ),
]

_SCOPED = r"^scoped/requests/(?P<pk>[0-9]+)"
scoped_urlpatterns = [
    re_path(r"^scoped/envelopes/?$", EnvelopeListApi.as_view(), name="scoped-envelope-list"),
    re_path(
        r"^scoped/envelopes/(?P<policy>[0-9]+)/choices/?$", EnvelopeChoicesApi.as_view(), name="scoped-envelope-choices"
    ),
    re_path(r"^scoped/requests/?$", ScopedRequestListCreateApi.as_view(), name="scoped-request-list"),
    re_path(_SCOPED + r"/?$", ScopedRequestDetailApi.as_view(), name="scoped-request-detail"),
    re_path(_SCOPED + r"/approve/?$", ScopedRequestApproveApi.as_view(), name="scoped-request-approve"),
    re_path(_SCOPED + r"/deny/?$", ScopedRequestDenyApi.as_view(), name="scoped-request-deny"),
    re_path(_SCOPED + r"/cancel/?$", ScopedRequestCancelApi.as_view(), name="scoped-request-cancel"),
    re_path(_SCOPED + r"/retry/?$", ScopedGrantRetryApi.as_view(), name="scoped-request-retry"),
    re_path(_SCOPED + r"/credentials/?$", ScopedCredentialsApi.as_view(), name="scoped-request-credentials"),
    re_path(_SCOPED + r"/session/?$", ScopedSessionOpenApi.as_view(), name="scoped-request-session"),
]

_REQUEST = r"^requests/(?P<pk>[0-9]+)"
requester_urlpatterns = [
    re_path(r"^me/?$", MeApi.as_view(), name="me"),
    re_path(r"^me/leases/?$", MyLeasesApi.as_view(), name="my-leases"),
    re_path(r"^mfa/verify/?$", MfaVerifyApi.as_view(), name="mfa-verify"),
    re_path(r"^cli/logout/?$", CliLogoutApi.as_view(), name="cli-logout"),
    re_path(r"^catalogue/?$", CatalogueApi.as_view(), name="catalogue"),
    re_path(r"^requests/?$", RequestListCreateApi.as_view(), name="request-list"),
    re_path(_REQUEST + r"/?$", RequestDetailApi.as_view(), name="request-detail"),
    re_path(_REQUEST + r"/approve/?$", RequestApproveApi.as_view(), name="request-approve"),
    re_path(_REQUEST + r"/deny/?$", RequestDenyApi.as_view(), name="request-deny"),
    re_path(_REQUEST + r"/cancel/?$", RequestCancelApi.as_view(), name="request-cancel"),
]

urlpatterns = [
    *router.urls,
    *scoped_urlpatterns,
    *requester_urlpatterns,
    *session_urlpatterns,
    *connector_action_urlpatterns,
    re_path(r"^", include("access.api.vault_urls")),
]
