"""The catch-all view: check the request, resolve its rule, send it to the pool, answer."""

import logging

from .actions import enforce_firewall
from .attempts import send_to_pool
from .challenges import challenge_response, https_redirect
from .errors import NoRoute, ProxyError
from .guards import enforce_access_list, enforce_rate_limit, rule_answer
from .inbound import ClientRequest
from .observe import Exchange
from .resolver import resolve
from .responses import ProxiedResponse, error_response, tunnel_response
from .table import get_route_table
from .traffic import RECORDER

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
        if error.refusal:
            exchange.refused(error)
        response = error_response(error.status, exchange.actions.response_headers, error.headers)
    except Exception as error:
        # Whatever else went wrong is no client's doing: answer as a gateway,
        # and keep the traceback for the operator.
        logger.exception("Proxying %s %s failed", request.method, request.target)
        exchange.cause = f"{type(error).__name__}: {error}"
        response = error_response(502, exchange.actions.response_headers)
    return exchange.attach(response)


def serve(request, exchange):
    """Check the request, resolve its rule, apply its guards, then answer or forward it.

    Raises ProxyError to fail.
    """
    request.check()
    if (answer := challenge_response(request)) is not None:
        return answer
    RECORDER.request_seen(request.method, request.host, request.path)  # for impact previews
    match = resolve(get_route_table(), request.host, request.path)
    if match is None:
        raise NoRoute()
    route, rule_actions = match.route, match.route.actions
    exchange.rule, exchange.actions = route.label, rule_actions
    if route.pool:
        exchange.pool = route.pool.name
    if route.force_https and request.scheme == "http":
        exchange.action = "force_https"
        return https_redirect(request, rule_actions.response_headers)
    enforce_firewall(rule_actions.firewall, request.client, request.path)
    enforce_rate_limit(route, request.client)
    enforce_access_list(rule_actions.access_list, request.authorization, request.client)
    if rule_actions.redirect or rule_actions.respond:
        exchange.action, response = rule_answer(match, request)
        return response
    upstream, header_list = send_to_pool(request, match, exchange)
    if upstream.status == 101:  # a WebSocket handshake the backend accepted
        return tunnel_response(upstream, header_list, request.environ["gunicorn.socket"])
    return ProxiedResponse(upstream, header_list)
