"""gunicorn settings, read by `gunicorn lbsite.wsgi` from the project root.

The demo backends (`gunicorn backend_app.wsgi -b ...`) are started from the
same directory and read this file too: the settings suit them as well, their
command-line flags override them, and the hooks act for the balancer only.
"""

import ipaddress
import os
import tempfile

from gunicorn import sock
from gunicorn.util import parse_address

from lbsite import http2, listeners

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
# With TLS, each client chooses HTTP/2 or HTTP/1.1 by ALPN. Without, HTTP/1.1
# only: browsers speak HTTP/2 over TLS alone, and cleartext HTTP/2 (h2c) is
# for a trusted proxy in front, which can as well speak HTTP/1.1 here.
http_protocols = "h2,h1" if certfile and keyfile else "h1"

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


BALANCER_APP = "lbsite.wsgi"


def on_starting(server):
    """Give the balancer's workers an empty metrics directory."""
    if server.app.app_uri == BALANCER_APP:  # a demo backend started from here: not its business
        prepare_metrics_directory()


def when_ready(server):
    """Open the admin listener (ADMIN_BIND) beside gunicorn's, before any worker starts.

    It is added to gunicorn's listeners, not to its binds: a reload (SIGHUP)
    reads the binds afresh, and would close and fail to reopen them all if
    they changed. Its port is then known, for the workers (ADMIN_BIND may say
    port 0, or name an inherited socket).
    """
    if server.app.app_uri != BALANCER_APP or (bind := listeners.admin_bind()) is None:
        return
    if server.master_pid:
        # A new master on an upgrade (SIGUSR2): the old master's listeners came
        # along in their order, the admin listener last.
        *traffic, admin = server.LISTENERS
    else:
        traffic, address = server.LISTENERS, parse_address(bind)
        if isinstance(address, tuple):  # refused before binding, not with "address in use"
            check_listeners(traffic, bind, address[1])
        (admin,) = sock.create_sockets(OnlyAddresses(server.cfg, [address]), server.log)
    port = listeners.tcp_port(admin.sock)
    if port is None:
        raise SystemExit(f"ADMIN_BIND {bind} is not a TCP socket.")
    check_listeners(traffic, bind, port)
    os.environ[listeners.ADMIN_PORT_VARIABLE] = str(port)
    server.LISTENERS = [*traffic, admin]
    server.log.info("Admin listener at: %s", admin)


def check_listeners(traffic, bind, admin_port):
    """Refuse listeners whose requests could be taken for another listener's.

    A request's listener is told by its port: a traffic listener on the
    admin's port, or on a Unix socket (where gunicorn takes SERVER_PORT from
    the client's Host header), would serve the admin to traffic.
    """
    ports = [listeners.tcp_port(listener.sock) for listener in traffic]
    if None in ports:
        raise SystemExit(
            "A traffic listener is a Unix socket, on which requests cannot be told from the "
            "admin listener's: set ADMIN_BIND=off there and run the admin from a second "
            "gunicorn on a TCP port."
        )
    if admin_port in ports:
        raise SystemExit(
            f"ADMIN_BIND {bind} shares port {admin_port} with a traffic listener: give the "
            "admin a port of its own (or ADMIN_BIND=off)."
        )


class OnlyAddresses:
    """gunicorn's settings, with only the given addresses to listen on."""

    def __init__(self, cfg, address):
        self.cfg = cfg
        self.address = address

    def __getattr__(self, name):
        return getattr(self.cfg, name)


def prepare_metrics_directory():
    """Give prometheus-client's multiprocess mode an empty directory for this run.

    Every worker writes its metrics to files in one directory, which
    /metrics adds up.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="lb-metrics-")
        return
    # Counts of an earlier run must not add up with this one's.
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def post_worker_init(worker):
    """Offer HTTP/2 only from a worker class that serves it (gthread, gevent)."""
    if "h2" in worker.cfg.http_protocols and not http2.serves_http2(worker):
        # gunicorn would still offer h2 by ALPN, and its clients would get no answer.
        worker.cfg.set("http_protocols", "h1")
        worker.log.warning(
            "HTTP/2 is off: the %s worker cannot serve it.", worker.cfg.worker_class_str
        )


def pre_request(worker, req):
    """Give an HTTP/2 request the form an HTTP/1.1 one has, before its environ is built."""
    worker.log.debug("%s %s", req.method, req.path)  # gunicorn's own pre_request
    if http2.is_http2(req):
        http2.as_http1(req)


def child_exit(server, worker):
    """Drop a dead worker's live gauges (requests in flight)."""
    if server.app.app_uri != BALANCER_APP:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
