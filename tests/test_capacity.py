"""Many clients at once, under gunicorn: slow and idle ones, and hundreds of slow requests.

The balancer runs as in production, on gunicorn.conf.py's worker (gevent),
with two workers. Under the threaded worker (GUNICORN_WORKER_CLASS=gthread,
16 threads each) the slowloris and the in-flight tests fail: 32 slow
clients or slow requests hold every thread, and everyone else waits.
"""

import contextlib
import http.client
import selectors
import socket
import sqlite3
import threading
import time

import psycopg
import pytest
import requests

from .conftest import (
    Balancer,
    balancer_environment,
    database_of_its_own,
    listening_socket,
    pool_rows,
    rule_row,
    self_signed_certificate,
    start_gunicorn,
    stop,
    url_of,
    wait_until_serving,
)

# Its balancers use a database of their own on DATABASE_URL's server.
pytestmark = pytest.mark.database_url

WORKERS = 2
CLIENTS = 300  # far more than 2 workers × 16 threads
PROMPT = 2  # seconds a GET may take while they are connected; it takes milliseconds
HEAD_TIMEOUT = 5  # gunicorn.conf.py's keepalive: a client's time for a TLS handshake, a head
SLOW_SECONDS = 3  # how long the slow backend takes to answer
PLAIN_GETS = 5


@pytest.fixture(scope="module")
def slow_backend():
    """tests.backends:slow under gevent, whatever the balancer runs: it holds every request."""
    sock = listening_socket()
    process = start_gunicorn(
        "tests.backends:slow", sock, threads=None, extra_args=("--worker-class", "gevent")
    )
    try:
        wait_until_serving(url_of(sock) + "/?0", process)
        yield url_of(sock)
    finally:
        stop(process)
        sock.close()


@pytest.fixture(scope="module")
def balancer_home(tmp_path_factory):
    return tmp_path_factory.mktemp("capacity")


@pytest.fixture(scope="module")
def database_url(balancer_home):
    """The balancer's database: PostgreSQL in .ci/run's second pass, else SQLite."""
    with database_of_its_own(balancer_home) as url:
        yield url


@pytest.fixture(scope="module")
def balancer(balancer_home, database_url, demo_backends, slow_backend):
    """`gunicorn lbsite.wsgi`: www.mango.com to the demo backends, slow.test to the slow one."""
    rows = [
        *pool_rows("mango", demo_backends["mango"]),
        rule_row("mango", host="www.mango.com"),
        *pool_rows("slow", [slow_backend]),
        rule_row("slow", host="slow.test"),
    ]
    env = balancer_environment(balancer_home, rows, DATABASE_URL=database_url)
    server = Balancer(env, workers=WORKERS, log_path=balancer_home / "balancer.log")
    yield server
    server.stop()


def address_of(url):
    host, port = url.split("://", 1)[1].split(":")
    return host, int(port)


def assert_answered_promptly(url, verify=True):
    """GET the mango application through the balancer on a new connection, within PROMPT."""
    started = time.monotonic()
    try:
        answer = requests.get(
            url,
            headers={"Host": "www.mango.com", "Connection": "close"},
            timeout=PROMPT,
            verify=verify,
        )
    except requests.Timeout:
        pytest.fail(f"a GET was not answered within {PROMPT} s")
    elapsed = time.monotonic() - started
    assert answer.text == "This is the mango application."
    assert elapsed < PROMPT, f"a GET took {elapsed:.2f} s"


def still_open(sock):
    """Whether the server has neither answered nor closed a connection."""
    sock.setblocking(False)
    try:
        sock.recv(1)
    except BlockingIOError:
        return True
    except OSError:  # reset
        return False
    return False  # an answer, or the end of the connection


class SlowClients:
    """Connections that send a request head and never finish it: slowloris.

    Each sends a request line and then header bytes, one about every
    second, never the empty line that ends the head.
    """

    TRICKLE = b"X-Slow: 1\r\n"

    def __init__(self, url, count, host):
        self.socks = []
        for _ in range(count):
            sock = socket.create_connection(address_of(url), timeout=5)
            self.socks.append(sock)
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n".encode())
        self.stopped = threading.Event()
        self.trickler = threading.Thread(target=self.trickle, daemon=True)
        self.trickler.start()

    def trickle(self):
        for index in range(60):  # a minute at most, should the test forget to stop it
            if self.stopped.wait(1):
                return
            byte = self.TRICKLE[index % len(self.TRICKLE) : index % len(self.TRICKLE) + 1]
            for sock in self.socks:
                with contextlib.suppress(OSError):  # closed by the server meanwhile
                    sock.send(byte)

    def open_count(self):
        return sum(still_open(sock) for sock in self.socks)

    def close(self):
        self.stopped.set()
        self.trickler.join()
        for sock in self.socks:
            sock.close()


class IdleClients:
    """Connections that made one request, read the answer, and keep the connection idle."""

    def __init__(self, url, count, host):
        self.connections = []
        host_port = url.removeprefix("http://")
        for _ in range(count):
            connection = http.client.HTTPConnection(host_port, timeout=10)
            self.connections.append(connection)
            connection.request("GET", "/", headers={"Host": host})
            answer = connection.getresponse()
            assert answer.read() == b"This is the mango application."
            assert not answer.will_close

    def open_count(self):
        return sum(still_open(connection.sock) for connection in self.connections)

    def close(self):
        for connection in self.connections:
            connection.close()


def test_slow_clients_never_delay_other_clients(balancer):
    slow = SlowClients(balancer.url, CLIENTS, "www.mango.com")
    try:
        for _ in range(PLAIN_GETS):
            assert_answered_promptly(balancer.url)
        assert slow.open_count() == CLIENTS  # they were all connected all along
        # And the balancer ends them: a request head gets HEAD_TIMEOUT seconds.
        deadline = time.monotonic() + HEAD_TIMEOUT + 5
        while (still := slow.open_count()) > 0:
            assert time.monotonic() < deadline, f"{still} slow clients are still connected"
            time.sleep(0.2)
    finally:
        slow.close()


def test_clients_that_never_finish_a_tls_handshake_are_let_go(tmp_path, demo_backends):
    cert, key = self_signed_certificate(tmp_path)
    rows = [*pool_rows("mango", demo_backends["mango"]), rule_row("mango", host="www.mango.com")]
    env = balancer_environment(tmp_path, rows, TLS_CERTFILE=str(cert), TLS_KEYFILE=str(key))
    server = Balancer(
        env, workers=1, log_path=tmp_path / "balancer.log", scheme="https", verify=str(cert)
    )
    silent = []
    try:
        silent += [socket.create_connection(address_of(server.url)) for _ in range(CLIENTS)]
        with socket.create_connection(address_of(server.url), timeout=5) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: www.mango.com\r\n\r\n")  # no TLS at all
            with contextlib.suppress(OSError):
                plain.recv(1024)
        for _ in range(PLAIN_GETS):
            assert_answered_promptly(server.url, verify=str(cert))
        # And the balancer ends them: a handshake gets HEAD_TIMEOUT seconds.
        deadline = time.monotonic() + HEAD_TIMEOUT + 5
        while (still := sum(still_open(sock) for sock in silent)) > 0:
            assert time.monotonic() < deadline, f"{still} silent clients are still connected"
            time.sleep(0.2)
    finally:
        for sock in silent:
            sock.close()
        server.stop()
    assert "Traceback" not in server.log()  # the failed handshake is one line


def test_idle_keep_alive_connections_never_delay_other_clients(balancer):
    idle = IdleClients(balancer.url, CLIENTS, "www.mango.com")
    try:
        for _ in range(PLAIN_GETS):
            assert_answered_promptly(balancer.url)
        assert idle.open_count() == CLIENTS
    finally:
        idle.close()


def test_a_refused_body_is_not_read_for_as_long_as_the_client_sends_it(balancer):
    # The answer (413, from Content-Length alone) leaves the body unread; the
    # connection then ends after a bounded read, rather than once the client
    # has sent 2 GB or the keep-alive time has run out.
    head = b"POST / HTTP/1.1\r\nHost: www.mango.com\r\nContent-Length: 2000000000\r\n\r\n"
    started = time.monotonic()
    with socket.create_connection(address_of(balancer.url), timeout=10) as conn:
        conn.sendall(head + b"x" * 100_000)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert answer.endswith(b"Payload Too Large")
    assert time.monotonic() - started < PROMPT


@contextlib.contextmanager
def routing_version_locked(database_url):
    """Hold, from another process's connection, a lock that keeps readers of the version out.

    On SQLite, a writer's exclusive lock (in write-ahead-log mode readers
    pass it); on PostgreSQL, the lock a migration takes.
    """
    if database_url.startswith("postgres"):
        with psycopg.connect(database_url) as connection:
            connection.execute("LOCK TABLE routing_routingversion IN ACCESS EXCLUSIVE MODE")
            yield
            connection.rollback()
        return
    connection = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        yield
        connection.execute("COMMIT")
    finally:
        connection.close()


def test_a_locked_database_holds_up_no_request(balancer, database_url):
    # Another process writing (an admin edit elsewhere, the health checker, a
    # migration) must not hold up a worker: its refresher reads the database
    # every 0.25 s, and a wait inside a driver's C code (SQLite's) would stop
    # every request of the worker, where psycopg's waits yield to gevent.
    for _ in range(PLAIN_GETS):  # the workers are warm: their refreshers run
        assert_answered_promptly(balancer.url)
    with routing_version_locked(database_url):
        locked_until = time.monotonic() + 2 * PROMPT
        while time.monotonic() < locked_until:
            assert_answered_promptly(balancer.url)


def send_all(url, request, count, deadline):
    """Send a request on count new connections at once; return each answer read by the deadline.

    One thread and a selector: the answers are read as they come, to the
    end of each connection (the request says Connection: close).
    """
    answers = [b""] * count
    selector = selectors.DefaultSelector()
    socks = []
    try:
        for index in range(count):
            sock = socket.create_connection(address_of(url), timeout=5)
            socks.append(sock)
            sock.sendall(request)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, index)
        while selector.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, _events in selector.select(timeout=left):
                try:
                    chunk = key.fileobj.recv(65536)
                except OSError:
                    chunk = b""
                if chunk:
                    answers[key.data] += chunk
                else:
                    selector.unregister(key.fileobj)
    finally:
        selector.close()
        for sock in socks:
            sock.close()
    return answers


def test_hundreds_of_slow_requests_are_in_flight_at_once(balancer):
    # Each request takes SLOW_SECONDS at the backend. If every one is answered
    # within twice that of the first being sent, all were in flight at one
    # moment: the middle of that span. 32 threads would need about 28 s.
    request = f"GET /?{SLOW_SECONDS} HTTP/1.1\r\nHost: slow.test\r\nConnection: close\r\n\r\n"
    started = time.monotonic()
    answers = send_all(balancer.url, request.encode(), CLIENTS, started + 2 * SLOW_SECONDS)
    elapsed = time.monotonic() - started
    answered = [answer for answer in answers if answer.endswith(b"\r\n\r\nslow")]
    assert len(answered) == CLIENTS, f"{len(answered)} of {CLIENTS} answered in {elapsed:.1f} s"
    assert all(answer.startswith(b"HTTP/1.1 200 ") for answer in answered)
