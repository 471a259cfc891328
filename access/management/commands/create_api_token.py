"""`manage.py create_api_token USERNAME`: print a new API token once (only its digest is stored).

It expires after `--days` (default 90, at most PAM_API_TOKEN_MAX_DAYS), like the tokens made in the portal.
"""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from access.services.tokens import api_token_create


class Command(BaseCommand):
    help = "Create an API token for a user; the token is printed once and cannot be shown again."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="What the token is for.")
        parser.add_argument("--days", type=int, default=None, help="Days until it expires (default 90).")

    def handle(self, *args, username, name, days=None, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        lifetime = timedelta(days=days) if days is not None else None
        try:
            _token, raw = api_token_create(user=user, name=name, actor="manage.py", lifetime=lifetime)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(raw)
