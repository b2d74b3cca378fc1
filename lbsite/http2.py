"""HTTP/2 towards clients: gunicorn's HTTP/2 requests in the form of HTTP/1.1 ones.

Plain Python, no Django: gunicorn.conf.py calls it in gunicorn's workers.
The balancer forwards every request as HTTP/1.1, and it and Django read the
WSGI environ as PEP 3333 has it. gunicorn builds the environ of an HTTP/2
request from the same request object as for HTTP/1.1, but fills it
differently in two ways, undone here before the environ is built. (Cookie
fields that an HTTP/2 client split up are joined with "; " by h2 itself,
as RFC 9113 §8.2.3 asks.)
"""

# gunicorn's worker classes that serve HTTP/2, and so their subclasses (the
# balancer's own lbsite.workers.GeventWorker). The others (sync, tornado,
# gevent's pywsgi) read HTTP/1.1 from every connection, also from a client
# that chose h2 by ALPN, which then gets no answer at all.
HTTP2_WORKERS = frozenset(
    {"gunicorn.workers.gthread.ThreadWorker", "gunicorn.workers.ggevent.GeventWorker"}
)


def serves_http2(worker):
    """Whether this gunicorn worker serves the HTTP/2 connections it accepts."""
    return any(
        f"{kind.__module__}.{kind.__qualname__}" in HTTP2_WORKERS for kind in type(worker).__mro__
    )


def is_http2(request):
    """Whether a gunicorn request came over HTTP/2."""
    return request.version >= (2, 0)


def as_http1(request):
    """Give a gunicorn HTTP/2 request, in place, what the same request over HTTP/1.1 would have.

    - Header values, the target and the query as WSGI strings: gunicorn's
      HTTP/2 decodes them as UTF-8, its HTTP/1.1 (and PEP 3333) keeps each
      byte as one latin-1 character. Otherwise a header with a character
      outside latin-1 fails on its way to the backend (http.client refuses
      it), and any other non-ASCII byte reaches the backend altered.
    - Chunked framing for a body of unknown length: HTTP/2 ends a body with
      the stream, so Content-Length is optional. Without it, HTTP/1.1 frames
      a body by chunks; without either, the body would be taken for none.
    """
    request.headers = [(name, wsgi_string(value)) for name, value in request.headers]
    request.uri = wsgi_string(request.uri)
    request.query = wsgi_string(request.query)
    if has_body_of_unknown_length(request):
        request.headers.append(("TRANSFER-ENCODING", "chunked"))


def wsgi_string(text):
    """Return text decoded as UTF-8 as WSGI has it: each byte one latin-1 character."""
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")


def has_body_of_unknown_length(request):
    """Whether an HTTP/2 request has a body that no Content-Length announces.

    The request comes on its HEADERS frame. A stream that has already ended
    without data has no body; one still open may yet bring some.
    """
    if any(name == "CONTENT-LENGTH" for name, _value in request.headers):
        return False
    stream = request.stream
    return not (stream.body_complete and stream.body_size == 0)
