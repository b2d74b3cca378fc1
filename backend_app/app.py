"""The demo backend: says which application it is, and echoes what arrived."""

import hashlib
import json
import os

CHUNK_SIZE = 64 * 1024


def application(environ, start_response):
    """Serve the demo backend's three kinds of path."""
    path = environ.get("PATH_INFO", "/")
    if path == "/healthcheck":
        return respond(start_response, "200 OK", b"OK", "text/plain; charset=utf-8")
    if path == "/echo" or path.startswith("/echo/"):
        body = json.dumps(describe_request(environ), indent=2).encode() + b"\n"
        return respond(start_response, "200 OK", body, "application/json")
    message = f"This is the {os.environ.get('APP', 'demo')} application."
    return respond(start_response, "200 OK", message.encode(), "text/plain; charset=utf-8")


def respond(start_response, status, body, content_type):
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def describe_request(environ):
    """Return what arrived: method, raw target, headers in order, body size and digest."""
    raw_target = environ.get("RAW_URI") or environ.get("PATH_INFO", "/")
    path, _, query = raw_target.partition("?")
    digest = hashlib.sha256()
    length = 0
    stream = environ["wsgi.input"]
    while chunk := stream.read(CHUNK_SIZE):
        digest.update(chunk)
        length += len(chunk)
    return {
        "app": os.environ.get("APP", "demo"),
        "method": environ["REQUEST_METHOD"],
        "path": path,
        "query": query,
        "headers": list(request_headers(environ)),
        "body_length": length,
        "body_sha256": digest.hexdigest(),
        "client": environ.get("REMOTE_ADDR", ""),
    }


def request_headers(environ):
    """Yield [name, value] for each header in arrival order.

    The WSGI server joins a repeated header into one value (gunicorn with
    commas), so repeats show as one comma-separated entry.
    """
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            yield [key[5:].replace("_", "-").title(), value]
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            yield [key.replace("_", "-").title(), value]
