"""The access domain: resources, accounts, roles, leases, policies, sessions and the audit trail."""

from django.apps import AppConfig


class AccessConfig(AppConfig):
    name = "access"
    verbose_name = "Access"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from access import receivers

        receivers.connect()
