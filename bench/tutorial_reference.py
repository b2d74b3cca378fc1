"""A proxy written the tutorial's way, Flask and `requests.get`: `make bench`'s reference.

It is the reverse proxy most Flask tutorials and answers show: one catch-all
route that calls `requests.get` for each request (no shared session, so a
new connection to the backend every time, and requests reads the proxy and
.netrc settings of the environment each time), forwards the client's
headers but Host, and answers with the body it read whole, minus the
headers that no longer fit. `make bench` runs it under gunicorn with
threaded workers (`gunicorn -k gthread bench.tutorial_reference:app`).

BENCH_BACKENDS lists the backends (host:port, comma-separated), picked at
random as the balancer's random algorithm does.
"""

import os
import random

import requests
from flask import Flask, Response, request

BACKENDS = [backend for backend in os.environ.get("BENCH_BACKENDS", "").split(",") if backend]
# requests has decoded and de-chunked the body it hands over, and the server sets the rest.
EXCLUDED_HEADERS = frozenset(
    {"content-encoding", "content-length", "transfer-encoding", "connection", "date", "server"}
)

app = Flask(__name__)


@app.route("/", defaults={"path": ""})
@app.route("/<path:path>")
def proxy(path):
    upstream = requests.get(
        f"http://{random.choice(BACKENDS)}/{path}",
        params=request.args,
        headers={name: value for name, value in request.headers if name.lower() != "host"},
        timeout=(3, 10),
    )
    headers = [
        (name, value)
        for name, value in upstream.raw.headers.items()
        if name.lower() not in EXCLUDED_HEADERS
    ]
    return Response(upstream.content, upstream.status_code, headers)
