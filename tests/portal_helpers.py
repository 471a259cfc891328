"""Helpers for the portal tests: a browser client past the second factor, approvers, and policies."""

from __future__ import annotations

import time

from django.contrib.auth.models import Group, Permission
from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY

from access.otp import totp_device_create
from portal.guards import MFA_VERIFIED_AT


def verified_client(user, *, verified_at: float | None = None) -> Client:
    """A test client signed in as `user` with a confirmed TOTP device verified `verified_at` (default now)."""
    device = totp_device_create(user=user)
    client = Client()
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session[MFA_VERIFIED_AT] = time.time() if verified_at is None else verified_at
    session.save()
    client.device = device
    return client


def make_approver(user, *, through_group: bool = True):
    """Give `user` the `access.approve_accessrequest` permission (through an "approvers" group by default)."""
    permission = Permission.objects.get(codename="approve_accessrequest", content_type__app_label="access")
    if through_group:
        group, _ = Group.objects.get_or_create(name="approvers")
        group.permissions.add(permission)
        user.groups.add(group)
    else:
        user.user_permissions.add(permission)
    return user
