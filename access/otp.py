"""TOTP devices: creating one for a user and showing its otpauth URI as a terminal QR code."""

from __future__ import annotations

import io

import qrcode
from django_otp.plugins.otp_totp.models import TOTPDevice


def totp_device_create(*, user, name: str = "default", confirmed: bool = True) -> TOTPDevice:
    """Create a TOTP device for `user` (RFC 6238, 30 s steps, 6 digits)."""
    return TOTPDevice.objects.create(user=user, name=name, confirmed=confirmed)


def terminal_qr(data: str) -> str:
    """The QR code of `data` drawn with block characters, for a terminal."""
    qr = qrcode.QRCode(border=1)
    qr.add_data(data)
    out = io.StringIO()
    qr.print_ascii(out=out, invert=True)
    return out.getvalue()
