"""Per-user preferences the portal needs: the second factor a user chose."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class MfaMethod(models.TextChoices):
    TOTP = "totp", "Authenticator app (TOTP)"
    EMAIL = "email", "Email code"


class UserProfile(models.Model):
    """A user's own MFA method; the organisation's enforced method (settings.PAM_MFA_METHOD) takes precedence."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="pam_profile")
    mfa_method = models.CharField(max_length=8, choices=MfaMethod.choices, blank=True)

    def __str__(self) -> str:
        return f"Profile of {self.user}"
