"""Who may see (or change) which rows: the one rule behind every queryset's `visible_to(user, action)`.

A signed-in, active user sees their own rows; active staff holding the model's `<action>` permission
(superusers hold them all) see every row. Anonymous and deactivated users see nothing. The API, the
portal, the live-session consumer and the selectors all ask `Model.objects.visible_to(user)`, so a rule
is never written twice (the admin asks Django's model permissions, which the same staff hold).
"""

from __future__ import annotations

from django.db import models


def user_is_active(user) -> bool:
    """Whether `user` is signed in and not deactivated."""
    return bool(user is not None and getattr(user, "is_authenticated", False) and user.is_active)


def user_sees_every(user, model: type[models.Model], action: str = "view") -> bool:
    """Whether `user` may `action` ("view", "change", ...) every row of `model`: active staff with the permission."""
    opts = model._meta
    return user_is_active(user) and user.is_staff and user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}")


class VisibleToQuerySet(models.QuerySet):
    """A queryset whose rows belong to a user through `owner_field` (a lease's holder, a session's user)."""

    owner_field = "user"

    def visible_to(self, user, action: str = "view"):
        """Rows `user` may `action`: their own, or every row for active staff holding the model's permission."""
        if not user_is_active(user):
            return self.none()
        if user_sees_every(user, self.model, action):
            return self
        return self.filter(**{self.owner_field: user})

    def row_visible_to(self, user, row: models.Model, action: str = "view") -> bool:
        """Whether `user` may `action` the loaded `row`: `visible_to`'s rule asked of one row, without a query."""
        if not user_is_active(user):
            return False
        return getattr(row, f"{self.owner_field}_id") == user.pk or user_sees_every(user, self.model, action)
