"""`manage.py create_api_token USERNAME`: print a new API token once (only its digest is stored)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from access.services.tokens import api_token_create


class Command(BaseCommand):
    help = "Create an API token for a user; the token is printed once and cannot be shown again."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="What the token is for.")

    def handle(self, *args, username, name, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        _token, raw = api_token_create(user=user, name=name, actor="manage.py")
        self.stdout.write(raw)
