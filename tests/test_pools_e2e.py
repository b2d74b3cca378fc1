"""Pools that keep serving: fault tests with real processes on loopback, bounded in time.

Every case asserts on what the client received and what each backend saw.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .conftest import (
    PROJECT_ROOT,
    Balancer,
    RawBackend,
    balancer_environment,
    listening_socket,
    manage,
    pool_rows,
    reset,
    rule_row,
    start_gunicorn,
    stop,
    url_of,
    wait_until_serving,
)

BOUND = 5  # seconds: a generous bound for what the product promises within 1 s
READ_TIMEOUT = 1.0
CHECK_INTERVAL = 0.3


class KillableBackend:
    """A demo backend in a process group of its own, killed and restarted on one port."""

    def __init__(self, app_name):
        self.app_name = app_name
        self.port = None
        self.start()

    def start(self):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port or 0))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self.process = start_gunicorn(
            "backend_app.wsgi", sock, {"APP": self.app_name}, threads=8, new_session=True
        )
        sock.close()  # only gunicorn holds it now: once killed, connections are refused
        wait_until_serving(self.url + "/healthcheck", self.process)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def message(self):
        return f"This is the {self.app_name} application."

    def kill(self):
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


class CountingListener:
    """Accepts connections, counts them and never answers."""

    def __init__(self):
        self.sock = listening_socket()
        self.url = url_of(self.sock)
        self.connections = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.connections:
            conn.close()


class ResetAfterBody:
    """Reads a whole request, body included, then resets the connection; counts hits."""

    def __init__(self):
        self.hits = 0
        self.server = RawBackend(self.answer)
        self.url = self.server.url

    def answer(self, conn, read):
        self.hits += 1
        head, _, body = read.partition(b"\r\n\r\n")
        declared = re.search(rb"(?i)content-length: *(\d+)", head)
        length = int(declared.group(1)) if declared else 0
        while len(body) < length:
            body += conn.recv(65536)
        reset(conn)


def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


class Bed:
    def __init__(self, home):
        self.alpha = KillableBackend("alpha")
        self.beta = KillableBackend("beta")
        self.silent = CountingListener()
        self.silent2 = CountingListener()
        self.resetter = ResetAfterBody()
        checked = {"health_check_interval": CHECK_INTERVAL, "health_check_timeout": 0.5}
        unchecked = {"health_check_path": "", "read_timeout": READ_TIMEOUT, "max_fails": 100}
        rows = [
            *pool_rows(
                "pair",
                [self.alpha.url, self.beta.url],
                algorithm="round_robin",
                max_fails=1,
                fail_timeout=30,
                **checked,
            ),
            rule_row("pair", host="pair.test"),
            *pool_rows("dead", [closed_port(), closed_port()], **checked),
            rule_row("dead", host="dead.test"),
            *pool_rows("silent", [self.silent.url], **unchecked),
            rule_row("silent", host="silent.test"),
            *pool_rows(
                "silentpair",
                [self.silent.url, self.alpha.url],
                algorithm="round_robin",
                **unchecked,
            ),
            rule_row("silentpair", host="silentpair.test"),
            *pool_rows(
                "slowpair", [self.silent.url, self.silent2.url], max_attempts=2, **unchecked
            ),
            rule_row("slowpair", host="slowpair.test"),
            *pool_rows(
                "resetpair",
                [self.resetter.url, self.alpha.url],
                algorithm="round_robin",
                **unchecked,
            ),
            rule_row("resetpair", host="resetpair.test"),
        ]
        self.env = balancer_environment(home, rows)
        self.balancer = Balancer(self.env, workers=2)
        self.checker = subprocess.Popen(
            [sys.executable, "manage.py", "healthcheck", "--loop"],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
        )

    def get(self, host, session=requests, **kwargs):
        return session.get(self.balancer.url, headers={"Host": host}, timeout=10, **kwargs)

    def stop(self):
        stop(self.checker)
        self.balancer.stop()
        for backend in (self.alpha, self.beta):
            if backend.process.poll() is None:
                backend.kill()
        for server in (self.silent, self.silent2, self.resetter.server):
            server.close()


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    bed = Bed(tmp_path_factory.mktemp("pools"))
    yield bed
    bed.stop()


def wait_for(condition, message):
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def test_killing_one_of_two_backends_fails_no_request(bed):
    sessions = threading.local()

    def one_get(number):
        if number == 300:
            bed.beta.kill()
        session = getattr(sessions, "session", None) or requests.Session()
        sessions.session = session
        answer = bed.get("pair.test", session)
        return answer.status_code, answer.text

    with ThreadPoolExecutor(max_workers=8) as executor:
        answers = list(executor.map(one_get, range(2000)))
    failed = [answer for answer in answers if answer[0] != 200]
    assert not failed, f"{len(failed)} failed, e.g. {failed[:3]}"
    served = {text for _status, text in answers}
    assert served == {bed.alpha.message, bed.beta.message}


def test_a_revived_backend_gets_traffic_after_the_next_health_check(bed):
    # Marked down by the checker first (the previous test killed beta).
    wait_for(
        lambda: all(bed.get("pair.test").text == bed.alpha.message for _ in range(10)),
        "beta still answers while dead",
    )
    bed.beta.start()
    wait_for(
        lambda: any(bed.get("pair.test").text == bed.beta.message for _ in range(10)),
        "beta got no traffic after it came back",
    )


def test_pool_whose_backends_are_all_down_answers_503_at_once(bed):
    wait_for(lambda: bed.get("dead.test").status_code == 503, "dead pool never marked down")
    started = time.monotonic()
    answers = [bed.get("dead.test") for _ in range(20)]
    assert {(a.status_code, a.text) for a in answers} == {(503, "No backend servers available.")}
    assert time.monotonic() - started < BOUND / 2


def test_silent_backend_alone_gets_504_within_the_read_timeout(bed):
    started = time.monotonic()
    answer = bed.get("silent.test")
    elapsed = time.monotonic() - started
    assert (answer.status_code, answer.text) == (504, "Gateway Timeout")
    assert READ_TIMEOUT <= elapsed < READ_TIMEOUT + 1


def test_every_attempt_timing_out_gets_504_within_attempts_times_read_timeout(bed):
    started = time.monotonic()
    answer = bed.get("slowpair.test")
    elapsed = time.monotonic() - started
    assert answer.status_code == 504
    assert 2 * READ_TIMEOUT <= elapsed < 2 * READ_TIMEOUT + 1


def test_gets_are_retried_past_a_silent_backend_but_a_post_is_not(bed):
    # Round robin sends each worker's second request to the silent backend,
    # so of four POSTs over two workers at least one reaches it: never replayed.
    posts = [
        requests.post(
            bed.balancer.url, data=b"order", headers={"Host": "silentpair.test"}, timeout=10
        )
        for _ in range(4)
    ]
    statuses = [answer.status_code for answer in posts]
    assert 504 in statuses and set(statuses) <= {200, 504}
    for answer in posts:
        if answer.status_code == 200:
            assert answer.text == bed.alpha.message
    gets = [bed.get("silentpair.test") for _ in range(4)]
    assert {(a.status_code, a.text) for a in gets} == {(200, bed.alpha.message)}


def test_post_reset_after_its_body_is_not_retried(bed):
    before = bed.resetter.hits
    posts = [
        requests.post(
            bed.balancer.url, data=b"x" * 1000, headers={"Host": "resetpair.test"}, timeout=10
        )
        for _ in range(6)
    ]
    failed = [answer for answer in posts if answer.status_code != 200]
    assert failed and all(a.status_code == 502 and a.text == "Bad Gateway" for a in failed)
    assert bed.resetter.hits - before == len(failed)  # one hit per failed POST, no replay
    gets = [bed.get("resetpair.test") for _ in range(6)]
    assert {(a.status_code, a.text) for a in gets} == {(200, bed.alpha.message)}


def test_in_flight_request_finishes_when_the_balancer_shuts_down(tmp_path):
    sock = listening_socket()
    slow = start_gunicorn("tests.backends:slow", sock)
    try:
        wait_until_serving(url_of(sock) + "/?0", slow)
        rows = [*pool_rows("slow", [url_of(sock)]), rule_row("slow", host="slow.test")]
        balancer = Balancer(balancer_environment(tmp_path, rows), workers=1)
        answers = []
        request = threading.Thread(
            target=lambda: answers.append(
                requests.get(balancer.url + "/?1.5", headers={"Host": "slow.test"}, timeout=10)
            )
        )
        request.start()
        time.sleep(0.5)
        balancer.process.send_signal(signal.SIGTERM)  # graceful: finish in-flight work
        request.join(timeout=10)
        balancer.process.wait(timeout=10)
        balancer.sock.close()
        assert [(a.status_code, a.text) for a in answers] == [(200, "slow")]
    finally:
        stop(slow)
        sock.close()


def test_a_passing_health_check_ends_a_cool_down_on_every_worker(tmp_path):
    backend = KillableBackend("gamma")
    balancer = None
    try:
        rows = [
            *pool_rows("cool", [backend.url], max_fails=1, fail_timeout=60),
            rule_row("cool", host="cool.test"),
        ]
        env = balancer_environment(tmp_path, rows)
        balancer = Balancer(env, workers=2)

        def get():
            return requests.get(balancer.url, headers={"Host": "cool.test"}, timeout=10)

        assert get().text == backend.message
        backend.kill()
        # Each worker fails once (502), then keeps the backend out for a minute (503).
        wait_for(
            lambda: all(get().status_code == 503 for _ in range(20)),
            "a worker never cooled the dead backend down",
        )
        backend.start()
        # No checker ran while it was dead: it was healthy all along, so this
        # passing check changes no health and bumps no routing version.
        manage(env, "healthcheck")
        wait_for(
            lambda: all(get().text == backend.message for _ in range(20)),
            "a worker still keeps out a backend that passed its health check",
        )
    finally:
        if balancer is not None:
            balancer.stop()
        if backend.process.poll() is None:
            backend.kill()
