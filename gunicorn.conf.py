"""gunicorn settings, read by `gunicorn lbsite.wsgi` from the project root.

The demo backends (`gunicorn backend_app.wsgi -b ...`) are started from the
same directory and read this file too: nothing here is specific to the
balancer, and their command-line flags override it.
"""

import ipaddress
import os
import tempfile

# Threaded workers: a slow client or a slow backend holds a thread, not a
# whole process, and connections to clients and backends are kept alive.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 2))
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
keepalive = 5
timeout = 60
# Requests in flight get this long to finish on shutdown and reload.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))

# TLS termination by gunicorn itself, when both files are given.
certfile = os.environ.get("TLS_CERTFILE") or None
keyfile = os.environ.get("TLS_KEYFILE") or None

# gunicorn's control socket has one default path per user; several masters
# (balancer and demo backends) on one machine would fight over it.
control_socket_disable = True

# Only the balancer's trusted proxies may tell gunicorn the original scheme
# (X-Forwarded-Proto and friends); gunicorn's default trusts every local client.
forwarded_allow_ips = ",".join(
    str(ipaddress.ip_network(network.strip(), strict=False))  # as lbsite.settings reads them
    for network in os.environ.get("TRUSTED_PROXIES", "").split(",")
    if network.strip()
)


# prometheus-client's multiprocess mode, for the balancer only: every worker
# writes its metrics to files in one directory, which /metrics adds up.
BALANCER_APP = "lbsite.wsgi"


def on_starting(server):
    """Give the balancer's workers an empty metrics directory before they start."""
    if server.app.app_uri != BALANCER_APP:
        return  # a demo backend started from here: not its business
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="lb-metrics-")
        return
    # Counts of an earlier run must not add up with this one's.
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def child_exit(server, worker):
    """Drop a dead worker's live gauges (requests in flight)."""
    if server.app.app_uri != BALANCER_APP:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
