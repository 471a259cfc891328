"""The admin site for security teams: every page requires a verified OTP device."""

from django_otp.admin import OTPAdminSite


class PamAdminSite(OTPAdminSite):
    """Django admin behind TOTP: staff log in with password and a current code from their device."""

    site_header = "MongoDB access portal — security admin"
    site_title = "MongoDB PAM admin"
    index_title = "Resources, access and audit"
