"""Binds each request's client address and id to the audit context, and echoes the id in a header."""

from access import context


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request.headers.get("X-Request-ID", "")[:64] or None
        token = context.bind(ip=request.META.get("REMOTE_ADDR") or None, request_id=request_id)
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = context.current().request_id
            return response
        finally:
            context.reset(token)
