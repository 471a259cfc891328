"""`manage.py reconcile_users [--dry-run] [--resource NAME]`: drop tagged users that no live lease explains."""

from django.core.management.base import BaseCommand, CommandError

from access.models import Resource
from access.services.reconcile import users_reconcile


class Command(BaseCommand):
    help = "Find database users this portal created that no live lease explains, and drop them (audited)."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="List the orphans without dropping them.")
        parser.add_argument("--resource", help="Only this resource (by name).")

    def handle(self, *args, dry_run=False, resource=None, **options):
        target = None
        if resource:
            target = Resource.objects.filter(name=resource).first()
            if target is None:
                raise CommandError(f"No resource named {resource!r}.")
        report = users_reconcile(resource=target, dry_run=dry_run, actor="manage.py")
        verb = "would drop" if dry_run else "dropped"
        for orphan in report.found if dry_run else report.dropped:
            self.stdout.write(f"{verb}: {orphan.resource} {orphan.db}.{orphan.username} (lease {orphan.lease_id})")
        for name, error in report.errors.items():
            self.stderr.write(f"{name}: {error}")
        self.stdout.write(f"{len(report.found)} orphaned user(s) found, {len(report.dropped)} dropped.")
        if report.errors:
            raise CommandError(f"{len(report.errors)} resource(s) could not be reconciled.")
