"""Routes of /api/v1/."""

from django.urls import include, re_path
from rest_framework.routers import SimpleRouter

from access.api.actions import ConnectorActionDetailApi, ConnectorActionListCreateApi, ConnectorActionRollbackApi
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

urlpatterns = [
    *router.urls,
    *session_urlpatterns,
    *connector_action_urlpatterns,
    re_path(r"^", include("access.api.vault_urls")),
]
