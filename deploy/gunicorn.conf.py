"""gunicorn settings for the console's web process: `gunicorn -c deploy/gunicorn.conf.py`
(deploy/systemd/hmsmgmt-web.service). Command-line flags and GUNICORN_CMD_ARGS override these,
e.g. `-b 127.0.0.1:9000`; WEB_CONCURRENCY sets the worker count (gunicorn's own variable).

It reads the console's environment, never a variable of its own: HMS_HOST/HMS_PORT say where to
listen (behind nginx, 127.0.0.1:8000) and HMS_LOG_FORMAT=json gives gunicorn's own lines the
console's JSON formatter, so one process writes one log format.
"""

from __future__ import annotations

import os

wsgi_app = "hmsmgmt.wsgi:application"
bind = [f"{os.environ.get('HMS_HOST', '127.0.0.1')}:{os.environ.get('HMS_PORT', '8000')}"]

# Threads, not more processes: a request mostly waits on PostgreSQL or an engine's API, and each
# process holds its own database connections (CONN_MAX_AGE) — workers × threads connections per host.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = 4
# POST /mgmt/scale with "wait": true waits up to HMS_SCALE_WAIT_SECONDS (20 by default).
timeout = 60
graceful_timeout = 30  # a restart lets in-flight requests finish; systemd waits a little longer
keepalive = 5  # nginx keeps upstream connections open (deploy/nginx/hmsmgmt.conf)
# Recycle workers now and then so slow growth of one process never becomes an outage.
max_requests = 5000
max_requests_jitter = 500

# The console writes one line per request itself (core.logging.RequestLogMiddleware: route,
# status, duration, request id), so gunicorn's access log would only repeat it.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("HMS_LOG_LEVEL", "INFO").lower()

# gunicorn's control socket (gunicornc) is not used by these units; systemd signals the master,
# and the socket's default place in $HOME does not exist for a system user.
control_socket_disable = True

# X-Forwarded-Proto is believed only from these addresses (nginx on the same host); Django itself
# trusts it only with HMS_BEHIND_TLS_PROXY=1.
forwarded_allow_ips = "127.0.0.1,::1"

if os.environ.get("HMS_LOG_FORMAT", "").strip().lower() == "json":
    # Merged by gunicorn into its default logging config: same handler and formatter names as
    # settings.LOGGING, for gunicorn's master and worker lines (start, worker boot, timeouts).
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "core.logging.JsonFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json",
                                 "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["console"], "level": "INFO"},
        "loggers": {
            "gunicorn.error": {"handlers": ["console"], "level": loglevel.upper(), "propagate": False},
            # Given a logging config, gunicorn logs access lines after all: keep them silent.
            "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
