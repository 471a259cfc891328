"""What every page template may need to know about signing in: whether single sign-on is on, and whether it is the
only way in (the portal's and the admin's login pages then lead with the SSO button)."""

from __future__ import annotations

from django.conf import settings

from access.sso_backend import sso_configured


def sso(request) -> dict:
    return {
        "sso": {
            "enabled": sso_configured(),
            "only": settings.PAM_SSO_ONLY,
            "name": settings.PAM_OIDC_NAME,
        }
    }
