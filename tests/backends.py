"""WSGI backends written for the tests, served by gunicorn as `tests.backends:NAME`."""

import hashlib
import json
import os
import time
from urllib.parse import parse_qs

BLOCK = hashlib.sha256(b"download").digest() * 2048  # 64 KiB of fixed bytes


def download_size(environ):
    return int(environ.get("QUERY_STRING") or 0)


def expected_download_sha256(size):
    """Return the SHA-256 of what `download` sends for a size."""
    digest = hashlib.sha256()
    for chunk in download_chunks(size):
        digest.update(chunk)
    return digest.hexdigest()


def download_chunks(size):
    while size > 0:
        chunk = BLOCK[: min(len(BLOCK), size)]
        size -= len(chunk)
        yield chunk


def download(environ, start_response):
    """Send ?N bytes of a fixed pattern, streamed, with Content-Length."""
    size = download_size(environ)
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
    )
    return download_chunks(size)


def status(environ, start_response):
    """Answer /NNN with that status and a few headers of its own (no body for 204/304)."""
    code = int(environ["PATH_INFO"].strip("/") or 200)
    reasons = {200: "OK", 204: "No Content", 304: "Not Modified"}
    headers = [("ETag", '"v1"'), ("X-Backend", os.environ.get("APP", "status"))]
    body = [] if code in (204, 304) else [b"body"]
    if body:
        headers.append(("Content-Length", "4"))
    start_response(f"{code} {reasons.get(code, 'Status')}", headers)
    return body


def slow(environ, start_response):
    """Answer after ?S seconds (default 1.5): a request still in flight."""
    time.sleep(float(environ.get("QUERY_STRING") or 1.5))
    start_response("200 OK", [("Content-Length", "4")])
    return [b"slow"]


def tutorial(environ, start_response):
    """Answer as the tutorial's Flask backend did: / in JSON, /v1, /v2 and /healthcheck.

    / tells what arrived: the app's message (APP names it), Flask's
    request.base_url, the MyCustomHeader header, the Host header, the
    MyCustomParam parameter and the raw query string.
    """
    path = environ["PATH_INFO"]
    content_type = "text/plain"
    if path == "/":
        host = environ.get("HTTP_HOST", "")
        query = environ.get("QUERY_STRING", "")
        body = json.dumps(
            {
                "message": f"This is the {os.environ.get('APP', 'tutorial')} application.",
                "server": f"{environ['wsgi.url_scheme']}://{host}{environ['SCRIPT_NAME']}{path}",
                "custom_header": environ.get("HTTP_MYCUSTOMHEADER"),
                "host_header": host,
                "custom_params": parse_qs(query).get("MyCustomParam", [None])[0],
                "query_strings": query,
            }
        )
        content_type, status = "application/json", "200 OK"
    elif path in ("/v1", "/v2"):
        body, status = f"This is {path[1:].upper()}", "200 OK"
    elif path == "/healthcheck":
        body, status = "OK", "200 OK"
    else:
        body, status = "Not Found", "404 Not Found"
    data = body.encode()
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(data)))])
    return [data]
