"""Settings for the MongoDB access portal, read from the environment (cookiecutter-django style).

Debug is off unless `DJANGO_DEBUG=true`. The embedded defaults (`PAM_EMBEDDED`, on with debug; `make run` and the
test run switch them on) need no service and no configuration: a secret key and an encryption key generated once
into `PAM_VAR_DIR`, SQLite there, django-q2's ORM broker and the in-memory Channels layer. Out of them a missing
`DJANGO_SECRET_KEY`, `PAM_ENCRYPTION_KEYS` or `DATABASE_URL` stops start-up with a message that names the variable.
Production also sets `REDIS_URL` (the Channels layer across processes and the django-q2 broker). Importing this
module creates no directory: the embedded secrets' file is made by `portal.secrets_bootstrap` when it writes it, the
rest of `PAM_VAR_DIR` by `PortalConfig.ready` in embedded mode.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from portal.secrets_bootstrap import embedded_secret

env = environ.Env()

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# The embedded defaults: generated secrets and SQLite under VAR_DIR. Debug mode brings them unless PAM_EMBEDDED=false.
PAM_EMBEDDED = env.bool("PAM_EMBEDDED", default=DEBUG)
VAR_DIR = Path(env.str("PAM_VAR_DIR", default=str(BASE_DIR / "var")))

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or (
    embedded_secret(VAR_DIR / "secret_key", kind="django") if PAM_EMBEDDED else ""
)
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set. Out of debug mode (DJANGO_DEBUG) and the embedded defaults (PAM_EMBEDDED) "
        "the portal needs a secret key from the environment; generate one with: "
        "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )

PAM_ENCRYPTION_KEYS = env.list("PAM_ENCRYPTION_KEYS", default=[]) or (
    [embedded_secret(VAR_DIR / "encryption_key", kind="fernet")] if PAM_EMBEDDED else []
)
if not PAM_ENCRYPTION_KEYS:
    raise ImproperlyConfigured(
        "PAM_ENCRYPTION_KEYS is not set. Out of debug mode (DJANGO_DEBUG) and the embedded defaults (PAM_EMBEDDED) "
        "the portal needs at least one Fernet key (comma-separated, the first one encrypts); generate one with: "
        "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
    )

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "portal.apps.PamAdminConfig",
    "django.contrib.auth",
    "axes",  # password throttling and lockout per user and per address (portal and admin)
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "portal.apps.OtpTotpConfig",  # django_otp's plugins, with readable names in the admin
    "portal.apps.OtpStaticConfig",
    "portal.apps.OtpEmailConfig",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc served from the package: no third-party script
    "django_q",
    "channels",
    "oauth2_provider",
    "access",
    "portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "access.middleware.RequestContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes requires: answers a locked-out sign-in
]

ROOT_URLCONF = "portal.urls"
ASGI_APPLICATION = "portal.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.sso",
            ],
        },
    },
]

if not PAM_EMBEDDED and not env.str("DATABASE_URL", default=""):
    raise ImproperlyConfigured(
        "DATABASE_URL is not set. Out of debug mode (DJANGO_DEBUG) and the embedded defaults (PAM_EMBEDDED) "
        "the portal needs a database URL, e.g. DATABASE_URL=postgres://pam:password@db.internal:5432/pam"
    )
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'portal.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions take the write lock up front, so concurrent writers queue instead of
    # failing on a lock upgrade; WAL lets readers (the admin, the API) run beside them.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
elif env.int("DATABASE_POOL_MAX_SIZE", default=0):
    # daphne runs each request's sync code in a thread of its own, so connections follow concurrent requests (200
    # clients: 200 connections per daphne). A bounded psycopg pool makes requests wait for one instead. Set it for
    # daphne only: processes that fork after using the database (qcluster) must not share a pool's sockets.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env.int("DATABASE_POOL_MAX_SIZE"),
        "timeout": env.int("DATABASE_POOL_TIMEOUT", default=30),
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")

if REDIS_URL:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

Q_CLUSTER = {
    "name": "pam",
    "workers": env.int("PAM_Q_WORKERS", default=2),
    "timeout": 120,
    "retry": 180,
    "max_attempts": 1,
    "catch_up": False,
    "ack_failures": True,
    "poll": 0.2,
    "label": "Background tasks",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = ["portal.formats"]  # every time to the second: 2026-05-01 14:03:09 UTC

STATIC_URL = "static/"
STATIC_ROOT = env.str("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "static"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = True

# Passwords go through PasswordBackend (Django's ModelBackend, refusing all but the break-glass names when
# PAM_SSO_ONLY is on); OidcBackend only keeps the sessions single sign-on started (and ends them if SSO is unset).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "access.sso_backend.PasswordBackend",
    "access.sso_backend.OidcBackend",
]
# Password sign-in (portal and admin) is throttled by django-axes: PAM_LOGIN_FAILURE_LIMIT failures for one user
# name, or from one address, lock that name or address out for PAM_LOGIN_LOCKOUT_MINUTES (the admin lists lockouts
# under "Access attempts" and clears them there). A success does not reset the count, so a known password cannot
# be used to keep an address under the limit while guessing others.
AXES_FAILURE_LIMIT = env.int("PAM_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("PAM_LOGIN_LOCKOUT_MINUTES", default=15.0))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = False
AXES_LOCKOUT_TEMPLATE = "portal/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "access.receivers.client_address"  # REMOTE_ADDR, as the audit trail records it
AXES_VERBOSE = False
AXES_SENSITIVE_PARAMETERS = ["otp_token", "token", "csrfmiddlewaretoken"]  # never kept with the attempt (nor password)

# Single sign-on with OpenID Connect (access/sso_backend.py, README "Single sign-on"): on when PAM_OIDC_ISSUER is
# set. Endpoints and keys come from the issuer's /.well-known/openid-configuration; the portal's callback URL to
# register at the identity provider is <portal>/sso/callback/. Users are matched by (issuer, sub), created on their
# first sign-in, and the groups claim maps to Django groups through the admin's "Single sign-on group mappings".
PAM_OIDC_ISSUER = env.str("PAM_OIDC_ISSUER", default="")
PAM_OIDC_CLIENT_ID = env.str("PAM_OIDC_CLIENT_ID", default="")
PAM_OIDC_CLIENT_SECRET = env.str("PAM_OIDC_CLIENT_SECRET", default="")
PAM_OIDC_SCOPES = env.str("PAM_OIDC_SCOPES", default="openid email profile")
PAM_OIDC_GROUPS_CLAIM = env.str("PAM_OIDC_GROUPS_CLAIM", default="groups")
# The claim a new user's name comes from (then email, then sub); a name a local account holds is never taken over.
PAM_OIDC_USERNAME_CLAIM = env.str("PAM_OIDC_USERNAME_CLAIM", default="preferred_username")
PAM_OIDC_SIGN_ALGO = env.str("PAM_OIDC_SIGN_ALGO", default="RS256")
PAM_OIDC_TIMEOUT = env.float("PAM_OIDC_TIMEOUT", default=10.0)
PAM_OIDC_NAME = env.str("PAM_OIDC_NAME", default="single sign-on")
# The portal's own second factor is asked after SSO unless the identity provider asserts one (an `amr` value in
# PAM_OIDC_MFA_AMR or the `acr` in PAM_OIDC_MFA_ACR) and PAM_OIDC_TRUST_IDP_MFA is on.
PAM_OIDC_TRUST_IDP_MFA = env.bool("PAM_OIDC_TRUST_IDP_MFA", default=False)
PAM_OIDC_MFA_AMR = env.list("PAM_OIDC_MFA_AMR", default=["mfa", "otp", "hwk"])
PAM_OIDC_MFA_ACR = env.list("PAM_OIDC_MFA_ACR", default=[])
# Step-up for targets marked "require MFA": "portal" asks for the portal's code; "idp" sends people who signed in
# through SSO back to the identity provider (prompt=login, max_age=0), whose fresh sign-in must assert a second factor.
PAM_OIDC_STEP_UP = env.str("PAM_OIDC_STEP_UP", default="portal")
# SSO only: password sign-in (portal and admin) is refused except for these local user names (break-glass admins).
PAM_SSO_ONLY = env.bool("PAM_SSO_ONLY", default=False)
PAM_SSO_BREAK_GLASS_USERS = env.list("PAM_SSO_BREAK_GLASS_USERS", default=[])
if PAM_OIDC_ISSUER and not (PAM_OIDC_CLIENT_ID and PAM_OIDC_CLIENT_SECRET):
    raise ImproperlyConfigured(
        "PAM_OIDC_ISSUER is set but PAM_OIDC_CLIENT_ID or PAM_OIDC_CLIENT_SECRET is not: register the portal as a "
        "confidential client at the identity provider (redirect URI <portal>/sso/callback/) and set both."
    )
if PAM_SSO_ONLY and not PAM_OIDC_ISSUER:
    raise ImproperlyConfigured("PAM_SSO_ONLY is on but PAM_OIDC_ISSUER is not set: only break-glass could sign in.")
if PAM_OIDC_STEP_UP not in ("portal", "idp"):
    raise ImproperlyConfigured(f"PAM_OIDC_STEP_UP must be 'portal' or 'idp', not {PAM_OIDC_STEP_UP!r}.")

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=0)

EMAIL_BACKEND = env.str("DJANGO_EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env.str("DJANGO_EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("DJANGO_EMAIL_PORT", default=25)
DEFAULT_FROM_EMAIL = env.str("DJANGO_DEFAULT_FROM_EMAIL", default="pam@localhost")

OTP_TOTP_ISSUER = env.str("PAM_TOTP_ISSUER", default="MongoDB PAM")
# Where people reach the portal, for the links in emails (make run sets it from its HTTP address).
PAM_PORTAL_URL = env.str("PAM_PORTAL_URL", default="http://127.0.0.1:8000").rstrip("/")
OTP_EMAIL_SUBJECT = "Your sign-in code for the MongoDB access portal"
OTP_EMAIL_BODY_TEMPLATE = (
    "Your one-time sign-in code is {{ token }}\n\n"
    f"Enter it on the page that asked for it ({PAM_PORTAL_URL}/mfa/). It works once and only for a few minutes.\n"
    "If you did not try to sign in, tell your security team.\n"
)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "access.api.authentication.CliTokenAuthentication",
        "access.api.authentication.ApiTokenAuthentication",
        "access.api.authentication.OtpSessionAuthentication",  # browser sessions past the second factor only
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "access.api.errors.json_exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "MongoDB access portal API",
    "DESCRIPTION": "Resources, accounts, Vault-style dynamic credentials and gateway sessions.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("PAM_LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # oauthlib logs tokens at DEBUG: keep both OAuth libraries at WARNING whatever the root level.
        "oauthlib": {"level": "WARNING"},
        "oauth2_provider": {"level": "WARNING"},
    },
}

# The portal's own settings (README, Configuration).
# Which installation created a database user (customData.pam.system), so two portals never drop each other's users.
PAM_SYSTEM_ID = env.str("PAM_SYSTEM_ID", default="mongo-pam")
# API tokens expire after 90 days by default; no token may live longer than this many days.
PAM_API_TOKEN_MAX_DAYS = env.int("PAM_API_TOKEN_MAX_DAYS", default=365)
# `host:port` shown in connection strings when a resource has no gateway of its own.
PAM_GATEWAY_HOST = env.str("PAM_GATEWAY_HOST", default="127.0.0.1:27018")
# Before login a gateway client costs almost nothing (gatewayproxy/prelogin.py): seconds to finish the login, the
# largest message before it (bytes), unauthenticated connections per client address and in all, and failed logins
# from one address within the window (seconds) before its logins are refused until the window passes.
PAM_GATEWAY_LOGIN_TIMEOUT = env.float("PAM_GATEWAY_LOGIN_TIMEOUT", default=10.0)
PAM_GATEWAY_PRELOGIN_MAX_MESSAGE = env.int("PAM_GATEWAY_PRELOGIN_MAX_MESSAGE", default=8192)
PAM_GATEWAY_UNAUTHENTICATED_PER_ADDRESS = env.int("PAM_GATEWAY_UNAUTHENTICATED_PER_ADDRESS", default=512)
PAM_GATEWAY_UNAUTHENTICATED_TOTAL = env.int("PAM_GATEWAY_UNAUTHENTICATED_TOTAL", default=4096)
PAM_GATEWAY_LOGIN_FAILURES = env.int("PAM_GATEWAY_LOGIN_FAILURES", default=10)
PAM_GATEWAY_LOGIN_FAILURE_WINDOW = env.float("PAM_GATEWAY_LOGIN_FAILURE_WINDOW", default=60.0)
# The second factor every portal user must use ("totp" or "email"); empty lets each user choose (default email).
PAM_MFA_METHOD = env.str("PAM_MFA_METHOD", default="")
# How live session events travel: "channel_layer" or "database"; empty: the channel layer when it crosses
# processes (Redis), else the database.
PAM_SESSION_EVENTS = env.str("PAM_SESSION_EVENTS", default="")
# The Atlas Admin API client (connectors/atlas.py): seconds per request, seconds for a cluster to apply a change,
# seconds between polls, retries of a failed request, first back-off in seconds (doubling, capped at 30 s).
PAM_ATLAS_TIMEOUT = env.float("PAM_ATLAS_TIMEOUT", default=15.0)
PAM_ATLAS_APPLY_TIMEOUT = env.float("PAM_ATLAS_APPLY_TIMEOUT", default=600.0)
PAM_ATLAS_POLL_INTERVAL = env.float("PAM_ATLAS_POLL_INTERVAL", default=2.0)
PAM_ATLAS_MAX_RETRIES = env.int("PAM_ATLAS_MAX_RETRIES", default=5)
PAM_ATLAS_BACKOFF_BASE = env.float("PAM_ATLAS_BACKOFF_BASE", default=0.5)
# Integrations (README, Integrations): sinks, chat notifications (links use PAM_PORTAL_URL above), metrics.
# JSON-lines sinks write only inside this directory.
PAM_SINK_FILE_DIR = env.str("PAM_SINK_FILE_DIR", default=str(VAR_DIR / "sinks"))
# A sink is stuck when records have waited this many minutes and its cursor has not moved for as long.
PAM_SINK_STUCK_MINUTES = env.int("PAM_SINK_STUCK_MINUTES", default=10)
# Seconds a delivery worker's hold on a sink lasts unless renewed: after a crash, another takes over this much later.
PAM_SINK_LOCK_SECONDS = env.int("PAM_SINK_LOCK_SECONDS", default=30)
# GET /metrics (Prometheus) needs `Authorization: Bearer <this>`; unset, only loopback clients not behind a proxy.
PAM_METRICS_TOKEN = env.str("PAM_METRICS_TOKEN", default="")
# Scoped access on Atlas: custom database roles a project may hold (Atlas's default limit; raise it with the
# project's limit), and how many of them the portal leaves free for the project's administrators.
PAM_ATLAS_CUSTOM_ROLE_LIMIT = env.int("PAM_ATLAS_CUSTOM_ROLE_LIMIT", default=100)
PAM_ATLAS_CUSTOM_ROLE_HEADROOM = env.int("PAM_ATLAS_CUSTOM_ROLE_HEADROOM", default=5)
# Scoped access: seconds the databases and collections read from a resource are cached for the request form.
PAM_SCOPE_LIST_CACHE_SECONDS = env.int("PAM_SCOPE_LIST_CACHE_SECONDS", default=60)

# The CLI's login (`pam login`): the OAuth 2.0 device authorization grant (RFC 8628), django-oauth-toolkit as the
# authorization server. Access tokens live minutes and are refreshed (the refresh token rotates and is single use);
# a device code lives `PAM_CLI_DEVICE_CODE_SECONDS` and is exchanged once.
PAM_CLI_DEVICE_CODE_SECONDS = env.int("PAM_CLI_DEVICE_CODE_SECONDS", default=600)
# A CLI login ends this long after `pam login` however often it is refreshed (the refresh token's own lifetime,
# below, is an idle timeout).
PAM_CLI_LOGIN_MAX_SECONDS = env.int("PAM_CLI_LOGIN_MAX_SECONDS", default=12 * 3600)
OAUTH2_PROVIDER = {
    "ACCESS_TOKEN_EXPIRE_SECONDS": env.int("PAM_CLI_ACCESS_TOKEN_SECONDS", default=900),
    "REFRESH_TOKEN_EXPIRE_SECONDS": env.int("PAM_CLI_REFRESH_TOKEN_SECONDS", default=12 * 3600),
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "DEVICE_FLOW_INTERVAL": env.int("PAM_CLI_DEVICE_POLL_SECONDS", default=5),
    "OAUTH_DEVICE_VERIFICATION_URI": "/device/",
    "OAUTH2_VALIDATOR_CLASS": "access.cli_oauth.PamOAuth2Validator",
    "SCOPES": {"cli": "Act as you through the portal's API from the pam command line"},
    "DEFAULT_SCOPES": ["cli"],
    "PKCE_REQUIRED": True,
    "ACCESS_TOKEN_GENERATOR": "access.cli_oauth.new_access_token",
    "REFRESH_TOKEN_GENERATOR": "access.cli_oauth.new_refresh_token",
    # RFC 9700 (OAuth 2.0 Security Best Current Practice): tokens stored as digests only, the rest enforced.
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
}
