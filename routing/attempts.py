"""Try the backends of a pool until one answers: retries, passive health, connection counts."""

import functools
import logging
import time

import requests
import urllib3

from . import balancer
from .proxy import forward, has_body

logger = logging.getLogger(__name__)

# RFC 9110 §9.2.2; POST and PATCH may have done their work before failing.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class NoBackendAvailable(Exception):
    """The pool has no enabled, healthy backend that is not cooling down."""


class UpstreamFailed(Exception):
    """Every attempt failed; timed_out says whether each of them timed out."""

    def __init__(self, timed_out):
        super().__init__("every attempt timed out" if timed_out else "every attempt failed")
        self.timed_out = timed_out


def failed_to_connect(error):
    """Whether an error came before anything was sent: the request can go elsewhere."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def may_retry(request, error):
    """Whether a request that failed with this error may be sent to another backend."""
    if failed_to_connect(error):
        return True
    return request.method in IDEMPOTENT_METHODS and not has_body(request.META)


def send_to_pool(request, match, client, exchange):
    """Forward the request to backends of the matched pool until one answers.

    Raises NoBackendAvailable when no backend can be tried at all, and
    UpstreamFailed when every attempt failed. The exchange learns the backend
    that answered and how long it took, or why the last attempt failed.
    """
    pool = match.route.pool
    tried = set()
    timed_out = True
    while len(tried) < pool.max_attempts:
        backend = balancer.choose_backend(pool, client, exclude=tried)
        if backend is None:
            break
        tried.add(backend.id)
        exchange.backend = backend.url
        balancer.request_started(pool, backend)
        sent = time.perf_counter()
        try:
            response = forward(
                request,
                match,
                backend,
                on_close=functools.partial(balancer.request_finished, pool, backend),
            )
        except requests.RequestException as error:
            balancer.request_finished(pool, backend)
            balancer.record_failure(pool, backend)
            timed_out = timed_out and isinstance(error, requests.Timeout)
            exchange.cause = f"{type(error).__name__}: {error}"
            logger.warning("Backend %s of pool %s failed: %s", backend.url, pool.name, error)
            if not may_retry(request, error):
                raise UpstreamFailed(timed_out) from error
            continue
        except BaseException:
            balancer.request_finished(pool, backend)
            raise
        exchange.upstream_seconds = time.perf_counter() - sent
        balancer.record_success(pool, backend)
        return response
    if not tried:
        raise NoBackendAvailable(pool.name)
    raise UpstreamFailed(timed_out)
