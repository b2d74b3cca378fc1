"""Reference WSGI apps that `make bench` runs under the balancer's own gunicorn settings.

They put the balancer's cost per request in proportion on the machine at
hand, measured in the same run:

- `hello`: a trivial app, the floor of gunicorn's own handling;
- `urllib3_proxy`: the leanest Python proxy, raw urllib3 with one pool per
  backend and nothing else (no routing, headers, metrics or logs);
- `bench.django_reference:application`: a bare Django view proxying with a
  shared requests.Session, the way a first Django proxy is written.

BENCH_BACKENDS lists the backends (host:port, comma-separated), which the
proxies pick at random, as the balancer's random algorithm does.
"""

import os
import random

import urllib3

BACKENDS = os.environ.get("BENCH_BACKENDS", "").split(",")
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "date", "server"})


def hello(environ, start_response):
    body = b"This is the hello application."
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


POOLS = [
    urllib3.HTTPConnectionPool(*backend.split(":"), maxsize=64) for backend in BACKENDS if backend
]


def urllib3_proxy(environ, start_response):
    upstream = random.choice(POOLS).urlopen(
        environ["REQUEST_METHOD"],
        environ.get("RAW_URI") or "/",
        headers={"Host": environ.get("HTTP_HOST", "")},
        preload_content=False,
        retries=False,
    )
    body = upstream.read(decode_content=False)  # passed on as it came
    upstream.release_conn()
    headers = [(k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP]
    start_response(f"{upstream.status} {upstream.reason}", headers)
    return [body]
