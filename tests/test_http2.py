"""HTTP/2 towards clients: gunicorn with TLS offers h2 and http/1.1 by ALPN.

The clients are Debian's curl (built with nghttp2); the balancer runs under
gunicorn with a self-signed certificate, and forwards every request to the
backends as HTTP/1.1.
"""

import hashlib
import json
import os
import re
import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from lbsite import http2
from routing.headers import client_headers

from .backends import expected_download_sha256
from .conftest import (
    Balancer,
    balancer_environment,
    demo_fixture,
    listening_socket,
    manage,
    pool_rows,
    rule_row,
    self_signed_certificate,
    start_gunicorn,
    stop,
    url_of,
    wait_until_serving,
)

ADMIN_PASSWORD = secrets.token_urlsafe(16)
MB = 1024 * 1024
BIG = 64 * MB
# A worker that held a whole 64 MB body would grow by at least that much.
MEMORY_BOUND = 32 * MB


# The request as gunicorn hands it to the pre_request hook --------------------------------


def http2_request(headers, uri="/", query="", body=b"", ended=True):
    """A stand-in for gunicorn's HTTP2Request: what lbsite.http2 reads of one."""
    stream = SimpleNamespace(body_complete=ended, body_size=len(body))
    return SimpleNamespace(
        version=(2, 0), headers=list(headers), uri=uri, query=query, stream=stream
    )


def test_text_gets_back_its_bytes_one_latin1_character_each():
    request = http2_request([("X-NAME", "café €")], uri="/caf%C3%A9?k=é", query="k=é")
    http2.as_http1(request)
    assert request.headers == [("X-NAME", "café €".encode().decode("latin-1"))]
    assert request.uri == "/caf%C3%A9?k=\xc3\xa9"
    assert request.query == "k=\xc3\xa9"


@pytest.mark.parametrize(
    ("headers", "body", "ended", "chunked"),
    [
        ([], b"", True, False),  # a GET: END_STREAM on its HEADERS
        ([], b"x", True, True),  # the whole body came with the headers
        ([], b"", False, True),  # the body is still coming
        ([("CONTENT-LENGTH", "5")], b"", False, False),
    ],
)
def test_a_body_without_content_length_is_chunked(headers, body, ended, chunked):
    request = http2_request(headers, body=body, ended=ended)
    http2.as_http1(request)
    assert (("TRANSFER-ENCODING", "chunked") in request.headers) == chunked


@pytest.mark.parametrize(("protocol", "forwarded"), [("HTTP/2.0", False), ("HTTP/1.1", True)])
def test_gunicorns_http2_marker_is_no_header_of_the_clients(protocol, forwarded):
    meta = {"SERVER_PROTOCOL": protocol, "HTTP_VERSION": "2", "HTTP_ACCEPT": "*/*"}
    assert (("Version", "2") in list(client_headers(meta))) == forwarded


# The balancer under gunicorn, with TLS ----------------------------------------------------


@dataclass
class Answer:
    """What curl got: the protocol it spoke ("2", "1.1"), status, headers and body."""

    version: str
    status: int
    headers: dict
    body: bytes

    def echo(self):
        """Return what the echo backend says it received."""
        return json.loads(self.body)


def curl(url, cacert, *options, protocol="--http2"):
    """Send one request with Debian's curl and return its Answer."""
    with tempfile.TemporaryDirectory() as scratch:
        body = Path(scratch) / "body"
        result = subprocess.run(
            [
                "curl",
                "--silent",
                "--show-error",
                protocol,
                "--cacert",
                str(cacert),
                "--path-as-is",
                "--max-time",
                "60",
                "--output",
                str(body),
                "--write-out",
                '{"info": %{json}, "headers": %{header_json}}',
                *options,
                url,
            ],
            capture_output=True,
            check=True,
        )
        seen = json.loads(result.stdout)
        return Answer(
            seen["info"]["http_version"],
            seen["info"]["response_code"],
            seen["headers"],
            body.read_bytes() if body.exists() else b"",
        )


def received(seen, name):
    """Return the values of a header as the echo backend received it."""
    return [value for header, value in seen["headers"] if header.lower() == name.lower()]


@pytest.fixture(scope="module")
def tls(tmp_path_factory, demo_backends):
    """The balancer with TLS on both listeners, the demo routes and a download backend."""
    home = tmp_path_factory.mktemp("tls")
    cert, key = self_signed_certificate(home)
    sock = listening_socket()
    download = start_gunicorn("tests.backends:download", sock)
    try:
        wait_until_serving(url_of(sock) + "/", download)
        rows = [
            *demo_fixture(demo_backends),
            *pool_rows("download", [url_of(sock)]),
            rule_row("download", host="download.test"),
        ]
        env = balancer_environment(
            home,
            rows,
            TLS_CERTFILE=str(cert),
            TLS_KEYFILE=str(key),
            ADMIN_PASSWORD=ADMIN_PASSWORD,
        )
        manage(env, "ensure_admin")
        server = Balancer(
            env, workers=2, log_path=home / "balancer.log", scheme="https", verify=str(cert)
        )
        server.cert = cert
        yield server
        server.stop()
    finally:
        stop(download)
        sock.close()


@pytest.mark.parametrize(
    ("protocol", "version", "via"),
    [("--http2", "2", "2.0 django-lb"), ("--http1.1", "1.1", "1.1 django-lb")],
)
def test_tls_clients_choose_http2_or_http11_and_the_backend_gets_http11(
    tls, protocol, version, via
):
    answer = curl(
        tls.url + "/echo/a%2Fb/%7ex?q=a%20b&q=&k=%2F",
        tls.cert,
        "--header",
        "Host: www.mango.com",
        protocol=protocol,
    )
    assert (answer.version, answer.status) == (version, 200)
    assert answer.headers["via"] == ["1.1 django-lb"]  # the hop from the backend
    seen = answer.echo()
    assert (seen["app"], seen["method"]) == ("mango", "GET")
    assert (seen["path"], seen["query"]) == ("/echo/a%2Fb/%7ex", "q=a%20b&q=&k=%2F")
    # HTTP/2's :authority is the Host the rule matched and the backend is told of;
    # the backend's own Host is its address.
    assert received(seen, "X-Forwarded-Host") == ["www.mango.com"]
    (host,) = received(seen, "Host")
    assert re.fullmatch(r"127\.0\.0\.1:\d+", host)
    assert received(seen, "X-Forwarded-Proto") == ["https"]
    assert received(seen, "Via") == [via]  # the client's protocol, as gunicorn reports it
    assert received(seen, "Version") == []  # gunicorn's HTTP/2 marker stays behind
    assert received(seen, "Transfer-Encoding") == received(seen, "Content-Length") == []
    assert seen["body_length"] == 0


@pytest.mark.parametrize("length", ["announced", "unannounced"])
def test_an_http2_post_reaches_the_backend_with_its_whole_body(tls, tmp_path, length):
    body = os.urandom(300_000)
    upload = tmp_path / "upload"
    upload.write_bytes(body)
    # Without Content-Length, HTTP/2 ends the body with the stream.
    options = ["--data-binary", f"@{upload}"]
    if length == "unannounced":
        options = ["--request", "POST", "--upload-file", str(upload), "--header", "Content-Length:"]
    answer = curl(
        tls.url + "/mango/echo?x=1",
        tls.cert,
        *options,
        "--header",
        "Content-Type: application/octet-stream",
    )
    assert (answer.version, answer.status) == ("2", 200)
    seen = answer.echo()
    assert (seen["method"], seen["path"], seen["query"]) == ("POST", "/echo", "x=1")
    assert seen["body_length"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    if length == "announced":
        assert received(seen, "Content-Length") == [str(len(body))]
    else:
        assert received(seen, "Transfer-Encoding") == ["chunked"]


def test_http2_fields_reach_the_backend_as_http11_would_bring_them(tls):
    answer = curl(
        tls.url + "/mango/echo",
        tls.cert,
        # Two Cookie fields, as HTTP/2 clients may send them (h2 joins them);
        # non-ASCII UTF-8 bytes.
        *("--header", "Cookie: a=1", "--header", "Cookie: b=2"),
        *("--header", "X-Name: café €"),
    )
    assert (answer.version, answer.status) == ("2", 200)
    seen = answer.echo()
    assert received(seen, "Cookie") == ["a=1; b=2"]
    # The echo shows each byte that arrived as one character.
    assert received(seen, "X-Name") == ["café €".encode().decode("latin-1")]


def peak_memory(pid):
    """Return the most memory a process has held so far (VmHWM), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) * 1024


def test_http2_bodies_stream_both_ways_in_bounded_memory(tls, tmp_path):
    upload = tmp_path / "upload"
    upload.write_bytes(os.urandom(BIG))
    before = {pid: peak_memory(pid) for pid in tls.worker_pids()}
    sent = curl(
        tls.url + "/mango/echo",
        tls.cert,
        *("--request", "POST", "--upload-file", str(upload), "--header", "Content-Length:"),
    ).echo()
    fetched = curl(tls.url + f"/?{BIG}", tls.cert, "--header", "Host: download.test")
    assert sent["body_length"] == BIG
    assert sent["body_sha256"] == hashlib.sha256(upload.read_bytes()).hexdigest()
    assert fetched.version == "2"
    assert fetched.headers["content-length"] == [str(BIG)]
    assert hashlib.sha256(fetched.body).hexdigest() == expected_download_sha256(BIG)
    growth = max(peak_memory(pid) - before[pid] for pid in before)
    assert growth < MEMORY_BOUND, f"a worker grew by {growth / MB:.1f} MB"


def test_the_admin_listener_speaks_http2_with_split_cookie_fields(tls, tmp_path):
    login = tls.admin_url + "/admin/login/"
    jar = tmp_path / "cookies"
    page = curl(login, tls.cert, "--cookie-jar", str(jar))
    assert (page.version, page.status) == ("2", 200)
    token = cookie_from(jar, "lb_csrftoken")
    answer = curl(
        login,
        tls.cert,
        *("--cookie", str(jar), "--cookie-jar", str(jar), "--header", f"Referer: {login}"),
        *("--data-urlencode", "username=admin", "--data-urlencode", f"password={ADMIN_PASSWORD}"),
        *("--data-urlencode", f"csrfmiddlewaretoken={token}", "--data-urlencode", "next=/admin/"),
    )
    assert (answer.version, answer.status) == ("2", 302)
    assert answer.headers["location"] == ["/admin/"]
    # The session and CSRF cookies as two HTTP/2 fields: joined by a comma
    # rather than "; ", the session cookie's value would run into the next one.
    index = curl(
        tls.admin_url + "/admin/",
        tls.cert,
        *("--header", f"Cookie: lb_sessionid={cookie_from(jar, 'lb_sessionid')}"),
        *("--header", f"Cookie: lb_csrftoken={cookie_from(jar, 'lb_csrftoken')}"),
    )
    assert (index.version, index.status) == ("2", 200)
    assert b"Routing table and accounts" in index.body
    health = curl(tls.admin_url + "/healthz", tls.cert)
    assert (health.version, health.status, health.body) == ("2", 200, b"OK")


def cookie_from(jar, name):
    """Return a cookie's value from curl's cookie jar (Netscape format)."""
    for line in jar.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) == 7 and fields[5] == name:
            return fields[6]
    raise AssertionError(f"no cookie {name} in {jar.read_text()}")


def test_a_worker_class_without_http2_offers_only_http11(tmp_path, demo_backends):
    cert, key = self_signed_certificate(tmp_path)
    env = balancer_environment(
        tmp_path,
        demo_fixture(demo_backends),
        TLS_CERTFILE=str(cert),
        TLS_KEYFILE=str(key),
        # gunicorn's sync worker reads HTTP/1.1 from every connection.
        GUNICORN_CMD_ARGS="--worker-class sync --threads 1",
    )
    server = Balancer(
        env, workers=1, log_path=tmp_path / "balancer.log", scheme="https", verify=str(cert)
    )
    try:
        answer = curl(server.url + "/mango", cert)
        assert (answer.version, answer.status) == ("1.1", 200)
        assert answer.body == b"This is the mango application."
        assert "HTTP/2 is off: the sync worker cannot serve it." in server.log()
    finally:
        server.stop()
