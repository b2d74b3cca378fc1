"""Active health checks: probe each enabled backend and store what was found."""

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from . import transport
from .errors import UpstreamError
from .models import Backend, RoutingVersion

logger = logging.getLogger(__name__)

MAX_PARALLEL_CHECKS = 16
MAX_ERROR_LENGTH = 500


@dataclass(frozen=True)
class CheckResult:
    healthy: bool
    latency_ms: float | None = None
    error: str = ""
    started_at: datetime = field(default_factory=timezone.now)


# What a probe sends besides Host: a name to find it by in a backend's logs.
PROBE_HEADERS = {"User-Agent": "django-lb-health-check", "Accept": "*/*"}


def probe(base_url, path, timeout, verify=True):
    """Request a backend's health path once; any 2xx or 3xx answer in time is healthy."""
    # A passing check ends cool-downs that began before it: the time it
    # started is the one that proves the backend was up after them.
    started_at = timezone.now()
    started = time.monotonic()
    request = transport.UpstreamRequest(
        "GET", base_url, path, dict(PROBE_HEADERS), None, timeout, timeout, verify
    )
    try:
        response = transport.send(request)
    except UpstreamError as error:
        return CheckResult(False, error=error.cause[:MAX_ERROR_LENGTH], started_at=started_at)
    response.close()
    latency_ms = (time.monotonic() - started) * 1000
    if response.status >= 400:
        return CheckResult(False, latency_ms, f"status {response.status}", started_at)
    return CheckResult(True, latency_ms, started_at=started_at)


def check_backend(backend):
    """Probe one backend at its pool's health path, with its pool's timeout and TLS."""
    pool = backend.pool
    return probe(
        backend.url.rstrip("/"),
        pool.health_check_path,
        pool.health_check_timeout,
        pool.tls_verification,
    )


def record_result(backend, result):
    """Store a check's outcome; tell the workers only when the backend's health flips."""
    Backend.health_rows().filter(pk=backend.pk).update(
        healthy=result.healthy,
        last_checked=result.started_at,
        last_error=result.error,
        latency_ms=result.latency_ms,
    )
    if result.healthy != backend.healthy:
        logger.warning(
            "Backend %s of pool %s is %s%s",
            backend.url,
            backend.pool.name,
            "healthy again" if result.healthy else "down",
            f": {result.error}" if result.error else "",
        )
        RoutingVersion.bump()


def run_checks(pools=None):
    """Check every enabled backend (of the given pools) once, in parallel; return the results."""
    backends = (
        Backend.objects.filter(enabled=True)
        .exclude(pool__health_check_path="")
        .select_related("pool")
    )
    if pools is not None:
        backends = backends.filter(pool__in=pools)
    backends = list(backends)
    if not backends:
        RoutingVersion.beat(timezone.now())
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_CHECKS, len(backends))) as executor:
        results = list(executor.map(check_backend, backends))
    for backend, result in zip(backends, results, strict=True):
        record_result(backend, result)
    if any(result.healthy for result in results):
        # A pass may end cool-downs that workers keep after failures; they
        # re-read check times on this cheaper signal, not the whole table.
        RoutingVersion.bump_health()
    RoutingVersion.beat(timezone.now())
    return list(zip(backends, results, strict=True))
