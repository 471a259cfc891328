"""`manage.py add_totp USERNAME`: give a user a TOTP device and print its otpauth URI and QR code."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from access.models import AuditAction
from access.otp import terminal_qr, totp_device_create
from access.services.audit import audit_record


class Command(BaseCommand):
    help = "Create a TOTP device for a user and print its otpauth URI and QR code (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="default", help="Device name (default: default).")
        parser.add_argument("--no-qr", action="store_true", help="Print the URI only.")

    def handle(self, *args, username, name, no_qr, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        device = totp_device_create(user=user, name=name)
        audit_record(action=AuditAction.OTP_DEVICE_CREATE, actor="manage.py", target=user, data={"device": name})
        self.stdout.write(f"TOTP device {name!r} created for {username}. Scan this in an authenticator app:")
        if not no_qr:
            self.stdout.write(terminal_qr(device.config_url))
        self.stdout.write(device.config_url)
