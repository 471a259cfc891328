"""The API's documentation pages: Swagger UI and ReDoc from drf-spectacular-sidecar's static files, served with a
Content-Security-Policy that lets the browser load nothing from another host (ReDoc's footer would fetch its
maker's logo from a CDN otherwise)."""

from __future__ import annotations

from functools import wraps

from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

SAME_ORIGIN_ONLY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)


def same_origin_only(view):
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = SAME_ORIGIN_ONLY
        return response

    return wrapped


swagger_ui = same_origin_only(SpectacularSwaggerView.as_view(url_name="api-schema"))
redoc = same_origin_only(SpectacularRedocView.as_view(url_name="api-schema", template_name="api/redoc.html"))
