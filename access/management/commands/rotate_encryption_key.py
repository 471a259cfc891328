"""`manage.py rotate_encryption_key`: re-encrypt every stored secret under the first configured key."""

from django.core.management.base import BaseCommand

from access.services.secrets import secrets_reencrypt


class Command(BaseCommand):
    help = (
        "Re-encrypt every secret under the first key of PAM_ENCRYPTION_KEYS. Put the new key first, keep the "
        "old ones after it, run this, then drop the old keys."
    )

    def handle(self, *args, **options):
        counts = secrets_reencrypt(actor="manage.py")
        total = 0
        for label, count in counts.items():
            self.stdout.write(f"{label}: {count} re-encrypted")
            total += count
        self.stdout.write(self.style.SUCCESS(f"{total} secrets now encrypted under the first key."))
