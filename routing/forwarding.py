"""What a backend is sent for a client's request, and what the client is sent of its answer.

Between the route's match and the transport: the upstream request's target
and headers (the client's, filtered, plus the forwarding ones), and the
response headers passed back (hop-by-hop ones dropped, redirects rewritten
to the public origin, Via added), with the matched rule's actions applied
(actions.py). Pure but for the settings it reads.
"""

from django.conf import settings
from urllib3.util import SKIP_HEADER

from . import actions, headers
from .errors import InvalidUpstreamResponse
from .snapshot import NO_ACTIONS
from .transport import UpstreamRequest

# Headers that urllib3 or http.client would add on their own when absent;
# SKIP_HEADER keeps the request as the client sent it.
SKIPPABLE_DEFAULT_HEADERS = ("Accept-Encoding", "User-Agent")


def upstream_request(request, match, backend):
    """Return the UpstreamRequest for a ClientRequest that a route matched, to one backend."""
    pool = match.route.pool
    return UpstreamRequest(
        method=request.method,
        base_url=backend.url,
        target=upstream_target(request, match),
        headers=upstream_headers(request, match),
        body=request.body(),
        connect_timeout=pool.connect_timeout,
        read_timeout=pool.read_timeout,
        tls_verify=pool.tls_verify,
    )


def upstream_target(request, match):
    """Return the path and query the backend is asked for, after the rule's rewrite and query."""
    rule_actions = match.route.actions
    if rule_actions is NO_ACTIONS:
        return match.upstream_path + ("?" + request.query if "?" in request.target else "")
    return actions.upstream_target(
        rule_actions, match.upstream_path, request.query, "?" in request.target
    )


def upstream_headers(request, match):
    """Return the headers the backend receives: the client's, filtered, plus forwarding ones."""
    environ = request.environ
    dropped = headers.HOP_BY_HOP_HEADERS | headers.REPLACED_REQUEST_HEADERS
    dropped |= headers.connection_tokens(environ.get("HTTP_CONNECTION", ""))
    if not request.peer_trusted:
        dropped |= headers.ORIGINAL_REQUEST_HEADERS
    if match.route.actions.access_list:  # the credentials were the balancer's to check
        dropped |= {"authorization"}
    # A plain dict: client_headers() spells every name one way ("Accept-Encoding").
    sent = {
        name: value
        for name, value in request.header_items()
        # SKIP_HEADER is urllib3's marker for "send no such header": a client
        # must not be able to smuggle it in as a value.
        if name.lower() not in dropped and value != SKIP_HEADER
    }
    if "Cookie" in sent:
        cookie = headers.without_cookies(sent["Cookie"], admin_cookie_names())
        if cookie:
            sent["Cookie"] = cookie
        else:
            del sent["Cookie"]
    edit = match.route.actions.request_headers
    if edit:
        sent = {name: value for name, value in sent.items() if name.lower() not in edit.dropped}
        sent.update(edit.set)
    for name in SKIPPABLE_DEFAULT_HEADERS:
        sent.setdefault(name, SKIP_HEADER)
    host = request.host_header
    if match.route.preserve_host:
        sent["Host"] = host
    previous = environ.get("HTTP_X_FORWARDED_FOR")
    peer = request.peer
    sent["X-Forwarded-For"] = f"{previous}, {peer}" if request.peer_trusted and previous else peer
    sent["X-Forwarded-Host"] = host
    sent["X-Forwarded-Proto"] = request.scheme
    sent["X-Forwarded-Port"] = headers.forwarded_port(host, request.scheme)
    if match.stripped_prefix:
        sent["X-Forwarded-Prefix"] = match.stripped_prefix
    sent["Via"] = headers.with_via(
        environ.get("HTTP_VIA"), request.protocol, settings.VIA_PSEUDONYM
    )
    if request.websocket:  # hop-by-hop, dropped above: the handshake asks for them again
        sent["Connection"] = "Upgrade"
        sent["Upgrade"] = "websocket"
    return sent


def client_response_headers(upstream, request, match, backend):
    """Return the headers the client gets of a backend's answer.

    Raises InvalidUpstreamResponse for an answer that cannot be passed on.
    """
    switching = upstream.status == 101 and request.websocket
    if not (200 <= upstream.status <= 599 or switching):
        raise InvalidUpstreamResponse(f"InvalidUpstreamResponse: status {upstream.status}")
    public_origin = f"{request.scheme}://{request.host_header}"

    def rewrite_location(value):
        return headers.public_location(value, backend.url, public_origin, match.stripped_prefix)

    try:
        header_list = headers.client_response_headers(
            upstream.headers, rewrite_location, admin_cookie_names()
        )
    except headers.InvalidHeaders as error:
        raise InvalidUpstreamResponse(f"InvalidUpstreamResponse: {error}") from error
    if switching:  # gunicorn keeps these two hop-by-hop headers for a WebSocket answer
        header_list += [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    header_list.append(("Via", via_from(upstream)))
    return actions.edit_headers(match.route.actions.response_headers, header_list)


def via_from(upstream):
    """Return the response's Via: the backend's own hops, then this balancer."""
    hops = upstream.header_values("Via")
    if not all(headers.FIELD_VALUE_RE.fullmatch(hop) for hop in hops):
        raise InvalidUpstreamResponse("InvalidUpstreamResponse: malformed Via")
    version = "1.0" if upstream.version == 10 else "1.1"
    return headers.with_via(", ".join(hops), f"HTTP/{version}", settings.VIA_PSEUDONYM)


def admin_cookie_names():
    """Return the balancer admin's own cookies, never forwarded to a backend."""
    return {settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME}
