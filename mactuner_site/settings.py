"""One env-driven settings module.

Defaults need zero services (SQLite + in-memory channel layer on 127.0.0.1) so a fresh laptop
runs the app; ``DATABASE_URL`` / ``REDIS_URL`` switch to PostgreSQL / Redis. With
``MACTUNER_PRODUCTION=1`` every insecure default is refused and a missing secret stops start-up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


PRODUCTION = env_bool("MACTUNER_PRODUCTION")
DEBUG = env_bool("DJANGO_DEBUG", default=not PRODUCTION)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if PRODUCTION:  # one line that says what to set, not a traceback through Django's set-up
        sys.exit(
            "MACtuner: DJANGO_SECRET_KEY must be set when MACTUNER_PRODUCTION=1. Set it to a long random value, "
            "e.g. export DJANGO_SECRET_KEY=\"$(python -c 'import secrets; print(secrets.token_urlsafe(50))')\""
        )
    SECRET_KEY = "dev-only-insecure-key-mactuner-local-127-0-0-1"  # noqa: S105 - local default only
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")
# Anyone who can reach a non-loopback address must log in as staff (see loader.web.access).
MACTUNER_REQUIRE_STAFF = env_bool("MACTUNER_REQUIRE_STAFF", default=PRODUCTION)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "loader",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "loader.web.middleware.ContentSecurityPolicy",  # SECURE_CSP on every response, static ones too
    "loader.web.middleware.StaticFiles",  # WhiteNoise that keeps async views on the loop
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Scripts, styles and everything else from the app only: a second wall behind the escaping. The
# shape of Django 6's setting (loader.web.middleware.ContentSecurityPolicy sends it on 5.2); the
# page's websocket host is added to connect-src per request.
SECURE_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "frame-ancestors": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "object-src": ["'none'"],
}

ROOT_URLCONF = "mactuner_site.urls"
ASGI_APPLICATION = "mactuner_site.asgi.application"
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
            ]
        },
    }
]


SQLITE_OPTIONS = {
    # WAL lets the page read while the load thread (or the CLI) writes; IMMEDIATE takes the
    # write lock up front so two racing starts queue instead of failing with "locked".
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}


def database_from_url(url: str) -> dict[str, Any]:
    """``postgres://…`` or ``sqlite:///path`` (dj-database-url parses; we add our SQLite options)."""
    import dj_database_url

    try:
        config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=0))
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL this app understands: {exc}") from exc
    engine = str(config.get("ENGINE", ""))
    if engine.endswith("sqlite3"):
        config["OPTIONS"] = {**SQLITE_OPTIONS, **config.get("OPTIONS", {})}
    elif not engine.endswith("postgresql"):
        raise ImproperlyConfigured(f"DATABASE_URL must be postgres://… or sqlite:///…, got {engine}")
    return config


if os.environ.get("DATABASE_URL"):
    try:
        DATABASES = {"default": database_from_url(os.environ["DATABASE_URL"])}
    except ImproperlyConfigured as exc:
        sys.exit(f"MACtuner: {exc}")
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            # MACTUNER_SQLITE_PATH: where the job history lives without DATABASE_URL.
            "NAME": os.environ.get("MACTUNER_SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            "OPTIONS": SQLITE_OPTIONS,
            # A file, not shared-cache memory: the load thread writes while the request thread reads.
            "TEST": {"NAME": os.environ.get("MACTUNER_TEST_SQLITE_PATH", str(BASE_DIR / "test-db.sqlite3"))},
        }
    }

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    # redis-py 8 reads with a 5 s socket timeout, the same as channels_redis' 5 s blocking pop:
    # the pop then sometimes times out and kills the consumer. Give reads more room than the pop.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15, "socket_connect_timeout": 5}]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "ko"
LANGUAGES = [("ko", "한국어"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = os.environ.get("TZ", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# Serve straight from static/ too, so a fresh clone works under daphne without collectstatic.
WHITENOISE_USE_FINDERS = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/admin/login/"
CSRF_FAILURE_VIEW = "loader.web.views.csrf_failure"
# The load API takes a few short fields; anything bigger is refused before parsing.
DATA_UPLOAD_MAX_MEMORY_SIZE = 16 * 1024

MACTUNER_MODELS_DIR = Path(os.environ.get("MACTUNER_MODELS_DIR", BASE_DIR / "models")).resolve()
MACTUNER_HF_CACHE = Path(
    os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
)
# More folders where an adapter's base may live (given as an absolute path in its
# adapter_config.json). The web reads only inside its roots; the terminal may name any path.
MACTUNER_BASE_DIRS = [
    Path(p).resolve() for p in os.environ.get("MACTUNER_BASE_DIRS", "").split(os.pathsep) if p.strip()
]
MACTUNER_STALL_SECONDS = float(os.environ.get("MACTUNER_STALL_SECONDS", "120"))
MACTUNER_TRUST_REMOTE_CODE = env_bool("MACTUNER_TRUST_REMOTE_CODE")
# A cancelled load that has not stopped after this long (a regex or a read stuck in native code)
# has its model host killed and a fresh one started: its memory goes back to the system.
MACTUNER_CANCEL_GRACE_S = min(max(float(os.environ.get("MACTUNER_CANCEL_GRACE_S", "2")), 0.1), 2.0)
# How long the outcome of a load is retried while the database cannot be written (disk full).
MACTUNER_STORAGE_RETRY_S = float(os.environ.get("MACTUNER_STORAGE_RETRY_S", "600"))
# Spawn the model host (which imports torch/transformers) when the server starts, not at the
# first click.
MACTUNER_WARM_IMPORTS = env_bool("MACTUNER_WARM_IMPORTS", default=True)
# Optional cap on the weights read rate (MB/s), leaving disk bandwidth to other apps.
MACTUNER_READ_LIMIT_MBPS = float(os.environ.get("MACTUNER_READ_LIMIT_MBPS", "0"))

if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# One console handler for the whole process, on the root: configuring the root replaces the handler
# daphne's command line installs (which printed every loader line a second time, with a timestamp),
# and every line, daphne's and Django's included, is written above the terminal's bars, never
# into them (``loader.web.console``).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"line": {"format": "%(asctime)s %(levelname)-8s %(message)s"}},
    "handlers": {"console": {"class": "loader.web.console.BarSafeHandler", "formatter": "line"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {"loader": {"level": os.environ.get("MACTUNER_LOG_LEVEL", "INFO")}},
}
