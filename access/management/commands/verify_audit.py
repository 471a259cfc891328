"""`manage.py verify_audit`: exit 0 when the audit hash chain holds, else name the first bad event."""

import sys

from django.core.management.base import BaseCommand

from access.selectors import audit_chain_verify


class Command(BaseCommand):
    help = "Check the audit trail's hash chain; exit 1 naming the first altered, inserted or removed event."

    def handle(self, *args, **options):
        report = audit_chain_verify()
        if report.ok:
            self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {report.checked} events checked."))
            return
        self.stderr.write(self.style.ERROR(f"Audit chain broken: {report.problem}."))
        self.stderr.write(f"{report.checked} events before it were intact.")
        sys.exit(1)
