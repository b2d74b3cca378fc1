"""The transport's connections: requests over urllib3, sending the target as it came."""

import re

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util import SKIP_HEADER

from .. import headers
from .parser import FinalResponse

# Backends whose connections are kept, and idle connections kept per backend:
# as many as a worker serves clients at once (WORKER_CONNECTIONS' default),
# so that under load every request finds a kept-alive connection rather than
# connecting anew and closing after use. A backend closes the idle ones on
# its own keep-alive timeout; urllib3 notices before reusing one.
POOL_CONNECTIONS = 32
POOL_MAXSIZE = 1000
# Backend origins whose pool lookups are remembered (backends come and go with edits).
MAX_REMEMBERED_ORIGINS = 1024


# urllib3 re-encodes every request target (upper-cases %7e, encodes `|`, a lone
# `%`, ...). The raw target rides to the connection under this key instead,
# which the connection takes out of the headers before anything is sent.
RAW_TARGET_KEY = "X-Django-Lb-Raw-Target"


# What http.client refuses in a header value: a line break.
LINE_BREAK_RE = re.compile(r"[\r\n]")


class RawTargetMixin:
    """Send the request target exactly as the client wrote it, and skip 1xx answers."""

    response_class = FinalResponse

    def request(self, method, url, body=None, headers=None, **kwargs):
        if headers and RAW_TARGET_KEY in headers:
            url = headers[RAW_TARGET_KEY]
            headers = {name: value for name, value in headers.items() if name != RAW_TARGET_KEY}
        return super().request(method, url, body, headers, **kwargs)

    def putheader(self, header, *values):
        """Add one header line to the request head, checked in one step.

        As urllib3 and http.client do between them, for the one string value
        the transport always gives: SKIP_HEADER sends nothing, a name that is
        no token or a value with a line break is a ValueError, and the line
        is latin-1 (a WSGI string holds each byte as one latin-1 character).
        Their two layers cost more than the rest of sending the head.
        """
        if len(values) != 1 or values[0].__class__ is not str or values[0] == SKIP_HEADER:
            super().putheader(header, *values)
            return
        value = values[0]
        if not headers.TOKEN_RE.fullmatch(header):
            raise ValueError(f"Invalid header name {header!r}")
        if LINE_BREAK_RE.search(value):
            raise ValueError(f"Invalid header value {value!r}")
        self._buffer.append(f"{header}: {value}".encode("latin-1"))


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
        """Return urllib3's response itself, not wrapped in a requests.Response.

        The transport reads the raw response (headers with their repeats,
        body still encoded), and nothing else calls this adapter: requests'
        Response, with its merged header dict and a new cookie jar, would be
        built on every request and never used.
        """
        return resp

    def request_url(self, request, proxies):
        """Return the raw target of a proxied request as it is, without parsing the URL again."""
        raw = request.headers.get(RAW_TARGET_KEY)
        return super().request_url(request, proxies) if raw is None else raw

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        """Return the connection pool for a request's backend, looked up once per backend.

        requests parses the URL, checks for proxies and a CA directory, and
        normalises a pool key on every request; the transport names the
        backend's origin (its base URL), so the pool found the first time is
        kept, until the pool manager closes it to make room for others.
        """
        origin = getattr(request, "origin", None)
        if origin is None or proxies or cert:
            return super().get_connection_with_tls_context(request, verify, proxies, cert)
        key = (origin, verify)
        pool = self.pools_by_origin.get(key)
        if pool is None or pool.pool is None:  # not looked up yet, or closed since
            pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
            if len(self.pools_by_origin) >= MAX_REMEMBERED_ORIGINS:
                self.pools_by_origin.clear()
            self.pools_by_origin[key] = pool
        return pool

    def init_poolmanager(self, *args, **kwargs):
        self.pools_by_origin = {}
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
