"""Second factors for the portal: which method a user must use, TOTP enrolment, backup codes and email codes.

The method follows the organisation's enforced method (`settings.PAM_MFA_METHOD`), then the user's own choice
(`UserProfile.mfa_method`), then email. Devices are django-otp's: TOTPDevice (an authenticator app), StaticDevice
(single-use backup codes, shown once) and EmailDevice (a code sent to the user's address). Each change is audited.
Wrong codes are throttled by django-otp's ThrottlingMixin (exponential back-off per device).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from datetime import datetime

import qrcode
import qrcode.image.svg
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_email.models import EmailDevice
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from access.models import AuditAction, UserProfile
from access.models.profiles import MfaMethod
from access.services.audit import audit_record

BACKUP_CODES_COUNT = 10
BACKUP_DEVICE_NAME = "backup codes"
TOTP_DEVICE_NAME = "authenticator app"


def mfa_method_for(user) -> str:
    """The method a user must use, `totp` or `email`: the organisation's, else the user's own, else email.

    A user who never chose but already has an authenticator app (e.g. set up by `make run` or an administrator)
    counts as having chosen it.
    """
    enforced = settings.PAM_MFA_METHOD.strip().lower()
    if enforced in MfaMethod.values:
        return enforced
    profile = UserProfile.objects.filter(user=user).first()
    if profile is not None and profile.mfa_method in MfaMethod.values:
        return profile.mfa_method
    if totp_device_of(user) is not None:
        return MfaMethod.TOTP
    return MfaMethod.EMAIL


def mfa_method_enforced() -> bool:
    """Whether the organisation fixes the method (then users cannot choose)."""
    return settings.PAM_MFA_METHOD.strip().lower() in MfaMethod.values


def totp_device_of(user) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("id").first()


def backup_device_of(user) -> StaticDevice | None:
    return StaticDevice.objects.filter(user=user, confirmed=True).order_by("id").first()


def backup_codes_left(user) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


@dataclass(frozen=True)
class Throttle:
    """Why a device refuses codes for now, in words."""

    message: str
    locked_until: datetime | None


def device_throttle(device) -> Throttle | None:
    """None when `device` accepts a code now; otherwise the throttle's message (django-otp's back-off)."""
    allowed, data = device.verify_is_allowed()
    if allowed:
        return None
    locked_until = (data or {}).get("locked_until")
    if locked_until:
        seconds = max(1, int((locked_until - timezone.now()).total_seconds()) + 1)
        return Throttle(f"Too many wrong codes: wait {seconds} seconds before trying again.", locked_until)
    return Throttle("Too many wrong codes: wait a little before trying again.", None)


def mfa_totp_enrolment_start(*, user) -> TOTPDevice:
    """An unconfirmed TOTP device for `user` to scan (reused while the user has not confirmed it)."""
    pending = TOTPDevice.objects.filter(user=user, confirmed=False, name=TOTP_DEVICE_NAME).order_by("-id").first()
    if pending is not None:
        return pending
    return TOTPDevice.objects.create(user=user, name=TOTP_DEVICE_NAME, confirmed=False)


def mfa_totp_enrolment_confirm(*, device: TOTPDevice, token: str) -> bool:
    """Confirm the device when `token` is its current code; replaces the user's older TOTP devices; audited."""
    if device.confirmed or not device.verify_token((token or "").strip()):
        return False
    with transaction.atomic():
        TOTPDevice.objects.filter(user=device.user).exclude(pk=device.pk).delete()
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        UserProfile.objects.update_or_create(user=device.user, defaults={"mfa_method": MfaMethod.TOTP})
        audit_record(
            action=AuditAction.MFA_TOTP_ENROL, actor=device.user, target=device.user, data={"device": device.name}
        )
    return True


def mfa_backup_codes_generate(*, user) -> list[str]:
    """Replace `user`'s backup codes with new ones and return them (to be shown once); audited."""
    with transaction.atomic():
        device, _created = StaticDevice.objects.get_or_create(
            user=user, name=BACKUP_DEVICE_NAME, defaults={"confirmed": True}
        )
        device.token_set.all().delete()
        codes = [StaticToken.random_token() for _ in range(BACKUP_CODES_COUNT)]
        StaticToken.objects.bulk_create([StaticToken(device=device, token=code) for code in codes])
        audit_record(action=AuditAction.MFA_BACKUP_CODES, actor=user, target=user, data={"count": len(codes)})
    return codes


def mfa_email_device_for(*, user) -> EmailDevice | None:
    """The user's email device (created on first use), or None when the user has no email address."""
    if not user.email:
        return None
    device = EmailDevice.objects.filter(user=user).order_by("id").first()
    if device is None:
        device = EmailDevice.objects.create(user=user, name="email", email=user.email, confirmed=True)
    return device


def mfa_method_choose(*, user, method: str) -> None:
    """Record the user's own method (ignored when the organisation enforces one); audited."""
    if method not in MfaMethod.values:
        raise ValueError(f"unknown MFA method {method!r}")
    with transaction.atomic():
        UserProfile.objects.update_or_create(user=user, defaults={"mfa_method": method})
        audit_record(action=AuditAction.MFA_METHOD, actor=user, target=user, data={"method": method})


def totp_qr_data_uri(device: TOTPDevice) -> str:
    """The device's otpauth URI as a QR code in an SVG `data:` URI, for an <img> (no markup to trust)."""
    image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    out = io.BytesIO()
    image.save(out)
    return "data:image/svg+xml;base64," + base64.b64encode(out.getvalue()).decode()


def mfa_code_verify(*, user, code: str) -> bool:
    """Whether `code` is the current code of `user`'s authenticator app or one of their backup codes.

    The API's fresh second factor (an approver's decision from the CLI, a target that requires MFA): no browser
    session is involved, so email codes are not offered. Each device throttles wrong codes (django-otp); a refused
    code is audited, a throttled device refuses without trying.
    """
    code = (code or "").strip().replace(" ", "")
    if not code:
        return False
    for device in (totp_device_of(user), backup_device_of(user)):
        if device is None or device_throttle(device) is not None:
            continue
        if device.verify_token(code):
            return True
    with transaction.atomic():
        audit_record(action=AuditAction.MFA_CODE_REFUSED, actor=user, target=user, data={"via": "api"})
    return False
