"""The admin site for security teams: every page requires a verified OTP device, and its index reads like the
work a security team does (access, sessions, leases, audit, connectors, settings) rather than like app labels."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django_otp import devices_for_user
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite

from access.services import auth_events
from portal.sso_forms import SsoOnlyPasswordCheck

# (section key, title, what it holds, [(app label, model, label shown), ...]) in the order a security team works.
ADMIN_SECTIONS = [
    (
        "access",
        "Access",
        "Who may reach what, and the requests to use it",
        [
            ("access", "AccessRequest", "Access requests"),
            ("access", "AccessPolicy", "Access policies"),
            ("auth", "User", "People"),
            ("auth", "Group", "Groups"),
            ("access", "SsoGroupMapping", "Single sign-on group mappings"),
            ("access", "SsoIdentity", "Single sign-on identities"),
            ("axes", "AccessAttempt", "Sign-in lockouts (failed attempts)"),
            ("axes", "AccessFailureLog", "Sign-in failures"),
            ("axes", "AccessLog", "Sign-in log"),
        ],
    ),
    (
        "sessions",
        "Sessions",
        "Gateway sessions, live and past, and every command they ran",
        [("access", "Session", "Gateway sessions"), ("access", "SessionCommand", "Session command log")],
    ),
    (
        "leases",
        "Leases",
        "Short-lived database users (dynamic credentials) and the roles that make them",
        [("access", "Lease", "Leases"), ("access", "DynamicRole", "Dynamic roles")],
    ),
    ("audit", "Audit", "The append-only, hash-chained trail", [("access", "AuditEvent", "Audit trail")]),
    (
        "connectors",
        "Connectors",
        "The MongoDB deployments and Atlas projects, their accounts, gateways and actions",
        [
            ("access", "Resource", "Resources (deployments, Atlas projects)"),
            ("access", "Account", "Database accounts"),
            ("access", "Gateway", "Gateways"),
            ("access", "ConnectorAction", "Connector actions"),
        ],
    ),
    (
        "settings",
        "Settings",
        "Sign-in devices, API tokens and background tasks",
        [
            ("access", "ApiToken", "API tokens"),
            ("otp_totp", "TOTPDevice", "Authenticator apps (TOTP)"),
            ("otp_email", "EmailDevice", "Email sign-in codes"),
            ("otp_static", "StaticDevice", "Backup codes"),
            ("django_q", "Schedule", "Scheduled tasks"),
            ("django_q", "OrmQ", "Queued tasks"),
            ("django_q", "Success", "Finished tasks"),
            ("django_q", "Failure", "Failed tasks"),
        ],
    ),
]


def admin_sections(app_dict: dict) -> list[dict]:
    """Regroup Django's per-app dict (AdminSite._build_app_dict) into ADMIN_SECTIONS, with readable labels.

    A registered model no section names lands in Settings under its own plural name, so nothing disappears.
    """
    models = {
        (app_label, model["object_name"]): model for app_label, app in app_dict.items() for model in app["models"]
    }
    placed = set()
    sections = []
    for key, title, description, entries in ADMIN_SECTIONS:
        rows = []
        for app_label, object_name, label in entries:
            model = models.get((app_label, object_name))
            if model is not None:
                rows.append({**model, "name": label})
                placed.add((app_label, object_name))
        if key == "settings":
            rows += [model for ident, model in sorted(models.items()) if ident not in placed]
        if rows:
            first_url = next((row["admin_url"] for row in rows if row.get("admin_url")), "")
            sections.append(
                {
                    "name": title,
                    "description": description,
                    "app_label": f"section-{key}",
                    "app_url": first_url,
                    "has_module_perms": True,
                    "models": rows,
                }
            )
    return sections


class SingleDeviceOTPAdminAuthenticationForm(SsoOnlyPasswordCheck, OTPAdminAuthenticationForm):
    """The OTP admin login, where a user with a single device need not pick it from a list first.

    django-otp asks for an explicit device so that a wrong code is not counted against every device
    the user has; with one device there is nothing to choose, so it is chosen for them.
    """

    def clean_otp(self, user):
        """django-otp's check of the code, with its outcome in the audit trail (the password alone is not a login)."""
        try:
            super().clean_otp(user)
        except ValidationError as exc:
            if user is not None:
                auth_events.auth_second_factor_failed(user=user, via="admin", reason=" ".join(exc.messages))
            raise
        if user is not None and getattr(user, "otp_device", None) is not None:
            auth_events.auth_second_factor_passed(user=user, device=user.otp_device, via="admin")

    def _chosen_device(self, user):
        device = super()._chosen_device(user)
        if device is None and not self.cleaned_data.get("otp_device"):
            devices = list(devices_for_user(user, confirmed=True, for_verify=True))
            if len(devices) == 1:
                device = devices[0]
        return device


class PamAdminSite(OTPAdminSite):
    """Django admin behind TOTP: staff log in with password and a current code from their device."""

    site_header = "MongoDB access portal — security admin"
    site_title = "MongoDB PAM admin"
    index_title = "Resources, access and audit"
    login_form = SingleDeviceOTPAdminAuthenticationForm
    login_template = "admin/pam_login.html"  # django-otp's login page, with the single sign-on button

    def get_app_list(self, request, app_label=None):
        """The index and the sidebar list sections of work; one app's own page keeps Django's list of it."""
        if app_label is not None:
            return super().get_app_list(request, app_label)
        return admin_sections(self._build_app_dict(request))
