"""Single sign-on (OpenID Connect): who a person is at the identity provider, which of its groups become Django
groups, and the second factor the identity provider vouched for.

- `SsoIdentity` links a Django user to one account at the identity provider by the pair the provider guarantees
  stable and unique (issuer, subject), never by an email address or a user name, which can change or be reused.
- `SsoGroupMapping` is the table the security team edits: a value of the groups claim and the Django group it
  stands for. Groups named by some mapping are managed by the identity provider (added and removed at each
  sign-in); a group no mapping names is left alone.
- `IdpMfaDevice` is how a session the identity provider signed in with a second factor counts as verified for
  django-otp (`request.user.is_verified()`), the one check every portal page, the admin and the API make. It accepts
  no code, never appears among a person's devices, and while `PAM_OIDC_TRUST_IDP_MFA` is off it is not found at
  all, so turning the trust off un-verifies the sessions it verified at their next request.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django_otp.models import Device, DeviceManager


class SsoIdentity(models.Model):
    """One person's account at the identity provider (issuer + subject), and what their last sign-in said."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identity")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)
    last_claim_groups = models.JSONField(
        default=list, blank=True, help_text="The groups claim of the last sign-in, as the identity provider sent it."
    )

    class Meta:
        verbose_name = "single sign-on identity"
        verbose_name_plural = "single sign-on identities"
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="sso_identity_issuer_subject")]

    def __str__(self) -> str:
        return f"{self.user} at {self.issuer}"


class SsoGroupMapping(models.Model):
    """A value of the identity provider's groups claim and the Django group (and so the policies) it grants."""

    claim_value = models.CharField(
        max_length=255, help_text="The group as the identity provider names it in the groups claim (exact match)."
    )
    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="sso_mappings")
    description = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["claim_value", "group__name"]
        verbose_name = "single sign-on group mapping"
        constraints = [models.UniqueConstraint(fields=["claim_value", "group"], name="sso_mapping_claim_group")]

    def __str__(self) -> str:
        return f"{self.claim_value} → {self.group}"


class IdpMfaDeviceManager(DeviceManager):
    """Finds nothing unless the identity provider's second factor is trusted, and lists no device to pick."""

    def get_queryset(self):
        queryset = super().get_queryset()
        return queryset if settings.PAM_OIDC_TRUST_IDP_MFA else queryset.none()

    def devices_for_user(self, user, confirmed=None):
        # Not a device a person enters codes on: the admin's login form must never offer it.
        return self.get_queryset().none()


class IdpMfaDevice(Device):
    """The identity provider's assertion of a second factor (amr/acr), standing in for a device in django-otp."""

    objects = IdpMfaDeviceManager()

    class Meta:
        verbose_name = "second factor asserted by the identity provider"

    def verify_token(self, token) -> bool:
        return False
