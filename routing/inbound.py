"""The client's request, read once from the WSGI environ at the entry of the request path.

Every later stage (limits, resolving, balancing, forwarding, the access log)
reads this one ClientRequest; nothing after it reads the environ again for
what is decided here: the target, the host, who the client is, whether
there is a body and how it is framed.
"""

from dataclasses import dataclass

from django.conf import settings
from django.utils.encoding import escape_uri_path, iri_to_uri
from gunicorn.http.errors import ParseException

from . import headers
from .errors import (
    BadContentLength,
    BadHost,
    BadTarget,
    BodyTooLarge,
    ClientBodyIncomplete,
    ClientBodyMalformed,
    UnsupportedRequestCoding,
    UpgradeUnavailable,
)
from .resolver import normalise_host, split_target
from .transport.parser import transfer_codings

# The most read from the client's body at once.
BODY_CHUNK_SIZE = 64 * 1024


@dataclass(slots=True, eq=False)
class ClientRequest:
    """What the balancer knows of a client's request before it looks at any rule.

    path and query are raw (as sent), None when the target is not in origin
    form; host is normalised, None when missing or malformed. peer is the
    TCP peer; client the address it stands for (behind TRUSTED_PROXIES, the
    one their X-Forwarded-For names). body_length is the body's length,
    0 for none, None for a chunked body of unknown length.
    """

    environ: dict
    method: str
    target: str
    path: str | None
    query: str
    host_header: str
    host: str | None
    scheme: str
    protocol: str
    peer: str
    peer_trusted: bool
    client: str
    body_length: int | None
    transfer_encoding: str | None
    websocket: bool

    @classmethod
    def from_environ(cls, environ):
        target = raw_target(environ)
        split = split_target(target)
        path, query = split if split is not None else (None, "")
        host_header = environ.get("HTTP_HOST", "")
        peer = environ.get("REMOTE_ADDR", "")
        trusted, client = judge_peer(environ)
        transfer_encoding = environ.get("HTTP_TRANSFER_ENCODING")
        return cls(
            environ=environ,
            method=environ["REQUEST_METHOD"],
            target=target,
            path=path,
            query=query,
            host_header=host_header,
            host=normalise_host(host_header),
            # Never from a header any client can send: gunicorn takes the
            # scheme only from the proxies in its forwarded_allow_ips
            # (TRUSTED_PROXIES, see gunicorn.conf.py).
            scheme=environ["wsgi.url_scheme"],
            protocol=environ.get("SERVER_PROTOCOL") or "HTTP/1.1",
            peer=peer,
            peer_trusted=trusted,
            client=client,
            body_length=body_length(environ.get("CONTENT_LENGTH"), transfer_encoding),
            transfer_encoding=transfer_encoding,
            websocket=is_websocket_handshake(environ),
        )

    @property
    def has_body(self):
        return self.body_length != 0

    @property
    def authorization(self):
        """The client's Authorization header ('' when it sent none)."""
        return self.environ.get("HTTP_AUTHORIZATION", "")

    def check(self):
        """Raise the ClientError that stops this request before any rule is looked at."""
        if self.path is None:
            raise BadTarget(f"target {self.target[:80]!r}")
        if self.host is None:
            raise BadHost(f"Host {self.host_header[:80]!r}")
        if self.transfer_encoding is not None and (
            transfer_codings([self.transfer_encoding]) != ["chunked"]
        ):
            # gunicorn undoes the chunked framing and lets `gzip, chunked` and
            # the like through: forwarded, the codings would be lost on the way.
            raise UnsupportedRequestCoding(f"transfer coding: {self.transfer_encoding}")
        if self.body_length == -1:
            raise BadContentLength(f"Content-Length {self.environ.get('CONTENT_LENGTH')!r}")
        if self.body_length is not None and self.body_length > settings.MAX_BODY_SIZE:
            raise BodyTooLarge(f"Content-Length {self.body_length}")
        if self.websocket and "gunicorn.socket" not in self.environ:
            # Django's test client, runserver: no connection to tunnel through.
            raise UpgradeUnavailable("upgrade: the WSGI server cannot hand the connection over")

    def header_items(self):
        """Yield (name, value) for each header the client sent."""
        return headers.client_headers(self.environ)

    def body(self):
        """Return the body to stream from the WSGI input, or None."""
        if not self.has_body:
            return None
        return RequestBody(self.environ["wsgi.input"], self.body_length)


def judge_peer(environ):
    """Return whether the peer is a trusted proxy, and the client's address.

    The client is the peer, or behind TRUSTED_PROXIES the last address in
    X-Forwarded-For that is not one of them.
    """
    peer = environ.get("REMOTE_ADDR", "")
    trusted = headers.is_trusted(peer, settings.TRUSTED_PROXIES)
    forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
    if not (trusted and forwarded_for):
        return trusted, peer
    return trusted, headers.last_untrusted_hop(peer, forwarded_for, settings.TRUSTED_PROXIES)


def tokens(value):
    """Return the lower-cased comma-separated tokens of a header value."""
    return {token.strip(" \t").lower() for token in value.split(",")}


def is_websocket_handshake(environ):
    """Whether a request is a WebSocket handshake (RFC 6455 §4.1) to tunnel.

    An HTTP/1.1 GET without a body, asking to upgrade to websocket. Any other
    Upgrade (h2c, TLS), and every HTTP/2 request (RFC 8441's extended
    CONNECT is not served), is an ordinary request whose Upgrade is dropped
    as hop-by-hop.
    """
    upgrade = environ.get("HTTP_UPGRADE")
    return (
        upgrade is not None
        and environ.get("REQUEST_METHOD") == "GET"
        and environ.get("SERVER_PROTOCOL") == "HTTP/1.1"
        and environ.get("CONTENT_LENGTH", "") in ("", "0")
        and "HTTP_TRANSFER_ENCODING" not in environ
        and "websocket" in tokens(upgrade)
        and "upgrade" in tokens(environ.get("HTTP_CONNECTION", ""))
    )


def raw_target(environ):
    """Return the request target exactly as the client sent it."""
    # gunicorn keeps the raw target in RAW_URI (uWSGI in REQUEST_URI); other
    # servers decode the path, so rebuild it with Django's escaping.
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if target:
        return target
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    path = escape_uri_path(path.encode("latin-1").decode("utf-8", "replace")) or "/"
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{iri_to_uri(query)}" if query else path


def body_length(content_length, transfer_encoding):
    """Return a body's length from its framing: 0 for none, None if chunked, -1 if malformed."""
    if transfer_encoding is not None and "chunked" in transfer_encoding.lower():
        # The server has undone the chunked framing: read the input to its end.
        return None
    if not content_length:
        return 0
    if not headers.CONTENT_LENGTH_RE.fullmatch(content_length):
        return -1
    return int(content_length)


class RequestBody:
    """The client's body, read in chunks while the upstream request is being sent.

    A body that ends early or breaks off raises ClientBodyIncomplete, one
    whose chunked framing is broken ClientBodyMalformed, one that grows past
    MAX_BODY_SIZE BodyTooLarge. Iterated afresh for each attempt; only an
    attempt that failed before sending anything is ever retried with a body.
    """

    def __init__(self, stream, length=None):
        self.stream = stream
        self.length = length

    def __iter__(self):
        try:
            if self.length is None:
                yield from self.read_to_end()
            else:
                yield from self.read_exactly()
        except OSError as error:  # the client went away; gunicorn's NoMoreData too
            raise ClientBodyIncomplete(f"client body: {error or type(error).__name__}") from error
        except ParseException as error:  # gunicorn undoes the chunked framing as it is read
            raise ClientBodyMalformed(f"client body: {error or type(error).__name__}") from error

    def read_exactly(self):
        remaining = self.length
        while remaining > 0:
            chunk = self.stream.read(min(BODY_CHUNK_SIZE, remaining))
            if not chunk:
                raise ClientBodyIncomplete(f"client body: ended {remaining} bytes short")
            remaining -= len(chunk)
            yield chunk

    def read_to_end(self):
        total = 0
        while chunk := self.stream.read(BODY_CHUNK_SIZE):
            total += len(chunk)
            if total > settings.MAX_BODY_SIZE:
                raise BodyTooLarge(f"chunked body over {settings.MAX_BODY_SIZE} bytes")
            yield chunk
