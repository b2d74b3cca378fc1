"""Try the backends of a pool until one answers: retries, passive health, connection counts."""

import functools
import logging
import time

from . import balancer, forwarding, transport
from .errors import NoBackendAvailable, NotSent, UpstreamError, UpstreamFailed

logger = logging.getLogger(__name__)

# RFC 9110 §9.2.2; POST and PATCH may have done their work before failing.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def may_retry(request, failure):
    """Whether a request that failed this way may be sent to another backend."""
    if isinstance(failure, NotSent):
        return True
    return request.method in IDEMPOTENT_METHODS and not request.has_body


def send_to_pool(request, match, exchange):
    """Send a ClientRequest to backends of the matched pool until one answers.

    Returns the UpstreamResponse (for a WebSocket handshake the backend
    accepted, the transport's Upgraded) and the header list the client gets
    of it.
    Raises NoBackendAvailable when no backend can be tried at all, and
    UpstreamFailed when every attempt failed. The exchange learns the backend
    that answered and how long it took, or why the last attempt failed; it
    counts the chosen backend's connection until the exchange finishes.
    """
    pool = match.route.pool
    tried = set()
    failures = []
    while len(tried) < pool.max_attempts:
        backend = balancer.choose_backend(pool, request.client, exclude=tried)
        if backend is None:
            break
        tried.add(backend.id)
        exchange.backend = backend.url
        balancer.request_started(pool, backend)
        sent = time.perf_counter()
        try:
            upstream_request = forwarding.upstream_request(request, match, backend)
            if request.websocket:
                upstream = transport.open_tunnel(upstream_request)
            else:
                upstream = transport.send(upstream_request)
            try:
                header_list = forwarding.client_response_headers(upstream, request, match, backend)
            except BaseException:
                upstream.close()  # never back to the pool half read
                raise
        except UpstreamError as failure:
            balancer.request_finished(pool, backend)
            balancer.record_failure(pool, backend)
            failures.append(failure)
            exchange.cause = failure.cause
            logger.warning("Backend %s of pool %s failed: %s", backend.url, pool.name, failure)
            if not may_retry(request, failure):
                break
            continue
        except BaseException:
            balancer.request_finished(pool, backend)
            raise
        exchange.upstream_seconds = time.perf_counter() - sent
        exchange.on_finish(functools.partial(balancer.request_finished, pool, backend))
        balancer.record_success(pool, backend)
        return upstream, header_list
    if not failures:
        raise NoBackendAvailable("no usable backend")
    raise UpstreamFailed(failures)
