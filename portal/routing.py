"""Websocket routes; the live session streams register here."""

from django.urls import path

from access.consumers import SessionEventsConsumer

websocket_urlpatterns: list = [
    path("ws/sessions/<uuid:public_id>/", SessionEventsConsumer.as_asgi(), name="ws-session-events"),
]
