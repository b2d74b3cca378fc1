"""Which headers cross the balancer, both ways: pure functions over header lists."""

import ipaddress
import re
from urllib.parse import urlsplit

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

# What a proxy in front tells about the original request, besides the
# X-Forwarded-* headers the balancer sets itself: the client's address
# (django-ipware and others read X-Client-IP and friends before the peer),
# and the scheme it used (Rack, Spring, Tornado and others take
# X-Forwarded-Ssl, X-Scheme and friends over X-Forwarded-Proto). Kept only
# from a trusted proxy, since a backend may believe them.
ORIGINAL_REQUEST_HEADERS = frozenset(
    {
        "forwarded",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
        "x-cluster-client-ip",
        "x-forwarded-ssl",
        "x-forwarded-scheme",
        "x-forwarded-protocol",
        "x-scheme",
        "x-url-scheme",
        "front-end-https",
    }
)

# gunicorn always sends its own Date and Server; a backend's would be
# duplicates (nginx drops them the same way). Via is rebuilt with this hop.
REPLACED_RESPONSE_HEADERS = frozenset({"date", "server", "via"})

# Headers whose value is a URL that may point back at the backend itself.
LOCATION_HEADERS = frozenset({"location", "content-location"})

DEFAULT_PORTS = {"http": 80, "https": 443}

# RFC 9110 §5.1 and §5.5: what gunicorn will put on the wire.
TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
FIELD_VALUE_RE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
CONTENT_LENGTH_RE = re.compile(r"[0-9]+")

# Where a cookie starts in a Cookie header: after every ";", and after a ","
# that a name and "=" follow, since gunicorn joins two Cookie lines with a
# comma. Any other comma is part of a value.
COOKIE_SEPARATOR_RE = re.compile(r"(;|,(?=[^;,=]*=))")


# gunicorn marks an HTTP/2 request by this key of its environ (over any
# Version header the client sent): a marker, not a header of the client's.
HTTP2_MARKER_KEY = "HTTP_VERSION"


class InvalidHeaders(ValueError):
    """A backend sent headers that cannot be passed on as they are."""


def connection_tokens(value):
    """Return the lower-cased header names listed in a Connection header."""
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def client_headers(meta):
    """Yield (name, value) for each header the client sent, from the WSGI environ."""
    marker = HTTP2_MARKER_KEY if meta.get("SERVER_PROTOCOL", "").startswith("HTTP/2") else None
    for key, value in meta.items():
        if key.startswith("HTTP_") and key != marker:
            yield key[5:].replace("_", "-").title(), value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            yield key.replace("_", "-").title(), value


def forwarded_port(host_header, scheme):
    """Return the port the client addressed: the Host header's, else the scheme's default."""
    _host, colon, port = host_header.rpartition(":")
    port = port.removesuffix(".")
    return port if colon and port.isdigit() else str(DEFAULT_PORTS.get(scheme, ""))


def last_untrusted_hop(peer, forwarded_for, trusted_proxies):
    """Return the client's address behind a trusted peer: the last address in
    X-Forwarded-For that is not a trusted proxy (the peer if there is none)."""
    for address in reversed([hop.strip() for hop in forwarded_for.split(",")]):
        if not is_trusted(address, trusted_proxies):
            return address
    return peer


def is_trusted(address, networks):
    """Whether an address lies in one of the trusted networks."""
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def without_cookies(cookie_header, names):
    """Return a Cookie header without the named cookies ('' if none is left).

    Every other cookie keeps its bytes and the separator before it; where a
    cookie is taken out from between two others, a ";" around it wins over a
    ",", so the cookies on either side stay apart for a server that splits on
    ";" alone. A value that holds ",name=" is taken for two cookies: a backend
    might read it that way, and the balancer cannot tell it from two lines.
    """
    parts = COOKIE_SEPARATOR_RE.split(cookie_header)
    pairs, separators = parts[::2], ["", *parts[1::2]]
    if all(pair.partition("=")[0].strip() not in names for pair in pairs):
        return cookie_header
    kept = []
    gap = []  # the separators since the last cookie kept
    for separator, pair in zip(separators, pairs, strict=True):
        gap.append(separator)
        if pair.partition("=")[0].strip() in names or not (kept or pair.strip()):
            continue  # taken out, or an empty slot before the first cookie kept
        if not kept:
            kept.append(pair.lstrip())
        elif separator == "," and ";" in gap:
            kept.append("; " + pair)
        else:
            kept.append(separator + pair)
        gap = []
    return "".join(kept)


def with_via(previous, protocol, pseudonym):
    """Return a Via header value with this balancer appended to what came before."""
    hop = f"{protocol.removeprefix('HTTP/')} {pseudonym}"
    return f"{previous}, {hop}" if previous else hop


def origin_of(url):
    """Return (scheme, host, port) of an absolute URL, with the default port filled in."""
    parts = urlsplit(url)
    return (
        parts.scheme,
        (parts.hostname or "").lower(),
        parts.port or DEFAULT_PORTS.get(parts.scheme),
    )


def public_location(value, backend_url, public_origin, stripped_prefix):
    """Rewrite a Location that points at the backend itself to the address the client used.

    An absolute URL on the backend's own origin moves to the public origin; a
    path-absolute one keeps its form. Either way a stripped prefix is put
    back. A URL of any other origin, or a relative path, is left alone.
    """
    try:
        parts = urlsplit(value)
        if not parts.netloc:
            return stripped_prefix + value if value.startswith("/") else value
        backend = origin_of(backend_url)
        if origin_of(f"{parts.scheme or backend[0]}://{parts.netloc}") != backend:
            return value
        rest = value[value.index(parts.netloc) + len(parts.netloc) :]
    except ValueError:  # not a URL ("http://[oops/", a tab in the host): leave it be
        return value
    return public_origin + stripped_prefix + rest


def cookie_name(set_cookie):
    """Return the name a server reads from the cookie a Set-Cookie header sets.

    A browser keeps a cookie without a name (`=lb_sessionid=x`, or no "=" at
    all) and sends back its bare value (`lb_sessionid=x`, RFC 6265bis),
    which a server reads up to the first "=" like any other cookie.
    """
    name, equals, value = set_cookie.partition(";")[0].partition("=")
    if equals and name.strip():
        return name.strip()
    sent = value if equals else name
    return sent.partition("=")[0].strip()


def client_response_headers(pairs, rewrite_location, reserved_cookies=frozenset()):
    """Return the backend's headers as the client gets them, or raise InvalidHeaders.

    Hop-by-hop headers and the ones the server replaces are dropped, every
    other header (each Set-Cookie included) is kept in order, Location headers
    pass through rewrite_location, and framing that could desynchronise the
    client connection is refused. A Set-Cookie for a reserved cookie (the
    admin's own), named or nameless, is dropped, so a backend cannot plant one
    in a browser.
    """
    dropped = HOP_BY_HOP_HEADERS | REPLACED_RESPONSE_HEADERS
    names = {name.lower() for name, _value in pairs}
    for name, value in pairs:
        if name.lower() == "connection":
            dropped = dropped | connection_tokens(value)
    if "transfer-encoding" in names and "content-length" in names:
        raise InvalidHeaders("both Transfer-Encoding and Content-Length")
    kept = []
    for name, value in pairs:
        lower = name.lower()
        if lower in dropped:
            continue
        if not TOKEN_RE.fullmatch(name) or not FIELD_VALUE_RE.fullmatch(value):
            raise InvalidHeaders(f"malformed header {name!r}")
        if lower == "content-length" and not CONTENT_LENGTH_RE.fullmatch(value.strip()):
            raise InvalidHeaders(f"Content-Length {value!r}")
        if lower in LOCATION_HEADERS:
            value = rewrite_location(value)
        elif lower == "set-cookie" and cookie_name(value) in reserved_cookies:
            continue
        kept.append((name, value))
    return kept
