"""What the balancer tells about each proxied request: Prometheus metrics and the access log.

Under gunicorn, prometheus-client runs in multiprocess mode (gunicorn.conf.py
sets PROMETHEUS_MULTIPROC_DIR before any worker starts), so every worker's
counts add up in one scrape.
"""

import atexit
import collections
import functools
import json
import logging
import os
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily

from . import snapshot, traffic

access_log = logging.getLogger("routing.access")


def process_id():
    """Return this process's id, remembered rather than asked of the kernel each time."""
    return PROCESS_ID[0]


PROCESS_ID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: PROCESS_ID.__setitem__(0, os.getpid()))

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # Multiprocess mode writes one file per process there from the first metric on.
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    # prometheus-client asks for the process id on every update, to notice a
    # fork: a system call each time, five per request. Ours is remembered,
    # and renewed in a forked child.
    values.ValueClass = values.MultiProcessValue(process_identifier=process_id)

REQUESTS = Counter(
    "lb_requests",
    "Proxied requests, by pool, backend and status class of the answer.",
    ["pool", "backend", "status_class"],
)
UPSTREAM_LATENCY = Histogram(
    "lb_upstream_latency_seconds",
    "Time from sending a request to a backend to its response headers.",
    ["pool"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge(
    "lb_requests_in_flight",
    "Proxied requests being served right now.",
    multiprocess_mode="livesum",
)
REFUSED = Counter(
    "lb_refused",
    "Requests a rule refused, by rule and cause: firewall (403), access_list (401), "
    "rate_limit (429).",
    ["rule", "cause"],
)
RATE_LIMIT_REDIS_ERRORS = Counter(
    "lb_rate_limit_redis_errors",
    "Rate-limited requests that passed uncounted because Redis failed or was left "
    "alone after a failure.",
)
OPEN_TUNNELS = Gauge(
    "lb_websocket_tunnels_open",
    "WebSocket tunnels open right now.",
    multiprocess_mode="livesum",
)


@dataclass
class Exchange:
    """One proxied request, from arrival to the last byte of its answer."""

    client: str
    host: str
    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    rule: str = "-"
    # The action that answered, when the rule answered by itself or refused.
    action: str = ""
    pool: str = "-"
    backend: str = "-"
    upstream_seconds: float | None = None
    cause: str = ""
    finished: bool = False
    finishers: list = field(default_factory=list)
    tunnel: object = None  # a WebSocket tunnel's body, once answered 101
    # The matched rule's actions: its response headers go on error answers too.
    actions: snapshot.Actions = snapshot.NO_ACTIONS

    @classmethod
    def begin(cls, request):
        """Start the exchange of a ClientRequest."""
        IN_FLIGHT.inc()
        return cls(
            client=request.client,
            host=request.host or request.host_header or "-",
            method=request.method,
            path=request.target,
        )

    def refused(self, error):
        """Note a rule's refusal (401, 403, 429): which action answered, and count it."""
        self.action = error.refusal
        REFUSED.labels(self.rule, error.refusal).inc()

    def on_finish(self, callback):
        """Have callback run when the exchange finishes (its backend connection is done)."""
        self.finishers.append(callback)

    def attach(self, response):
        """Finish the exchange when the response has been sent, counting its bytes."""
        self.tunnel = getattr(response, "tunnel", None)
        if response.streaming:
            response.streaming_content = CountingBody(
                response.streaming_content, self, response.status_code
            )
        else:
            self.finish(response.status_code, len(response.content))
        return response

    def finish(self, status, bytes_sent):
        if self.finished:
            return
        self.finished = True
        for callback in self.finishers:
            callback()
        IN_FLIGHT.dec()
        request_counter(self.pool, self.backend, status // 100).inc()
        if self.upstream_seconds is not None:
            latency_histogram(self.pool).observe(self.upstream_seconds)
        if self.pool != "-":
            traffic.RECORDER.exchange_finished(
                self.pool, self.backend, status, self.upstream_seconds
            )
        if settings.ACCESS_LOG:
            self.log(status, bytes_sent)

    def log(self, status, bytes_sent):
        upstream_ms = None if self.upstream_seconds is None else self.upstream_seconds * 1000
        fields = {
            "time": time.time(),  # when it finished; written out as ISO 8601 with the line
            "client": self.client,
            "host": self.host,
            "method": self.method,
            "path": self.path,
            "status": status,
            "rule": self.rule,
            **({"action": self.action} if self.action else {}),
            "backend": self.backend,
            "upstream_ms": None if upstream_ms is None else round(upstream_ms, 2),
            "total_ms": round((time.perf_counter() - self.started) * 1000, 2),
            "bytes": bytes_sent,
        }
        if self.tunnel is not None:  # logged when it ends: what crossed it each way
            fields["bytes"] = self.tunnel.bytes_down
            fields["bytes_up"] = self.tunnel.bytes_up
        if self.cause:
            fields["cause"] = self.cause
        level = logging.WARNING if status in (502, 503, 504) else logging.INFO
        ACCESS_LOG_LINES.write(level, fields)


class AccessLogLines:
    """Access-log lines, written at once or in batches at most ACCESS_LOG_FLUSH seconds late.

    As nginx's `access_log ... buffer= flush=`: a line formatted and written
    with the ones that finished around it costs a fraction of one written on
    its own, in the middle of a request, where none of the logging code is
    warm. A background thread (a greenlet under gevent) writes what is
    pending every ACCESS_LOG_FLUSH seconds, SLICE lines at a time so that
    requests are never held up for long; past MAX_PENDING lines, each
    request that adds one writes a slice too; gunicorn's worker_exit
    hook and the interpreter's exit write the rest. Each line keeps the time
    its request finished.
    """

    MAX_PENDING = 10_000
    # Lines the flusher writes before it lets requests run again.
    SLICE = 64

    def __init__(self):
        self.pending = collections.deque()
        self.flusher_pid = None
        self.starting = threading.Lock()

    def write(self, level, fields):
        if settings.ACCESS_LOG_FLUSH <= 0:
            emit(level, fields)
            return
        self.pending.append((level, fields))
        if self.flusher_pid != os.getpid():  # none yet in this process (or forked)
            self.start_flusher()
        if len(self.pending) > self.MAX_PENDING:  # the flusher cannot keep up: help it
            self.flush(most=self.SLICE)

    def flush(self, most=None):
        """Write the pending lines, oldest first: all of them, or at most `most`."""
        written = 0
        while most is None or written < most:
            try:
                level, fields = self.pending.popleft()
            except IndexError:
                return
            emit(level, fields)
            written += 1

    def start_flusher(self):
        with self.starting:
            if self.flusher_pid == os.getpid():
                return
            self.flusher_pid = os.getpid()
            threading.Thread(target=self.flush_every, name="access-log", daemon=True).start()

    def flush_every(self):
        while True:
            # Set to 0 since (a test's settings): lines are written at once then.
            time.sleep(settings.ACCESS_LOG_FLUSH if settings.ACCESS_LOG_FLUSH > 0 else 1.0)
            try:
                while self.pending:
                    self.flush(most=self.SLICE)
                    # Let requests run between slices: under gevent the
                    # flusher shares its worker's one thread with them. A
                    # short sleep, not sleep(0), which runs other callbacks
                    # but polls no socket: a request ready to be read would
                    # wait for the whole batch (10 ms at p99 for one client).
                    time.sleep(0.001)
            except Exception:  # a handler that failed: keep the flusher alive
                logging.getLogger(__name__).exception("Writing access-log lines failed")


ACCESS_LOG_LINES = AccessLogLines()
atexit.register(ACCESS_LOG_LINES.flush)


def emit(level, fields):
    """Write one access-log line through the routing.access logger."""
    if not access_log.isEnabledFor(level):
        return
    finished = fields["time"]
    fields["time"] = datetime.fromtimestamp(finished, UTC).isoformat(timespec="milliseconds")
    # As access_log.log() does, but without looking up the caller's file and
    # line in the stack, which no access-log line shows.
    record = logging.LogRecord(access_log.name, level, __file__, 0, format_fields(fields), (), None)
    record.created, record.msecs = finished, int(finished * 1000) % 1000
    access_log.handle(record)


class CountingBody:
    """A streamed body that counts what is sent and finishes its exchange on close.

    Django closes it with the response, also when the client went away before
    a byte was sent.
    """

    def __init__(self, chunks, exchange, status):
        self.chunks = chunks
        self.exchange = exchange
        self.status = status
        self.sent = 0

    def __iter__(self):
        for chunk in self.chunks:
            self.sent += len(chunk)
            yield chunk

    def close(self):
        self.exchange.finish(self.status, self.sent)


@functools.cache
def request_counter(pool, backend, status_hundreds):
    """Return the counter child of one label set (labels() looks it up slowly each time)."""
    return REQUESTS.labels(pool, backend, f"{status_hundreds}xx")


@functools.cache
def latency_histogram(pool):
    return UPSTREAM_LATENCY.labels(pool)


SCRAPE_ATTEMPTS = 3

NEEDS_QUOTES = re.compile(r'[\s"=\\]|^$')


def format_fields(fields):
    """Return the access-log line: JSON, or key=value pairs (quoted where needed)."""
    if settings.ACCESS_LOG_FORMAT == "json":
        return json.dumps(fields, ensure_ascii=False)
    return " ".join([f"{key}={kv_value(value)}" for key, value in fields.items()])


def kv_value(value):
    if value is None:
        return "-"
    if value.__class__ is str and NEEDS_QUOTES.search(value):
        return json.dumps(value, ensure_ascii=False)
    return value


class RouteTableCollector:
    """Scrape-time gauges from this worker's route table: backend health and version."""

    def __init__(self, get_table):
        self.get_table = get_table

    def collect(self):
        table = self.get_table()
        health = GaugeMetricFamily(
            "lb_backend_up",
            "1 if a backend may take requests (enabled, healthy, weight above 0).",
            labels=["pool", "backend"],
        )
        for pool in table.pools:
            for backend in pool.backends:
                health.add_metric([pool.name, backend.url], 1 if backend.usable else 0)
        yield health
        version = GaugeMetricFamily("lb_route_table_version", "Version of the route table.")
        version.add_metric([], table.version)
        yield version


def render_metrics(get_table):
    """Return (body, content type) of a scrape: every worker's counts plus the table's state."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        for collector in (
            REQUESTS,
            UPSTREAM_LATENCY,
            IN_FLIGHT,
            OPEN_TUNNELS,
            REFUSED,
            RATE_LIMIT_REDIS_ERRORS,
        ):
            registry.register(collector)
    registry.register(RouteTableCollector(get_table))
    for attempt in range(SCRAPE_ATTEMPTS):
        try:
            return generate_latest(registry), CONTENT_TYPE_LATEST
        except (struct.error, ValueError, RuntimeError):
            # A worker creating its metrics file at this very moment leaves it
            # empty for an instant; read again rather than fail the scrape.
            if attempt == SCRAPE_ATTEMPTS - 1:
                raise
            time.sleep(0.01)
