"""Reading API tokens: a person's own, newest first (their digests never leave the database)."""

from __future__ import annotations

from access.models import ApiToken


def api_tokens_of(user):
    """The tokens `user` owns, revoked and expired ones included (the portal's token page lists them)."""
    return ApiToken.objects.filter(user=user).order_by("-created_at")
