"""Named locks with an expiry, held in the database, so that one background loop runs at a time across workers."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class BackgroundLockQuerySet(models.QuerySet):
    def held(self, now=None):
        """Locks whose holder is still within its expiry."""
        now = now or timezone.now()
        return self.filter(expires_at__gt=now)


class BackgroundLock(models.Model):
    """A lock one background loop (e.g. the lease sweeper) holds while it runs.

    The holder renews `expires_at` as it works; a holder that dies stops renewing, the lock expires,
    and the next scheduled run takes over. Acquire and renew are conditional UPDATEs, so two workers
    never both believe they hold it.
    """

    name = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(max_length=64, blank=True)
    acquired_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(default=timezone.now)

    objects = BackgroundLockQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
