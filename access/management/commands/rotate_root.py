"""`manage.py rotate_root RESOURCE`: give a resource's admin account a new, verified password."""

from django.core.management.base import BaseCommand, CommandError

from access.models import Resource
from access.services.root_rotation import RootRotationError, resource_rotate_root


class Command(BaseCommand):
    help = "Change the admin password of RESOURCE on the server, verify it by logging in, then store it."

    def add_arguments(self, parser):
        parser.add_argument("resource", help="The resource's name.")

    def handle(self, *args, resource, **options):
        target = Resource.objects.filter(name=resource).first()
        if target is None:
            raise CommandError(f"No resource named {resource!r}.")
        try:
            resource_rotate_root(resource=target, actor="manage.py")
        except RootRotationError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Rotated and verified the admin password of {target.name} ({target.admin_username}).")
