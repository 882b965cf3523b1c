"""One settings module, driven by environment variables.

Helpers fail fast with ImproperlyConfigured on a bad value (as healthchecks does), so a typo in
the environment stops the process at start-up instead of surfacing as odd behaviour later.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("HMS_VAR_DIR", BASE_DIR / "var"))


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0/true/false), got {raw!r}")


def envint(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def envfloat(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ImproperlyConfigured(f"{name} must be a finite number, got {raw!r}")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def envlist(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DEBUG = envbool("HMS_DEBUG", False)
TESTING = "pytest" in sys.modules or envbool("HMS_TESTING", False)

SECRET_KEY = os.environ.get("HMS_SECRET_KEY", "")
if not SECRET_KEY:
    if DEBUG or TESTING:
        # A fixed key is acceptable only for a development console on this machine.
        SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production-hmsmgmt-0001"
    else:
        raise ImproperlyConfigured(
            "HMS_SECRET_KEY is required unless HMS_DEBUG=1 (`make up` sets HMS_DEBUG=1 for the embedded "
            "console; run other manage.py commands against it as HMS_DEBUG=1 .venv/bin/python manage.py …)"
        )

ALLOWED_HOSTS = envlist("HMS_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if (DEBUG or TESTING) else [])
CSRF_TRUSTED_ORIGINS = envlist("HMS_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "ninja",  # its bundled Swagger UI for /mgmt/docs (served by whitenoise), not a CDN: works offline
    "django_q",
    "guardian",
    "csp",  # django-csp: its system checks (the header comes from its middleware)
    # Ours, lowest first: each may import only those listed before it (tests/test_layers.py).
    "core",
    "audit",
    "accounts",
    "policies",
    "fleet",
    "health",
    "slo",
    "autoscaling",
    "workflows",
    "schedules",
    "controller",
    "console",
    # Migration history of the apps the layout split, under their old labels (legacy/__init__.py).
    "legacy.services",
    "legacy.hmsmgmt",
]

MIDDLEWARE = [
    "audit.middleware.RequestIdMiddleware",
    "core.logging.RequestLogMiddleware",  # one log line per request (route, status, duration)
    # Above everything that may query: a database outage anywhere below answers 503, never a 500.
    "core.middleware.DatabaseUnavailableMiddleware",
    "core.middleware.BodySizeLimitMiddleware",
    "core.middleware.UnstorableInputMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",  # Content-Security-Policy on every response (CONTENT_SECURITY_POLICY)
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "audit.middleware.AuditMiddleware",  # audits 401/403/429 refusals the actions did not
]

ROOT_URLCONF = "hmsmgmt.urls"
WSGI_APPLICATION = "hmsmgmt.wsgi.application"

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

# --- Database -------------------------------------------------------------------------------
DEFAULT_DB_URL = f"sqlite:///{VAR_DIR / 'hmsmgmt.sqlite3'}"
DATABASE_URL = os.environ.get("DATABASE_URL") or DEFAULT_DB_URL
# Lets several test runs share a machine without sharing a test database.
TEST_DB_SUFFIX = "".join(c for c in os.environ.get("HMS_TEST_DB_SUFFIX", "") if c.isalnum() or c == "_")
try:
    _db = dj_database_url.parse(DATABASE_URL, conn_max_age=envint("HMS_DB_CONN_MAX_AGE", 60, minimum=0))
except Exception as exc:  # dj_database_url raises a variety of errors on junk input
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
if _db["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # Web, worker and controller share one file: WAL lets readers run beside the writer, the busy
    # timeout waits for the lock instead of failing, and IMMEDIATE takes the write lock at BEGIN so
    # two writers never deadlock upgrading from a read lock ("database is locked").
    # A writer still locked out after the busy timeout gets "database is locked": the API and pages
    # answer it 503 database_unavailable (core.middleware), like a PostgreSQL outage.
    HMS_SQLITE_BUSY_TIMEOUT_MS = envint("HMS_SQLITE_BUSY_TIMEOUT_MS", 30000, minimum=1)
    _db["CONN_MAX_AGE"] = 0
    _db["OPTIONS"] = {
        "timeout": HMS_SQLITE_BUSY_TIMEOUT_MS / 1000,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                        f"PRAGMA busy_timeout={HMS_SQLITE_BUSY_TIMEOUT_MS};",
    }
    _db.setdefault("TEST", {})["NAME"] = str(VAR_DIR / f"test-hmsmgmt{TEST_DB_SUFFIX}.sqlite3")
elif _db["ENGINE"] in ("django.db.backends.postgresql",):
    # A persistent connection is checked (SELECT 1) before its first query of each request or task,
    # so one that broke between two requests (a database restart, a failover) is replaced instead
    # of failing a request. HMS_DB_HEALTH_CHECKS=0 drops that round trip: Django then checks a
    # connection only after an error on it (the first request after a restart answers 503).
    _db["CONN_HEALTH_CHECKS"] = envbool("HMS_DB_HEALTH_CHECKS", True)
    # psycopg binds parameters on the server (the extended protocol): less Python per query than
    # client-side quoting (docs/performance.md: about -4 % web CPU per start), and no literal values in
    # the statement text. HMS_DB_PREPARE_THRESHOLD=N also prepares a statement run N times on a
    # connection (less parsing and planning in PostgreSQL; not behind a transaction-pooling
    # pgbouncer). Each may be turned off by env.
    _db.setdefault("OPTIONS", {})
    if envbool("HMS_DB_SERVER_SIDE_BINDING", True):
        _db["OPTIONS"]["server_side_binding"] = True
    if (_prepare := envint("HMS_DB_PREPARE_THRESHOLD", 0, minimum=0)) > 0:
        _db["OPTIONS"]["prepare_threshold"] = _prepare
    if TEST_DB_SUFFIX:
        _db.setdefault("TEST", {})["NAME"] = f"test_{_db['NAME']}{TEST_DB_SUFFIX}"
else:
    raise ImproperlyConfigured("DATABASE_URL must be sqlite:// or postgres://")
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "accounts.throttle.ThrottledModelBackend",  # ModelBackend + login throttling
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user object; anonymous callers get nothing

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
if TESTING:
    # Personas are created per test; the production hasher's 1M iterations would dominate run time.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # serve from static/ without collectstatic for the embedded default
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every start when it is missing

# --- Security (production values unless HMS_DEBUG) -------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads it? no: the token is rendered into hx-headers instead
# Production (HMS_DEBUG=0) defaults to HTTPS-only so `manage.py check --deploy` is clean; each knob
# can be turned off by env for a console served behind a TLS-terminating proxy or on a lab network.
PRODUCTION = not DEBUG and not TESTING
SECURE = envbool("HMS_SECURE_COOKIES", PRODUCTION)
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_SSL_REDIRECT = envbool("HMS_SSL_REDIRECT", PRODUCTION)
# Health probes (/healthz, /readyz) come over plain HTTP from the host or the load balancer: a
# redirect to HTTPS would read as "down".
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = envint("HMS_HSTS_SECONDS", 31536000 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("HMS_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = envbool("HMS_HSTS_PRELOAD", PRODUCTION)
if envbool("HMS_BEHIND_TLS_PROXY", False):
    # Only behind a proxy that sets this header itself; otherwise a client could claim HTTPS.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_AGE = envint("HMS_SESSION_SECONDS", 12 * 3600, minimum=60)
# Content-Security-Policy (django-csp 4): scripts only from this origin's static files - no inline
# <script>, no on*= handlers, no eval (htmx is told allowEval=false in base.html) - so an injected
# tag or attribute cannot run. Styles allow 'unsafe-inline': templates carry <style> blocks and
# style= attributes (chart colours, widths), Swagger UI sets inline styles, and CSS cannot run
# script; moving them all would buy little (docs/security.md).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# Login throttling (accounts/throttle.py): failures counted in the database so every gunicorn
# worker sees the same count.
HMS_LOGIN_MAX_FAILURES = envint("HMS_LOGIN_MAX_FAILURES", 5, minimum=1)  # per username from one address
HMS_LOGIN_MAX_FAILURES_PER_IP = envint("HMS_LOGIN_MAX_FAILURES_PER_IP", 20, minimum=1)
HMS_LOGIN_WINDOW_SECONDS = envint("HMS_LOGIN_WINDOW_SECONDS", 900, minimum=1)
# Per username from all addresses together: high, so that locking an account out for everyone takes
# this many failures from at least this/HMS_LOGIN_MAX_FAILURES addresses, never one address's flood.
HMS_LOGIN_MAX_FAILURES_PER_USER = envint("HMS_LOGIN_MAX_FAILURES_PER_USER", 100, minimum=1)

# The REST API takes small JSON bodies; anything bigger is refused with 413 before parsing.
HMS_MAX_BODY_BYTES = envint("HMS_MAX_BODY_BYTES", 64 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(HMS_MAX_BODY_BYTES, 2 * 1024 * 1024)


# GET /metrics (console/metrics.py, docs/observability.md): a bearer token, and/or peer addresses
# allowed without one. Neither set in production means refused (403): fleet figures are not public.
def envnetworks(name: str, default: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated addresses or CIDRs (10.0.0.0/8, 192.0.2.7, ::1) as networks; host bits
    are allowed (10.1.2.3/8 means 10.0.0.0/8), so a copied address with its prefix still works."""
    items = envlist(name, list(default))
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in items)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be comma-separated addresses or CIDRs: {exc}") from None


HMS_METRICS_TOKEN = os.environ.get("HMS_METRICS_TOKEN", "")
if HMS_METRICS_TOKEN and (len(HMS_METRICS_TOKEN) < 16 or not HMS_METRICS_TOKEN.isprintable()
                          or any(c.isspace() for c in HMS_METRICS_TOKEN)):
    # A short token is guessable by a scraper left running; whitespace cannot survive the header.
    raise ImproperlyConfigured("HMS_METRICS_TOKEN must be at least 16 printable characters without spaces")
# Only a development console (make up) with no token set scrapes from loopback without configuration.
HMS_METRICS_ALLOW = envnetworks("HMS_METRICS_ALLOW",
                                ("127.0.0.0/8", "::1/128") if DEBUG and not HMS_METRICS_TOKEN else ())

# Outbound requests made on a user's behalf (alert webhooks, Alertmanager; core/outbound.py) may
# not reach loopback, private, link-local or metadata addresses unless named here: comma-separated
# host names, addresses or CIDRs (alertmanager, 10.0.0.0/8). A metadata address (169.254.169.254)
# only by that very address. Empty: public addresses only.
HMS_OUTBOUND_ALLOW = envlist("HMS_OUTBOUND_ALLOW", [])
try:
    from core.outbound import parse_allowlist

    parse_allowlist(HMS_OUTBOUND_ALLOW)
except ValueError as _exc:
    raise ImproperlyConfigured(f"HMS_OUTBOUND_ALLOW: {_exc}") from None

# Reverse proxies whose X-Forwarded-For is believed (core/clientaddr.py): the client address is the
# right-most hop that is not one of these. Empty (the default): REMOTE_ADDR, whatever the header says.
HMS_TRUSTED_PROXIES = envnetworks("HMS_TRUSTED_PROXIES", ())

# --- Domain knobs ----------------------------------------------------------------------------
HMS_MAX_INSTANCES = envint("HMS_MAX_INSTANCES", 50, minimum=1)
HMS_SCALE_WAIT_SECONDS = envint("HMS_SCALE_WAIT_SECONDS", 20, minimum=1)
HMS_CONTROLLER_TICK_MS = envint("HMS_CONTROLLER_TICK_MS", 500, minimum=50)
# Controller leadership (controller/leader.py): a standby retries a loop's lease this often; a leader
# checks its lease connection this often and a new leader waits as long before its first pass.
HMS_LEADER_RETRY_MS = envint("HMS_LEADER_RETRY_MS", 500, minimum=50)
HMS_LEADER_CHECK_MS = envint("HMS_LEADER_CHECK_MS", 500, minimum=50)
# A running step's lease: the worker's heartbeat renews it every second, so it bounds how long a
# dead worker keeps its step (re-delivery within lease + one controller tick), not how long a step
# may run (that is the step's timeout).
HMS_STEP_LEASE_SECONDS = envint("HMS_STEP_LEASE_SECONDS", 5, minimum=1)
# Re-deliveries of a step after its worker was lost (lease expired), counted apart from the step's
# retries; one more loss fails the step ("worker lost N times").
HMS_STEP_REDELIVERIES = envint("HMS_STEP_REDELIVERIES", 3, minimum=0)
# Runs that may wait in one queue (a "when full: queue" quota, per scope); past it, starts are
# refused (429) as a refusing quota would.
HMS_RUN_QUEUE_MAX = envint("HMS_RUN_QUEUE_MAX", 1000, minimum=1)
# Schedules (docs/schedules.md): the controller's "schedules" loop looks for due fires this often; a
# fire later than the grace counts as missed (the schedule's missed-fires policy decides); each
# schedule keeps its newest HMS_SCHEDULE_FIRES_KEPT fire records.
HMS_SCHEDULE_POLL_MS = envint("HMS_SCHEDULE_POLL_MS", 100, minimum=10)
HMS_SCHEDULE_GRACE_MS = envint("HMS_SCHEDULE_GRACE_MS", 2000, minimum=0)
HMS_SCHEDULE_FIRES_KEPT = envint("HMS_SCHEDULE_FIRES_KEPT", 500, minimum=10)
HMS_DEFAULT_DRIVER = os.environ.get("HMS_DEFAULT_DRIVER", "process")
HMS_PORT = envint("HMS_PORT", 8000, minimum=1)  # where `manage.py up` serves
HMS_HOST = os.environ.get("HMS_HOST", "127.0.0.1")
HMS_ADMIN_PASSWORD = os.environ.get("HMS_ADMIN_PASSWORD", "")  # of the "admin" `manage.py up` creates
HMS_STEP_JOURNAL = os.environ.get("HMS_STEP_JOURNAL", "")  # the journal callable's file (fault tests)
HMS_BENCH = envbool("HMS_BENCH", False)  # exposes the bare-INSERT baseline view for bench/
HMS_SAMPLE_IMAGE = os.environ.get("HMS_SAMPLE_IMAGE", "hmsmgmt/sample:latest")

# --- Engines (docs/engines.md) -----------------------------------------------------------------
HMS_START_TIMEOUT_SECONDS = envfloat("HMS_START_TIMEOUT_SECONDS", 30, minimum=1)  # never healthy → dead
HMS_DOCKER_WARM_SPARES = envint("HMS_DOCKER_WARM_SPARES", 0, minimum=0)
# The account process-driver instances run as (docs/security.md): blank = `nobody` when the console
# runs as root, else the console's own account.
HMS_PROCESS_USER = os.environ.get("HMS_PROCESS_USER", "").strip()
HMS_DOCKER_TIMEOUT = envfloat("HMS_DOCKER_TIMEOUT", 5, minimum=0.1)  # Docker API call timeout
# The tick waits this long for an engine's listing before opening its breaker (fleet/breakers.py).
HMS_ENGINE_WAIT_SECONDS = envfloat("HMS_ENGINE_WAIT_SECONDS", 1.0, minimum=0.05)
# Several machines (docs/engines.md): engines of Swarm nodes other than the manager's, "host=url,…",
# for per-task CPU/memory and stopping one task there.
HMS_SWARM_NODE_ENGINES = os.environ.get("HMS_SWARM_NODE_ENGINES", "")
# Running below desired this long opens a capacity incident (lost node, crash loop, no room).
HMS_CAPACITY_GRACE_SECONDS = envfloat("HMS_CAPACITY_GRACE_SECONDS", 30, minimum=1)
HMS_DOCKER_STATS_SECONDS = envfloat("HMS_DOCKER_STATS_SECONDS", 5, minimum=0.1)  # stats cost a call per container

# --- Audit (docs/audit.md) ---------------------------------------------------------------------
HMS_AUDIT_SEAL_INTERVAL_MS = envint("HMS_AUDIT_SEAL_INTERVAL_MS", 100, minimum=10)
HMS_AUDIT_CHECKPOINT_MINUTES = envint("HMS_AUDIT_CHECKPOINT_MINUTES", 10, minimum=0)
HMS_AUDIT_EXPORT_DIR = os.environ.get("HMS_AUDIT_EXPORT_DIR", str(VAR_DIR / "audit-checkpoints"))
HMS_AUDIT_CHECKPOINT_WEBHOOK = os.environ.get("HMS_AUDIT_CHECKPOINT_WEBHOOK", "")
HMS_AUDIT_SIGNING_KEY_FILE = os.environ.get("HMS_AUDIT_SIGNING_KEY_FILE", "")  # Ed25519 private key, PEM
HMS_AUDIT_VERIFY_KEY_FILE = os.environ.get("HMS_AUDIT_VERIFY_KEY_FILE", "")  # Ed25519 public key, PEM
HMS_AUDIT_VERIFY_INLINE_MAX = envint("HMS_AUDIT_VERIFY_INLINE_MAX", 20000, minimum=0)

# --- Background work (django-q2, ORM broker by default) -------------------------------------
Q_CLUSTER = {
    "name": "hmsmgmt",
    "workers": envint("HMS_Q_WORKERS", 2, minimum=1),
    "timeout": envint("HMS_Q_TIMEOUT", 300, minimum=1),
    # retry must exceed timeout or a slow task is handed to a second worker while still running.
    "retry": envint("HMS_Q_RETRY", 360, minimum=2),
    "poll": envfloat("HMS_Q_POLL", 0.05, minimum=0.001),
    "orm": "default",
    "save_limit": 1000,
    "ack_failures": True,
    "max_attempts": 1,
    "catch_up": False,
    "sync": envbool("HMS_Q_SYNC", False),
}
# Alerts run on a queue and a worker pool of their own (`Q_CLUSTER_NAME=alerts manage.py qcluster`,
# which `up` starts): workers busy with long workflow steps never hold an incident's webhook back.
HMS_ALERT_CLUSTER = "alerts"
Q_CLUSTER["ALT_CLUSTERS"] = {HMS_ALERT_CLUSTER: {"workers": envint("HMS_ALERT_WORKERS", 1, minimum=1)}}
# A delivery still pending this long after its last claim (its task lost, its worker killed) is
# queued again by the controller; a delivery's own attempts take well under it.
HMS_ALERT_RESEND_SECONDS = envint("HMS_ALERT_RESEND_SECONDS", 60, minimum=5)
HMS_REDIS_URL = os.environ.get("HMS_REDIS_URL", "")
if HMS_REDIS_URL:
    Q_CLUSTER.pop("orm")
    Q_CLUSTER["redis"] = HMS_REDIS_URL
HMS_Q_IDLE_WAIT = envfloat("HMS_Q_IDLE_WAIT", 2, minimum=0.1)  # an idle LISTEN wakes at least this often
# On PostgreSQL an idle pusher sleeps on LISTEN and enqueue sends NOTIFY (workflows/broker.py):
# millisecond pick-up without polling the table 20 times a second.
if "orm" in Q_CLUSTER and _db["ENGINE"] == "django.db.backends.postgresql" and envbool("HMS_Q_NOTIFY", True):
    Q_CLUSTER["broker_class"] = "workflows.broker.NotifyORM"
elif "orm" in Q_CLUSTER:
    # The ORM broker whose redelivery lock follows a long step's own task timeout (long steps).
    Q_CLUSTER["broker_class"] = "workflows.broker.LeaseORM"
if Q_CLUSTER["retry"] <= Q_CLUSTER["timeout"]:
    raise ImproperlyConfigured(
        f"HMS_Q_RETRY ({Q_CLUSTER['retry']}) must be greater than HMS_Q_TIMEOUT ({Q_CLUSTER['timeout']})"
    )

# HMS_LOG_FORMAT=json: one JSON object per line (core.logging.JsonFormatter: time, level, logger,
# message, and while a request is served its request id, user and route) for every process; the
# default "text" keeps the plain lines. django-q2 gets the same handler: left alone it installs
# one of its own with its own format, and a JSON log would carry its lines as text.
HMS_LOG_FORMAT = os.environ.get("HMS_LOG_FORMAT", "text").strip().lower() or "text"
if HMS_LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"HMS_LOG_FORMAT must be text or json, got {HMS_LOG_FORMAT!r}")
HMS_LOG_LEVEL = os.environ.get("HMS_LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "core.logging.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler",
                             "formatter": "json" if HMS_LOG_FORMAT == "json" else "plain"}},
    "root": {"handlers": ["console"], "level": HMS_LOG_LEVEL},
    "loggers": {
        # Django's own "django" handler prints a second, unformatted copy of each line under DEBUG.
        "django": {"handlers": ["console"], "level": HMS_LOG_LEVEL, "propagate": False},
        # django-q2 logs every enqueue and every task at INFO (probe batches alone: one line a second).
        "django-q": {"handlers": ["console"], "level": os.environ.get("HMS_Q_LOG_LEVEL", "WARNING"),
                     "propagate": False},
    },
}

# --- Probes, SLA, alerts, autoscaler (health.prober / sla / autoscale) --------------------
HMS_PROBE_RAW_MINUTES = envint("HMS_PROBE_RAW_MINUTES", 120, minimum=10)
# The probe loop stores what it probed this often (results wait at most this long to be written).
HMS_PROBE_FLUSH_MS = envint("HMS_PROBE_FLUSH_MS", 200, minimum=10)
HMS_PROBE_CONCURRENCY = envint("HMS_PROBE_CONCURRENCY", 512, minimum=1)  # probes in flight (open sockets) at most
HMS_SLA_EVAL_SECONDS = envint("HMS_SLA_EVAL_SECONDS", 5, minimum=1)
HMS_AUTOSCALE_PERIOD_SECONDS = envint("HMS_AUTOSCALE_PERIOD_SECONDS", 15, minimum=1)
HMS_AUTOSCALE_OVERRIDE_TTL_SECONDS = envint("HMS_AUTOSCALE_OVERRIDE_TTL_SECONDS", 3600, minimum=0)
HMS_AUTOSCALE_KEEP_DAYS = envint("HMS_AUTOSCALE_KEEP_DAYS", 7, minimum=1)
HMS_ALERT_ATTEMPTS = envint("HMS_ALERT_ATTEMPTS", 4, minimum=1)
HMS_ALERT_BACKOFF_SECONDS = envint("HMS_ALERT_BACKOFF_MS", 500, minimum=0) / 1000  # doubles per attempt
HMS_ALERT_TIMEOUT_SECONDS = envint("HMS_ALERT_TIMEOUT_SECONDS", 5, minimum=1)
# Alertmanager forgets an alert nobody repeats (resolve_timeout, 5 min by default): open incidents
# are posted again this often to every Alertmanager channel.
HMS_ALERTMANAGER_REPEAT_SECONDS = envint("HMS_ALERTMANAGER_REPEAT_SECONDS", 60, minimum=5)
# Where people reach this console: the links alerts carry. Default: the first named allowed host
# on HMS_PORT (plain http; set it behind a proxy or TLS).
HMS_PUBLIC_URL = os.environ.get("HMS_PUBLIC_URL", "").strip().rstrip("/")
if not HMS_PUBLIC_URL:
    _host = next((h for h in ALLOWED_HOSTS if h not in ("*", "") and not h.startswith(".")), HMS_HOST)
    HMS_PUBLIC_URL = f"http://{_host}:{HMS_PORT}"
elif not HMS_PUBLIC_URL.startswith(("http://", "https://")) or " " in HMS_PUBLIC_URL:
    raise ImproperlyConfigured(f"HMS_PUBLIC_URL must be an http(s) URL, not {HMS_PUBLIC_URL!r}")
HMS_AUTOSCALE_BUDGET_HOLD = envint("HMS_AUTOSCALE_BUDGET_HOLD_PERCENT", 25, minimum=0) / 100
HMS_AUTOSCALE_LATENCY_WINDOW_SECONDS = envint("HMS_AUTOSCALE_LATENCY_WINDOW_SECONDS", 60, minimum=5)
EMAIL_BACKEND = os.environ.get("HMS_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = os.environ.get("HMS_EMAIL_HOST", "localhost")
EMAIL_PORT = envint("HMS_EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = os.environ.get("HMS_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("HMS_EMAIL_PASSWORD", "")
EMAIL_USE_TLS = envbool("HMS_EMAIL_TLS", False)
DEFAULT_FROM_EMAIL = os.environ.get("HMS_EMAIL_FROM", "hmsmgmt@localhost")
# An SMTP server that accepts and never answers must not hold an alert worker forever.
EMAIL_TIMEOUT = HMS_ALERT_TIMEOUT_SECONDS
