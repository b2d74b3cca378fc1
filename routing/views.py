"""The catch-all view: check the request, resolve its rule, send it to the pool, answer."""

import logging

from .actions import enforce_firewall
from .attempts import send_to_pool
from .challenges import challenge_response, https_redirect
from .errors import NoRoute, ProxyError
from .inbound import ClientRequest
from .observe import Exchange
from .resolver import resolve
from .responses import ProxiedResponse, error_response, tunnel_response
from .table import get_route_table

logger = logging.getLogger(__name__)


def proxy_view(request):
    """Serve a Django request on the traffic listener (the test client, runserver)."""
    return proxy(ClientRequest.from_environ(request.META))


def proxy(request):
    """Serve a ClientRequest from the backend its rules pick, or with an error answer.

    An error answer for a request that a rule matched carries the rule's
    response headers, as its backend's answers do.
    """
    exchange = Exchange.begin(request)
    try:
        response = serve(request, exchange)
    except ProxyError as error:
        if error.cause:
            exchange.cause = error.cause
        response = error_response(error.status, exchange.actions.response_headers)
    except Exception as error:
        # Whatever else went wrong is no client's doing: answer as a gateway,
        # and keep the traceback for the operator.
        logger.exception("Proxying %s %s failed", request.method, request.target)
        exchange.cause = f"{type(error).__name__}: {error}"
        response = error_response(502, exchange.actions.response_headers)
    return exchange.attach(response)


def serve(request, exchange):
    """Check the request, resolve its rule, apply its firewall and forward it.

    Raises ProxyError to fail.
    """
    request.check()
    if (answer := challenge_response(request)) is not None:
        return answer
    match = resolve(get_route_table(), request.host, request.path)
    if match is None:
        raise NoRoute()
    route = match.route
    exchange.rule, exchange.pool, exchange.actions = route.label, route.pool.name, route.actions
    if route.force_https and request.scheme == "http":
        return https_redirect(request, route.actions.response_headers)
    enforce_firewall(route.actions.firewall, request.client, request.path)
    upstream, header_list = send_to_pool(request, match, exchange)
    if upstream.status == 101:  # a WebSocket handshake the backend accepted
        return tunnel_response(upstream, header_list, request.environ["gunicorn.socket"])
    return ProxiedResponse(upstream, header_list)
