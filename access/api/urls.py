"""Routes of /api/v1/."""

from django.urls import include, re_path
from rest_framework.routers import SimpleRouter

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

urlpatterns = [*router.urls, *session_urlpatterns, re_path(r"^", include("access.api.vault_urls"))]
