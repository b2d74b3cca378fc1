"""The one transport: forward a request to a backend with requests, streaming both ways."""

import requests
from django.conf import settings
from django.http import StreamingHttpResponse
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.util import SKIP_HEADER

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded; plus
# the proxy credentials, which are for this hop alone.
HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)

# Set by the balancer itself on the way to the backend, never taken from the
# client as sent. Expect is answered by gunicorn, so the backend never needs it.
REPLACED_REQUEST_HEADERS = frozenset(
    {
        "host",
        "expect",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
    }
)

# Headers that urllib3 or http.client would add on their own when absent;
# SKIP_HEADER keeps the request as the client sent it.
SKIPPABLE_DEFAULT_HEADERS = ("Accept-Encoding", "User-Agent")

CHUNK_SIZE = 64 * 1024
POOL_MAXSIZE = 64

SESSION = requests.Session()
# The upstream URL is always a backend's own base URL: no proxies or .netrc
# from the environment, and no per-request environment lookups.
SESSION.trust_env = False
SESSION.mount("http://", HTTPAdapter(pool_connections=32, pool_maxsize=POOL_MAXSIZE))
SESSION.mount("https://", HTTPAdapter(pool_connections=32, pool_maxsize=POOL_MAXSIZE))


class InvalidUpstreamResponse(requests.RequestException):
    """The backend answered with something that is not a usable HTTP response."""


def raw_target(request):
    """Return the request target exactly as the client sent it."""
    # gunicorn keeps the raw target in RAW_URI (uWSGI in REQUEST_URI); other
    # servers decode the path, so rebuild it with Django's escaping.
    meta = request.META
    return meta.get("RAW_URI") or meta.get("REQUEST_URI") or request.get_full_path()


def connection_tokens(value):
    """Return the lower-cased header names listed in a Connection header."""
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def client_headers(meta):
    """Yield (name, value) for each header the client sent, from the WSGI environ."""
    for key, value in meta.items():
        if key.startswith("HTTP_"):
            yield key[5:].replace("_", "-").title(), value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            yield key.replace("_", "-").title(), value


def upstream_request_headers(request, match):
    """Return the headers the backend receives: the client's, filtered, plus forwarding ones."""
    meta = request.META
    dropped = HOP_BY_HOP_HEADERS | REPLACED_REQUEST_HEADERS
    dropped |= connection_tokens(meta.get("HTTP_CONNECTION", ""))
    headers = CaseInsensitiveDict(
        (name, value) for name, value in client_headers(meta) if name.lower() not in dropped
    )
    if "Cookie" in headers:
        cookie = without_admin_cookies(headers["Cookie"])
        if cookie:
            headers["Cookie"] = cookie
        else:
            del headers["Cookie"]
    for name in SKIPPABLE_DEFAULT_HEADERS:
        headers.setdefault(name, SKIP_HEADER)
    client_host = meta.get("HTTP_HOST", "")
    if match.route.preserve_host:
        headers["Host"] = client_host
    headers["X-Forwarded-For"] = meta.get("REMOTE_ADDR", "")
    headers["X-Forwarded-Host"] = client_host
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Port"] = meta.get("SERVER_PORT", "")
    if match.stripped_prefix:
        headers["X-Forwarded-Prefix"] = match.stripped_prefix
    headers["Via"] = with_via(meta.get("HTTP_VIA"), meta.get("SERVER_PROTOCOL"))
    return headers


def without_admin_cookies(cookie_header):
    """Return a Cookie header without the balancer admin's own cookies."""
    own = {settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME}
    kept = [
        pair
        for pair in cookie_header.split(";")
        if pair.strip() and pair.split("=", 1)[0].strip() not in own
    ]
    return ";".join(kept).strip()


def with_via(previous, protocol):
    """Return a Via header value with this balancer appended to what came before."""
    version = (protocol or "HTTP/1.1").removeprefix("HTTP/")
    hop = f"{version} {settings.VIA_PSEUDONYM}"
    return f"{previous}, {hop}" if previous else hop


def request_body(meta):
    """Return an iterator over the request body read from the WSGI input, or None."""
    stream = meta["wsgi.input"]
    length = meta.get("CONTENT_LENGTH")
    if length:
        return read_exactly(stream, int(length))
    if "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
        # Django reads a body without Content-Length as empty; the server has
        # already undone the chunked framing, so read the input to its end.
        return read_to_end(stream)
    return None


def read_exactly(stream, length):
    """Yield a body of known length in chunks."""
    while length > 0:
        chunk = stream.read(min(CHUNK_SIZE, length))
        if not chunk:
            return
        length -= len(chunk)
        yield chunk


def read_to_end(stream):
    """Yield a body of unknown length in chunks until the input ends."""
    while chunk := stream.read(CHUNK_SIZE):
        yield chunk


class UpstreamBody:
    """The backend's response body, passed on as it arrives, still encoded."""

    def __init__(self, upstream):
        self.upstream = upstream

    def __iter__(self):
        return self.upstream.raw.stream(CHUNK_SIZE, decode_content=False)

    def close(self):
        # A body read to its end has already given its connection back to the
        # pool; anything else is closed so a half-read response is never reused.
        self.upstream.close()


class ProxiedResponse(StreamingHttpResponse):
    """A backend's response as Django passes it to the WSGI server.

    items() is what goes on the wire: the backend's headers in order, repeats
    (every Set-Cookie) kept separate. The headers mapping mirrors them for
    code that reads one value per name.
    """

    def __init__(self, upstream):
        if not 100 <= upstream.status_code <= 599:
            upstream.close()
            raise InvalidUpstreamResponse(f"status {upstream.status_code}")
        super().__init__(
            UpstreamBody(upstream),
            status=upstream.status_code,
            reason=upstream.reason or None,
        )
        del self.headers["Content-Type"]
        self.header_list = upstream_response_headers(upstream.raw.headers)
        for name, value in self.header_list:
            self.headers[name] = value

    def items(self):
        return self.header_list


def upstream_response_headers(headers):
    """Return the backend's headers minus hop-by-hop ones, with Via added."""
    dropped = HOP_BY_HOP_HEADERS | connection_tokens(headers.get("Connection", ""))
    kept = [(name, value) for name, value in headers.items() if name.lower() not in dropped]
    previous_via = ", ".join(value for name, value in kept if name.lower() == "via")
    kept = [(name, value) for name, value in kept if name.lower() != "via"]
    kept.append(("Via", with_via(previous_via, "HTTP/1.1")))
    return kept


def forward(request, match, backend):
    """Send the request to the backend and return its streaming response.

    Raises requests' exceptions when the backend cannot be reached or answers
    badly; the caller maps them to 502 or 504.
    """
    upstream_request = requests.PreparedRequest()
    upstream_request.method = request.method
    # Assigned, not prepared: requests would re-quote the path, and the backend
    # must get it byte for byte. Only the backend's own base URL is used for
    # scheme, host and port.
    _path, mark, query = raw_target(request).partition("?")
    upstream_request.url = backend.url + match.upstream_path + mark + query
    upstream_request.headers = upstream_request_headers(request, match)
    upstream_request.body = request_body(request.META)
    upstream_request.hooks = {"response": []}
    pool = match.route.pool
    upstream = SESSION.get_adapter(upstream_request.url).send(
        upstream_request,
        stream=True,
        timeout=(pool.connect_timeout, pool.read_timeout),
    )
    return ProxiedResponse(upstream)
