"""Routes of /api/v1/."""

from rest_framework.routers import SimpleRouter

from access.api.views import AccountViewSet, ResourceViewSet


class OptionalSlashRouter(SimpleRouter):
    """Routes that answer with and without a trailing slash (Vault clients send none)."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("resources", ResourceViewSet, basename="resource")
router.register("accounts", AccountViewSet, basename="account")

urlpatterns = [*router.urls]
