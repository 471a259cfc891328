"""The authentication trail: every sign-in step in the portal, the admin, the API and the gateways, audited.

Password sign-ins (succeeded, refused, locked out) are reported by Django's and django-axes's own signals
(access.receivers), second-factor outcomes by the portal's MFA pages and the admin's login form, API token use by
the token authentication, failed gateway logins by the gateways through the bridge (`gateway_login_failed`).
Rows name the user (or the user name that was typed, cut to 150 characters), where it happened (`via`: portal,
admin, api, gateway) and why, never a password or a code. The admin's audit list filters them ("Authentication").
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction

from access import context
from access.models import AuditAction
from access.services.audit import audit_record

NAME_MAX = 150
REASON_MAX = 200


def request_via(request) -> str:
    """Which door a Django request came through: admin, api, sso (the identity provider's callback) or portal."""
    path = getattr(request, "path", "") or ""
    if path.startswith("/admin/"):
        return "admin"
    if path.startswith("/api/"):
        return "api"
    if path.startswith("/sso/"):
        return "sso"
    return "portal"


def _known_user(username: str):
    return get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()


def auth_login_succeeded(*, user, via: str) -> None:
    """The password was accepted and the user signed in (in the admin: password and code together)."""
    audit_record(action=AuditAction.AUTH_LOGIN, actor=user, target=user, data={"via": via})


def auth_login_failed(*, username: str, via: str, reason: str = "wrong user name or password") -> None:
    """A password sign-in was refused (an unknown name is recorded as typed, cut; the password never is)."""
    username = (username or "")[:NAME_MAX]
    user = _known_user(username) if username else None
    audit_record(
        action=AuditAction.AUTH_LOGIN_FAILED,
        actor="anonymous",
        target=user,
        target_name=username,
        data={"via": via, "reason": reason[:REASON_MAX], "known_user": user is not None},
    )


def auth_logout(*, user, via: str) -> None:
    audit_record(action=AuditAction.AUTH_LOGOUT, actor=user, target=user, data={"via": via})


def auth_lockout(*, username: str, address: str | None, via: str) -> None:
    """django-axes locked a user name and/or an address out after too many failures."""
    username = (username or "")[:NAME_MAX]
    audit_record(
        action=AuditAction.AUTH_LOCKOUT,
        actor="anonymous",
        target=_known_user(username) if username else None,
        target_name=username or (address or ""),
        data={"via": via, "username": username, "address": address or ""},
    )


def auth_lockout_clear(*, attempts, actor) -> int:
    """Delete failed-attempt records (django-axes's AccessAttempt rows), which lifts their lockout; audited."""
    with transaction.atomic():
        cleared = [(a.username or "", a.ip_address or "", a.failures_since_start) for a in attempts]
        for username, address, failures in cleared:
            audit_record(
                action=AuditAction.AUTH_LOCKOUT_CLEAR,
                actor=actor,
                target_name=username or address,
                data={"username": username, "address": address, "failures": failures},
            )
        attempts.delete()
    return len(cleared)


def auth_second_factor_passed(*, user, device, via: str, step_up: bool = False) -> None:
    """A one-time code was accepted (the session is now verified); a step-up is recorded as such."""
    audit_record(
        action=AuditAction.AUTH_STEP_UP if step_up else AuditAction.AUTH_MFA_PASSED,
        actor=user,
        target=user,
        data={"via": via, "device": type(device).__name__, "device_name": getattr(device, "name", "")[:64]},
    )


def auth_second_factor_failed(*, user, via: str, reason: str, step_up: bool = False) -> None:
    """A one-time code was refused (wrong, or the device is throttled)."""
    audit_record(
        action=AuditAction.AUTH_MFA_FAILED,
        actor=user,
        target=user,
        data={"via": via, "reason": reason[:REASON_MAX], "step_up": step_up},
    )


def auth_email_code_sent(*, user, via: str = "portal") -> None:
    """A sign-in code was emailed to the user (the address is the user's own; the code is never recorded)."""
    audit_record(action=AuditAction.AUTH_EMAIL_CODE_SENT, actor=user, target=user, data={"via": via})


def gateway_login_failed(*, username: str, client_address: str, reason: str) -> None:
    """A client's login to a gateway failed: the name it gave, where it came from, why (never the secret).

    For the gateway (through `access.gateway_bridge.GatewayBridge.login_failed`). The row's address is the
    client's, so the admin's audit list shows and searches it like a web sign-in's.
    """
    username = (username or "")[:NAME_MAX]
    address = (client_address or "")[:64]
    ip = address.rsplit(":", 1)[0].strip("[]") if address.count(":") == 1 or address.startswith("[") else address
    token = context.bind(ip=_valid_ip(ip), request_id=context.current().request_id or None)
    try:
        audit_record(
            action=AuditAction.GATEWAY_LOGIN_FAILED,
            actor="anonymous",
            target_name=username,
            data={"via": "gateway", "username": username, "client_address": address, "reason": reason[:REASON_MAX]},
        )
    finally:
        context.reset(token)


def _valid_ip(text: str) -> str | None:
    import ipaddress

    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None
