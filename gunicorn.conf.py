"""gunicorn settings, read by `gunicorn lbsite.wsgi` from the project root.

The demo backends (`gunicorn backend_app.wsgi -b ...`) are started from the
same directory and read this file too: the settings suit them as well (they
run evented workers too), their command-line flags override them, and the
hooks act for the balancer only, but for the open-files limit.
"""

import ipaddress
import os
import resource
import sys

from gunicorn import sock
from gunicorn.util import parse_address

from lbsite import http2, listeners, tls
from lbsite.rundirs import run_directory

# Evented workers: gevent serves each client connection in a greenlet, so a
# slow or idle client, or a request waiting on a slow backend, costs a little
# memory rather than one of a few threads. gevent patches the standard
# library in each worker before the application is imported (no preload_app:
# see on_starting). GUNICORN_WORKER_CLASS=gthread brings back threads.
WORKER_CLASSES = {"gevent": "lbsite.workers.GeventWorker", "gthread": "gthread"}
try:
    worker_class = WORKER_CLASSES[os.environ.get("GUNICORN_WORKER_CLASS") or "gevent"]
except KeyError:
    raise SystemExit(f"GUNICORN_WORKER_CLASS is one of {', '.join(WORKER_CLASSES)}.") from None
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 2))
# Client connections one worker serves at once, idle keep-alive ones included;
# more wait in the listen queue. Each proxied request also holds a backend
# connection: see raise_open_files_limit.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS") or "1000")
# Threads per worker, read by the gthread worker only.
threads = int(os.environ.get("GUNICORN_THREADS") or "16")
# Seconds an idle kept-alive connection stays open. The gevent worker also
# gives a client this long to finish its TLS handshake and to send each
# request head, which ends slowloris connections (0 would lift the bounds).
keepalive = 5
timeout = 60
# Requests in flight get this long to finish on shutdown and reload.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))

# TLS termination by gunicorn itself, when both files are given.
certfile = os.environ.get("TLS_CERTFILE") or None
keyfile = os.environ.get("TLS_KEYFILE") or None
# TLS=auto: each host's certificate from the database, chosen by SNI (see
# ssl_context); gunicorn's own certificate is then a self-signed fallback.
try:
    TLS_MODE = tls.tls_mode()
except ValueError as error:
    raise SystemExit(str(error)) from None
if TLS_MODE == "auto":
    if certfile or keyfile:
        raise SystemExit(
            "TLS=auto takes each host's certificate from the database: unset "
            "TLS_CERTFILE and TLS_KEYFILE, or TLS."
        )
    certfile, keyfile = tls.fallback_certificate_files()
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
    """Raise the open-files limit; check the balancer's worker model, empty its metrics."""
    raise_open_files_limit(server)
    if server.app.app_uri != BALANCER_APP:  # a demo backend started from here: not its business
        return
    check_worker_model(server)
    prepare_metrics_directory()


# Descriptors a worker needs besides its connections: listeners, the database,
# metrics files, logs, gevent's own.
OPEN_FILES_MARGIN = 100


def raise_open_files_limit(server):
    """Let every worker hold two sockets per connection: the client's and a backend's.

    The soft limit (often 1024) is raised as far as the hard limit allows,
    for the master and the workers it forks; a warning says when that is not
    enough for WORKER_CONNECTIONS.
    """
    needed = 2 * server.cfg.worker_connections + OPEN_FILES_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if raised > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    if raised < needed:
        server.log.warning(
            "Open files limit %s is below the %s that %s connections per worker need: "
            "raise it (ulimit -n) or lower WORKER_CONNECTIONS.",
            raised,
            needed,
            server.cfg.worker_connections,
        )


def check_worker_model(server):
    """Refuse preload_app under gevent; say that GUNICORN_THREADS is no longer read.

    gevent patches sockets, locks and sleeps in each worker, before the
    application is imported. Preloaded in the master, the application would
    keep unpatched locks and database drivers, and block a whole worker.
    """
    if not uses_gevent(server.worker_class):
        return
    if server.cfg.preload_app:
        raise SystemExit(
            "preload_app cannot be used with the gevent worker: the application must be "
            "imported after gevent has patched the worker. Drop --preload, or set "
            "GUNICORN_WORKER_CLASS=gthread."
        )
    if os.environ.get("GUNICORN_THREADS"):
        server.log.warning(
            "GUNICORN_THREADS is read by the gthread worker only; the gevent worker serves "
            "WORKER_CONNECTIONS (%s) connections per worker. Set GUNICORN_WORKER_CLASS=gthread "
            "to keep threads.",
            server.cfg.worker_connections,
        )


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


def uses_gevent(worker_class):
    """Whether a gunicorn worker class is gevent's (gunicorn's own, or lbsite.workers')."""
    return any(cls.__module__ == "gunicorn.workers.ggevent" for cls in worker_class.__mro__)


def ssl_context(config, default_ssl_context_factory):
    """Return gunicorn's TLS context; under gevent, one that ends slow or failed handshakes.

    Under TLS=auto it chooses each connection's certificate by SNI from the
    database (the worker has loaded the application, and Django with it).
    """
    context = default_ssl_context_factory()
    if TLS_MODE == "auto" and BALANCER_APP in sys.modules:  # not a demo backend's worker
        from routing.tls import select_certificate

        context.sni_callback = select_certificate(tls.alpn_protocols(config.http_protocols))
    if not uses_gevent(config.worker_class):
        return context
    from lbsite.workers import HandshakeDeadline  # in a gevent worker: gevent is loaded

    return HandshakeDeadline(context, config.keepalive)


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
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = run_directory("lb-metrics-")
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


def post_request(worker, req, environ, resp):
    """End a connection whose WebSocket tunnel has ended: its bytes were no HTTP.

    gunicorn keeps a connection after a 101 as after any 1xx; the tunnel
    (routing/responses.py) has shut the socket down, and this says so too.
    """
    # A response the app never started (a worker timeout mid-request) has no status.
    if getattr(resp, "status_code", None) == 101:
        req.must_close = True


def worker_exit(server, worker):
    """Write the access-log lines a balancer worker still holds (ACCESS_LOG_FLUSH)."""
    if server.app.app_uri != BALANCER_APP:
        return
    from routing import observe

    observe.ACCESS_LOG_LINES.flush()


def child_exit(server, worker):
    """Drop a dead worker's live gauges (requests in flight)."""
    if server.app.app_uri != BALANCER_APP:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
