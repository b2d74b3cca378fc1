"""What each worker saw lately, written to the database for the Traffic page and impact previews.

On the request path a worker only adds to counts in memory: a dict entry
per (pool, backend) and one per distinct (method, host, path). Every
TRAFFIC_INTERVAL seconds a background thread (a greenlet under gevent)
writes them:

- a TrafficSample row per backend that had requests or in-flight requests
  in the interval, or is down: requests, 4xx, 5xx, an upstream-latency
  histogram, requests in flight, up. Rows older than TRAFFIC_RETENTION go.
- the recent requests of the current 10-minute period, the changed ones
  only, as RecentRequest rows (one per writer, period and request; the
  counts are the period's so far). At most TRAFFIC_SAMPLE_SIZE distinct
  requests a period; rows not seen for an hour go.

A request is remembered by its method, normalised host and path, never by
its query, headers or body, which may hold secrets. A writer is one process
of one instance (`host name:process id`); readers add up every writer's
rows, so several workers and instances on one database make one picture.
"""

import bisect
import logging
import math
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Sum

from . import balancer, observe, table
from .models import Pool, RecentRequest, TrafficSample

logger = logging.getLogger(__name__)

# Upper bounds (seconds) of the latency histogram's buckets, as the
# Prometheus histogram's; the last one holds everything slower.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Recent requests are counted per period; a preview reads the last hour's.
PERIOD = 600
RECENT = timedelta(hours=1)
# Paths longer than this are left out of the sample: the unique index over
# writer, method, host and path must stay within what PostgreSQL indexes.
MAX_SAMPLED_PATH = 1000
# Rows kept for the next write when one fails, at most (of each kind).
MAX_UNWRITTEN = 10_000
# Points a chart shows at most: longer windows add up more intervals per point.
MAX_POINTS = 240


class Counts:
    """One backend's counts in this worker since the last write."""

    __slots__ = ("requests", "status_4xx", "status_5xx", "latency")

    def __init__(self):
        self.requests = self.status_4xx = self.status_5xx = 0
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)


class TrafficRecorder:
    """This worker's counts, kept in memory and written by a background thread."""

    def __init__(self):
        self.counts = {}  # (pool, backend) -> Counts
        self.recent = {}  # (method, host, path) -> requests in this period
        self.changed = set()  # recent requests counted since the last write
        self.period = period_of(time.time())
        self.unwritten_samples, self.unwritten_recent = [], []
        self.writer_pid = None
        self.starting = threading.Lock()

    def request_seen(self, method, host, path):
        """Count a request for the impact preview: method, host and path only."""
        key = (method, host, path)
        recent = self.recent
        count = recent.get(key)
        if count is None:
            if len(recent) >= settings.TRAFFIC_SAMPLE_SIZE or len(path) > MAX_SAMPLED_PATH:
                return
            count = 0
        recent[key] = count + 1
        self.changed.add(key)
        if self.writer_pid != observe.process_id():  # none yet in this process (or forked)
            self.start_writer()

    def exchange_finished(self, pool, backend, status, upstream_seconds):
        """Count a proxied request's answer for the Traffic page."""
        counts = self.counts.get((pool, backend))
        if counts is None:
            counts = self.counts[(pool, backend)] = Counts()
        counts.requests += 1
        if status >= 500:
            counts.status_5xx += 1
        elif status >= 400:
            counts.status_4xx += 1
        if upstream_seconds is not None:
            counts.latency[bisect.bisect_left(LATENCY_BUCKETS, upstream_seconds)] += 1

    def start_writer(self):
        with self.starting:
            if self.writer_pid == observe.process_id():
                return
            self.writer_pid = observe.process_id()
            if settings.TRAFFIC_INTERVAL > 0:
                threading.Thread(target=self.write_every, name="traffic", daemon=True).start()

    def write_every(self):
        interval = settings.TRAFFIC_INTERVAL
        while True:
            # On the interval's boundaries, so that every writer's rows line up.
            time.sleep(interval - time.time() % interval)
            try:
                self.write()
            except DatabaseError as error:  # busy or gone: kept for the next write
                logger.warning("Traffic sample not written yet: %s", error)
            except Exception:  # keep the writer alive
                logger.exception("Writing the traffic sample failed")
            finally:
                # One write every few seconds keeps no connection between
                # them: a worker holds one, its refresher's.
                connection.close()

    def write(self, now=None):
        """Write the counts since the last write, and forget them; delete expired rows.

        Rows a write could not store (the database busy with another writer)
        are tried again with the next ones, up to MAX_UNWRITTEN of them.
        """
        now = time.time() if now is None else now
        writer = f"{socket.gethostname()}:{observe.process_id()}"
        samples = [*self.unwritten_samples, *self.traffic_rows(writer, now)]
        # The newer count of a request replaces an unwritten one (one row each).
        recent = {
            (row.period, row.method, row.host, row.path): row
            for row in [*self.unwritten_recent, *self.recent_rows(writer, now)]
        }
        recent = list(recent.values())
        self.unwritten_samples, self.unwritten_recent = [], []
        try:
            store(samples, recent, now)
        except DatabaseError:
            self.unwritten_samples = samples[-MAX_UNWRITTEN:]
            self.unwritten_recent = recent[-MAX_UNWRITTEN:]
            raise

    def traffic_rows(self, writer, now):
        counts, self.counts = self.counts, {}
        interval = settings.TRAFFIC_INTERVAL or 1
        at = int(round(now / interval) * interval)
        in_flight = {}
        for state in balancer.all_pool_states():
            in_flight.update(state.in_flight)
        cooling = balancer.cooling_backend_ids()
        rows = []
        route_table = table.current_route_table()
        for pool in route_table.pools if route_table else ():
            for backend in pool.backends:
                up = backend.usable and backend.id not in cooling
                busy = counts.pop((pool.name, backend.url), None)
                flying = max(in_flight.get(backend.id, 0), 0)
                if busy is None and flying == 0 and up:
                    continue
                rows.append(sample_row(writer, at, pool.name, backend.url, busy, flying, up))
        for (pool, backend), busy in counts.items():  # no backend, or one edited away
            rows.append(sample_row(writer, at, pool, backend, busy, 0, True))
        return rows

    def recent_rows(self, writer, now):
        changed, self.changed = self.changed, set()
        recent, period = self.recent, self.period
        if period_of(now) != period:  # this write ends the period
            self.recent, self.period = {}, period_of(now)
        seen = datetime.fromtimestamp(now, UTC)
        return [
            RecentRequest(
                writer=writer,
                period=period,
                method=method,
                host=host,
                path=path,
                count=recent[method, host, path],
                last_seen=seen,
            )
            for method, host, path in changed
            if (method, host, path) in recent
        ]


def store(samples, recent, now):
    """Write traffic rows and recent requests in one transaction; delete the expired ones."""
    if connection.vendor == "sqlite":
        # Fail at once rather than wait for another writer: SQLite waits inside
        # C code, which under gevent would stop the worker's requests.
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout = 0")
    with transaction.atomic():
        TrafficSample.objects.bulk_create(samples)
        RecentRequest.objects.bulk_create(
            recent,
            batch_size=500,
            update_conflicts=True,
            unique_fields=["writer", "period", "method", "host", "path"],
            update_fields=["count", "last_seen"],
        )
        TrafficSample.objects.filter(at__lt=now - settings.TRAFFIC_RETENTION).delete()
        RecentRequest.objects.filter(
            last_seen__lt=datetime.fromtimestamp(now, UTC) - RECENT
        ).delete()


def period_of(now):
    return int(now // PERIOD * PERIOD)


def sample_row(writer, at, pool, backend, counts, in_flight, up):
    counts = counts or Counts()
    return TrafficSample(
        at=at,
        writer=writer[:100],
        pool=pool[:100],
        backend=backend[:2000],
        requests=counts.requests,
        status_4xx=counts.status_4xx,
        status_5xx=counts.status_5xx,
        latency_buckets=counts.latency,
        in_flight=in_flight,
        up=up,
    )


RECORDER = TrafficRecorder()


def recent_requests(now=None):
    """Return [(method, host, path, count)] seen in the last hour by any writer, most first."""
    now = datetime.now(UTC) if now is None else now
    rows = (
        RecentRequest.objects.filter(last_seen__gte=now - RECENT)
        .values_list("method", "host", "path")
        .annotate(total=Sum("count"))
        .order_by("-total", "host", "path", "method")
    )
    return list(rows)


@dataclass
class Point:
    """A chart's point: every writer's rows of one backend (or pool) over one step."""

    requests: int = 0
    status_4xx: int = 0
    status_5xx: int = 0
    latency: list = None
    in_flight: dict = None  # at -> in flight summed over writers
    up: bool | None = None

    def add(self, row):
        at, requests, status_4xx, status_5xx, latency, in_flight, up = row
        self.requests += requests
        self.status_4xx += status_4xx
        self.status_5xx += status_5xx
        if self.latency is None:
            self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        for index, count in enumerate(latency[: len(self.latency)]):
            self.latency[index] += count
        self.in_flight = self.in_flight or {}
        self.in_flight[at] = self.in_flight.get(at, 0) + in_flight
        self.up = up if self.up is None else self.up and up


def percentile(histogram, fraction):
    """Return a latency percentile in milliseconds from histogram counts, or None."""
    total = sum(histogram or ())
    if not total:
        return None
    wanted, seen = fraction * total, 0
    for index, count in enumerate(histogram):
        if count and seen + count >= wanted:
            lower = LATENCY_BUCKETS[index - 1] if index else 0.0
            if index >= len(LATENCY_BUCKETS):
                return lower * 1000
            upper = LATENCY_BUCKETS[index]
            return round((lower + (upper - lower) * (wanted - seen) / count) * 1000, 2)
        seen += count
    return None


def series_of(points, times, step):
    """Return a chart's series: requests a second, % 4xx, % 5xx, p50, p95, in flight, up."""
    series = {name: [] for name in ("rps", "share_4xx", "share_5xx", "p50", "p95", "in_flight")}
    series["up"] = []
    for at in times:
        point = points.get(at)
        if point is None:
            for name, values in series.items():
                values.append(0 if name in ("rps", "in_flight") else None)
            series["up"][-1] = 1  # a backend that is down writes a row every interval
            continue
        requests = point.requests
        series["rps"].append(round(requests / step, 3))
        series["share_4xx"].append(
            round(100 * point.status_4xx / requests, 2) if requests else None
        )
        series["share_5xx"].append(
            round(100 * point.status_5xx / requests, 2) if requests else None
        )
        series["p50"].append(percentile(point.latency, 0.5))
        series["p95"].append(percentile(point.latency, 0.95))
        series["in_flight"].append(max(point.in_flight.values()) if point.in_flight else 0)
        series["up"].append(1 if point.up else 0)
    return series


def traffic_report(window, now=None):
    """Return the Traffic page's charts over the last `window` seconds, as plain data.

    Every pool and backend of the table is listed, with or without traffic,
    then those that only the samples still name.
    """
    now = time.time() if now is None else now
    interval = max(int(settings.TRAFFIC_INTERVAL) or 1, 1)
    step = max(interval, math.ceil(window / MAX_POINTS / interval) * interval)
    end = int(now // step * step)
    times = list(range(end - (window // step - 1) * step, end + 1, step))
    start = times[0] - step
    points = {}  # (pool, backend or None) -> {time: Point}
    rows = TrafficSample.objects.filter(at__gt=start).values_list(
        "pool",
        "backend",
        "at",
        "requests",
        "status_4xx",
        "status_5xx",
        "latency_buckets",
        "in_flight",
        "up",
    )
    for pool, backend, at, *counts in rows:
        bucket = min(-(-at // step) * step, end)  # the step whose end the row's interval is in
        for key in ((pool, backend), (pool, None)):  # the backend's, and its pool's
            points.setdefault(key, {}).setdefault(bucket, Point()).add((at, *counts))
    pools = {
        pool.name: [backend.url.rstrip("/") for backend in pool.backends.all()]
        for pool in Pool.objects.prefetch_related("backends").order_by("name")
    }
    for pool, backend in sorted(key for key in points if key[1]):
        pools.setdefault(pool, [])
        if backend not in pools[pool]:
            pools[pool].append(backend)
    return {
        "step": step,
        "window": window,
        "times": times,
        "pools": [
            {
                "name": name,
                "series": series_of(points.get((name, None), {}), times, step),
                "backends": [
                    {"url": url, "series": series_of(points.get((name, url), {}), times, step)}
                    for url in urls
                ],
            }
            for name, urls in pools.items()
        ],
    }
