"""Websocket routes; the live session streams register here."""

websocket_urlpatterns: list = []
