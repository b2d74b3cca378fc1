"""Active health checks: probe each enabled backend and store what was found."""

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone

from .models import Backend, RoutingVersion
from .proxy import SESSION

logger = logging.getLogger(__name__)

MAX_PARALLEL_CHECKS = 16
MAX_ERROR_LENGTH = 500


@dataclass(frozen=True)
class CheckResult:
    healthy: bool
    latency_ms: float | None = None
    error: str = ""
    started_at: datetime = field(default_factory=timezone.now)


def probe(url, timeout, verify=True):
    """Request a health URL once; any 2xx or 3xx answer in time is healthy."""
    # A passing check ends cool-downs that began before it: the time it
    # started is the one that proves the backend was up after them.
    started_at = timezone.now()
    started = time.monotonic()
    try:
        response = SESSION.get(
            url, timeout=timeout, verify=verify, allow_redirects=False, stream=True
        )
        response.close()
    except Exception as error:  # requests' errors, and a CA bundle gone missing
        return CheckResult(False, error=str(error)[:MAX_ERROR_LENGTH], started_at=started_at)
    latency_ms = (time.monotonic() - started) * 1000
    if response.status_code >= 400:
        return CheckResult(False, latency_ms, f"status {response.status_code}", started_at)
    return CheckResult(True, latency_ms, started_at=started_at)


def check_backend(backend):
    """Probe one backend at its pool's health path, with its pool's timeout and TLS."""
    pool = backend.pool
    url = backend.url.rstrip("/") + pool.health_check_path
    return probe(url, pool.health_check_timeout, pool.tls_verification)


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
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_CHECKS, len(backends))) as executor:
        results = list(executor.map(check_backend, backends))
    for backend, result in zip(backends, results, strict=True):
        record_result(backend, result)
    if any(result.healthy for result in results):
        # A pass may end cool-downs that workers keep after failures; they
        # re-read check times on this cheaper signal, not the whole table.
        RoutingVersion.bump_health()
    return list(zip(backends, results, strict=True))
