"""Every way a proxied request can fail, each with the status the client gets.

One module for the whole request path, so that the view maps failures to
answers by one attribute and the retry logic reads the class, never a
library's exception arguments. Three families, by whose doing it is:

- ClientError: the client's request cannot be served as sent (4xx, 501),
  or its rule refuses it (401, 403, 429).
- RoutingError: nothing in the route table can serve it (404, 503).
- UpstreamError: a backend failed (502, 503, 504). NotSent is the one
  retries care about: nothing of the request reached the backend, so it may
  go to another, whatever its method.
"""


class ProxyError(Exception):
    """A proxied request that ends in the balancer's own error answer.

    headers: what the answer carries besides the rule's response headers.
    refusal: for a rule's refusal (401, 403, 429), the action that refused.
    """

    status = 502
    refusal = None

    def __init__(self, cause="", headers=()):
        super().__init__(cause)
        self.cause = cause
        self.headers = tuple(headers)


class ClientError(ProxyError):
    """The client's request cannot be forwarded as it was sent."""

    status = 400


class BadTarget(ClientError):
    """The request target is not in origin form (absolute-form, `*`, bytes it may not hold)."""


class BadHost(ClientError):
    """The Host header is missing or malformed."""


class BadContentLength(ClientError):
    """Content-Length is not a number of bytes."""


class BodyTooLarge(ClientError):
    """The client's body is larger than MAX_BODY_SIZE."""

    status = 413


class UnsupportedRequestCoding(ClientError):
    """The client's body has a transfer coding other than chunked (RFC 9112 §6.1)."""

    status = 501


class UpgradeUnavailable(ClientError):
    """A WebSocket handshake came through a server that cannot hand its connection over."""

    status = 501


class Forbidden(ClientError):
    """A rule's firewall refuses the client's address or the request's path."""

    status = 403
    refusal = "firewall"


class Unauthorized(ClientError):
    """A rule's access list wants credentials the client did not give."""

    status = 401
    refusal = "access_list"


class TooManyRequests(ClientError):
    """A rule's rate limit is spent for now."""

    status = 429
    refusal = "rate_limit"


class ClientBodyError(ClientError):
    """The client's body cannot be forwarded whole.

    Raised while the body is being sent. It is no OSError on purpose: urllib3
    lets it through and drops the upstream connection, so the backend never
    takes the next request's bytes for the missing ones.
    """


class ClientBodyIncomplete(ClientBodyError):
    """The client's body ended before its Content-Length, or its connection broke."""


class ClientBodyMalformed(ClientBodyError):
    """The client's chunked framing is broken: a bad chunk size, extension or terminator."""


class RoutingError(ProxyError):
    """The route table has nothing to serve the request with."""


class NoRoute(RoutingError):
    """No rule matches the request's host and path."""

    status = 404


class NoBackendAvailable(RoutingError):
    """The pool has no enabled, healthy backend that is not cooling down."""

    status = 503


class UpstreamError(ProxyError):
    """A backend could not be reached or did not answer usably."""

    status = 502
    timed_out = False


class NotSent(UpstreamError):
    """The request failed before any of it was sent: it may be tried elsewhere."""


class ConnectTimedOut(NotSent):
    """No connection to the backend within the pool's connect timeout."""

    timed_out = True


class UpstreamTimedOut(UpstreamError):
    """The backend took longer than the pool's read timeout to answer."""

    status = 504
    timed_out = True


class InvalidUpstreamResponse(UpstreamError):
    """The backend answered with something that is not a usable HTTP response."""


class UpstreamFailed(UpstreamError):
    """Every attempt failed.

    503 when none was sent (every backend refused, or timed out while
    connecting: no server could take the request, as HAProxy and Envoy
    answer), else 504 when each of them timed out, else 502.
    """

    def __init__(self, failures):
        super().__init__(failures[-1].cause)
        self.timed_out = all(failure.timed_out for failure in failures)
        if all(isinstance(failure, NotSent) for failure in failures):
            self.status = 503
        else:
            self.status = 504 if self.timed_out else 502
