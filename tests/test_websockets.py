"""WebSockets through the balancer under gunicorn, against a real WebSocket server.

The backend is the websockets library's server in a thread on a loopback
port, the client its sync client. The balancer runs as in production
(gunicorn.conf.py, the gevent worker); a second one runs gthread workers and
a one-second idle timeout.
"""

import contextlib
import http.client
import os
import re
import runpy
import socket
import ssl
import threading
import time
import types

import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.sync.server import serve

from routing import errors
from routing.inbound import is_websocket_handshake
from routing.transport import UpstreamRequest, tunnel

from .conftest import (
    PROJECT_ROOT,
    Balancer,
    balancer_environment,
    database_of_its_own,
    pool_rows,
    rule_row,
    self_signed_certificate,
)

# Its balancers use a database of their own on DATABASE_URL's server.
pytestmark = pytest.mark.database_url

MIB = 1024 * 1024
TUNNELS = 200
BOUND = 10  # seconds anything here may take at most; it takes far less


class WebSocketBackend:
    """A websockets server in a thread: /echo echoes, /close closes with 4001, /refuse gets 426.

    Every handshake it sees is recorded (path and headers), and every close
    code a client sent it.
    """

    def __init__(self, tls=None):
        self.handshakes = []
        self.close_codes = []
        self.server = serve(
            self.handle,
            "127.0.0.1",
            0,
            process_request=self.process_request,
            max_size=2 * MIB,
            compression=None,
            ssl=tls,
        )
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.socket.getsockname()[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def process_request(self, connection, request):
        self.handshakes.append((request.path, request.headers))
        if request.path.startswith("/refuse"):
            return connection.respond(426, "No WebSocket here, try elsewhere.\n")
        return None

    def handle(self, connection):
        path = connection.request.path
        if path.startswith("/close"):
            connection.close(4001, "go away")
            return
        try:
            for message in connection:
                connection.send(message)
        except ConnectionClosed:
            pass
        self.close_codes.append(connection.close_code)

    def stop(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def ws_backend():
    backend = WebSocketBackend()
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return self_signed_certificate(tmp_path_factory.mktemp("certificate"))


@pytest.fixture(scope="module")
def wss_backend(certificate):
    """The same server over TLS, with the certificate for 127.0.0.1."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    backend = WebSocketBackend(tls=context)
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def balancer_env(
    tmp_path_factory, ws_backend, wss_backend, certificate, demo_backends, closed_port
):
    """One database for every balancer here: its pools and rules."""
    home = tmp_path_factory.mktemp("websockets")
    dead_pool = pool_rows("empty", [ws_backend.url])
    dead_pool[1]["fields"]["enabled"] = False
    rows = [
        *pool_rows("ws", [ws_backend.url]),
        rule_row("ws", host="ws.test"),
        rule_row("ws", host="kept.test", preserve_host=True),
        rule_row("ws", prefix="/chat", strip_prefix=True),
        *pool_rows("dead", [closed_port]),
        rule_row("dead", host="dead.test"),
        *dead_pool,
        rule_row("empty", host="empty.test"),
        *pool_rows("plain", demo_backends["mango"][:1]),
        rule_row("plain", host="plain.test"),
        # Verified against the certificate as the pool's CA bundle.
        *pool_rows("wss", [wss_backend.url], tls_ca_bundle=str(certificate[0])),
        rule_row("wss", host="wss.test"),
    ]
    with database_of_its_own(home) as database_url:
        yield home, balancer_environment(home, rows, DATABASE_URL=database_url)


@pytest.fixture(scope="module")
def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture(scope="module")
def balancer(balancer_env):
    """The balancer as production runs it: gevent workers, the default idle timeout."""
    home, env = balancer_env
    server = Balancer(env, workers=2, log_path=home / "balancer.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gthread_balancer(balancer_env):
    """The balancer on threaded workers, with tunnels idle for a second closed."""
    home, env = balancer_env
    env = {**env, "GUNICORN_WORKER_CLASS": "gthread", "WEBSOCKET_IDLE_TIMEOUT": "1"}
    server = Balancer(env, workers=1, log_path=home / "gthread.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_balancer(balancer_env, certificate):
    """The balancer serving TLS (gevent workers), in front of the TLS backend too."""
    home, env = balancer_env
    env = {**env, "TLS_CERTFILE": str(certificate[0]), "TLS_KEYFILE": str(certificate[1])}
    server = Balancer(env, workers=1, log_path=home / "tls.log", scheme="https", verify=False)
    yield server
    server.stop()


@pytest.fixture(params=["gevent", "gthread"])
def any_balancer(request):
    return request.getfixturevalue("balancer" if request.param == "gevent" else "gthread_balancer")


def address_of(url):
    host, port = url.split("://", 1)[1].split(":")
    return host, int(port)


def ws_connect(balancer, host, path="/echo", **options):
    """Open a WebSocket through the balancer, with Host: host."""
    sock = socket.create_connection(address_of(balancer.url), timeout=BOUND)
    scheme = "wss" if balancer.url.startswith("https") else "ws"
    if scheme == "wss":
        # The client checks nothing: the certificate is for 127.0.0.1, not the rules' hosts.
        options["ssl"] = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        options["ssl"].check_hostname = False
        options["ssl"].verify_mode = ssl.CERT_NONE
    try:
        return connect(
            f"{scheme}://{host}{path}",
            sock=sock,
            open_timeout=BOUND,
            close_timeout=BOUND,
            compression=None,
            max_size=2 * MIB,
            **options,
        )
    except BaseException:
        sock.close()
        raise


def test_text_and_binary_frames_cross_the_tunnel(any_balancer):
    with ws_connect(any_balancer, "ws.test") as ws:
        ws.send("héllo")
        assert ws.recv(timeout=BOUND) == "héllo"
        ws.send(b"\x00\x01\xfe\xff")
        assert ws.recv(timeout=BOUND) == b"\x00\x01\xfe\xff"
        for number in range(20):
            ws.send(f"message {number}")
        assert [ws.recv(timeout=BOUND) for _ in range(20)] == [f"message {n}" for n in range(20)]


def test_a_1_mib_frame_crosses_whole(balancer):
    payload = os.urandom(MIB)
    with ws_connect(balancer, "ws.test") as ws:
        ws.send(payload)
        assert ws.recv(timeout=BOUND) == payload


def test_the_backends_close_code_and_reason_reach_the_client(any_balancer):
    with (
        ws_connect(any_balancer, "ws.test", "/close") as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=BOUND)
    assert closed.value.rcvd.code == 4001
    assert closed.value.rcvd.reason == "go away"


def test_tls_on_both_sides_of_the_tunnel(tls_balancer, wss_backend):
    payload = os.urandom(MIB)
    with ws_connect(tls_balancer, "wss.test") as ws:
        ws.send("over TLS")
        assert ws.recv(timeout=BOUND) == "over TLS"
        ws.send(payload)
        assert ws.recv(timeout=BOUND) == payload
    assert wss_backend.handshakes[-1][1]["X-Forwarded-Proto"] == "https"
    with (
        ws_connect(tls_balancer, "wss.test", "/close") as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=BOUND)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "go away")


def test_the_clients_close_code_reaches_the_backend(balancer, ws_backend):
    with ws_connect(balancer, "ws.test", "/echo?client-closes") as ws:
        ws.send("bye")
        assert ws.recv(timeout=BOUND) == "bye"
        ws.close(4002, "done here")
    deadline = time.monotonic() + BOUND
    while 4002 not in ws_backend.close_codes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 4002 in ws_backend.close_codes


def open_tunnels(balancer):
    """Return lb_websocket_tunnels_open as /metrics tells it."""
    text = requests.get(balancer.admin_url + "/metrics", timeout=BOUND).text
    match = re.search(r"^lb_websocket_tunnels_open (\S+)$", text, re.MULTILINE)
    return float(match[1])


def test_200_tunnels_at_once(balancer):
    with contextlib.ExitStack() as stack:
        tunnels = [stack.enter_context(ws_connect(balancer, "ws.test")) for _ in range(TUNNELS)]
        assert open_tunnels(balancer) == TUNNELS
        for number, ws in enumerate(tunnels):
            ws.send(f"tunnel {number}")
        for number, ws in enumerate(tunnels):
            assert ws.recv(timeout=BOUND) == f"tunnel {number}"
    deadline = time.monotonic() + BOUND
    while open_tunnels(balancer) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_tunnels(balancer) == 0


@pytest.mark.parametrize(("host", "status"), [("dead.test", 503), ("empty.test", 503)])
def test_a_pool_that_cannot_be_reached_gets_its_error_before_any_101(balancer, host, status):
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(balancer, host)
    assert refused.value.response.status_code == status


def test_a_backend_refusing_the_upgrade_has_its_answer_forwarded(balancer):
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(balancer, "ws.test", "/refuse")
    assert refused.value.response.status_code == 426
    assert refused.value.response.body == b"No WebSocket here, try elsewhere.\n"


def upgrade_request(balancer, host, path="/"):
    """Send a WebSocket handshake by hand; return the answer (status, headers, body)."""
    connection = http.client.HTTPConnection(*address_of(balancer.url), timeout=BOUND)
    connection.request(
        "GET",
        path,
        headers={
            "Host": host,
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
        },
    )
    answer = connection.getresponse()
    body = answer.read()
    connection.close()
    return answer.status, answer.headers, body


def test_a_plain_http_backend_answers_the_handshake_as_any_request(balancer):
    status, headers, body = upgrade_request(balancer, "plain.test")
    assert (status, body) == (200, b"This is the mango application.")
    assert headers["Via"].endswith("1.1 django-lb")


def test_the_backend_sees_forwarding_headers_and_the_stripped_path(balancer, ws_backend):
    with ws_connect(balancer, "chat.example", "/chat/room?x=%7e1") as ws:
        ws.send("hi")
        assert ws.recv(timeout=BOUND) == "hi"
    path, headers = ws_backend.handshakes[-1]
    assert path == "/room?x=%7e1"
    assert headers["Host"] == ws_backend.url.removeprefix("http://")
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Host"] == "chat.example"
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["X-Forwarded-Prefix"] == "/chat"
    assert headers["Via"] == "1.1 django-lb"
    assert headers["Upgrade"] == "websocket"
    assert headers["Connection"] == "Upgrade"
    assert "Sec-WebSocket-Key" in headers
    assert "User-Agent" in headers  # the client's, not a marker of urllib3's


def test_preserve_host_sends_the_clients_host(balancer, ws_backend):
    with ws_connect(balancer, "kept.test", "/echo"):
        pass
    assert ws_backend.handshakes[-1][1]["Host"] == "kept.test"


def test_an_idle_tunnel_is_closed(gthread_balancer):
    with ws_connect(gthread_balancer, "ws.test") as ws:
        ws.send("awake")
        assert ws.recv(timeout=BOUND) == "awake"
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=BOUND)  # nothing comes; the balancer closes the tunnel
        assert 0.9 < time.monotonic() - started < BOUND


def test_each_tunnel_writes_one_access_log_line_when_it_ends(balancer):
    with ws_connect(balancer, "ws.test", "/echo?logged") as ws:
        ws.send(b"x" * 1000)
        assert len(ws.recv(timeout=BOUND)) == 1000
    deadline = time.monotonic() + BOUND
    lines = []
    while not lines and time.monotonic() < deadline:
        lines = [line for line in balancer.log().splitlines() if "path=/echo?logged" in line]
        time.sleep(0.05)
    (line,) = lines
    fields = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))
    assert fields["status"] == "101"
    assert fields["backend"] == balancer_backend_url(line)
    # Frames from the client are masked: 6 bytes of header and mask, plus the close.
    assert int(fields["bytes_up"]) > 1000
    assert int(fields["bytes"]) > 1000
    assert float(fields["total_ms"]) > 0


def balancer_backend_url(line):
    return re.search(r"backend=(\S+)", line)[1]


def test_without_gunicorn_a_handshake_gets_501(client, make_route, ws_backend):
    make_route([ws_backend.url], host="localhost")
    response = client.get(
        "/echo",
        headers={"Connection": "Upgrade", "Upgrade": "websocket"},
        SERVER_PROTOCOL="HTTP/1.1",
    )
    assert response.status_code == 501


# the transport's tunnel on its own


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "keep-alive, Upgrade"}, True),
        ({"HTTP_UPGRADE": "WebSocket", "HTTP_CONNECTION": "upgrade"}, True),
        ({"HTTP_UPGRADE": "h2c", "HTTP_CONNECTION": "Upgrade"}, False),
        ({"HTTP_UPGRADE": "websocket"}, False),
        ({"HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade", "CONTENT_LENGTH": "3"}, False),
        (
            {
                "HTTP_UPGRADE": "websocket",
                "HTTP_CONNECTION": "Upgrade",
                "SERVER_PROTOCOL": "HTTP/2",
            },
            False,
        ),
        (
            {"HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade", "REQUEST_METHOD": "POST"},
            False,
        ),
    ],
)
def test_which_requests_are_websocket_handshakes(meta, expected):
    meta = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", **meta}
    assert is_websocket_handshake(meta) is expected


def test_relay_copies_both_ways_leftovers_first_and_passes_the_close_on():
    client, client_peer = socket.socketpair()
    backend, backend_peer = socket.socketpair()
    result = []
    thread = threading.Thread(
        target=lambda: result.append(tunnel.relay(client, b"up0", backend, b"down0", BOUND))
    )
    thread.start()
    client_peer.sendall(b"up1")
    assert recv_exactly(backend_peer, 6) == b"up0up1"
    assert recv_exactly(client_peer, 5) == b"down0"
    backend_peer.sendall(b"down1")
    assert recv_exactly(client_peer, 5) == b"down1"
    client_peer.shutdown(socket.SHUT_WR)  # the client closes: the backend gets the end
    assert backend_peer.recv(10) == b""
    backend_peer.sendall(b"last")  # ... and may still finish what it sends
    assert recv_exactly(client_peer, 4) == b"last"
    backend_peer.close()
    assert client_peer.recv(10) == b""
    thread.join(BOUND)
    assert result == [(6, 14)]
    client_peer.close()
    client.close()


def test_relay_ends_an_idle_tunnel():
    client, client_peer = socket.socketpair()
    backend, backend_peer = socket.socketpair()
    started = time.monotonic()
    assert tunnel.relay(client, b"", backend, b"", 0.3) == (0, 0)
    assert 0.3 <= time.monotonic() - started < BOUND
    assert client_peer.recv(10) == b"" and backend_peer.recv(10) == b""
    for sock in (client, client_peer, backend_peer):
        sock.close()


def recv_exactly(sock, count):
    sock.settimeout(BOUND)
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, f"ended after {data!r}"
        data += chunk
    return data


def handshake(url, read_timeout=2.0):
    """An UpstreamRequest for a WebSocket handshake, as forwarding builds one."""
    headers = {"Host": "x", "Connection": "Upgrade", "Upgrade": "websocket"}
    return UpstreamRequest("GET", url, "/", headers, read_timeout=read_timeout)


def test_open_tunnel_returns_the_101_and_the_bytes_past_it(raw_backend):
    url = raw_backend(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: abc\r\n\r\n\x81\x02hi"
    )
    upgraded = tunnel.open_tunnel(handshake(url))
    try:
        assert isinstance(upgraded, tunnel.Upgraded)
        assert upgraded.leftover == b"\x81\x02hi"
        assert ("Sec-WebSocket-Accept", "abc") in upgraded.headers
    finally:
        upgraded.sock.close()


def test_open_tunnel_returns_a_refusal_with_its_body(raw_backend):
    url = raw_backend(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope")
    answer = tunnel.open_tunnel(handshake(url))
    with contextlib.closing(answer):
        assert (answer.status, b"".join(answer)) == (426, b"nope")


def test_open_tunnel_fails_as_send_does(closed_port, silent_backend_url):
    with pytest.raises(errors.NotSent):
        tunnel.open_tunnel(handshake(closed_port))
    with pytest.raises(errors.UpstreamTimedOut):
        tunnel.open_tunnel(handshake(silent_backend_url, read_timeout=0.2))


def test_a_request_that_never_started_its_response_passes_the_post_request_hook():
    # A worker timed out, or an app raised, before start_response: no status yet.
    from gunicorn.http.wsgi import Response

    hooks = runpy.run_path(str(PROJECT_ROOT / "gunicorn.conf.py"))
    request = types.SimpleNamespace(must_close=False)
    hooks["post_request"](None, request, {}, Response(request, None, None))
    assert request.must_close is False
