"""gunicorn settings, read by `gunicorn lbsite.wsgi` from the project root.

The demo backends (`gunicorn backend_app.wsgi -b ...`) are started from the
same directory and read this file too: nothing here is specific to the
balancer, and their command-line flags override it.
"""

import os

# Threaded workers: a slow client or a slow backend holds a thread, not a
# whole process, and connections to clients and backends are kept alive.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 2))
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
keepalive = 5
timeout = 60
graceful_timeout = 30

# gunicorn's control socket has one default path per user; several masters
# (balancer and demo backends) on one machine would fight over it.
control_socket_disable = True

# Only the balancer's trusted proxies may tell gunicorn the original scheme
# (X-Forwarded-Proto and friends); gunicorn's default trusts every local client.
forwarded_allow_ips = os.environ.get("TRUSTED_PROXIES", "").replace(" ", "")
