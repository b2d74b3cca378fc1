"""The catch-all view: resolve the rule, choose a backend, forward, map errors."""

import logging

from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from .attempts import NoBackendAvailable, UpstreamFailed, send_to_pool
from .observe import Exchange
from .proxy import (
    BodyTooLarge,
    ClientBodyError,
    UnsupportedRequestCoding,
    client_address,
    raw_target,
)
from .resolver import resolve, split_target
from .table import get_route_table

logger = logging.getLogger(__name__)

ERROR_BODIES = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    413: "Payload Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "No backend servers available.",
    504: "Gateway Timeout",
}


def error_response(status):
    """Return the balancer's own plain-text answer for an error status."""
    body = ERROR_BODIES[status].encode()
    response = HttpResponse(body, status=status, content_type="text/plain; charset=utf-8")
    response["Content-Length"] = len(body)
    return response


@csrf_exempt
def proxy_view(request, host):
    """Serve a request from the backend its rules pick; host is normalise_host()'s."""
    exchange = Exchange.begin(request, host)
    try:
        response = serve(request, host, exchange)
    except Exception as error:
        # Whatever went wrong is no client's doing: answer as a gateway, and
        # keep the traceback for the operator.
        logger.exception("Proxying %s %s failed", request.method, exchange.path)
        exchange.cause = f"{type(error).__name__}: {error}"
        response = error_response(502)
    return exchange.attach(response)


def serve(request, host, exchange):
    """Resolve the rule, send the request to its pool, and map failures to statuses."""
    target = split_target(raw_target(request))
    if target is None or host is None:
        return error_response(400)
    match = resolve(get_route_table(), host, target[0])
    if match is None:
        return error_response(404)
    exchange.rule, exchange.pool = match.route.label, match.route.pool.name
    try:
        return send_to_pool(request, match, client_address(request.META), exchange)
    except NoBackendAvailable:
        exchange.cause = "no usable backend"
        return error_response(503)
    except BodyTooLarge:
        exchange.backend = "-"
        return error_response(413)
    except UnsupportedRequestCoding as error:
        exchange.backend = "-"
        exchange.cause = f"transfer coding: {error}"
        return error_response(501)
    except ClientBodyError as error:
        exchange.cause = f"client body: {error}"
        return error_response(400)
    except UpstreamFailed as failure:
        return error_response(504 if failure.timed_out else 502)
