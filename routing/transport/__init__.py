"""The transport: send one upstream request to one backend, get its streaming response.

The boundary of the request path's last stage. It takes an UpstreamRequest
(plain values: method, backend URL, target, headers, body, timeouts) and
gives back an UpstreamResponse, or raises one of routing.errors'
UpstreamErrors; it knows nothing of Django, rules or pools. Its parts: the
connection pool (requests over urllib3, the target sent as it came: pool.py),
the strict reader of a response head (parser.py), and WebSocket tunnels
(tunnel.py: open_tunnel, relay).
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import requests
import urllib3

from ..errors import ConnectTimedOut, NotSent, UpstreamError, UpstreamTimedOut
from .pool import RAW_TARGET_KEY, SESSION
from .tunnel import Upgraded, open_tunnel, relay

__all__ = ["UpstreamRequest", "UpstreamResponse", "Upgraded", "open_tunnel", "relay", "send"]

logger = logging.getLogger(__name__)

# The most read from a backend's body at once; a read passes on less as soon
# as less has arrived.
READ_SIZE = 64 * 1024


@dataclass(slots=True)
class UpstreamRequest:
    """A request for one backend, as it goes on the wire.

    target is sent byte for byte; headers in the order and spelling given.
    body is an iterable of bytes (streamed as it is read) or None.
    """

    method: str
    base_url: str
    target: str
    headers: dict[str, str]
    body: Iterable[bytes] | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    tls_verify: bool = True

    @property
    def url(self):
        return self.base_url + self.target


class UpstreamResponse:
    """A backend's answer: its head, and its body still encoded, read as it arrives.

    Iterating gives the body's pieces as they come (read1: never waiting to
    fill a buffer, whatever the framing). A body read to its end gives its
    connection back to the pool; close() closes one left half read, so it
    is never reused.
    """

    __slots__ = ("raw", "base_url", "status", "reason", "version")

    def __init__(self, raw, base_url):
        self.raw = raw  # urllib3's HTTPResponse, over parser.FinalResponse
        self.base_url = base_url
        self.status = raw.status
        self.reason = raw.reason
        self.version = raw.version  # 10 or 11

    @property
    def headers(self):
        """The header fields in order, repeats (every Set-Cookie) kept separate."""
        return list(self.raw.headers.items())

    def header_values(self, name):
        return self.raw.headers.getlist(name)

    def __iter__(self):
        raw = self.raw
        try:
            # Each wait gets the read timeout (parser.FinalResponse's reader);
            # urllib3 closes the connection when reading fails.
            while data := raw.read1(READ_SIZE, decode_content=False):
                yield data
        except (urllib3.exceptions.HTTPError, OSError) as error:
            logger.warning("Backend %s broke off its response: %s", self.base_url, error)
            raise

    def close(self):
        self.raw.close()


def send(request):
    """Send an UpstreamRequest and return the backend's UpstreamResponse once its head is in.

    Raises NotSent (ConnectTimedOut) when nothing was sent, UpstreamTimedOut
    when the head did not come within the read timeout, and UpstreamError
    for any other failure. The body's own errors (routing.errors'
    ClientErrors) pass through as they are.
    """
    prepared = requests.PreparedRequest()
    prepared.method = request.method
    # Assigned, not prepared: requests would re-quote the target.
    prepared.url = request.url
    prepared.headers = {**request.headers, RAW_TARGET_KEY: request.target}
    prepared.body = request.body
    prepared.hooks = {"response": []}
    prepared.origin = request.base_url  # pool.UpstreamAdapter finds the backend's pool by it
    try:
        # pool.UpstreamAdapter gives urllib3's response as it is.
        raw = SESSION.get_adapter(prepared.url).send(
            prepared,
            stream=True,
            timeout=(request.connect_timeout, request.read_timeout),
            verify=request.tls_verify,
        )
    except requests.RequestException as error:
        raise upstream_error(error) from error
    except (OSError, ValueError) as error:
        # Raised outside requests' own hierarchy: a CA bundle that has gone
        # missing, a header value http.client refuses.
        raise UpstreamError(f"{type(error).__name__}: {error}") from error
    return UpstreamResponse(raw, request.base_url)


def upstream_error(error):
    """Return the routing.errors failure for one of requests' exceptions."""
    cause = f"{type(error).__name__}: {error}"
    if isinstance(error, requests.ConnectTimeout):
        return ConnectTimedOut(cause)
    if isinstance(error, requests.Timeout):
        return UpstreamTimedOut(cause)
    reason = getattr(error.args[0], "reason", None) if error.args else None
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        return NotSent(cause)  # refused, unreachable, no such host
    return UpstreamError(cause)
