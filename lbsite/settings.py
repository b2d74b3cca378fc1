"""Settings for the balancer, read from the environment (see README, "Settings")."""

import ipaddress
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from lbsite import listeners

BASE_DIR = Path(__file__).resolve().parent.parent

TRUE_WORDS = {"1", "true", "yes", "on"}


def env_bool(name, default=False):
    """Return an on/off environment setting."""
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in TRUE_WORDS


def env_list(name, default):
    """Return a comma-separated environment setting as a list."""
    value = os.environ.get(name, default)
    return [item.strip().lower() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG")

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "Set SECRET_KEY in the environment (or DEBUG=1 for local development)."
        )
    SECRET_KEY = "insecure-development-key-used-only-with-DEBUG"

# The balancer listens twice: traffic on gunicorn's bind, where every request
# is routed whatever its Host, and its own pages (admin, static files,
# /metrics, /healthz) on ADMIN_BIND alone (None: no admin listener). Nothing
# a backend serves ever shares an origin with the admin.
try:
    ADMIN_BIND = listeners.admin_bind()
except ValueError as error:
    raise ImproperlyConfigured(str(error)) from None

# The Host names the admin listener answers to (a guard against DNS
# rebinding); proxied traffic never calls get_host(), so its hosts are the
# routing rules' business.
ADMIN_HOSTS = env_list("ADMIN_HOSTS", "localhost,127.0.0.1")
ALLOWED_HOSTS = ADMIN_HOSTS

# How often each worker checks whether the routing rules changed (seconds).
# 0 turns the background refresher off: only writes made in the same process
# are then seen, which suits tests and single-process tools.
ROUTE_TABLE_REFRESH_INTERVAL = float(os.environ.get("ROUTE_TABLE_REFRESH_INTERVAL", "0.25"))

# Automatic HTTPS (manage.py certificates, and TLS=auto under gunicorn): the
# ACME CA's directory, the account's contact address, a CA bundle to trust
# the CA's own HTTPS with (a private CA's; blank: the system's), how many
# days before expiry a certificate is renewed, and the port HTTPS is served
# on as clients reach it (force_https redirects there; 443 is left out).
ACME_DIRECTORY_URL = os.environ.get(
    "ACME_DIRECTORY_URL", "https://acme-v02.api.letsencrypt.org/directory"
)
ACME_EMAIL = os.environ.get("ACME_EMAIL", "")
ACME_CA_BUNDLE = os.environ.get("ACME_CA_BUNDLE", "")
ACME_RENEW_DAYS = int(os.environ.get("ACME_RENEW_DAYS", "30"))
HTTPS_PORT = int(os.environ.get("HTTPS_PORT", "443"))

# The name this balancer gives itself in the Via header it adds both ways.
VIA_PSEUDONYM = os.environ.get("VIA_PSEUDONYM", "django-lb")

# Requests with a larger body get 413 (before it is read, when Content-Length
# tells). Default 1 GiB.
MAX_BODY_SIZE = int(os.environ.get("MAX_BODY_SIZE", str(1024**3)))

# Seconds a WebSocket tunnel may go without a byte either way before it is closed.
WEBSOCKET_IDLE_TIMEOUT = float(os.environ.get("WEBSOCKET_IDLE_TIMEOUT", "300"))

# Proxies (addresses or CIDR networks) whose X-Forwarded-For is kept and
# appended to; from anyone else it is replaced by the peer address.
TRUSTED_PROXIES = [
    ipaddress.ip_network(network, strict=False) for network in env_list("TRUSTED_PROXIES", "")
]

# Optionally, the admin listener answers only clients in these networks
# (CIDRs): the peer, or the client a trusted proxy reports. Empty: any
# client. /healthz always answers, for probes.
ADMIN_ALLOWED_NETWORKS = [
    ipaddress.ip_network(network, strict=False)
    for network in env_list("ADMIN_ALLOWED_NETWORKS", "")
]

# One line per proxied request on the "routing.access" logger, as key=value
# pairs ("kv") or JSON ("json").
ACCESS_LOG = env_bool("ACCESS_LOG", default=True)
ACCESS_LOG_FORMAT = os.environ.get("ACCESS_LOG_FORMAT", "kv")
if ACCESS_LOG_FORMAT not in ("kv", "json"):
    raise ImproperlyConfigured("ACCESS_LOG_FORMAT is kv or json.")
# Seconds an access-log line may wait to be written with others (as nginx's
# `flush=`); 0 writes each line as its request ends.
ACCESS_LOG_FLUSH = float(os.environ.get("ACCESS_LOG_FLUSH", "1"))

# The Traffic page and the impact preview (routing/traffic.py). Every
# TRAFFIC_INTERVAL seconds each worker writes its counts per backend (one
# row per busy backend) and the recent requests it saw (method, host and
# path only: never the query, headers or body); rows older than
# TRAFFIC_RETENTION seconds go. TRAFFIC_SAMPLE_SIZE bounds the distinct
# requests a worker remembers per 10-minute period. TRAFFIC_INTERVAL=0
# turns the writing off.
TRAFFIC_INTERVAL = float(os.environ.get("TRAFFIC_INTERVAL", "5"))
TRAFFIC_RETENTION = int(os.environ.get("TRAFFIC_RETENTION", str(24 * 3600)))
TRAFFIC_SAMPLE_SIZE = int(os.environ.get("TRAFFIC_SAMPLE_SIZE", "2000"))

# Where rate limits are counted, shared by every worker and instance, e.g.
# redis://127.0.0.1:6379/0. Empty: each worker counts on its own.
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(
        "REDIS_URL is a redis://, rediss:// or unix:// URL, e.g. redis://127.0.0.1:6379/0."
    )
# Seconds a request waits for Redis (connecting, then answering) before it
# passes uncounted.
REDIS_TIMEOUT = float(os.environ.get("REDIS_TIMEOUT", "0.25"))

# gunicorn's graceful timeout (gunicorn.conf.py reads the same variable); a
# system check warns about pools whose retries could outlast it.
GRACEFUL_TIMEOUT = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))

# The admin behind HTTPS (TLS terminated by gunicorn or by a proxy in front;
# gunicorn believes a proxy's X-Forwarded-Proto only from TRUSTED_PROXIES).
# These guard the admin listener only: proxied traffic never passes Django's
# security middleware.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE")
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT")
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS")
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD")
if "SECURE_PROXY_SSL_HEADER" in os.environ:
    # Django's setting believed X-Forwarded-Proto from any client; an operator
    # who set it must hear that it is gone rather than meet a redirect loop.
    raise ImproperlyConfigured(
        "SECURE_PROXY_SSL_HEADER is no longer read: list the proxy in front in "
        "TRUSTED_PROXIES, and gunicorn takes the scheme from it (and from no one else)."
    )
SILENCED_SYSTEM_CHECKS = [
    # security.W008 asks for SECURE_SSL_REDIRECT. It can only ever apply to the
    # admin listener (proxied traffic never passes the security middleware),
    # which often listens on plain HTTP on loopback or behind TLS termination;
    # set SECURE_SSL_REDIRECT=1 where the admin is reached over HTTPS.
    "security.W008",
]

INSTALLED_APPS = [
    # First, so its admin/index.html (linking the routing tools) extends the admin's.
    "routing",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    # Swagger UI's files, served with the admin's: the API docs need no CDN.
    "drf_spectacular_sidecar",
]

MIDDLEWARE = [
    # First, so that proxied traffic skips everything below: Django's security
    # machinery guards the admin listener only (docs/architecture.md, "Two
    # listeners"), and the admin listener's own checks come before the rest.
    "routing.middleware.ListenerMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Names the user in the routing revisions an admin or API request makes.
    "routing.middleware.RevisionUserMiddleware",
    # An admin-listener request that may write holds SQLite's write lock from
    # its start: another process's write cannot refuse it mid-way.
    "routing.write_lock.WriteLockMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "lbsite.urls"

# The REST API under /api/ on the admin listener (routing/api/).
REST_FRAMEWORK = {
    # Token first: an unauthenticated request gets 401 with WWW-Authenticate: Token.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["routing.api.permissions.ModelPermissions"],
    # JSON only: a form leaves an unticked checkbox out, so DRF reads a boolean a
    # form body lacks as False (a pool without TLS verification, a disabled rule).
    # A form body is 415; the browsable API keeps its raw JSON form.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "routing.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "django-lb API",
    "DESCRIPTION": "The routing table of the load balancer: pools, backends, rules, "
    "the whole table as a routes file, its revisions and rollback.",
    "VERSION": "1",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "lbsite.wsgi.application"

# Connections are kept for CONN_MAX_AGE by the threads that live as long as
# their process: the route-table refresher of each worker, the health checker.
# Requests close theirs (routing/handler.py, routing/table.py): under gevent a
# request's thread is its client connection's greenlet, which ends with it.
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=600,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Write-ahead logging: a reader (every worker's refresher) never waits for
    # a writer in another process (an admin edit, the health checker, a
    # migration). SQLite waits inside C code, which under gevent would hold
    # up every request of the worker.
    # Transactions that read before they write take the write lock first
    # (routing/write_lock.py).
    DATABASES["default"].setdefault("OPTIONS", {})["init_command"] = "PRAGMA journal_mode=WAL"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage",
    },
}

# Cookies are not kept apart by port: the admin's have names of their own, so
# they never collide with the cookies of the sites behind the balancer (which
# never receive them, and cannot set them with Set-Cookie), and script on a
# backend's page, same-site with the admin, cannot read them.
SESSION_COOKIE_NAME = "lb_sessionid"
CSRF_COOKIE_NAME = "lb_csrftoken"
CSRF_COOKIE_HTTPONLY = True


def has_traceback(record):
    """Keep a log record only if it reports an exception."""
    return record.exc_info is not None


def is_no_pool_overflow(record):
    """Keep a log record unless it is urllib3's note of a surplus connection closed."""
    return not str(record.msg).startswith("Connection pool is full")


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "access": {"format": "%(message)s"},
    },
    "filters": {
        "with_traceback": {"()": "django.utils.log.CallbackFilter", "callback": has_traceback},
        "no_pool_overflow": {
            "()": "django.utils.log.CallbackFilter",
            "callback": is_no_pool_overflow,
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "access": {"class": "logging.StreamHandler", "formatter": "access"},
    },
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "routing.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        # Proxied 4xx/5xx answers are the backends' (and logged in the access
        # log): only the balancer's own crashes, which carry a traceback, pass.
        "django.request": {"level": "ERROR", "filters": ["with_traceback"]},
        # A worker may have more requests at one backend than it keeps
        # connections to it (routing/transport/pool.py, POOL_MAXSIZE): the surplus are
        # closed after use, as nginx's upstream keepalive does, and a warning
        # for each would flood the log at the moments of most load.
        "urllib3.connectionpool": {"filters": ["no_pool_overflow"]},
    },
}
