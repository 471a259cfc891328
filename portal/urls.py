"""URL map: the requester portal at /, the OTP admin at /admin/, the API at /api/v1/ with its schema and docs."""

from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from access import cli_oauth
from portal.views import (
    apidocs,
    auth,
    cli,
    dashboard,
    health,
    leases,
    metrics,
    mfa,
    requests,
    scoped,
    sessions,
    sso,
    tokens,
)

portal_patterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("accounts/login/", auth.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth.LogoutView.as_view(), name="logout"),
    path("sso/login/", sso.SsoLoginView.as_view(), name="sso-login"),
    path("sso/callback/", sso.SsoCallbackView.as_view(), name="sso-callback"),
    path("mfa/", mfa.mfa_verify, name="mfa-verify"),
    path("mfa/enrol/", mfa.mfa_enrol, name="mfa-enrol"),
    path("mfa/email/", mfa.mfa_email_send, name="mfa-email"),
    path("mfa/step-up/", mfa.mfa_step_up, name="mfa-step-up"),
    path("mfa/backup-codes/", mfa.mfa_backup_codes, name="mfa-backup-codes"),
    path("mfa/settings/", mfa.mfa_settings, name="mfa-settings"),
    path("catalogue/", requests.catalogue, name="catalogue"),
    path("requests/", requests.request_list, name="request-list"),
    path("requests/new/<int:policy_id>/", requests.request_new, name="request-new"),
    path("requests/<int:pk>/", requests.request_detail, name="request-detail"),
    path("requests/<int:pk>/cancel/", requests.request_cancel, name="request-cancel"),
    path("requests/scoped/<int:policy_id>/", scoped.scoped_request_new, name="scoped-request-new"),
    path("requests/<int:pk>/scoped/decide/", scoped.scoped_decide, name="scoped-decide"),
    path("requests/<int:pk>/scoped/session/", scoped.scoped_session_open, name="scoped-session"),
    path("requests/<int:pk>/scoped/retry/", scoped.scoped_grant_retry_view, name="scoped-retry"),
    path("approvals/", requests.approvals, name="approvals"),
    path("approvals/<int:pk>/decide/", requests.approval_decide, name="approval-decide"),
    path("roles/<int:role_id>/use/", leases.role_use, name="role-use"),
    path("leases/", leases.lease_list, name="lease-list"),
    path("leases/<int:pk>/", leases.lease_detail, name="lease-detail"),
    path("leases/<int:pk>/renew/", leases.lease_renew_view, name="lease-renew"),
    path("leases/<int:pk>/revoke/", leases.lease_revoke_view, name="lease-revoke"),
    path("db-accounts/<int:account_id>/use/", sessions.account_use, name="account-use"),
    path("sessions/", sessions.session_list, name="session-list"),
    path("sessions/<uuid:public_id>/", sessions.session_detail, name="session-detail"),
    path("sessions/<uuid:public_id>/end/", sessions.session_end_view, name="session-end"),
    path("tokens/", tokens.token_list, name="token-list"),
    path("tokens/<int:pk>/revoke/", tokens.token_revoke_view, name="token-revoke"),
    path("device/", cli.device, name="device"),
    path("cli-logins/", cli.cli_logins, name="cli-logins"),
    path("cli-logins/<int:pk>/revoke/", cli.cli_login_revoke_view, name="cli-login-revoke"),
]

oauth_patterns = [
    path("device-authorization/", cli_oauth.DeviceAuthorizationView.as_view(), name="device-authorization"),
    path("token/", cli_oauth.TokenView.as_view(), name="token"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("access.api.urls")),
    path("oauth/", include((oauth_patterns, "oauth"))),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Swagger UI and ReDoc come from drf-spectacular-sidecar's static files: the portal loads no third-party script.
    path("api/docs/", apidocs.swagger_ui, name="api-docs"),
    path("api/redoc/", apidocs.redoc, name="api-redoc"),
    path("healthz", health.healthz, name="healthz"),
    path("favicon.ico", RedirectView.as_view(url=static("portal/favicon.svg"), permanent=True)),
    path("metrics", metrics.metrics, name="metrics"),
    path("", include((portal_patterns, "portal"))),
]
