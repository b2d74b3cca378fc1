"""What the client sends is what the backend gets, and back: the balancer under gunicorn,
driven by real clients, against httpbin, the echo backend and backends that misbehave."""

import functools
import gzip
import hashlib
import http.client
import json
import os
import socket
import threading
import time
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from routing.headers import cookie_name, without_cookies

from .backends import BLOCK, expected_download_sha256
from .conftest import (
    PROJECT_ROOT,
    Balancer,
    RawBackend,
    balancer_environment,
    exchange,
    listening_socket,
    metric,
    pool_rows,
    reset,
    rule_row,
    self_signed_certificate,
    start_gunicorn,
    stop,
    url_of,
    wait_until_serving,
)

MB = 1024 * 1024
BIG = 200 * MB
MEMORY_BOUND = 50 * MB
HTTPBIN_GUNICORN = os.environ.get(
    "HTTPBIN_GUNICORN", str(PROJECT_ROOT / ".venv-httpbin/bin/gunicorn")
)


def chunk(data):
    """Frame data as one chunk of a chunked body."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def chunked(body):
    """Frame a body as one chunk and the last chunk."""
    return chunk(body) + b"0\r\n\r\n"


GZIPPED = gzip.compress(b"zipped", mtime=0)

RAW_ANSWERS = {
    "garbage": b"THIS IS NOT HTTP\r\n\r\n",
    "framing": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello",
    "hints": b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nfinal",
    "truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
    "cut-before-body": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
    "bad-header": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Bad: a\x01b\r\n\r\nok",
    # A line that is no header would end the block for a lenient parser, and
    # lose the Content-Length after it; so would a space before the colon.
    "no-colon": b"HTTP/1.1 200 OK\r\nX-Not-A-Header\r\nContent-Length: 2\r\n\r\nok",
    "folded": b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    # The backend's Via is passed on with the balancer's hop added: checked too.
    "bad-via": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.1 a\x01b\r\n\r\nok",
    "cr-in-via": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.1 a\rb\r\n\r\nok",
    # RFC 9112 §5.1: a proxy removes whitespace between a field name and its colon.
    "space-before-colon": b"HTTP/1.1 200 OK\r\nX-Spaced : a\r\nContent-Length: 2\r\n\r\nok",
    # An interim answer's headers are skipped, whatever their shape.
    "folded-hints": b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>;\r\n rel=preload\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
    # Transfer-Encoding is hop-by-hop: passed on as plain chunked, a gzip coding
    # would reach the client as gzip bytes with nothing saying so.
    "gzip-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    + chunked(GZIPPED),
    "split-codings": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n" + chunked(GZIPPED),
    "hop-by-hop": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Internal\r\n"
    b"X-Internal: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\n"
    b"Upgrade: h2c\r\nTrailer: X-T\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\n"
    b"Server: backend/1.0\r\nX-Public: yes\r\n\r\nok",
    "tab-in-location": b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1\t2/x\r\n"
    b"Content-Length: 0\r\n\r\n",
    "bad-reason": b"HTTP/1.1 200 O\x01K\r\nContent-Length: 2\r\n\r\nok",
    "redirect-home": b"HTTP/1.1 302 Found\r\nLocation: {origin}/login?next=%2Fx\r\n"
    b"Content-Location: {origin}/here\r\nContent-Length: 0\r\n\r\n",
    "redirect-relative": b"HTTP/1.1 301 Moved\r\nLocation: /login\r\nContent-Length: 0\r\n\r\n",
    "redirect-away": b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere.example/x\r\n"
    b"Content-Length: 0\r\n\r\n",
}


def reset_before_headers(conn, _read):
    reset(conn)


def reset_mid_body(conn, _read):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 100_000)
    time.sleep(0.2)
    reset(conn)


# Backends that are never silent for a whole read timeout, yet take far longer.
SLOW_READ_TIMEOUT = 1
SLOW_ATTEMPTS = 1
TRICKLE_INTERVAL = 0.3
TRICKLED_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Slow: yes\r\n\r\nok"
CONTINUE_INTERVAL = 0.2
ENDLESS_CONTINUE_SECONDS = 15


def trickle_head(conn, _read):
    """Send an answer one byte every 0.3 s: each read is quick, the head takes 15 s."""
    for byte in TRICKLED_ANSWER:
        conn.sendall(bytes([byte]))
        time.sleep(TRICKLE_INTERVAL)


def endless_continue(conn, _read):
    """Send `100 Continue` every 0.2 s for 15 s, and only then the answer."""
    until = time.monotonic() + ENDLESS_CONTINUE_SECONDS
    while time.monotonic() < until:
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        time.sleep(CONTINUE_INTERVAL)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def trickle_body(conn, _read):
    """Send the head at once, then a body one byte every 0.3 s (3 s in all)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    for byte in b"0123456789":
        time.sleep(TRICKLE_INTERVAL)
        conn.sendall(bytes([byte]))


def stall_mid_body(conn, _read, sent=b"01234"):
    """Send the head and part of the body, then fall silent for longer than the read timeout."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" + sent)
    time.sleep(3 * SLOW_READ_TIMEOUT)


SLOW_ANSWERS = {
    "trickled-head": trickle_head,
    "endless-continue": endless_continue,
    "trickled-body": trickle_body,
    "stalled-body": stall_mid_body,
    "stalled-head-only": functools.partial(stall_mid_body, sent=b""),
}

# Server-sent events, one every 0.3 s, in each of the three ways a body can be framed.
EVENTS = [f"data: event {n}\n\n".encode() for n in range(5)]
EVENT_INTERVAL = 0.3
EVENT_FRAMINGS = {
    "chunked": b"Transfer-Encoding: chunked\r\n",
    "content-length": b"Content-Length: %d\r\n" % len(b"".join(EVENTS)),
    "close-delimited": b"Connection: close\r\n",
}


def send_events(framing, conn, _read):
    """Send the head, then the events 0.3 s apart, framed as framing says."""
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        + EVENT_FRAMINGS[framing]
        + b"\r\n"
    )
    for number, event in enumerate(EVENTS):
        if number:
            time.sleep(EVENT_INTERVAL)
        conn.sendall(chunk(event) if framing == "chunked" else event)
    if framing == "chunked":
        conn.sendall(b"0\r\n\r\n")
    # Returning closes the connection: the end of a close-delimited body.


class Bed:
    """Every backend of this module, the evil listener, and the balancer over them."""

    def __init__(self, home, demo_backends):
        assert Path(HTTPBIN_GUNICORN).exists(), (
            f"{HTTPBIN_GUNICORN} is missing: `make test` builds httpbin's virtualenv"
        )
        self.processes, self.sockets, self.raw = [], [], []
        self.httpbin = self.serve("httpbin:app", executable=HTTPBIN_GUNICORN, cwd=home)
        self.download = self.serve("tests.backends:download")
        self.status = self.serve("tests.backends:status")
        cert, key = self_signed_certificate(home)
        self.tls = self.serve(
            "backend_app.wsgi",
            env={"APP": "tls"},
            extra_args=("--certfile", str(cert), "--keyfile", str(key)),
            scheme="https",
        )
        self.evil = listening_socket()
        self.evil.setblocking(False)
        self.echo = demo_backends["mango"][0]
        raw_urls = {}
        for name, answer in RAW_ANSWERS.items():
            raw = RawBackend(b"")
            origin = raw.url.encode()
            raw.answer = lambda conn, _read, answer=answer, origin=origin: conn.sendall(
                answer.replace(b"{origin}", origin)
            )
            self.raw.append(raw)
            raw_urls[name] = raw.url
        for name, answer in (("reset-early", reset_before_headers), ("reset-mid", reset_mid_body)):
            self.raw.append(RawBackend(answer))
            raw_urls[name] = self.raw[-1].url
        for framing in EVENT_FRAMINGS:
            self.raw.append(RawBackend(functools.partial(send_events, framing)))
            raw_urls[f"events-{framing}"] = self.raw[-1].url
        rows = [
            *pool_rows("echo", [self.echo]),
            rule_row("echo", host="echo.test"),
            rule_row("echo", host="echo.test", prefix="/pre"),
            rule_row("echo", host="keep.test", preserve_host=True),
            *pool_rows("httpbin", [self.httpbin]),
            rule_row("httpbin", host="httpbin.test"),
            rule_row("httpbin", host="httpbin.test", prefix="/bin"),
            *pool_rows("download", [self.download]),
            rule_row("download", host="download.test"),
            *pool_rows("status", [self.status]),
            rule_row("status", host="status.test"),
            *pool_rows("tls-ca", [self.tls], tls_ca_bundle=str(cert)),
            rule_row("tls-ca", host="tls.test"),
            *pool_rows("tls-default", [self.tls]),
            rule_row("tls-default", host="tls-untrusted.test"),
            *pool_rows("tls-off", [self.tls], tls_verify=False),
            rule_row("tls-off", host="tls-off.test"),
        ]
        for name, url in raw_urls.items():
            rows += [*pool_rows(name, [url], read_timeout=5), rule_row(name, host=f"{name}.test")]
            rows.append(rule_row(name, host="raw.test", prefix=f"/{name}"))
        for name, answer in SLOW_ANSWERS.items():
            self.raw.append(RawBackend(answer))
            options = {"read_timeout": SLOW_READ_TIMEOUT, "max_attempts": SLOW_ATTEMPTS}
            rows += [
                *pool_rows(name, [self.raw[-1].url], **options),
                rule_row(name, host=f"{name}.test"),
            ]
        env = balancer_environment(home, rows)
        self.balancer = Balancer(env, workers=2, log_path=home / "balancer.log")

    def serve(self, app, scheme="http", **options):
        sock = listening_socket()
        process = start_gunicorn(app, sock, **options)
        url = url_of(sock).replace("http", scheme, 1)
        self.processes.append(process)
        self.sockets.append(sock)
        if scheme == "http":
            wait_until_serving(url + "/", process)
        return url

    def evil_connections(self):
        """Count the connections the evil listener was offered (it must stay 0)."""
        count = 0
        while True:
            try:
                conn, _addr = self.evil.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def stop(self):
        self.balancer.stop()
        for process in self.processes:
            stop(process)
        for sock in [*self.sockets, self.evil]:
            sock.close()
        for raw in self.raw:
            raw.close()


@pytest.fixture(scope="module")
def bed(tmp_path_factory, demo_backends):
    bed = Bed(tmp_path_factory.mktemp("proxy"), demo_backends)
    yield bed
    bed.stop()


def send_raw(bed, request_bytes):
    """Send raw bytes to the balancer on a new connection; return all that comes back."""
    return exchange(bed.balancer.url, request_bytes)


def send(bed, method, target, headers=(), body=None):
    """Send one request with http.client (target byte for byte); return (response, body)."""
    connection = http.client.HTTPConnection(bed.balancer.url.removeprefix("http://"), timeout=30)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def echo_of(bed, method="GET", target="/", host="echo.test", headers=(), body=None):
    """Return what the echo backend saw of a request sent through the balancer."""
    response, data = send(bed, method, target, [("Host", host), *headers], body)
    assert response.status == 200, data
    return json.loads(data)


def seen_headers(seen, name):
    return [value for key, value in seen["headers"] if key.lower() == name.lower()]


# 1. Bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_arrives_with_its_binary_body(bed, method):
    body = os.urandom(300_000)
    seen = echo_of(bed, method, "/echo", body=body)
    assert seen["method"] == method
    assert (seen["body_length"], seen["body_sha256"]) == (
        len(body),
        hashlib.sha256(body).hexdigest(),
    )


def test_chunked_upload_arrives_complete(bed):
    parts = [os.urandom(10_000 + n) for n in range(50)]
    result = requests.post(
        bed.balancer.url + "/echo", data=iter(parts), headers={"Host": "echo.test"}, timeout=30
    )
    body = b"".join(parts)
    assert result.json()["body_sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    "codings",
    [
        b"gzip, chunked",
        b"deflate,chunked",
        b"compress, chunked",
        b"identity, chunked",
        b"gzip\r\nTransfer-Encoding: chunked",
        b"br, chunked",  # a coding gunicorn does not know: it answers 501 itself
    ],
)
def test_a_transfer_coding_other_than_chunked_gets_501(bed, codings):
    # RFC 9112 §6.1. gunicorn undoes the chunked framing and leaves the rest:
    # forwarded as plain chunked, the backend would take gzip bytes for the body.
    answer = send_raw(
        bed,
        b"POST /echo HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: " + codings + b"\r\n"
        b"Connection: close\r\n\r\n" + chunked(GZIPPED),
    )
    assert answer.startswith(b"HTTP/1.1 501 ")
    if not codings.startswith(b"br"):
        assert answer.endswith(b"\r\n\r\nNot Implemented")


class PatternUpload:
    """BIG bytes of the download pattern, read in chunks, with a known length."""

    def __init__(self, size):
        self.remaining = size
        self.size = size

    def __len__(self):
        return self.size

    def read(self, amount=-1):
        amount = min(self.remaining, len(BLOCK) if amount < 0 else amount, len(BLOCK))
        self.remaining -= amount
        return BLOCK[:amount]


def rss(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def worker_memory_growth(bed, transfer):
    """Run a transfer; return the largest RSS growth of any balancer worker meanwhile."""
    pids = bed.balancer.worker_pids()
    base = {pid: rss(pid) for pid in pids}
    peak = dict(base)
    done = threading.Event()

    def sample():
        while not done.wait(0.02):
            for pid in pids:
                peak[pid] = max(peak[pid], rss(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        transfer()
    finally:
        done.set()
        sampler.join()
    return max(peak[pid] - base[pid] for pid in pids)


def test_200_mb_upload_streams_in_bounded_memory(bed):
    result = {}

    def upload():
        answer = requests.put(
            bed.balancer.url + "/echo",
            data=PatternUpload(BIG),
            headers={"Host": "echo.test"},
            timeout=120,
        )
        result.update(answer.json())

    growth = worker_memory_growth(bed, upload)
    print(f"200 MB upload: worker RSS grew {growth / MB:.1f} MB")
    assert result["body_length"] == BIG
    assert result["body_sha256"] == expected_download_sha256(BIG)
    assert growth < MEMORY_BOUND, f"a worker grew by {growth / MB:.1f} MB"


def test_200_mb_download_streams_in_bounded_memory(bed):
    digest = hashlib.sha256()

    def download():
        with requests.get(
            f"{bed.balancer.url}/?{BIG}",
            headers={"Host": "download.test"},
            stream=True,
            timeout=120,
        ) as answer:
            assert answer.headers["Content-Length"] == str(BIG)
            for chunk in answer.raw.stream(MB, decode_content=False):
                digest.update(chunk)

    growth = worker_memory_growth(bed, download)
    print(f"200 MB download: worker RSS grew {growth / MB:.1f} MB")
    assert digest.hexdigest() == expected_download_sha256(BIG)
    assert growth < MEMORY_BOUND, f"a worker grew by {growth / MB:.1f} MB"


# 2. Target ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/echo?a=1&a=2&a=", "/echo", "a=1&a=2&a="),
        ("/echo/a%2Fb/c%20d?q=%2F%20", "/echo/a%2Fb/c%20d", "q=%2F%20"),
        (
            "/echo/caf%C3%A9/%E2%82%AC?k=%C3%A9&empty=&=v",
            "/echo/caf%C3%A9/%E2%82%AC",
            "k=%C3%A9&empty=&=v",
        ),
        ("/echo/%7E/~/%41?x=%7e", "/echo/%7E/~/%41", "x=%7e"),
        ("/echo/100%/a%2fb?q=%zz&r=%2f&s={x}|y", "/echo/100%/a%2fb", "q=%zz&r=%2f&s={x}|y"),
        ("/echo?", "/echo", ""),
        ("/pre/echo/x?y=1", "/echo/x", "y=1"),
        ("/pre/echo/%2F?", "/echo/%2F", ""),
    ],
)
def test_path_and_query_arrive_byte_for_byte(bed, target, path, query):
    seen = echo_of(bed, target=target)
    assert (seen["path"], seen["query"]) == (path, query)


# 3. Encoding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "encoding", "decode"),
    [
        ("/gzip", "gzip", gzip.decompress),
        ("/deflate", "deflate", zlib.decompress),
        ("/brotli", "br", None),  # no brotli decoder here; the bytes are not JSON
    ],
)
def test_compressed_bodies_pass_through_unchanged(bed, path, encoding, decode):
    response, data = send(
        bed, "GET", path, [("Host", "httpbin.test"), ("Accept-Encoding", encoding)]
    )
    assert response.status == 200
    assert response.getheader("Content-Encoding") == encoding
    assert response.getheader("Content-Length") == str(len(data))
    # Still compressed: it decodes to httpbin's JSON saying so.
    if decode is None:
        assert not data.startswith(b"{")
    else:
        assert json.loads(decode(data))[{"gzip": "gzipped", "deflate": "deflated"}[encoding]]


def test_accept_encoding_is_forwarded_as_sent_and_never_invented(bed):
    seen = echo_of(bed, target="/echo", headers=[("Accept-Encoding", "br;q=1, gzip;q=0.5")])
    assert seen_headers(seen, "Accept-Encoding") == ["br;q=1, gzip;q=0.5"]
    seen = echo_of(bed, target="/echo")
    names = {name.lower() for name, _value in seen["headers"]}
    assert not names & {"accept-encoding", "user-agent"}


# 4. Headers --------------------------------------------------------------------------


def test_every_set_cookie_arrives_separately_and_unchanged(bed):
    target = "/response-headers?Set-Cookie=a%3D1%3B%20Path%3D%2F&Set-Cookie=b%3D2%3B%20HttpOnly"
    response, _data = send(bed, "GET", target, [("Host", "httpbin.test")])
    cookies = [value for name, value in response.getheaders() if name.lower() == "set-cookie"]
    assert cookies == ["a=1; Path=/", "b=2; HttpOnly"]


def test_response_carries_exactly_the_backends_headers(bed):
    target = "/response-headers?X-Repeat=1&X-Repeat=2&Cache-Control=no-store"
    direct = http.client.HTTPConnection(bed.httpbin.removeprefix("http://"), timeout=10)
    direct.request("GET", target)
    expected = [
        (name.lower(), value)
        for name, value in direct.getresponse().getheaders()
        if name.lower() not in ("server", "date", "connection")
    ]
    direct.close()
    response, _data = send(bed, "GET", target, [("Host", "httpbin.test")])
    got = [
        (name.lower(), value)
        for name, value in response.getheaders()
        if name.lower() not in ("server", "date", "connection", "via")
    ]
    assert got == expected
    assert ("x-repeat", "1") in got and ("x-repeat", "2") in got


def test_hop_by_hop_and_replaced_response_headers_are_removed(bed):
    response, data = send(bed, "GET", "/", [("Host", "hop-by-hop.test")])
    names = [name.lower() for name, _value in response.getheaders()]
    assert data == b"ok"
    assert not set(names) & {"x-internal", "keep-alive", "proxy-authenticate", "upgrade", "trailer"}
    assert names.count("date") == 1 and names.count("server") == 1
    assert response.getheader("Server") == "gunicorn"
    assert response.getheader("X-Public") == "yes"


def test_hop_by_hop_request_headers_are_removed(bed):
    seen = echo_of(
        bed,
        target="/echo",
        headers=[
            ("Connection", "X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-T"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic c2VjcmV0"),
            ("X-Kept", "1"),
        ],
    )
    names = {name.lower() for name, _value in seen["headers"]}
    assert not names & {
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
    }
    assert seen_headers(seen, "X-Kept") == ["1"]


def test_repeated_request_headers_keep_their_values(bed):
    seen = echo_of(bed, target="/echo", headers=[("X-Dup", "a"), ("X-Dup", "b")])
    assert seen_headers(seen, "X-Dup") == ["a,b"]


# 5. Forwarded headers ----------------------------------------------------------------


def test_forwarded_headers_reach_a_real_backend(bed):
    response, data = send(
        bed,
        "GET",
        "/bin/get?show_env=1",
        [
            ("Host", "httpbin.test:8443"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("Via", "1.1 edge"),
        ],
    )
    received = json.loads(data)["headers"]
    assert received["X-Forwarded-For"] == "127.0.0.1"
    assert received["X-Forwarded-Host"] == "httpbin.test:8443"
    assert received["X-Forwarded-Proto"] == "http"
    assert received["X-Forwarded-Port"] == "8443"
    assert received["X-Forwarded-Prefix"] == "/bin"
    assert received["Via"] == "1.1 edge, 1.1 django-lb"
    assert received["Host"] == bed.httpbin.removeprefix("http://")
    assert response.getheader("Via") == "1.1 django-lb"


CLIENT_ADDRESS_CLAIMS = [
    ("Forwarded", "for=6.6.6.6"),
    ("X-Real-Ip", "6.6.6.6"),
    ("X-Client-Ip", "6.6.6.6"),
    ("True-Client-Ip", "6.6.6.6"),
    ("Cf-Connecting-Ip", "6.6.6.6"),
    ("X-Cluster-Client-Ip", "6.6.6.6"),
]


def test_an_untrusted_clients_address_claims_never_reach_the_backend(bed):
    seen = echo_of(bed, target="/echo", headers=CLIENT_ADDRESS_CLAIMS)
    for name, _value in CLIENT_ADDRESS_CLAIMS:
        assert seen_headers(seen, name) == [], name
    assert seen_headers(seen, "X-Forwarded-For") == ["127.0.0.1"]


def test_preserve_host_sends_the_clients_host(bed):
    seen = echo_of(bed, target="/echo", host="keep.test")
    assert seen_headers(seen, "Host") == ["keep.test"]


# 6. Bodiless answers -----------------------------------------------------------------


@pytest.mark.parametrize(("method", "code"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
def test_bodiless_answers_have_no_body_and_no_invented_header(bed, method, code):
    answer = send_raw(
        bed, f"{method} /{code} HTTP/1.1\r\nHost: status.test\r\nConnection: close\r\n\r\n".encode()
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {code} ")
    names = {line.split(":", 1)[0].lower() for line in lines[1:]}
    backend_names = {"etag", "x-backend"} | ({"content-length"} if code == 200 else set())
    assert names - backend_names == {"server", "date", "connection", "via"}
    assert body == b""


def test_interim_1xx_is_never_the_final_answer(bed):
    response, data = send(bed, "GET", "/", [("Host", "hints.test")])
    assert (response.status, data, response.getheader("X-Final")) == (200, b"final", "yes")


# 7. Redirects ------------------------------------------------------------------------


def test_redirect_to_the_backend_itself_is_rewritten_to_the_public_address(bed):
    response, _data = send(bed, "GET", "/redirect-home/x", [("Host", "raw.test:8000")])
    assert response.status == 302
    assert response.getheader("Location") == "http://raw.test:8000/redirect-home/login?next=%2Fx"
    assert response.getheader("Content-Location") == "http://raw.test:8000/redirect-home/here"


def test_relative_redirect_gets_the_stripped_prefix_back(bed):
    response, _data = send(bed, "GET", "/redirect-relative", [("Host", "raw.test")])
    assert (response.status, response.getheader("Location")) == (301, "/redirect-relative/login")


def test_third_party_redirect_is_left_alone_and_never_followed(bed):
    response, _data = send(bed, "GET", "/", [("Host", "redirect-away.test")])
    assert (response.status, response.getheader("Location")) == (302, "http://elsewhere.example/x")


# 8. No SSRF --------------------------------------------------------------------------


def test_no_target_makes_the_balancer_connect_elsewhere(bed):
    evil = url_of(bed.evil).removeprefix("http://")
    targets = [
        f"/pre@{evil}/x",
        f"//{evil}/x",
        f"/pre:{evil.split(':')[1]}/x",
        f"/pre/..%2F..%2F{evil}/x",
        f"/%2e%2e/%2e%2e/{evil}/",
        f"/pre/../../{evil}",
        f"/pre/%2F%2F{evil}",
        f"/pre\\@{evil}/",
    ]
    for target in targets:
        response, data = send(bed, "GET", target, [("Host", "echo.test")])
        assert response.status in (200, 400, 404), (target, response.status)
        if response.status == 200:  # answered by the echo pool's own backend
            assert data.startswith(b"{") or data == b"This is the mango application.", target
    absolute = send_raw(
        bed, f"GET http://{evil}/ HTTP/1.1\r\nHost: echo.test\r\nConnection: close\r\n\r\n".encode()
    )
    assert absolute.startswith(b"HTTP/1.1 400 ")
    with_evil_host = send_raw(
        bed, f"GET /pre/x HTTP/1.1\r\nHost: {evil}\r\nConnection: close\r\n\r\n".encode()
    )
    assert with_evil_host.startswith(b"HTTP/1.1 404 ")
    assert bed.evil_connections() == 0


# 9. Host -----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["ECHO.Test", "echo.test.", "Echo.TEST:8000.", "echo.test:80"])
def test_host_variants_route_like_the_plain_host(bed, host):
    assert echo_of(bed, target="/echo", host=host)["app"] == "mango"


@pytest.mark.parametrize("host_line", [b"", b"Host: bad host\r\n", b"Host: a/b\r\n"])
def test_missing_or_malformed_host_gets_400(bed, host_line):
    answer = send_raw(bed, b"GET /echo HTTP/1.1\r\n" + host_line + b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert answer.endswith(b"\r\n\r\nBad Request")


# 10. Broken backends -----------------------------------------------------------------


@pytest.mark.parametrize(
    "backend",
    [
        "garbage",
        "framing",
        "two-lengths",
        "bad-header",
        "no-colon",
        "folded",
        "bad-via",
        "cr-in-via",
        "gzip-chunked",
        "split-codings",
        "reset-early",
    ],
)
def test_broken_answer_before_the_body_gets_502(bed, backend):
    response, data = send(bed, "GET", "/", [("Host", f"{backend}.test")])
    assert (response.status, data) == (502, b"Bad Gateway")
    assert in_flight(bed) == 0


@pytest.mark.parametrize(
    "backend", ["truncated", "cut-before-body", "reset-mid", "stalled-body", "stalled-head-only"]
)
def test_broken_body_aborts_the_clients_connection(bed, backend):
    logged = bed.balancer.log().count("broke off its response")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(bed.balancer.url, headers={"Host": f"{backend}.test"}, timeout=10)
    deadline = time.monotonic() + 5
    while bed.balancer.log().count("broke off its response") == logged:
        assert time.monotonic() < deadline, "the broken response was not logged"
        time.sleep(0.05)


# 11. Limits --------------------------------------------------------------------------


def test_body_over_the_limit_gets_413_before_it_is_sent(bed):
    answer = send_raw(
        bed,
        b"POST /echo HTTP/1.1\r\nHost: echo.test\r\nContent-Length: 2000000000000\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert answer.endswith(b"Payload Too Large")


@pytest.fixture(scope="module")
def small_limit_balancer(tmp_path_factory, demo_backends):
    """A second balancer, with MAX_BODY_SIZE of 100 kB, in front of the echo backend."""
    home = tmp_path_factory.mktemp("small-limit")
    rows = [*pool_rows("echo", [demo_backends["mango"][0]]), rule_row("echo", host="echo.test")]
    balancer = Balancer(balancer_environment(home, rows, MAX_BODY_SIZE="100000"), workers=1)
    yield balancer.url
    balancer.stop()


def test_chunked_body_growing_past_the_limit_gets_413(small_limit_balancer):
    def parts(count):
        for _ in range(count):
            yield b"x" * 10_000

    small = requests.post(
        small_limit_balancer + "/echo", data=parts(10), headers={"Host": "echo.test"}, timeout=10
    )
    assert small.json()["body_length"] == 100_000
    large = requests.post(
        small_limit_balancer + "/echo", data=parts(11), headers={"Host": "echo.test"}, timeout=10
    )
    assert (large.status_code, large.text) == (413, "Payload Too Large")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /echo HTTP/1.1\r\nHost: echo.test\r\nX-A: a\rb\r\n\r\n", b"400"),
        (b"GET /echo HTTP/1.1\r\nHost: echo.test\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n", b"431"),
        (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: echo.test\r\n\r\n", b"414"),
    ],
    ids=["cr-in-header", "huge-header", "huge-uri"],
)
def test_malformed_requests_get_4xx_never_500(bed, request_bytes, status):
    answer = send_raw(bed, request_bytes)
    assert answer.split(b" ", 2)[1] == status


# 12. HTTPS backends ------------------------------------------------------------------


def test_https_backend_with_pool_ca_bundle(bed):
    assert echo_of(bed, target="/echo", host="tls.test")["app"] == "tls"


def test_https_backend_certificate_is_verified_by_default(bed):
    response, data = send(bed, "GET", "/", [("Host", "tls-untrusted.test")])
    assert (response.status, data) == (502, b"Bad Gateway")


def test_https_verification_can_be_switched_off_per_pool(bed):
    response, data = send(bed, "GET", "/", [("Host", "tls-off.test")])
    assert (response.status, data) == (200, b"This is the tls application.")


# 13. Slow clients --------------------------------------------------------------------


def test_half_open_clients_do_not_starve_the_balancer(bed):
    host, port = bed.balancer.url.removeprefix("http://").split(":")
    stalled = []
    try:
        for _ in range(8):  # more than the two workers
            conn = socket.create_connection((host, int(port)))
            conn.sendall(b"GET /echo HTTP/1.1\r\nHost: echo.test\r\n")  # never finished
            stalled.append(conn)
        started = time.monotonic()
        answer = requests.get(bed.balancer.url + "/", headers={"Host": "echo.test"}, timeout=10)
        assert answer.text == "This is the mango application."
        assert time.monotonic() - started < 5
    finally:
        for conn in stalled:
            conn.close()


# 14. Slow backends -------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["trickled-head", "endless-continue"])
def test_a_backend_cannot_stretch_the_response_head_past_the_read_timeout(bed, backend):
    started = time.monotonic()
    response, data = send(bed, "GET", "/", [("Host", f"{backend}.test")])
    elapsed = time.monotonic() - started
    print(f"{backend}: {response.status} after {elapsed:.2f} s")
    assert (response.status, data) == (504, b"Gateway Timeout")
    # The backend would take 15 s, never silent for a whole read timeout.
    assert SLOW_READ_TIMEOUT <= elapsed < SLOW_ATTEMPTS * SLOW_READ_TIMEOUT + 3
    assert in_flight(bed) == 0


@pytest.mark.parametrize("framing", list(EVENT_FRAMINGS))
def test_a_response_is_passed_on_as_it_arrives_in_every_framing(bed, framing):
    connection = http.client.HTTPConnection(bed.balancer.url.removeprefix("http://"), timeout=10)
    try:
        started = time.monotonic()
        connection.request("GET", "/", headers={"Host": f"events-{framing}.test"})
        response = connection.getresponse()
        body, arrivals = b"", []
        while data := response.read1(65536):  # what has come, without waiting for more
            body += data
            arrivals += [time.monotonic() - started] * (body.count(b"\n\n") - len(arrivals))
    finally:
        connection.close()
    print(f"{framing}: events arrived at " + ", ".join(f"{at:.2f}" for at in arrivals) + " s")
    assert (response.status, body) == (200, b"".join(EVENTS))
    # Sent 0.3 s apart over 1.2 s: held back for a buffer, they would arrive together at the end.
    assert arrivals[0] < 0.6
    assert arrivals[-1] - arrivals[0] >= 0.9
    assert arrivals[-1] < 5


def test_after_the_head_the_read_timeout_bounds_each_wait_for_the_body(bed):
    started = time.monotonic()
    response, data = send(bed, "GET", "/", [("Host", "trickled-body.test")])
    assert (response.status, data) == (200, b"0123456789")
    assert time.monotonic() - started > 2 * SLOW_READ_TIMEOUT


# 15. Nothing a client or a backend sends leaves a trace in the next request -----------


def in_flight(bed):
    """Return the requests in flight once the last ones have closed (0 unless one leaked)."""
    deadline = time.monotonic() + 5
    while True:
        scrape = requests.get(
            bed.balancer.url + "/metrics", headers={"Host": "localhost"}, timeout=5
        )
        count = metric(scrape.text, "lb_requests_in_flight")
        if count == 0 or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def test_odd_backend_answers_pass_without_a_500(bed):
    moved, _data = send(bed, "GET", "/", [("Host", "tab-in-location.test")])
    assert (moved.status, moved.getheader("Location")) == (302, "http://127.0.0.1:1\t2/x")
    odd, data = send(bed, "GET", "/", [("Host", "bad-reason.test")])
    assert (odd.status, odd.reason, data) == (200, "OK", b"ok")
    spaced, data = send(bed, "GET", "/", [("Host", "space-before-colon.test")])
    assert (spaced.status, spaced.getheader("X-Spaced"), data) == (200, "a", b"ok")
    hints, data = send(bed, "GET", "/", [("Host", "folded-hints.test")])
    assert (hints.status, data) == (200, b"final")
    assert in_flight(bed) == 0


def test_a_short_client_body_never_reaches_the_next_request(bed):
    host, port = bed.balancer.url.removeprefix("http://").split(":")
    for _ in range(3):  # more than max_fails: the backend must not be marked down either
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(
                b"POST /echo HTTP/1.1\r\nHost: echo.test\r\nContent-Length: 400\r\n\r\nshort"
            )
            conn.shutdown(socket.SHUT_WR)
            answer = conn.recv(65536)
        assert answer.startswith(b"HTTP/1.1 400 ") or answer == b""
    for _ in range(10):  # new connections, so both workers' pooled connections are used
        seen = echo_of(bed, target="/echo", headers=[("Connection", "close")])
        assert seen["method"] == "GET" and seen_headers(seen, "Via") == ["1.1 django-lb"]
    assert in_flight(bed) == 0


@pytest.mark.parametrize(
    "body",
    [b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n", b"5;\x01\r\nhello\r\n0\r\n\r\n"],
    ids=["bad-size", "no-crlf", "bad-extension"],
)
def test_a_malformed_chunked_upload_gets_400_and_is_not_the_backends_failure(bed, body):
    log_start = len(bed.balancer.log())
    for _ in range(4):  # more than max_fails: the backend must not be marked down
        answer = send_raw(
            bed,
            b"POST /echo HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n" + body,
        )
        head, _, data = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 ") and data == b"Bad Request"
        assert b"\r\nContent-Type: text/plain; charset=utf-8" in head
    for _ in range(10):  # new connections, so both workers' pooled connections are used
        seen = echo_of(bed, target="/echo", headers=[("Connection", "close")])
        assert seen["method"] == "GET" and seen_headers(seen, "Via") == ["1.1 django-lb"]
    assert in_flight(bed) == 0
    log = bed.balancer.log()[log_start:]
    assert 'cause="client body:' in log
    assert "Traceback" not in log


def test_a_broken_chunked_upload_is_the_clients_failure(bed):
    host, port = bed.balancer.url.removeprefix("http://").split(":")
    for _ in range(4):
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(
                b"POST /echo HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n"
            )
            conn.shutdown(socket.SHUT_WR)
            conn.recv(65536)
    assert echo_of(bed, target="/echo")["method"] == "GET"  # not 503: backend not blamed
    assert 'cause="client body:' in bed.balancer.log()


# 16. What a client claims about its own request; the admin's cookies both ways ------

# Headers besides X-Forwarded-Proto that a backend framework may take the scheme from.
OTHER_SCHEME_CLAIMS = [
    ("X-Forwarded-Ssl", "on"),
    ("X-Forwarded-Protocol", "ssl"),
    ("X-Forwarded-Scheme", "https"),
    ("X-Scheme", "https"),
    ("X-Url-Scheme", "https"),
    ("Front-End-Https", "on"),
]
SCHEME_CLAIMS = [("X-Forwarded-Proto", "https"), *OTHER_SCHEME_CLAIMS]
ADMIN_COOKIES = {"lb_sessionid", "lb_csrftoken"}
PLANTED_COOKIES = (
    b"HTTP/1.1 200 OK\r\n"
    b"Set-Cookie: theirs=1; Path=/\r\n"
    b"Set-Cookie: =lb_sessionid=planted\r\n"
    b"Set-Cookie: = lb_sessionid=planted; Path=/\r\n"
    b"Set-Cookie: =\tlb_csrftoken=planted; Path=/admin\r\n"
    b"Set-Cookie: =flavour=mango\r\n"
    b"Set-Cookie: list=a,b; HttpOnly\r\n"
    b"Content-Length: 2\r\n\r\nok"
)


@pytest.fixture(scope="module")
def claims_routes(demo_backends):
    """Rows for the echo backend, a backend that redirects to itself, and a cookie planter."""
    redirect = RawBackend(b"")
    redirect.answer = lambda conn, _read: conn.sendall(
        b"HTTP/1.1 302 Found\r\nLocation: " + redirect.url.encode() + b"/login\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    planter = RawBackend(PLANTED_COOKIES)
    yield [
        *pool_rows("echo", [demo_backends["mango"][0]]),
        rule_row("echo", host="echo.test"),
        *pool_rows("redirect", [redirect.url]),
        rule_row("redirect", host="redirect.test"),
        *pool_rows("planter", [planter.url]),
        rule_row("planter", host="planter.test"),
    ]
    redirect.close()
    planter.close()


def claims_balancer(home, rows, **settings):
    """Start a balancer over these rows; return it in the shape send() and echo_of() take."""
    return SimpleNamespace(
        balancer=Balancer(balancer_environment(home, rows, **settings), workers=1)
    )


@pytest.fixture(scope="module")
def untrusting(tmp_path_factory, claims_routes):
    """A balancer that trusts no proxy: a client's claims about its scheme count for nothing."""
    front = claims_balancer(tmp_path_factory.mktemp("untrusting"), claims_routes)
    yield front
    front.balancer.stop()


@pytest.fixture(scope="module")
def trusting(tmp_path_factory, claims_routes):
    """A balancer behind a trusted proxy on the loopback address (the test client)."""
    front = claims_balancer(
        tmp_path_factory.mktemp("trusting"), claims_routes, TRUSTED_PROXIES="127.0.0.1"
    )
    yield front
    front.balancer.stop()


def test_a_clients_scheme_claims_never_reach_the_backend(untrusting):
    seen = echo_of(untrusting, target="/echo", headers=SCHEME_CLAIMS)
    assert seen_headers(seen, "X-Forwarded-Proto") == ["http"]
    assert seen_headers(seen, "X-Forwarded-Port") == ["80"]
    for name, _value in OTHER_SCHEME_CLAIMS:
        assert seen_headers(seen, name) == [], name


def test_a_clients_scheme_claims_never_change_a_rewritten_location(untrusting):
    response, _data = send(untrusting, "GET", "/", [("Host", "redirect.test"), *SCHEME_CLAIMS])
    assert (response.status, response.getheader("Location")) == (302, "http://redirect.test/login")


def test_a_trusted_proxys_scheme_is_believed_and_its_claims_passed_on(trusting):
    seen = echo_of(trusting, target="/echo", headers=SCHEME_CLAIMS)
    assert seen_headers(seen, "X-Forwarded-Proto") == ["https"]
    assert seen_headers(seen, "X-Forwarded-Port") == ["443"]
    for name, value in OTHER_SCHEME_CLAIMS:
        assert seen_headers(seen, name) == [value], name
    response, _data = send(trusting, "GET", "/", [("Host", "redirect.test"), *SCHEME_CLAIMS])
    assert response.getheader("Location") == "https://redirect.test/login"


@pytest.mark.parametrize(
    ("cookie_lines", "forwarded"),
    [
        ([b"theme=dark", b"lb_sessionid=secret; cart=3"], ["theme=dark; cart=3"]),
        (
            [b"theme=dark; list=a,b", b"lb_csrftoken=secret,lb_sessionid=secret"],
            ["theme=dark; list=a,b"],
        ),
        ([b"lb_sessionid=secret", b"theme=dark"], ["theme=dark"]),
        ([b"lb_sessionid=secret", b"lb_csrftoken=secret"], []),
    ],
)
def test_admin_cookies_are_dropped_from_repeated_cookie_lines(untrusting, cookie_lines, forwarded):
    # gunicorn joins the two lines with a comma before the balancer sees them.
    cookies = b"".join(b"Cookie: " + line + b"\r\n" for line in cookie_lines)
    answer = exchange(
        untrusting.balancer.url,
        b"GET /echo HTTP/1.1\r\nHost: echo.test\r\n" + cookies + b"Connection: close\r\n\r\n",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert seen_headers(json.loads(body), "Cookie") == forwarded
    assert b"secret" not in body


def test_a_backend_cannot_plant_the_admins_cookies_as_nameless_ones(untrusting):
    response, data = send(untrusting, "GET", "/", [("Host", "planter.test")])
    cookies = [value for name, value in response.getheaders() if name.lower() == "set-cookie"]
    assert (response.status, data) == (200, b"ok")
    assert cookies == ["theirs=1; Path=/", "=flavour=mango", "list=a,b; HttpOnly"]


@pytest.mark.parametrize(
    ("cookie", "kept"),
    [
        ("theme=dark; lb_sessionid=abc; lb_csrftoken=def; cart=3", "theme=dark; cart=3"),
        ("lb_sessionid=abc", ""),
        ("lb_sessionid=abc; ", ""),
        # Two Cookie lines as gunicorn joins them: a comma before a name and "=".
        ("theme=dark,lb_sessionid=abc; cart=3", "theme=dark; cart=3"),
        ("lb_sessionid=abc,theme=dark; cart=3", "theme=dark; cart=3"),
        ("theme=dark; cart=3,lb_sessionid=abc", "theme=dark; cart=3"),
        ("a=1; lb_sessionid=abc,b=2", "a=1; b=2"),
        ("lb_sessionid=abc,lb_csrftoken=def", ""),
        ("a=1,lb_sessionid=abc,b=2", "a=1,b=2"),
        # Read as two lines too: a backend might split it there as well.
        ("a=x,lb_sessionid=abc", "a=x"),
        # A comma inside a kept value stays, and so does the rest of the spelling.
        ("list=a,b,c; lb_sessionid=abc", "list=a,b,c"),
        ("a=1;b=2;lb_sessionid=abc", "a=1;b=2"),
        ("date=Mon, 01 Jan 2001;x=y; lb_sessionid=abc", "date=Mon, 01 Jan 2001;x=y"),
        ("lb_sessionid=a,b; c=1", "c=1"),
        (" lb_sessionid = abc ; a=1", "a=1"),
        # Nothing to take out: the header is returned as it came.
        ("a=1;b=2 ;; c=x,y=z", "a=1;b=2 ;; c=x,y=z"),
        (
            "xlb_sessionid=1; lb_sessionidx=2; LB_SESSIONID=3",
            "xlb_sessionid=1; lb_sessionidx=2; LB_SESSIONID=3",
        ),
    ],
)
def test_without_cookies_takes_out_only_the_named_cookies(cookie, kept):
    assert without_cookies(cookie, ADMIN_COOKIES) == kept


@pytest.mark.parametrize(
    ("set_cookie", "name"),
    [
        ("lb_sessionid=x; Path=/", "lb_sessionid"),
        (" lb_sessionid =x", "lb_sessionid"),
        ("theirs=1; Path=/", "theirs"),
        # A nameless cookie goes back as its bare value, read as name=value.
        ("=lb_sessionid=x", "lb_sessionid"),
        (" = lb_sessionid=x; Path=/", "lb_sessionid"),
        ("=\tlb_csrftoken=x; Path=/admin", "lb_csrftoken"),
        ("lb_sessionid", "lb_sessionid"),
        ("=flavour", "flavour"),
        ("==lb_sessionid=x", ""),
    ],
)
def test_cookie_name_is_the_name_the_cookie_comes_back_under(set_cookie, name):
    assert cookie_name(set_cookie) == name
