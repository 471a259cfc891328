"""`manage.py setup_schedules`: create the django-q2 schedules (lease sweeper, user reconciler); safe to rerun."""

from django.core.management.base import BaseCommand

from access.services.schedules import schedules_setup


class Command(BaseCommand):
    help = "Create or update the django-q2 schedules the portal needs (idempotent). Run it after migrate."

    def handle(self, *args, **options):
        for name, created in schedules_setup(actor="manage.py"):
            self.stdout.write(f"{'created' if created else 'ok'}: {name}")
