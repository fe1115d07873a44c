"""Signalpost settings: one file, driven by environment variables.

Runs with nothing set (SQLite, eager tasks, console email). Every variable is
documented in .env.example; a bad value stops start-up with a message naming it.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent


def load_dotenv(path: Path) -> None:
    """Read KEY=value lines from .env into the environment; variables already set win."""
    if not path.is_file():
        return
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not key.strip().isidentifier():
            raise ImproperlyConfigured(f"{path.name} line {number} is not KEY=value: {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ.setdefault(key.strip(), value)


load_dotenv(BASE_DIR / ".env")

_TRUE = {"1", "true", "yes", "on"}


def env(name: str, default: str = "") -> str:
    """The variable's value; empty counts as unset, so a copied .env.example changes nothing."""
    return os.environ.get(name, "").strip() or default


_FALSE = {"0", "false", "no", "off", ""}


def envbool(name: str, default: str) -> bool:
    value = env(name, default).lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def envint(name: str, default: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    raw = env(name, default)
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, not {value}")
    return value


def envfloat(name: str, default: str, *, minimum: float = 0.0) -> float:
    raw = env(name, default)
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number of seconds, not {raw!r}") from None
    if not value >= minimum or value == float("inf"):  # also NaN
        raise ImproperlyConfigured(f"{name} must be a number of at least {minimum:g}, not {raw!r}")
    return value


def envurl(name: str, default: str, schemes: set[str]) -> str:
    value = env(name, default)
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        raise ImproperlyConfigured(f"{name} must be a URL starting with one of {allowed}; got {value!r}")
    return value


DEBUG = envbool("DEBUG", "true")
SECRET_KEY = env("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is false")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105 - DEBUG only

SITE_URL = envurl("SITE_URL", "http://127.0.0.1:8000", {"http", "https"}).rstrip("/")
SITE_NAME = env("SITE_NAME", "Signalpost")
_site = urlsplit(SITE_URL)
ALLOWED_HOSTS = [h.strip() for h in env("ALLOWED_HOSTS").split(",") if h.strip()]
ALLOWED_HOSTS += [_site.hostname or "127.0.0.1", "localhost", "127.0.0.1", "testserver"]
CSRF_TRUSTED_ORIGINS = [f"{_site.scheme}://{_site.netloc}"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "incidents",
    "statuspage.apps.StatuspageConfig",
    "axes",  # sign-in throttling (statuspage/signin.py)
]

MIDDLEWARE = [
    # /healthz and /readyz for load balancers and monitors, ahead of everything: no https redirect, host
    # check, session or throttle applies to a probe (statuspage/health.py).
    "statuspage.health.HealthMiddleware",
    # Then, so the public side too is sent to https and carries HSTS (SECURE_SSL_REDIRECT below).
    "django.middleware.security.SecurityMiddleware",
    # Public snapshot routes are answered here, ahead of sessions, auth and CSRF (statuspage/middleware.py).
    "statuspage.middleware.PublicFastPathMiddleware",
    # A view that needs the database while it is down or hanging answers 503, not 500 (DATABASE_*_TIMEOUT).
    "statuspage.middleware.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last: turns a sign-in refused for too many failures into the lockout answer (statuspage/signin.py).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "statuspage.urls"
WSGI_APPLICATION = "statuspage.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "statuspage.context_processors.site",
            ],
        },
    }
]

# Database: DATABASE_URL (postgres://… or sqlite:///…); default is a SQLite file beside manage.py.
_database_url = envurl(
    "DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}", {"sqlite", "postgres", "postgresql", "pgsql"}
)
DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=60, conn_health_checks=True)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions make SQLite writers queue for the lock instead of failing mid-transaction,
    # which is what lets the in-process timer loop and the web server share one file.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
# A database that accepts connections and never answers must not hold the web workers. On PostgreSQL:
# give up connecting after DATABASE_CONNECT_TIMEOUT seconds (every process), and in the web process
# (gunicorn, through statuspage/wsgi.py) end any statement after DATABASE_STATEMENT_TIMEOUT seconds
# (0: no limit). Workers, beat and manage.py commands (migrate!) have no statement timeout.
DATABASE_CONNECT_TIMEOUT = envint("DATABASE_CONNECT_TIMEOUT", "3", minimum=1)
DATABASE_STATEMENT_TIMEOUT = envint("DATABASE_STATEMENT_TIMEOUT", "10", minimum=0)
WEB_PROCESS = os.environ.get("SIGNALPOST_PROCESS") == "web"  # set by statuspage/wsgi.py, not by hand
# In the web process, at most DATABASE_CONNECT_SLOTS threads of a gunicorn worker wait on a new
# connection at once; others wait their turn while those attempts go at a normal pace, and answer 503 as
# soon as one takes longer than DATABASE_CONNECT_QUEUE_SECONDS or fails; after a failed attempt new ones
# answer 503 at once for DATABASE_CONNECT_RETRY_SECONDS (statuspage/postgresql/base.py): requests
# waiting on a hanging database never hold every thread, and a burst on a healthy one is not refused.
DATABASE_CONNECT_SLOTS = envint("DATABASE_CONNECT_SLOTS", "4", minimum=1)
DATABASE_CONNECT_QUEUE_SECONDS = envfloat("DATABASE_CONNECT_QUEUE_SECONDS", "0.5", minimum=0.0)
DATABASE_CONNECT_RETRY_SECONDS = envfloat("DATABASE_CONNECT_RETRY_SECONDS", "2", minimum=0.0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    if WEB_PROCESS:
        DATABASES["default"]["ENGINE"] = "statuspage.postgresql"
        # Connections are not kept between web requests: a kept connection's health check on a database
        # that hangs would wait with no timeout (the statement timeout is the server's own), while a new
        # connection gives up after DATABASE_CONNECT_TIMEOUT, behind the bulkhead above.
        DATABASES["default"]["CONN_MAX_AGE"] = 0
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options.setdefault("connect_timeout", DATABASE_CONNECT_TIMEOUT)
    if WEB_PROCESS and DATABASE_STATEMENT_TIMEOUT:
        _startup = f"-c statement_timeout={DATABASE_STATEMENT_TIMEOUT * 1000}"
        _options["options"] = f"{_options['options']} {_startup}" if _options.get("options") else _startup
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# clock_metric_target_idx includes a column for PostgreSQL's index-only scans; SQLite builds it without.
SILENCED_SYSTEM_CHECKS = ["models.W040"]

# Redis: broker for Celery and the cache. Unset: tasks run eagerly and the cache is per-process.
REDIS_URL = envurl("REDIS_URL", "", {"redis", "rediss", "unix"})
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
# Without a broker, notifications are sent by the timer loop (run_timers --loop), never inside the web
# request that caused them. True sends them in the request instead (tests; a one-off script).
DELIVER_EAGERLY = envbool("DELIVER_EAGERLY", "false")
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_QUEUE", "signalpost")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
# Beat keeps its schedule in memory, not in a shelve file: every periodic task is a short idempotent sweep,
# so a restarted beat just sweeps at once, and there is no file to lock, corrupt or leave behind (Python
# 3.13's dbm.sqlite3 shelve failed with "locking protocol" under an embedded beat).
CELERY_BEAT_SCHEDULER = "celery.beat:Scheduler"
TIMER_SWEEP_SECONDS = envint("TIMER_SWEEP_SECONDS", "15", minimum=1)
REPUBLISH_SECONDS = envint("REPUBLISH_SECONDS", "300", minimum=10)
# Notification delivery (incidents/notifications.py): retries, the stale-claim timeout, the breaker.
DELIVERY_BACKOFF_SECONDS = envint("DELIVERY_BACKOFF_SECONDS", "30", minimum=1)
DELIVERY_BACKOFF_CAP_SECONDS = envint("DELIVERY_BACKOFF_CAP_SECONDS", "3600", minimum=1)
DELIVERY_MAX_ATTEMPTS = envint("DELIVERY_MAX_ATTEMPTS", "8", minimum=1)
# Workers renew their claim on a batch while they send it (a heartbeat, five times per timeout), so rows
# a dead worker held go back after at most this long, and a living worker never loses its rows.
DELIVERY_CLAIM_TIMEOUT_SECONDS = envint("DELIVERY_CLAIM_TIMEOUT_SECONDS", "45", minimum=1)
BREAKER_THRESHOLD = envint("BREAKER_THRESHOLD", "5", minimum=1)
BREAKER_COOLDOWN_SECONDS = envint("BREAKER_COOLDOWN_SECONDS", "60", minimum=1)
# Webhooks reach public addresses only (no loopback, private or link-local ones: SSRF); true allows a
# receiver on your own network (and tests' local receivers).
WEBHOOK_ALLOW_PRIVATE = envbool("WEBHOOK_ALLOW_PRIVATE", "false")

# Email: EMAIL_HOST (and EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD, EMAIL_USE_TLS or EMAIL_USE_SSL,
# EMAIL_TIMEOUT); unset: console.
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "Signalpost <status@localhost>")
_email_host = env("EMAIL_HOST")
# EMAIL_BACKEND says how mail leaves: smtp (EMAIL_HOST) or console (printed). Production must send it,
# so with DEBUG=false and no EMAIL_HOST start-up stops, unless console is chosen on purpose: pages and
# subscriber emails printed to a log nobody reads are lost without anyone knowing.
_email_backend = env("EMAIL_BACKEND", "smtp" if _email_host else "").lower()
if _email_backend not in {"", "smtp", "console"}:
    raise ImproperlyConfigured(f"EMAIL_BACKEND must be smtp or console, not {_email_backend!r}")
if _email_backend == "console" and _email_host:
    raise ImproperlyConfigured("EMAIL_BACKEND=console would ignore EMAIL_HOST: unset one of them")
if _email_backend == "smtp" and not _email_host:
    raise ImproperlyConfigured("EMAIL_BACKEND=smtp needs EMAIL_HOST (the SMTP server to send through)")
if not _email_host and not DEBUG and _email_backend != "console":
    raise ImproperlyConfigured(
        "EMAIL_HOST must be set when DEBUG is false: without it pages and subscriber emails are only "
        "printed to the console. Set EMAIL_BACKEND=console to run without sending email on purpose."
    )
if _email_host and envbool("EMAIL_USE_TLS", "true") and envbool("EMAIL_USE_SSL", "false"):
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL: choose one (SSL for port 465, TLS for 587).")
if _email_host:
    MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {
                "host": _email_host,
                "port": envint("EMAIL_PORT", "587", minimum=1, maximum=65535),
                "username": env("EMAIL_HOST_USER"),
                "password": env("EMAIL_HOST_PASSWORD"),
                "use_tls": envbool("EMAIL_USE_TLS", "true"),
                "use_ssl": envbool("EMAIL_USE_SSL", "false"),
                "timeout": envint("EMAIL_TIMEOUT", "10", minimum=1),
            },
        }
    }
else:
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}
    if _email_backend == "console":
        # Chosen on purpose: `check --deploy` need not repeat that console email goes nowhere.
        SILENCED_SYSTEM_CHECKS.append("mail.E001")

SNAPSHOT_DIR = Path(env("SNAPSHOT_DIR", str(BASE_DIR / "var" / "snapshot")))
# Write the public site as files (SNAPSHOT_DIR/site) after each publish, for nginx to serve
# (deploy/nginx.conf). On by default when a worker publishes (REDIS_URL set).
PUBLISH_STATIC_SITE = envbool("PUBLISH_STATIC_SITE", "true" if REDIS_URL else "false")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Signing in (statuspage/signin.py): django-axes counts failed sign-ins on /login/ and /admin/login/ in
# the database. AXES_FAILURE_LIMIT failures for one account, or from one client address (the
# X-Forwarded-For entry with TRUST_X_FORWARDED_FOR), pause sign-in there for AXES_COOLOFF_MINUTES
# after the last of them, the right password included. Attempts refused during the pause are not
# counted, so the time the page shows holds. A successful sign-in does not clear earlier failures
# (that would let anyone with an account clear their address's count between guesses).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("AXES_FAILURE_LIMIT", "5", minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=envint("AXES_COOLOFF_MINUTES", "15", minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_USERNAME_FORM_FIELD = "username"
AXES_CLIENT_IP_CALLABLE = "statuspage.signin.client_ip"
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = False
AXES_LOCKOUT_CALLABLE = "statuspage.signin.lockout_response"
AXES_HTTP_RESPONSE_CODE = 429
# Successful sign-ins are not logged by axes (an audit log belongs to the accounts app); failures are,
# under "Access attempts" in /admin/, until they expire.
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False  # no start-up banner on every manage.py command
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "incidents:dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
USE_I18N = False
USE_TZ = True
TIME_ZONE = "UTC"
# The zone times are shown in on the staff pages (stored times are always UTC).
DISPLAY_TIME_ZONE = env("DISPLAY_TIME_ZONE", "UTC")
try:
    zoneinfo.ZoneInfo(DISPLAY_TIME_ZONE)
except (zoneinfo.ZoneInfoNotFoundError, ValueError):
    raise ImproperlyConfigured(
        f"DISPLAY_TIME_ZONE must be an IANA zone such as Europe/Berlin, not {DISPLAY_TIME_ZONE!r}"
    ) from None

STATIC_URL = "/static/"
STATIC_ROOT = Path(env("STATIC_ROOT", str(BASE_DIR / "var" / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
# Files served at the site's root by WhiteNoise: /favicon.ico, which browsers ask for on every page
# that names no icon (the admin's).
WHITENOISE_ROOT = BASE_DIR / "statuspage" / "rootfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
    "base-uri": [CSP.NONE],
}
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Behind a reverse proxy every request comes from the proxy: trust the X-Forwarded-For it appends
# (the last entry) so sign-up and sign-in limits apply per visitor. Only turn on behind a proxy you run.
TRUST_X_FORWARDED_FOR = envbool("TRUST_X_FORWARDED_FOR", "false")
_https = SITE_URL.startswith("https://")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _https
if _https:
    # The TLS-terminating proxy in front (deploy/nginx.conf) says the client's scheme in this header;
    # the redirect below and HSTS rely on it, or every request would look like plain HTTP and loop.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# With an https SITE_URL, a request that reached us over plain HTTP is sent to https, and browsers are
# told (HSTS) to use https only for this host. Health probes that call gunicorn directly on plain HTTP
# are exempt: SECURE_REDIRECT_EXEMPT, path regexes without the leading slash.
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "true" if _https else "false")
if SECURE_SSL_REDIRECT and not _https:
    raise ImproperlyConfigured("SECURE_SSL_REDIRECT needs an https SITE_URL (it sends every request to https)")
SECURE_REDIRECT_EXEMPT = [
    p.strip() for p in env("SECURE_REDIRECT_EXEMPT", r"^(healthz|readyz|livez)/?$").split(",") if p.strip()
]  # an empty entry would match, and exempt, every path
for _pattern in SECURE_REDIRECT_EXEMPT:
    try:
        re.compile(_pattern)
    except re.error as error:
        raise ImproperlyConfigured(
            f"SECURE_REDIRECT_EXEMPT has a bad regular expression {_pattern!r}: {error}"
        ) from None
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", "31536000" if _https else "0")
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", "true")
# Preloading is the domain owner's decision (a submission to the browsers' list, hard to undo), so the
# directive is off unless asked for, and Django's advice to send it (security.W021) is not repeated.
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", "false")
if not SECURE_HSTS_PRELOAD:
    SILENCED_SYSTEM_CHECKS.append("security.W021")

LOG_LEVEL = env("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {LOG_LEVEL!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

NINJA_PAGINATION_PER_PAGE = 50
