"""The one settings module. Every deployment difference is an environment variable.

Variables are documented in docs/configuration.md. Any variable may instead be given as a
file path in ``<NAME>_FILE`` (Docker secrets). A bad value raises ``ImproperlyConfigured``
naming the variable, so a misconfigured process refuses to start instead of half-working.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import overload
from urllib.parse import urlsplit

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@overload
def env_str(name: str, default: str) -> str: ...
@overload
def env_str(name: str, default: None = None) -> str | None: ...
def env_str(name: str, default: str | None = None) -> str | None:
    """Return ``$NAME``, or the contents of the file named by ``$NAME_FILE``, or ``default``."""
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_path!r} cannot be read: {exc}") from exc
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name} must be one of 1/0, true/false, yes/no, on/off; got {value!r}"
    )


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = env_str(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer; got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}; got {number}")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    value = env_str(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number; got {value!r}") from None
    if number != number or (minimum is not None and number < minimum):
        raise ImproperlyConfigured(f"{name} must be a number of at least {minimum}; got {value}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = env_str(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def database_from_url(name: str, url: str) -> dj_database_url.DBConfig:
    try:
        config = dj_database_url.parse(url, conn_max_age=0)
    except Exception as exc:  # dj-database-url raises several types for malformed URLs
        raise ImproperlyConfigured(f"{name} is not a valid database URL ({exc}): {url!r}") from exc
    engine = config.get("ENGINE", "")
    if engine == "django.db.backends.sqlite3":
        if not config.get("NAME"):
            raise ImproperlyConfigured(f"{name} names no SQLite file: {url!r}")
        # WAL and IMMEDIATE transactions let the demo's web server and worker write side by side.
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    elif engine == "django.db.backends.postgresql":
        if not config.get("NAME"):
            raise ImproperlyConfigured(f"{name} names no PostgreSQL database: {url!r}")
        config["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
        config["CONN_HEALTH_CHECKS"] = True
        if env_bool("DATABASE_PREPARED_STATEMENTS", True):
            # Parameters bound by the server, and statements a connection runs often prepared
            # once (psycopg's threshold): planning was half of PostgreSQL's time on the rating
            # loop. Off behind a pooler in transaction mode, which cannot keep them.
            config["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 5}
    else:
        raise ImproperlyConfigured(
            f"{name} must be a postgres:// or sqlite:// URL; got engine {engine or 'none'!r}"
        )
    return config


# --- Core -----------------------------------------------------------------------------------

DEBUG = env_bool("DEBUG", False)

_DEV_SECRET_KEY = "insecure-development-key-for-debug-mode-only-never-deploy-this-value"
SECRET_KEY = env_str("SECRET_KEY")
if SECRET_KEY is None:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is required when DEBUG is off. Set SECRET_KEY (or SECRET_KEY_FILE) to a "
            "random value of at least 50 characters, for example the output of: "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
    SECRET_KEY = _DEV_SECRET_KEY
elif not DEBUG and (len(SECRET_KEY) < 50 or SECRET_KEY == _DEV_SECRET_KEY):
    raise ImproperlyConfigured(
        "SECRET_KEY must be a random value of at least 50 characters when DEBUG is off "
        "(a short or published key lets anyone forge sessions)."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "csp",
    "axes",
    "clinic_eval",
    "alignment_jobs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "clinic_eval.accounts.middleware.RejectNulCharactersMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "clinic_eval.accounts.middleware.AuditContextMiddleware",
    "clinic_eval.accounts.middleware.SlidingSessionMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "clinic_eval.accounts.middleware.SessionAbsoluteTimeoutMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a lockout raised during authentication into a page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "clinic_eval.urls"
WSGI_APPLICATION = "clinic_eval.wsgi.application"
ASGI_APPLICATION = "clinic_eval.asgi.application"

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
            ],
            "builtins": ["template_partials.templatetags.partials"],
        },
    }
]

# --- Data -----------------------------------------------------------------------------------

VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DATABASES = {
    "default": database_from_url(
        "DATABASE_URL", env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'clinic_eval.sqlite3'}")
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "clinic_eval.User"

# --- Cache (the results page keeps each computed report until the data change) ------------------
# Per process by default; with CACHE_URL=redis://... every web process shares one copy.
CACHE_URL = env_str("CACHE_URL", "")
if CACHE_URL and urlsplit(CACHE_URL).scheme not in {"redis", "rediss"}:
    raise ImproperlyConfigured(f"CACHE_URL must be a redis:// URL; got {CACHE_URL!r}")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
        if CACHE_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# Case and response files larger than this are refused before they are read.
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_BYTES", 50 * 1024 * 1024, minimum=1024)
IMPORT_MAX_ROWS = env_int("IMPORT_MAX_ROWS", 100_000, minimum=1)

# --- Celery (read by clinic_eval/celery.py under the CELERY_ namespace) ------------------------

_ALLOWED_BROKER_SCHEMES = {"redis", "rediss", "filesystem", "amqp", "pyamqp", "memory"}
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://localhost/")
_broker_scheme = urlsplit(CELERY_BROKER_URL).scheme
if _broker_scheme not in _ALLOWED_BROKER_SCHEMES:
    raise ImproperlyConfigured(
        f"CELERY_BROKER_URL must use one of {sorted(_ALLOWED_BROKER_SCHEMES)}; "
        f"got {CELERY_BROKER_URL!r}"
    )
if _broker_scheme == "filesystem":
    # The embedded broker for the demo: messages are files, so no server is needed.
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    # Redis redelivers an unacknowledged task after this long; it must exceed the longest task.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 6 * 3600, minimum=60)
    }
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "celery")
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Tasks record their outcome in the domain tables, so no result backend is needed.
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_GPU_QUEUE = env_str("CELERY_GPU_QUEUE", "gpu")
CELERY_TASK_ROUTES = {
    # The sweep only reads and writes the database: any worker may run it.
    "alignment_jobs.shards_sweep_stale": {"queue": CELERY_TASK_DEFAULT_QUEUE},
    "alignment_jobs.*": {"queue": CELERY_GPU_QUEUE},
}

# --- Generation -----------------------------------------------------------------------------

# Checkpoints and adapters are loaded only from under these directories (on the workers' disk).
MODEL_ROOTS = env_list("MODEL_ROOTS", [str(VAR_DIR / "models")])
# auto: vLLM where it is installed, else transformers.
GENERATION_ENGINE = env_str("GENERATION_ENGINE", "auto")
if GENERATION_ENGINE not in {"auto", "vllm", "transformers"}:
    raise ImproperlyConfigured(
        f"GENERATION_ENGINE must be auto, vllm or transformers; got {GENERATION_ENGINE!r}"
    )
GENERATION_SHARD_SIZE = env_int("GENERATION_SHARD_SIZE", 64, minimum=1)
GENERATION_MAX_ATTEMPTS = env_int("GENERATION_MAX_ATTEMPTS", 3, minimum=1)
GENERATION_RETRY_SECONDS = env_int("GENERATION_RETRY_SECONDS", 30, minimum=0)
GENERATION_HEARTBEAT_SECONDS = env_float("GENERATION_HEARTBEAT_SECONDS", 15.0, minimum=0.1)
GENERATION_STALE_SECONDS = env_float("GENERATION_STALE_SECONDS", 120.0, minimum=0.5)
GENERATION_SWEEP_SECONDS = env_float("GENERATION_SWEEP_SECONDS", 60.0, minimum=0.5)
GENERATION_ENGINE_CACHE_SIZE = env_int("GENERATION_ENGINE_CACHE_SIZE", 1, minimum=1)
# 0: the model's own context length.
GENERATION_MAX_MODEL_LEN = env_int("GENERATION_MAX_MODEL_LEN", 0, minimum=0)
TRANSFORMERS_BATCH_SIZE = env_int("TRANSFORMERS_BATCH_SIZE", 16, minimum=1)
VLLM_ENFORCE_EAGER = env_bool("VLLM_ENFORCE_EAGER", False)
VLLM_GPU_MEMORY_UTILIZATION = env_float("VLLM_GPU_MEMORY_UTILIZATION", 0.9, minimum=0.05)
# KV-cache size in bytes; 0: the memory share above on a GPU, 512 MiB on a CPU.
VLLM_KV_CACHE_BYTES = env_int("VLLM_KV_CACHE_BYTES", 0, minimum=0)
if GENERATION_STALE_SECONDS <= 2 * GENERATION_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured(
        "GENERATION_STALE_SECONDS must exceed two heartbeats (GENERATION_HEARTBEAT_SECONDS)"
    )
# A job not finished that no live worker consumes (or, where workers cannot be asked, on which
# no shard has reported) for this long is flagged on its page, its API and `generate --wait`.
WORKER_SILENCE_SECONDS = env_float("WORKER_SILENCE_SECONDS", 60.0, minimum=1.0)
# How long an answer to "who consumes this queue?" is reused by pages that poll.
WORKER_CHECK_CACHE_SECONDS = env_float("WORKER_CHECK_CACHE_SECONDS", 10.0, minimum=0.0)
CELERY_BEAT_SCHEDULE = {
    "requeue-stale-shards": {
        "task": "alignment_jobs.shards_sweep_stale",
        "schedule": GENERATION_SWEEP_SECONDS,
    }
}

# --- Auth and sessions ----------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes counts failed sign-ins (web form and API token alike) and locks the account for
# this address after too many; the standalone backend must come first so it sees every attempt.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
# Username and address together: a guesser from one place is stopped, while the real physician
# on another machine can still sign in (locking by username alone lets anyone lock anyone out).
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "clinic_eval.web.security.client_ip"
AXES_VERBOSE = False
# Behind this many reverse proxies the client's address is that many hops from the right of
# X-Forwarded-For; with none, the header is ignored (a client could forge it).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- E-mail (rater reminders) ----------------------------------------------------------------
# Printed to the console unless a mail server is configured, so a reminder never fails silently
# and a fresh machine needs no SMTP server.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "clinic-eval <noreply@localhost>")

SESSION_IDLE_TIMEOUT_MINUTES = env_int("SESSION_IDLE_TIMEOUT_MINUTES", 30, minimum=1)
# A sliding expiry: requests push the deadline forward (at most once a minute, by
# ``SlidingSessionMiddleware``), so idle sessions end.
SESSION_COOKIE_AGE = SESSION_IDLE_TIMEOUT_MINUTES * 60
SESSION_SAVE_EVERY_REQUEST = False
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
# However active, a session ends this long after sign-in (a shared ward computer stays safe).
SESSION_ABSOLUTE_TIMEOUT_HOURS = env_int("SESSION_ABSOLUTE_TIMEOUT_HOURS", 12, minimum=1)

# --- Security -------------------------------------------------------------------------------

SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
# htmx sends the token from the page (hx-headers), so no script needs to read the cookie.
CSRF_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# Health checks from the container runtime speak plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
# The directive only consents to preloading; nothing is listed until someone submits the domain.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", SECURE_HSTS_SECONDS > 0)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# --- Static files ---------------------------------------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if env_bool("STATIC_MANIFEST", False)
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not env_bool("STATIC_MANIFEST", False)

# --- API ------------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "clinic_eval.accounts.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "clinic-eval API",
    "DESCRIPTION": "Blinded clinician evaluation of aligned language models.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "ArmKindEnum": "clinic_eval.models.Arm.Kind",
        "ImportKindEnum": "clinic_eval.models.DataImport.Kind",
        "ImportFormatEnum": "clinic_eval.models.DataImport.Format",
        "ImportStatusEnum": "clinic_eval.models.DataImport.Status",
        "StudyStatusEnum": "clinic_eval.models.Study.Status",
    },
}

# --- Misc -----------------------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Sign-ins, failures and lockouts are in the audit trail; axes would repeat each one.
        "axes": {"level": "WARNING"},
    },
}
