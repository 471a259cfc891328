"""The "SSO only" check of the password forms (the portal's login and the admin's), before any password is tried.

With PAM_SSO_ONLY on, a password sign-in is refused for every name but the break-glass list, with a message that
says where to go instead; the refusal is audited and, being no wrong password, does not count towards a lockout.
(access.sso_backend.PasswordBackend refuses the same names for any other door that checks a password.)
"""

from __future__ import annotations

from django import forms

from access.services import auth_events
from access.sso_backend import password_sign_in_refused

SSO_ONLY_MESSAGE = "Password sign-in is turned off here: use the single sign-on button."


class SsoOnlyPasswordCheck:
    """Mixin for an AuthenticationForm: refuse a password sign-in that SSO only does not allow."""

    def clean(self):
        username = self.cleaned_data.get("username")
        if username and password_sign_in_refused(username):
            auth_events.auth_login_failed(
                username=username,
                via=auth_events.request_via(self.request),
                reason="password sign-in is off (SSO only)",
            )
            raise forms.ValidationError(SSO_ONLY_MESSAGE, code="sso_only")
        return super().clean()
