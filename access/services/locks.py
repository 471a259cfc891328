"""Acquire, renew and release named background locks (`BackgroundLock`) with conditional UPDATEs."""

from __future__ import annotations

from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from access.models import BackgroundLock


def background_lock_acquire(*, name: str, holder: str, ttl: timedelta) -> bool:
    """Take `name` for `holder` until now + `ttl` if it is free, expired or already ours; True when we hold it.

    Not audited: locks are bookkeeping of the workers, not a change anyone made.
    """
    now = timezone.now()
    taken = BackgroundLock.objects.filter(Q(name=name) & (Q(expires_at__lte=now) | Q(holder=holder))).update(
        holder=holder, acquired_at=now, expires_at=now + ttl
    )
    if taken:
        return True
    try:
        with transaction.atomic():
            BackgroundLock.objects.create(name=name, holder=holder, acquired_at=now, expires_at=now + ttl)
    except IntegrityError:
        return False
    return True


def background_lock_renew(*, name: str, holder: str, ttl: timedelta) -> bool:
    """Extend our hold on `name`; False when it is no longer ours (it expired and someone else took it)."""
    now = timezone.now()
    return bool(BackgroundLock.objects.filter(name=name, holder=holder).update(expires_at=now + ttl))


def background_lock_release(*, name: str, holder: str) -> None:
    """Let `name` go at once if we hold it."""
    BackgroundLock.objects.filter(name=name, holder=holder).update(holder="", expires_at=timezone.now())
