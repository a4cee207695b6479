"""Pairwise settings: everything comes from the environment, with embedded single-machine defaults.

With no variables set, Pairwise runs on a SQLite file (WAL mode) and Celery's filesystem
broker, both under var/. DATABASE_URL and CELERY_BROKER_URL switch to Postgres and Redis/RabbitMQ.
"""
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config import secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("PAIRWISE_VAR_DIR", BASE_DIR / "var")).resolve()


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
# SECRET_KEY from the environment, else var/secret_key (`make demo` writes it), else, with DEBUG on
# only, the public development key: with DEBUG off and no key the server refuses to start.
SECRET_KEY = secret_key.secret_key_resolve(environ=os.environ, var_dir=VAR_DIR, debug=DEBUG)
if SECRET_KEY is None:
    raise ImproperlyConfigured(secret_key.secret_key_missing_message(var_dir=VAR_DIR))
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

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
    "django_celery_beat",
    "labeling",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.RequestSizeMiddleware",  # before anything (the CSRF check) reads a body
    "config.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
        },
    },
]

DEFAULT_SQLITE_URL = f"sqlite:///{VAR_DIR / 'pairwise.sqlite3'}"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or DEFAULT_SQLITE_URL,
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "600")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while a Celery worker writes; IMMEDIATE avoids
    # the lock-upgrade deadlock SQLite hits when two writers start as readers.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;",
        "transaction_mode": "IMMEDIATE",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DATABASES["default"].setdefault("TEST", {})
if os.environ.get("TEST_DATABASE_NAME"):
    DATABASES["default"]["TEST"]["NAME"] = os.environ["TEST_DATABASE_NAME"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# CACHE_URL shares the cache between web workers (file:///path, one host) or hosts
# (redis://host:6379/1); without it each process has its own memory cache. A Redis cache also
# holds sessions, which takes a database query off every request. Otherwise sessions stay in the
# database: a per-process cache would let a session deleted at logout live on in other workers.
CACHE_URL = os.environ.get("CACHE_URL", "")
if CACHE_URL.startswith("file://"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                          "LOCATION": CACHE_URL.removeprefix("file://")}}
elif CACHE_URL:
    CACHES = {"default": {"BACKEND": "config.cache.RedisCache", "LOCATION": CACHE_URL}}
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

AUTHENTICATION_BACKENDS = ["config.auth.ModelBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Markdown: the console's preview renders at most this many characters (400 beyond), and each
# process keeps rendered HTML (prompts, responses, instructions) within this many bytes.
PAIRWISE_MARKDOWN_PREVIEW_MAX_CHARS = int(os.environ.get("PAIRWISE_MARKDOWN_PREVIEW_MAX_CHARS", "20000"))
PAIRWISE_MARKDOWN_CACHE_BYTES = int(os.environ.get("PAIRWISE_MARKDOWN_CACHE_BYTES", str(8 * 1024 * 1024)))

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every request without it
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
MEDIA_ROOT = VAR_DIR / "media"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

# Uploads: imports stream from a temp file; anything above this is refused with a 400.
PAIRWISE_MAX_IMPORT_BYTES = int(os.environ.get("PAIRWISE_MAX_IMPORT_BYTES", str(200 * 1024 * 1024)))
# A reward-evaluation upload (viewers may post one): bytes after decompression, and the request's size.
PAIRWISE_MAX_EVAL_UPLOAD_BYTES = int(os.environ.get("PAIRWISE_MAX_EVAL_UPLOAD_BYTES", str(64 * 1024 * 1024)))
PAIRWISE_MAX_TEXT_CHARS = int(os.environ.get("PAIRWISE_MAX_TEXT_CHARS", str(1_000_000)))
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
PAIRWISE_MODELS_DIR = Path(os.environ.get("PAIRWISE_MODELS_DIR", VAR_DIR / "models"))
PAIRWISE_EXPORTS_DIR = Path(os.environ.get("PAIRWISE_EXPORTS_DIR", VAR_DIR / "exports"))
# An import upload of at least this many bytes (as received) is saved under PAIRWISE_IMPORTS_DIR and
# imported by the worker as a background job (labeling.services.import_jobs); the folder must be shared
# by the web and worker processes.
PAIRWISE_IMPORT_BACKGROUND_BYTES = int(os.environ.get("PAIRWISE_IMPORT_BACKGROUND_BYTES", str(20 * 1024 * 1024)))
PAIRWISE_IMPORTS_DIR = Path(os.environ.get("PAIRWISE_IMPORTS_DIR", VAR_DIR / "imports"))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # DRF's own three, the JSON one turning over-deep nesting into a 400 instead of a RecursionError.
    "DEFAULT_PARSER_CLASSES": [
        "labeling.apis.base.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "labeling.apis.schema.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Pairwise API",
    "DESCRIPTION": "Human-feedback labeling, preference datasets and the RLHF training loop.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Interactive docs are served from our own static files: no CDN, works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No badge from validator.swagger.io: the docs page loads nothing from elsewhere (see the CSP).
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# Celery: the filesystem transport needs no service; a broker URL switches to Redis/RabbitMQ.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "celery"
    for _sub in ("in", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "in"),
        "data_folder_out": str(_broker_dir / "in"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
# Heavy jobs go to the "training" queue (GPU workers in production); housekeeping such as the
# reaper stays on "celery", so it is never stuck behind a long training run.
CELERY_TASK_ROUTES = {
    name: {"queue": "training"}
    for name in (
        "training.tasks.reward_model_train", "training.tasks.policy_train", "training.tasks.policy_evaluate",
        "training.tasks.candidates_generate", "training.tasks.acquisition_scores_update",
    )
}
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE
PAIRWISE_HEARTBEAT_STALE = timedelta(seconds=int(os.environ.get("PAIRWISE_HEARTBEAT_STALE_S", "120")))
# A queued run whose task message no worker has picked up (a broker without persistence restarted,
# a purge) is sent again after this, and failed once it has waited PAIRWISE_QUEUED_MAX_AGE: two days,
# far longer than a run may train (PAIRWISE_TRAIN_SOFT_TIME_LIMIT_S), so a run waiting behind others is not failed.
PAIRWISE_QUEUED_RESEND_AFTER = timedelta(seconds=int(os.environ.get("PAIRWISE_QUEUED_RESEND_AFTER_S", "600")))
PAIRWISE_QUEUED_MAX_AGE = timedelta(seconds=int(os.environ.get("PAIRWISE_QUEUED_MAX_AGE_S", str(48 * 3600))))
PAIRWISE_TRAIN_SOFT_TIME_LIMIT_S = int(os.environ.get("PAIRWISE_TRAIN_SOFT_TIME_LIMIT_S", str(6 * 3600)))
# Called with project=... inside project_create's transaction (labeling does not import training).
PAIRWISE_PROJECT_CREATED_HOOKS = ["training.services.schedules.project_schedule_ensure"]
# Panels on the console's overview, each called with project=... ({"title", "rows": [{label, value, url}]}).
PAIRWISE_OVERVIEW_PANELS = ["training.selectors.overview.project_training_summary"]
# Processes per SFT, DPO or reward run (a run's own `processes` param wins): >1 starts a process group
# (torchrun on the CPU, `accelerate launch` on GPUs); an accelerate config file selects FSDP or DeepSpeed.
PAIRWISE_TRAIN_PROCESSES = int(os.environ.get("PAIRWISE_TRAIN_PROCESSES", "1"))
PAIRWISE_ACCELERATE_CONFIG = os.environ.get("PAIRWISE_ACCELERATE_CONFIG", "")
# Operator knobs a run request can never set (training.runspec.OPERATOR_ONLY): the most processes a
# request may ask for (default: PAIRWISE_TRAIN_PROCESSES), the torch device of every trainer, evaluation
# and sampler ("auto": cuda when present), and torch's CPU threads per run (0: torch's default).
PAIRWISE_MAX_PROCESSES = int(os.environ.get("PAIRWISE_MAX_PROCESSES", "0")) or PAIRWISE_TRAIN_PROCESSES
PAIRWISE_DEVICE = os.environ.get("PAIRWISE_DEVICE", "auto")
PAIRWISE_TRAIN_THREADS = int(os.environ.get("PAIRWISE_TRAIN_THREADS", "0"))
# Local candidate sampler: auto (vLLM where it is installed and a GPU is there, else transformers),
# vllm (fail a run that cannot use it) or transformers (training.ml.vllm_backend).
PAIRWISE_GENERATOR = os.environ.get("PAIRWISE_GENERATOR", "auto")
# Model servers that project admins register (training.services.endpoints) are reached from the workers,
# so they are bounded by the operator: an endpoint's key is read only from variables with this prefix
# (never SECRET_KEY, DATABASE_URL, cloud keys; empty: no keys at all); hosts resolving to loopback,
# link-local, private, multicast or reserved addresses are refused unless this allow-list (comma-separated
# CIDRs or host names, e.g. "10.0.0.0/8,vllm.internal") names them; answers are read up to this many bytes.
PAIRWISE_ENDPOINT_KEY_ENV_PREFIX = os.environ.get("PAIRWISE_ENDPOINT_KEY_ENV_PREFIX", "PAIRWISE_ENDPOINT_KEY_")
PAIRWISE_ENDPOINT_ALLOWED_NETWORKS = os.environ.get("PAIRWISE_ENDPOINT_ALLOWED_NETWORKS", "")
PAIRWISE_ENDPOINT_MAX_RESPONSE_BYTES = int(os.environ.get("PAIRWISE_ENDPOINT_MAX_RESPONSE_BYTES", str(4 * 1024 * 1024)))
PAIRWISE_RETRAIN_CHECK_MINUTES = int(os.environ.get("PAIRWISE_RETRAIN_CHECK_MINUTES", "5"))
PAIRWISE_PIPELINE_POLICY_KIND = os.environ.get("PAIRWISE_PIPELINE_POLICY_KIND", "dpo")
PAIRWISE_AUTO_PROMOTE_MARGIN = (
    float(os.environ["PAIRWISE_AUTO_PROMOTE_MARGIN"]) if os.environ.get("PAIRWISE_AUTO_PROMOTE_MARGIN") else None
)
PAIRWISE_EXPORT_STREAM_MAX_ROWS = int(os.environ.get("PAIRWISE_EXPORT_STREAM_MAX_ROWS", "200000"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}

if not DEBUG:
    SESSION_COOKIE_HTTPONLY = True
    CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

# --- security -------------------------------------------------------------------------------
# No inline script or style anywhere: templates load static files only, JSON rides in
# json_script blocks, and the API docs use the split Swagger view (its init script is a URL).
# Django's admin adds an inline <style> to a changelist only when a ModelAdmin turns off both
# action bars (actions_on_top and actions_on_bottom): keep one on. tests/e2e/test_csp_browser.py
# visits the pages and fails on any violation.
CONTENT_SECURITY_POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "frame-ancestors": ["'none'"],
    "form-action": ["'self'"],
}
# Failed logins per username and per client address within the window, then refused until it ends.
# The address limit is higher: an office behind one NAT address shares it.
PAIRWISE_LOGIN_MAX_FAILURES = int(os.environ.get("PAIRWISE_LOGIN_MAX_FAILURES", "10"))
PAIRWISE_LOGIN_MAX_FAILURES_PER_IP = int(os.environ.get("PAIRWISE_LOGIN_MAX_FAILURES_PER_IP", "50"))
PAIRWISE_LOGIN_WINDOW_S = int(os.environ.get("PAIRWISE_LOGIN_WINDOW_S", "300"))
# The counts live in Django's cache (see CACHE_URL above).

# Production behind HTTPS: PAIRWISE_HTTPS=1 turns on everything `check --deploy` asks for.
if env_bool("PAIRWISE_HTTPS", False):
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("PAIRWISE_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("PAIRWISE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("PAIRWISE_HSTS_PRELOAD", True)
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (and strips it from clients).
if env_bool("PAIRWISE_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

REST_FRAMEWORK["EXCEPTION_HANDLER"] = "labeling.apis.base.exception_handler"
