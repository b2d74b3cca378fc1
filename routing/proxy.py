"""The one transport: forward a request to a backend with requests, streaming both ways."""

import http.client
import io
import logging
import re
import time

import requests
import urllib3
from django.conf import settings
from django.http import StreamingHttpResponse
from gunicorn.http.errors import ParseException
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import SKIP_HEADER

from . import headers

logger = logging.getLogger(__name__)

# Headers that urllib3 or http.client would add on their own when absent;
# SKIP_HEADER keeps the request as the client sent it.
SKIPPABLE_DEFAULT_HEADERS = ("Accept-Encoding", "User-Agent")

# The most read from a body at once, both ways; a read of the response body
# passes on less as soon as less has arrived.
CHUNK_SIZE = 64 * 1024
# RFC 9112 §7.1: a chunk size is hex digits and nothing else (no sign, no 0x).
CHUNK_SIZE_RE = re.compile(rb"[0-9A-Fa-f]+")
# RFC 9112 §4: HTAB, SP, VCHAR and obs-text; at least one character.
REASON_RE = re.compile(r"[\t \x21-\x7e\x80-\xff]+")
POOL_CONNECTIONS = 32
POOL_MAXSIZE = 64
# A read held to a deadline may end this much past it rather than pay a
# system call to shrink the socket's timeout: a head that comes in one read
# (nearly every head) costs none.
DEADLINE_LEEWAY = 0.01


class InvalidUpstreamResponse(requests.RequestException):
    """The backend answered with something that is not a usable HTTP response."""


class BodyTooLarge(Exception):
    """The client's body is larger than MAX_BODY_SIZE."""


class UnsupportedRequestCoding(Exception):
    """The client's body has a transfer coding other than chunked (RFC 9112 §6.1: 501)."""


class ClientBodyError(Exception):
    """The client's body cannot be forwarded whole: the request fails as the client's (400)."""


class ClientBodyIncomplete(ClientBodyError):
    """The client's body ended before its Content-Length, or its connection broke."""


class ClientBodyMalformed(ClientBodyError):
    """The client's chunked framing is broken: a bad chunk size, extension or terminator."""


class MalformedResponseHeader(http.client.HTTPException):
    """A backend's header line is not `name: value` (RFC 9112 §5), or is folded."""


class UnsupportedResponseCoding(http.client.HTTPException):
    """A backend's Transfer-Encoding is not plain chunked: the body cannot be passed on."""


def transfer_codings(values):
    """Return the transfer codings that Transfer-Encoding values list, lower-cased, in order."""
    return [coding.strip(" \t").lower() for value in values for coding in value.split(",")]


def header_lines(fp):
    """Yield the lines of a header block, up to the empty line, within http.client's limits."""
    for count in range(http.client._MAXHEADERS + 1):
        line = fp.readline(http.client._MAXLINE + 1)
        if len(line) > http.client._MAXLINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return
        if count == http.client._MAXHEADERS:
            raise http.client.HTTPException(f"more than {http.client._MAXHEADERS} headers")
        yield line


def read_response_headers(fp):
    """Read a header block into an HTTPMessage, strictly and without the email parser.

    http.client hands header blocks to the email package, which is slow and
    lenient: a line that is no header silently ends the block, and whatever
    follows (a Content-Length, say) is lost. Here such a line, a name that is
    no token and obsolete line folding are errors: the proxy answers 502
    rather than forward a response it cannot frame (RFC 9112 §5.2 allows it
    for folding). Whitespace between a name and its colon is removed, as
    RFC 9112 §5.1 asks of a proxy. Values are checked when they are passed on.
    """
    message = http.client.HTTPMessage()
    for line in header_lines(fp):
        name, colon, value = line.decode("iso-8859-1").partition(":")
        name = name.rstrip(" \t")
        if not colon or not headers.TOKEN_RE.fullmatch(name):
            raise MalformedResponseHeader(f"header line {line[:80]!r}")
        message[name] = value.strip(" \t\r\n")
    return message


class DeadlineReader(io.RawIOBase):
    """A socket's reader that can hold every read to one deadline.

    While a deadline is set, each read from the socket waits only for the
    time left before it, so a backend that sends a byte at a time cannot
    stretch the whole past the deadline; past it, a read raises TimeoutError
    as the socket's own timeout does, which urllib3 reports as a read
    timeout. A socket timeout, not a thread or a signal, so it works the same
    under gevent.
    """

    def __init__(self, raw, sock):
        self.raw = raw
        self.sock = sock
        self.deadline = None
        self.timeout = self.read_timeout = None

    def start_deadline(self):
        """Let the reads from now on take the socket's timeout together, not each."""
        self.timeout = self.read_timeout = self.sock.gettimeout()
        if self.timeout is not None:
            self.deadline = time.monotonic() + self.timeout

    def end_deadline(self):
        """Give each read the socket's whole timeout again."""
        self.deadline = None
        if self.timeout != self.read_timeout:
            self.sock.settimeout(self.read_timeout)
            self.timeout = self.read_timeout

    def readinto(self, buffer):
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            if left < self.timeout - DEADLINE_LEEWAY:
                self.sock.settimeout(left)
                self.timeout = left
        return self.raw.readinto(buffer)

    def readable(self):
        return True

    def fileno(self):
        return self.raw.fileno()

    def close(self):
        if not self.closed:
            self.raw.close()
        super().close()


class FinalResponse(http.client.HTTPResponse):
    """http.client's response, with a fast strict header parser and no 1xx taken as final.

    begin() is http.client's own, but for these changes: every 1xx interim
    answer is skipped, not only 100 (a 103 Early Hints or 102 Processing must
    never be taken for the final response; 101 is left alone, since an
    Upgrade is never forwarded); headers are read by read_response_headers();
    a transfer coding other than chunked is refused; and the socket's timeout
    (urllib3 sets the read timeout) bounds the whole head, interim answers
    included, not each read of it. The body's reads get the timeout each. A
    chunk size must be hex digits (_read_next_chunk_size).
    """

    def __init__(self, sock, *args, **kwargs):
        super().__init__(sock, *args, **kwargs)
        # The same socket reader under a buffer of the same size, with a
        # deadline in between; detached, the first buffer closes nothing.
        self.reader = DeadlineReader(self.fp.detach(), sock)
        self.fp = io.BufferedReader(self.reader)

    def begin(self):
        if self.headers is not None:
            return
        self.reader.start_deadline()
        try:
            self.read_head()
        finally:
            self.reader.end_deadline()

    def read_head(self):
        while True:
            version, status, reason = self._read_status()
            if not 100 <= status < 200 or status == 101:
                break
            for _line in header_lines(self.fp):  # an interim answer's headers: unused
                pass
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = read_response_headers(self.fp)
        codings = transfer_codings(self.headers.get_all("transfer-encoding", ()))
        if codings not in ([], ["chunked"]):
            # Transfer-Encoding is hop-by-hop: the client would get the coded
            # bytes with nothing saying how they are coded.
            raise UnsupportedResponseCoding(f"Transfer-Encoding {', '.join(codings)}")
        self.chunked = bool(codings)
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if status in (204, 304) or 100 <= status < 200 or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True

    def _read_next_chunk_size(self):
        """Return the next chunk's size, refusing one that is not plain hex digits.

        http.client's own takes whatever int(size, 16) takes: `0x5`, `+5`,
        `5_0`, and `-5`, after which it would read on to the end of the
        connection as if it were the chunk. A ValueError is its signal that
        the chunked framing is broken: the body is then cut short.
        """
        line = self.fp.readline(http.client._MAXLINE + 1)
        if len(line) > http.client._MAXLINE:
            raise http.client.LineTooLong("chunk size")
        size = line.split(b";", 1)[0].rstrip(b" \t\r\n")
        if not CHUNK_SIZE_RE.fullmatch(size):
            self._close_conn()
            raise ValueError(f"chunk size line {line[:80]!r}")
        return int(size, 16)


# urllib3 re-encodes every request target (upper-cases %7e, encodes `|`, a lone
# `%`, ...). The raw target rides to the connection under this key instead,
# which the connection takes out of the headers before anything is sent.
RAW_TARGET_KEY = "X-Django-Lb-Raw-Target"


class RawTargetMixin:
    """Send the request target exactly as the client wrote it, and skip 1xx answers."""

    response_class = FinalResponse

    def request(self, method, url, body=None, headers=None, **kwargs):
        if headers and RAW_TARGET_KEY in headers:
            url = headers[RAW_TARGET_KEY]
            headers = {name: value for name, value in headers.items() if name != RAW_TARGET_KEY}
        return super().request(method, url, body, headers, **kwargs)


class UpstreamHTTPConnection(RawTargetMixin, urllib3.connection.HTTPConnection):
    pass


class UpstreamHTTPSConnection(RawTargetMixin, urllib3.connection.HTTPSConnection):
    pass


class UpstreamHTTPPool(HTTPConnectionPool):
    ConnectionCls = UpstreamHTTPConnection


class UpstreamHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = UpstreamHTTPSConnection


class UpstreamAdapter(HTTPAdapter):
    """requests' adapter, with connections that keep the raw target and skip 1xx."""

    def build_response(self, req, resp):
        """Wrap urllib3's response without copying its headers or parsing its cookies.

        The proxy reads the raw response (headers with their repeats, body
        still encoded); requests' merged header dict and cookie jar would be
        built on every request and never used.
        """
        response = requests.Response()
        response.status_code = resp.status
        response.reason = resp.reason
        response.raw = resp
        response.url = req.url
        response.request = req
        response.connection = self
        return response

    def request_url(self, request, proxies):
        """Return the raw target of a proxied request as it is, without parsing the URL again."""
        raw = request.headers.get(RAW_TARGET_KEY)
        return super().request_url(request, proxies) if raw is None else raw

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": UpstreamHTTPPool,
            "https": UpstreamHTTPSPool,
        }


SESSION = requests.Session()
# The upstream URL is always a backend's own base URL: no proxies or .netrc
# from the environment, and no per-request environment lookups.
SESSION.trust_env = False
for scheme in ("http://", "https://"):
    SESSION.mount(
        scheme, UpstreamAdapter(pool_connections=POOL_CONNECTIONS, pool_maxsize=POOL_MAXSIZE)
    )


def raw_target(request):
    """Return the request target exactly as the client sent it."""
    # gunicorn keeps the raw target in RAW_URI (uWSGI in REQUEST_URI); other
    # servers decode the path, so rebuild it with Django's escaping.
    meta = request.META
    return meta.get("RAW_URI") or meta.get("REQUEST_URI") or request.get_full_path()


def upstream_request_headers(request, match):
    """Return the headers the backend receives: the client's, filtered, plus forwarding ones."""
    meta = request.META
    peer = meta.get("REMOTE_ADDR", "")
    trusted = headers.is_trusted(peer, settings.TRUSTED_PROXIES)
    dropped = headers.HOP_BY_HOP_HEADERS | headers.REPLACED_REQUEST_HEADERS
    dropped |= headers.connection_tokens(meta.get("HTTP_CONNECTION", ""))
    if not trusted:
        dropped |= headers.ORIGINAL_REQUEST_HEADERS
    # A plain dict: client_headers() spells every name one way ("Accept-Encoding").
    sent = {
        name: value
        for name, value in headers.client_headers(meta)
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
    for name in SKIPPABLE_DEFAULT_HEADERS:
        sent.setdefault(name, SKIP_HEADER)
    client_host = meta.get("HTTP_HOST", "")
    if match.route.preserve_host:
        sent["Host"] = client_host
    previous = meta.get("HTTP_X_FORWARDED_FOR")
    sent["X-Forwarded-For"] = f"{previous}, {peer}" if trusted and previous else peer
    sent["X-Forwarded-Host"] = client_host
    scheme = client_scheme(meta)
    sent["X-Forwarded-Proto"] = scheme
    sent["X-Forwarded-Port"] = headers.forwarded_port(client_host, scheme)
    if match.stripped_prefix:
        sent["X-Forwarded-Prefix"] = match.stripped_prefix
    sent["Via"] = headers.with_via(
        meta.get("HTTP_VIA"), meta.get("SERVER_PROTOCOL") or "HTTP/1.1", settings.VIA_PSEUDONYM
    )
    return sent


def client_scheme(meta):
    """Return the scheme the client used, as the WSGI server established it.

    Never request.scheme, which Django may take from a header any client can
    send; gunicorn takes the scheme only from the proxies in its
    forwarded_allow_ips (TRUSTED_PROXIES, see gunicorn.conf.py).
    """
    return meta["wsgi.url_scheme"]


def client_address(meta):
    """Return the address of the client a request comes from, for ip_hash."""
    return headers.original_client(
        meta.get("REMOTE_ADDR", ""), meta.get("HTTP_X_FORWARDED_FOR"), settings.TRUSTED_PROXIES
    )


def admin_cookie_names():
    """Return the balancer admin's own cookies, never forwarded to a backend."""
    return {settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME}


def has_body(meta):
    """Whether the request comes with a body (of known length or chunked)."""
    return meta.get("CONTENT_LENGTH", "") not in ("", "0") or (
        "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
    )


def request_body(meta):
    """Return the request body to stream from the WSGI input, or None.

    Raises BodyTooLarge at once when Content-Length is over the limit; the
    body itself raises it when a chunked body grows past the limit. Raises
    UnsupportedRequestCoding for a transfer coding other than chunked.
    """
    stream = meta["wsgi.input"]
    transfer_encoding = meta.get("HTTP_TRANSFER_ENCODING")
    if transfer_encoding is not None and transfer_codings([transfer_encoding]) != ["chunked"]:
        # gunicorn undoes the chunked framing and lets `gzip, chunked` and the
        # like through: forwarded, the codings would be lost on the way.
        raise UnsupportedRequestCoding(transfer_encoding)
    length = meta.get("CONTENT_LENGTH")
    if length:
        if int(length) > settings.MAX_BODY_SIZE:
            raise BodyTooLarge(length)
        return RequestBody(stream, int(length))
    if "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
        # Django reads a body without Content-Length as empty; the server has
        # already undone the chunked framing, so read the input to its end.
        return RequestBody(stream)
    return None


class RequestBody:
    """The client's body, read in chunks while the upstream request is being sent.

    A body that ends early or breaks off raises ClientBodyIncomplete, one
    whose chunked framing is broken ClientBodyMalformed. Neither is an
    OSError: urllib3 lets them through and drops the upstream connection,
    so the backend never takes the next request's bytes for the missing ones.
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
            raise ClientBodyIncomplete(str(error) or type(error).__name__) from error
        except ParseException as error:  # gunicorn undoes the chunked framing as it is read
            raise ClientBodyMalformed(str(error) or type(error).__name__) from error

    def read_exactly(self):
        remaining = self.length
        while remaining > 0:
            chunk = self.stream.read(min(CHUNK_SIZE, remaining))
            if not chunk:
                raise ClientBodyIncomplete(f"body ended {remaining} bytes short")
            remaining -= len(chunk)
            yield chunk

    def read_to_end(self):
        total = 0
        while chunk := self.stream.read(CHUNK_SIZE):
            total += len(chunk)
            if total > settings.MAX_BODY_SIZE:
                raise BodyTooLarge(total)
            yield chunk


class UpstreamBody:
    """The backend's response body, passed on as it arrives, still encoded."""

    def __init__(self, upstream, backend_url, on_close=None):
        self.upstream = upstream
        self.backend_url = backend_url
        self.on_close = on_close

    def __iter__(self):
        # An empty first piece makes the server send the head now. The client
        # of a stream learns the status before the first event comes, and a
        # body that breaks before its first byte is still signalled by an
        # abort: a server that has sent nothing answers an error with a 500.
        yield b""
        raw = self.upstream.raw
        try:
            # read1 returns what has arrived, up to CHUNK_SIZE (and within the
            # current chunk), without waiting for more, whatever the framing;
            # read() would wait to fill CHUNK_SIZE and hold a stream of small
            # events back until a Content-Length or close-delimited body ends.
            # Each wait gets the read timeout (FinalResponse's reader), and
            # urllib3 gives the connection back to the pool once the body has
            # ended, and closes it when reading fails.
            while data := raw.read1(CHUNK_SIZE, decode_content=False):
                yield data
        except (urllib3.exceptions.HTTPError, OSError) as error:
            # The status line is long gone: the only honest signal left is to
            # abort the client's connection, which the server does on raise.
            logger.warning("Backend %s broke off its response: %s", self.backend_url, error)
            raise

    def close(self):
        # A body read to its end has already given its connection back to the
        # pool; anything else is closed so a half-read response is never reused.
        self.upstream.close()
        if self.on_close is not None:
            self.on_close()


class ProxiedResponse(StreamingHttpResponse):
    """A backend's response as Django passes it to the WSGI server.

    items() is what goes on the wire: the backend's headers in order, repeats
    (every Set-Cookie) kept separate. The headers mapping mirrors them for
    code that reads one value per name.
    """

    def __init__(self, upstream, header_list, body):
        super().__init__(
            body,
            status=upstream.status_code,
            # A reason phrase gunicorn would refuse is replaced by the standard one.
            reason=upstream.reason if REASON_RE.fullmatch(upstream.reason or "") else None,
        )
        del self.headers["Content-Type"]
        self.header_list = header_list
        for name, value in header_list:
            self.headers[name] = value

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


def client_response(upstream, request, match, backend, on_close=None):
    """Wrap the backend's answer for the client, or raise InvalidUpstreamResponse."""
    if not 200 <= upstream.status_code <= 599:
        raise InvalidUpstreamResponse(f"status {upstream.status_code}")
    public_origin = f"{client_scheme(request.META)}://{request.META.get('HTTP_HOST', '')}"

    def rewrite_location(value):
        return headers.public_location(value, backend.url, public_origin, match.stripped_prefix)

    try:
        header_list = headers.client_response_headers(
            list(upstream.raw.headers.items()), rewrite_location, admin_cookie_names()
        )
    except headers.InvalidHeaders as error:
        raise InvalidUpstreamResponse(str(error)) from error
    header_list.append(("Via", via_from(upstream)))
    return ProxiedResponse(upstream, header_list, UpstreamBody(upstream, backend.url, on_close))


def via_from(upstream):
    """Return the response's Via: the backend's own hops, then this balancer."""
    hops = upstream.raw.headers.getlist("Via")
    if not all(headers.FIELD_VALUE_RE.fullmatch(hop) for hop in hops):
        raise InvalidUpstreamResponse("malformed Via")
    previous = ", ".join(hops)
    version = "1.0" if upstream.raw.version == 10 else "1.1"
    return headers.with_via(previous, f"HTTP/{version}", settings.VIA_PSEUDONYM)


def forward(request, match, backend, on_close=None):
    """Send the request to the backend and return its streaming response.

    Raises requests' exceptions when the backend cannot be reached or answers
    badly, and BodyTooLarge, UnsupportedRequestCoding and ClientBodyError for
    the client's body. on_close runs once the response is done with.
    """
    upstream_request = requests.PreparedRequest()
    upstream_request.method = request.method
    # Assigned, not prepared: requests would re-quote the path, and the backend
    # must get it byte for byte. Only the backend's own base URL is used for
    # scheme, host and port.
    _path, mark, query = raw_target(request).partition("?")
    target = match.upstream_path + mark + query
    upstream_request.url = backend.url + target
    upstream_request.headers = upstream_request_headers(request, match)
    upstream_request.headers[RAW_TARGET_KEY] = target
    upstream_request.body = request_body(request.META)
    upstream_request.hooks = {"response": []}
    pool = match.route.pool
    try:
        upstream = SESSION.get_adapter(upstream_request.url).send(
            upstream_request,
            stream=True,
            timeout=(pool.connect_timeout, pool.read_timeout),
            verify=pool.tls_verify,
        )
    except requests.RequestException:
        raise  # requests' exceptions are OSErrors too: keep them as they are
    except (OSError, ValueError) as error:
        # Raised outside requests' own hierarchy: a CA bundle that has gone
        # missing, a header value http.client refuses. The backend is unusable.
        raise requests.ConnectionError(error) from error
    try:
        return client_response(upstream, request, match, backend, on_close)
    except BaseException:
        upstream.close()  # never back to the pool half read
        raise
