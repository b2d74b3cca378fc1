"""The answers the traffic listener gives, as Django responses for the WSGI server.

The balancer's own error answers (plain text, one line), a backend's answer
passed on as it arrives, and a WebSocket handshake's 101 whose body is the
tunnel.
"""

import logging
import re

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse

from . import observe, transport

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

# RFC 9112 §4: HTAB, SP, VCHAR and obs-text; at least one character.
REASON_RE = re.compile(r"[\t \x21-\x7e\x80-\xff]+")


def error_response(status, header_edit=None):
    """Return the balancer's own plain-text answer for an error status.

    header_edit: the matched rule's response headers, set and removed.
    """
    body = ERROR_BODIES[status].encode()
    response = HttpResponse(body, status=status, content_type="text/plain; charset=utf-8")
    response["Content-Length"] = len(body)
    return edit_headers(response, header_edit)


def edit_headers(response, header_edit):
    """Set and remove a rule's response headers on one of the balancer's own answers."""
    if header_edit:
        for name in header_edit.remove:
            del response[name]
        for name, value in header_edit.set:
            response[name] = value
    return response


class ProxiedResponse(StreamingHttpResponse):
    """A backend's response as Django passes it to the WSGI server.

    items() is what goes on the wire: the headers given, in order, repeats
    (every Set-Cookie) kept separate. The headers mapping mirrors them for
    code that reads one value per name (the test client, a middleware), and
    is filled the first time it is read: the WSGI server reads items() only.
    """

    def __init__(self, upstream, header_list):
        super().__init__(
            UpstreamBody(upstream),
            status=upstream.status,
            # A reason phrase gunicorn would refuse is replaced by the standard one.
            reason=upstream.reason if REASON_RE.fullmatch(upstream.reason or "") else None,
        )
        self.header_list = header_list
        self.mirrored = False

    @property
    def headers(self):
        headers = self.__dict__["mirror"]
        if not self.__dict__.get("mirrored", True):  # True while Django's __init__ runs
            self.mirrored = True
            del headers["Content-Type"]  # Django's default; the backend's comes below
            for name, value in self.header_list:
                headers[name] = value
        return headers

    @headers.setter
    def headers(self, value):
        self.__dict__["mirror"] = value

    def items(self):
        return self.header_list

    def close(self):
        """Close the backend's body and finish the exchange, without request_finished.

        Django's request_finished closes stale database connections after a
        request; a proxied request leaves none open (see handler.py), and
        the signal's receivers cost more than resolving the route does.
        """
        for closer in self._resource_closers:
            try:
                closer()
            except Exception:
                logger.exception("Closing a proxied response failed")
        self._resource_closers.clear()
        self.closed = True


class UpstreamBody:
    """A backend's body for the WSGI server: the head first, then the pieces as they come."""

    def __init__(self, upstream):
        self.upstream = upstream

    def __iter__(self):
        # An empty first piece makes the server send the head now. The client
        # of a stream learns the status before the first event comes, and a
        # body that breaks before its first byte is still signalled by an
        # abort: a server that has sent nothing answers an error with a 500.
        yield b""
        # A backend that breaks off raises: the status line is long gone, and
        # the only honest signal left is to abort the client's connection,
        # which the server does on raise.
        yield from self.upstream

    def close(self):
        # A body read to its end has already given its connection back to the
        # pool; anything else is closed so a half-read response is never reused.
        self.upstream.close()


def tunnel_response(upgraded, header_list, client_sock):
    """Return the client's 101 for a backend's, with the tunnel as its body.

    gunicorn sends a 101's head on the body's first (empty) piece and never
    a body for it; the tunnel then relays between the client's socket and
    the backend's while the server iterates the body.
    """
    body = TunnelBody(upgraded, client_sock, settings.WEBSOCKET_IDLE_TIMEOUT)
    response = StreamingHttpResponse(body, status=101, reason=upgraded.reason or None)
    del response.headers["Content-Type"]
    for name, value in header_list:
        response.headers[name] = value
    response.tunnel = body  # observe.Exchange logs what crossed it
    return response


class TunnelBody:
    """The body of a 101: nothing, then the tunnel, relayed while the server iterates it."""

    def __init__(self, upgraded, client_sock, idle_timeout):
        self.upgraded = upgraded
        self.client_sock = client_sock
        self.idle_timeout = idle_timeout
        self.bytes_up = self.bytes_down = 0
        self.closed = False

    def __iter__(self):
        # An empty piece makes gunicorn send the 101 head now (and no body).
        yield b""
        observe.OPEN_TUNNELS.inc()
        try:
            self.bytes_up, self.bytes_down = transport.relay(
                self.client_sock,
                b"",  # a client waits for the 101 before it sends a frame (RFC 6455 §4.1)
                self.upgraded.sock,
                self.upgraded.leftover,
                self.idle_timeout,
            )
        finally:
            observe.OPEN_TUNNELS.dec()

    def close(self):
        if not self.closed:
            self.closed = True
            self.upgraded.sock.close()  # never relayed, or relayed and closed already
