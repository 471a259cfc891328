"""App configs for the portal project: the OTP-protected admin site is the default admin site."""

from pathlib import Path

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django_otp.plugins.otp_email.apps import DefaultConfig as EmailConfig
from django_otp.plugins.otp_static.apps import DefaultConfig as StaticConfig
from django_otp.plugins.otp_totp.apps import DefaultConfig as TotpConfig


class PamAdminConfig(admin_apps.AdminConfig):
    """Makes `admin.site` the OTP-protected site, so `@admin.register` uses it everywhere."""

    default = False
    default_site = "portal.admin_site.PamAdminSite"


class PortalConfig(AppConfig):
    """The requester-facing portal: pages and forms for engineers."""

    default = True
    name = "portal"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        if settings.PAM_EMBEDDED:
            # The embedded defaults keep their SQLite database and static files under VAR_DIR: make it on start-up
            # (never at settings import). Production's directories are made by its installer and collectstatic.
            Path(settings.VAR_DIR).mkdir(parents=True, exist_ok=True)
            Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)


# The one-time-code plugins read as what they are on admin pages (their own verbose names are "OTP_TOTP", ...).
class OtpTotpConfig(TotpConfig):
    default = False
    verbose_name = "Authenticator apps (TOTP)"


class OtpStaticConfig(StaticConfig):
    default = False
    verbose_name = "Backup codes"


class OtpEmailConfig(EmailConfig):
    default = False
    verbose_name = "Email sign-in codes"
