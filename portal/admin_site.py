"""The admin site for security teams: every page requires a verified OTP device."""

from django_otp import devices_for_user
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite


class SingleDeviceOTPAdminAuthenticationForm(OTPAdminAuthenticationForm):
    """The OTP admin login, where a user with a single device need not pick it from a list first.

    django-otp asks for an explicit device so that a wrong code is not counted against every device
    the user has; with one device there is nothing to choose, so it is chosen for them.
    """

    def _chosen_device(self, user):
        device = super()._chosen_device(user)
        if device is None and not self.cleaned_data.get("otp_device"):
            devices = list(devices_for_user(user, confirmed=True, for_verify=True))
            if len(devices) == 1:
                device = devices[0]
        return device


class PamAdminSite(OTPAdminSite):
    """Django admin behind TOTP: staff log in with password and a current code from their device."""

    site_header = "MongoDB access portal — security admin"
    site_title = "MongoDB PAM admin"
    index_title = "Resources, access and audit"
    login_form = SingleDeviceOTPAdminAuthenticationForm
