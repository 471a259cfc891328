"""`manage.py setup_schedules`: create the django-q2 schedules (lease sweeper, user reconciler); safe to rerun.

It also enqueues one sweeper run, so that a qcluster started next begins revoking expired leases at once
instead of after django-q2's first scheduler pass (30 s after start). `manage.py demo` (make run) calls it;
deployments run it after `migrate`, before starting `qcluster`.
"""

from django.core.management.base import BaseCommand

from access.services.schedules import schedules_setup
from access.tasks import sweeper_kick


class Command(BaseCommand):
    help = "Create or update the django-q2 schedules the portal needs (idempotent). Run it after migrate."

    def add_arguments(self, parser):
        parser.add_argument("--no-kick", action="store_true", help="Do not enqueue a sweeper run now.")

    def handle(self, *args, no_kick=False, **options):
        for name, created in schedules_setup(actor="manage.py"):
            self.stdout.write(f"{'created' if created else 'ok'}: {name}")
        if not no_kick:
            sweeper_kick()
            self.stdout.write("enqueued: lease sweeper run")
