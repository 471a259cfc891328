"""App configs for the portal project: the OTP-protected admin site is the default admin site."""

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class PamAdminConfig(admin_apps.AdminConfig):
    """Makes `admin.site` the OTP-protected site, so `@admin.register` uses it everywhere."""

    default = False
    default_site = "portal.admin_site.PamAdminSite"


class PortalConfig(AppConfig):
    default = True
    """The requester-facing portal: pages and forms for engineers."""

    name = "portal"
    default_auto_field = "django.db.models.BigAutoField"
