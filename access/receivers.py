"""The hooks the portal takes where the code is not its own: Django's and django-axes's sign-in signals, and the
group membership table. Each receiver calls one service; connected in `access.apps.AccessConfig.ready`.

- Sign-ins: Django's `authenticate`/`login`/`logout` (the portal's login page, the admin's, any later door) and
  django-axes (lockouts) announce their outcomes only through these signals, so they are where every password
  sign-in reaches the audit trail (access.services.auth_events).
- Group membership: who is in a group is Django's many-to-many table, changed from either side (the user admin's
  groups, `group.user_set`, a later single sign-on's group mapping, scripts) with no service of ours in between.
  `m2m_changed` is the one place every removal passes, and a removal may take a grant away at once, so that is
  where the people who left a group have their sessions and leases checked against their grants
  (access.services.offboarding). Additions grant nothing to end, and are not hooked.
"""

from __future__ import annotations

from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import m2m_changed

from access.services import auth_events


def client_address(request) -> str | None:
    """The client address django-axes counts failures for: REMOTE_ADDR, the address the audit trail records.

    (Behind a reverse proxy, daphne's --proxy-headers sets it from the proxy's header; a header sent by the
    client itself is never trusted here.)
    """
    return request.META.get("REMOTE_ADDR") or None


def _on_logged_in(sender, request, user, **kwargs) -> None:
    via = auth_events.request_via(request)
    if via == "sso":
        return  # single sign-on records its own row, with the identity provider's claims (access.services.sso)
    auth_events.auth_login_succeeded(user=user, via=via)


def _on_login_failed(sender, credentials, request=None, **kwargs) -> None:
    username = str((credentials or {}).get(get_user_model().USERNAME_FIELD) or credentials.get("username") or "")
    locked = bool(getattr(request, "axes_locked_out", False))
    auth_events.auth_login_failed(
        username=username,
        via=auth_events.request_via(request),
        reason="locked out after too many failures" if locked else "wrong user name or password",
    )


def _on_logged_out(sender, request, user, **kwargs) -> None:
    if user is not None:
        auth_events.auth_logout(user=user, via=auth_events.request_via(request))


def _on_locked_out(sender, request, username, ip_address, **kwargs) -> None:
    auth_events.auth_lockout(username=username or "", address=ip_address, via=auth_events.request_via(request))


_GROUP_MEMBERS_BEFORE_CLEAR = "_pam_members_before_clear"


def _on_group_membership_changed(sender, instance, action, reverse, pk_set, **kwargs) -> None:
    """After people leave a group (from either side), end what their remaining grants no longer explain."""
    from access.services.offboarding import access_grants_reconcile

    if action == "pre_clear":
        # `clear()` does not name who left: remember them before the rows go.
        members = list(instance.user_set.values_list("pk", flat=True)) if reverse else [instance.pk]
        setattr(instance, _GROUP_MEMBERS_BEFORE_CLEAR, members)
        return
    if action == "post_clear":
        user_ids = getattr(instance, _GROUP_MEMBERS_BEFORE_CLEAR, [])
    elif action == "post_remove":
        user_ids = list(pk_set or ()) if reverse else [instance.pk]
    else:
        return
    if user_ids:
        access_grants_reconcile(user_ids=user_ids, actor="group membership removed")


def connect() -> None:
    """Connect every receiver (once: dispatch_uid)."""
    user_logged_in.connect(_on_logged_in, dispatch_uid="pam-audit-logged-in")
    user_login_failed.connect(_on_login_failed, dispatch_uid="pam-audit-login-failed")
    user_logged_out.connect(_on_logged_out, dispatch_uid="pam-audit-logged-out")
    user_locked_out.connect(_on_locked_out, dispatch_uid="pam-audit-locked-out")
    m2m_changed.connect(
        _on_group_membership_changed, sender=get_user_model().groups.through, dispatch_uid="pam-group-membership"
    )
