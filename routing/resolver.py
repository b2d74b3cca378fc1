"""Find the route that serves a request: pure functions over a RouteTable snapshot."""

import functools
import re
from dataclasses import dataclass
from urllib.parse import unquote

from django.http.request import split_domain_port

from .snapshot import Route

# Visible ASCII only, and no fragment: a target with spaces, controls, raw
# non-ASCII bytes or '#' is not a valid request target (RFC 9112 §3.2).
ORIGIN_FORM_RE = re.compile(r"/[!-\"$-~]*")

DOT_SEGMENTS = (".", "..")


@dataclass(frozen=True)
class Match:
    """The route that won, and the raw path and prefix the backend is sent."""

    route: Route
    upstream_path: str
    stripped_prefix: str = ""


@functools.lru_cache(maxsize=4096)
def normalise_host(raw_host):
    """Return the Host header lower-cased, without port or trailing dot; None if malformed.

    Remembered for the most recent hosts: a balancer sees the same few again
    and again.
    """
    if not raw_host:
        return None
    domain, _port = split_domain_port(raw_host)  # lower-cased, one trailing dot gone
    if not domain and raw_host.endswith("."):
        # The trailing dot may follow the port instead ("www.mango.com:8000.").
        domain, _port = split_domain_port(raw_host[:-1])
    if not domain or domain.startswith(".") or domain.endswith(".") or ".." in domain:
        return None
    return domain


def split_target(target):
    """Split an origin-form request target into raw path and query ('' if none).

    Return None for anything else (absolute-form, '*', bytes a target may not hold).
    """
    if not ORIGIN_FORM_RE.fullmatch(target):
        return None
    path, _, query = target.partition("?")
    return path, query


def path_segments(raw_path):
    """Return (raw, decoded) pairs of a path's segments after dot-segment removal.

    Each segment is split off before it is decoded, so an encoded slash (%2F)
    stays data inside its segment; '.' and '..' are removed as RFC 3986 §5.2.4
    says, whether written plainly or percent-encoded.
    """
    parts = raw_path[1:].split("/")
    segments = []
    for index, raw in enumerate(parts):
        decoded = unquote(raw)
        if decoded in DOT_SEGMENTS:
            if decoded == ".." and segments:
                segments.pop()
            if index == len(parts) - 1:
                segments.append(("", ""))
            continue
        segments.append((raw, decoded))
    return segments


def candidate_host_routes(table, host):
    """Yield the route groups that apply to a host, most specific first."""
    exact = table.exact.get(host)
    if exact is not None:
        yield exact
    if table.wildcard:
        dot = host.find(".")
        while dot != -1:
            suffix_routes = table.wildcard.get(host[dot + 1 :])
            if suffix_routes is not None:
                yield suffix_routes
            dot = host.find(".", dot + 1)
    yield table.any_host


def longest_prefix_route(host_routes, decoded):
    """Return the route whose prefix is the longest leading run of segments."""
    for length in range(min(len(decoded), host_routes.depth), -1, -1):
        route = host_routes.by_prefix.get(decoded[:length])
        if route is not None:
            return route
    return None


def resolve(table, host, raw_path):
    """Return the Match that serves this host and raw path, or None."""
    segments = path_segments(raw_path)
    decoded = tuple(segment for _raw, segment in segments)
    for host_routes in candidate_host_routes(table, host):
        route = longest_prefix_route(host_routes, decoded)
        if route is not None:
            return build_match(route, segments)
    return None


def build_match(route, segments):
    """Return the Match for a route, with the prefix's segments removed if it strips."""
    raw = [segment for segment, _decoded in segments]
    cut = len(route.prefix) if route.strip_prefix else 0
    return Match(
        route=route,
        upstream_path="/" + "/".join(raw[cut:]),
        stripped_prefix="/" + "/".join(raw[:cut]) if cut else "",
    )
