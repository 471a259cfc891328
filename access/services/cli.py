"""The CLI's sign-in (`pam login`): the device authorization grant (RFC 8628) with django-oauth-toolkit, and its logins.

The CLI is one public OAuth client (`CLI_CLIENT_ID`), created here on first use. A login goes: the CLI asks for a
device code (recorded with the address it came from), the person types the short user code into the portal — signed
in with password and second factor — and confirms (or denies) it after seeing which client asked and from where; the
CLI then exchanges the device code, once, for a short-lived access token and a rotating refresh token. A "CLI
login" is the live refresh token of that chain (one token family); revoking it deletes its access token at once.
Each step writes its audit row in the same transaction.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_device_grant_model,
    get_refresh_token_model,
)

from access.models import AuditAction
from access.services.audit import audit_record

CLI_CLIENT_ID = "pam-cli"
CLI_CLIENT_NAME = "pam command line"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def cli_application():
    """The CLI's public OAuth client (created on first use: no secret, device grant only)."""
    application_model = get_application_model()
    application, _created = application_model.objects.get_or_create(
        client_id=CLI_CLIENT_ID,
        defaults={
            "name": CLI_CLIENT_NAME,
            "client_type": application_model.CLIENT_PUBLIC,
            "authorization_grant_type": DEVICE_CODE_GRANT,
            "client_secret": "",
            "redirect_uris": "",
            "skip_authorization": False,
        },
    )
    return application


def cli_device_request_record(*, device_code: str) -> None:
    """Audit that a device asked to sign in (the row keeps the address it came from, shown on the confirm page)."""
    grant = get_device_grant_model().objects.filter(device_code=device_code).first()
    if grant is None:
        return
    with transaction.atomic():
        audit_record(
            action=AuditAction.CLI_DEVICE_REQUEST,
            actor="anonymous",
            target=grant,
            target_name=f"device code {grant.user_code}",
            data={"client_id": grant.client_id, "expires": grant.expires},
        )


def cli_device_decide(*, device_grant, user, approve: bool):
    """Confirm (or deny) a pending, unexpired device code for `user`; audited. ValidationError once it was used.

    The code is bound to the first person who confirms or denies it: nobody else can decide it afterwards.
    """
    model = get_device_grant_model()
    with transaction.atomic():
        grant = model.objects.select_for_update().get(pk=device_grant.pk)
        if grant.user_id is not None and grant.user_id != user.pk:
            raise PermissionDenied("This code belongs to someone else's sign-in.")
        if grant.status != model.AUTHORIZATION_PENDING:
            raise ValidationError("This code was already used: start again with `pam login`.")
        if grant.expires <= timezone.now():
            grant.status = model.EXPIRED
            grant.save(update_fields=["status"])
            raise ValidationError("This code has expired: start again with `pam login`.")
        grant.user = user
        grant.status = model.AUTHORIZED if approve else model.DENIED
        grant.save(update_fields=["user", "status"])
        audit_record(
            action=AuditAction.CLI_DEVICE_CONFIRM if approve else AuditAction.CLI_DEVICE_DENY,
            actor=user,
            target=grant,
            target_name=f"device code {grant.user_code}",
            data={"client_id": grant.client_id},
        )
    return grant


SLOW_DOWN_SECONDS = 5  # RFC 8628 §3.5: a slow_down answer adds 5 seconds to the interval, for good


def cli_device_grant_start(*, device_grant, interval: int) -> None:
    """Give a new device code the polling interval the CLI was told (the toolkit stores its model's default), and
    a previous poll one interval back, so that the first poll is never too soon."""
    model = get_device_grant_model()
    earlier = timezone.now() - timedelta(seconds=interval)
    model.objects.filter(pk=device_grant.pk).update(interval=interval, last_checked=earlier)


def cli_device_poll_too_soon(*, device_grant) -> bool:
    """Note one poll of a pending device code; True when it came sooner than half the code's interval after the
    previous poll (RFC 8628 §3.5 `slow_down`), and then the code's interval grows by 5 seconds for every later poll.

    The previous poll is the grant's `last_checked`. Polls are routine: not audited.
    """
    model = get_device_grant_model()
    with transaction.atomic():
        grant = model.objects.select_for_update().get(pk=device_grant.pk)
        too_soon = (timezone.now() - grant.last_checked).total_seconds() < grant.interval / 2
        grant.interval += SLOW_DOWN_SECONDS if too_soon else 0
        grant.save(update_fields=["last_checked", "interval"])  # last_checked: now (auto_now)
    device_grant.interval = grant.interval
    return too_soon


def cli_device_code_consume(*, device_grant) -> bool:
    """Use an authorized device code up (codes are single use); False when it was already used or is not authorized."""
    model = get_device_grant_model()
    return bool(model.objects.filter(pk=device_grant.pk, status=model.AUTHORIZED).update(status=model.EXPIRED))


def cli_login_record(*, user, device_grant, refresh_token) -> None:
    """Audit a CLI login: the device code was exchanged for tokens (from the address of this request)."""
    audit_record(
        action=AuditAction.CLI_LOGIN,
        actor=user,
        target=refresh_token,
        target_name=f"CLI login of {user.get_username()}",
        data={
            "client_id": device_grant.client_id,
            "user_code": device_grant.user_code,
            "token_family": str(refresh_token.token_family or ""),
        },
    )


def cli_login_started_at(*, refresh_token):
    """When the login of `refresh_token` began: the first token of its family (rotation keeps the old rows)."""
    model = get_refresh_token_model()
    if not refresh_token.token_family:
        return refresh_token.created
    first = model.objects.filter(token_family=refresh_token.token_family).order_by("created").first()
    return first.created if first else refresh_token.created


def cli_login_lapsed(*, refresh_token) -> bool:
    """Whether the login is older than `PAM_CLI_LOGIN_MAX_SECONDS`, however often it was refreshed."""
    limit = timedelta(seconds=settings.PAM_CLI_LOGIN_MAX_SECONDS)
    return cli_login_started_at(refresh_token=refresh_token) + limit <= timezone.now()


def cli_login_revoke(*, refresh_token, actor) -> bool:
    """End a CLI login: its refresh tokens are revoked and its access token deleted (refused from the next call).

    False when it was already revoked. The owner (the portal, `pam logout`) or the security team (the admin) call it.
    """
    model = get_refresh_token_model()
    with transaction.atomic():
        locked = model.objects.select_for_update(of=("self",)).select_related("user").get(pk=refresh_token.pk)
        if locked.revoked is not None:
            return False
        if locked.token_family:
            model.revoke_family(locked.token_family)
        else:
            locked.revoke()
        audit_record(
            action=AuditAction.CLI_TOKEN_REVOKE,
            actor=actor,
            target=locked,
            target_name=f"CLI login of {locked.user.get_username()}",
            data={"user": locked.user.get_username(), "token_family": str(locked.token_family or "")},
        )
    return True


def cli_logins_end(*, user) -> int:
    """Revoke every CLI login of `user`, deleting their access tokens (offboarding: the caller writes the audit)."""
    refresh_model = get_refresh_token_model()
    live = list(refresh_model.objects.filter(user=user, revoked__isnull=True))
    for token in live:
        if token.token_family:
            refresh_model.revoke_family(token.token_family)
        else:
            token.revoke()
    get_access_token_model().objects.filter(user=user).delete()
    return len(live)
