"""The balancer under gunicorn itself, with a database file of its own.

pytest-django's test database lives in this process; a gunicorn subprocess
sees only a database file it is given.
"""

import contextlib
import hashlib
import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from .conftest import (
    GUNICORN,
    PROJECT_ROOT,
    Balancer,
    balancer_environment,
    demo_fixture,
    exchange,
    listening_socket,
    manage,
    metric,
    self_signed_certificate,
    start_gunicorn,
    stop,
    url_of,
    wait_until_serving,
)

ADMIN_PASSWORD = secrets.token_urlsafe(16)
WORKERS = 2
PROPAGATION_BOUND = 5  # seconds; the product promises 1 s, `make bench` measures it
WRITE_BOUND = 5  # seconds a background write may hold a connection (it takes milliseconds)


@pytest.fixture(scope="module")
def balancer(tmp_path_factory, demo_backends):
    """`gunicorn lbsite.wsgi` with two workers and the demo routes, its log kept."""
    home = tmp_path_factory.mktemp("balancer")
    env = balancer_environment(home, demo_fixture(demo_backends), ADMIN_PASSWORD=ADMIN_PASSWORD)
    manage(env, "ensure_admin")
    server = Balancer(env, workers=WORKERS, log_path=home / "balancer.log")
    yield server
    server.stop()


def get(url, host, path="/", **kwargs):
    """GET through the balancer on a new connection, so any worker may answer."""
    headers = {"Host": host, "Connection": "close", **kwargs.pop("headers", {})}
    return requests.get(url + path, headers=headers, timeout=10, **kwargs)


def test_routes_by_host_and_by_path(balancer):
    assert get(balancer.url, "www.apple.com").text == "This is the apple application."
    assert get(balancer.url, "localhost", "/mango").text == "This is the mango application."
    missing = get(balancer.url, "www.notmango.com")
    assert (missing.status_code, missing.text) == (404, "Not Found")


def send_exact(balancer, target, host):
    """Send a GET with the request target byte for byte (requests would re-quote it)."""
    connection = http.client.HTTPConnection(balancer.removeprefix("http://"), timeout=10)
    try:
        connection.request("GET", target, headers={"Host": host})
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def test_raw_path_and_query_reach_the_backend(balancer):
    seen = send_exact(balancer.url, "/apple/echo/a%2Fb/%7Ex?q=a%20b&q=&k=%2F", "localhost")
    assert seen["path"] == "/echo/a%2Fb/%7Ex"
    assert seen["query"] == "q=a%20b&q=&k=%2F"


def test_chunked_upload_arrives_complete(balancer):
    parts = [os.urandom(50_000) for _ in range(20)]
    result = requests.post(
        balancer.url + "/mango/echo",
        data=iter(parts),  # a generator: requests sends it chunked
        headers={"Host": "localhost"},
        timeout=10,
    )
    seen = result.json()
    body = b"".join(parts)
    assert seen["body_length"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_missing_host_gets_400(balancer):
    answer = exchange(balancer.url, b"GET /mango HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert answer.endswith(b"\r\n\r\nBad Request")  # the balancer's own answer


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "www.mango.com"])
def test_traffic_listener_routes_every_path_and_serves_no_page_of_its_own(balancer, host):
    for path in ("/admin/login/", "/static/admin/css/base.css", "/metrics", "/healthz"):
        answer = get(balancer.url, host, path)
        if host == "www.mango.com":
            assert answer.text == "This is the mango application."
        else:  # the demo routes have no rule for these paths on other hosts
            assert (answer.status_code, answer.text) == (404, "Not Found")


def test_admin_listener_serves_the_balancers_pages_and_proxies_nothing(balancer):
    css = get(balancer.admin_url, "localhost", "/static/admin/css/base.css")
    assert css.status_code == 200
    assert "text/css" in css.headers["Content-Type"]
    assert get(balancer.admin_url, "localhost", "/healthz").text == "OK"
    assert "lb_requests_total" in get(balancer.admin_url, "localhost", "/metrics").text
    assert get(balancer.admin_url, "localhost", "/mango").status_code == 404
    assert "mango application" not in get(balancer.admin_url, "127.0.0.1", "/").text


def test_admin_gets_djangos_machinery_and_proxied_answers_none_of_it(balancer):
    login = get(balancer.admin_url, "localhost", "/admin/login/")
    assert login.status_code == 200
    assert login.headers["X-Frame-Options"] == "DENY"
    assert login.headers["X-Content-Type-Options"] == "nosniff"
    assert "lb_csrftoken" in login.cookies
    # Script on a backend's page (same site: cookies ignore ports) cannot read it.
    assert "HttpOnly" in login.headers["Set-Cookie"]
    proxied = get(balancer.url, "localhost", "/mango")
    assert proxied.text == "This is the mango application."
    assert not {"X-Frame-Options", "X-Content-Type-Options", "Set-Cookie"} & set(proxied.headers)


@pytest.mark.parametrize("host", ["localhost:8000.", "www.mango.com", "localhost:8000:1", "[::1"])
def test_admin_listener_refuses_other_hosts_in_one_log_line(balancer, host):
    before = balancer.log()
    refused = get(balancer.admin_url, host, "/admin/login/")
    assert (refused.status_code, refused.text) == (400, "Bad Request")
    new = balancer.log()[len(before) :]
    assert "Admin listener refused a request from 127.0.0.1" in new
    assert "Traceback" not in new
    assert get(balancer.admin_url, host, "/healthz").text == "OK"  # probes send odd hosts


def test_admin_listener_judges_the_client_not_its_trusted_proxy(tmp_path, demo_backends):
    env = balancer_environment(
        tmp_path,
        demo_fixture(demo_backends),
        ADMIN_ALLOWED_NETWORKS="10.0.0.0/8",
        TRUSTED_PROXIES="127.0.0.1",
    )
    server = Balancer(env, workers=1)
    try:
        refused = get(server.admin_url, "localhost", "/admin/login/")  # the proxy itself
        assert (refused.status_code, refused.text) == (403, "Forbidden")
        for_client = {"X-Forwarded-For": "10.1.2.3"}  # as the trusted proxy reports it
        assert get(server.admin_url, "localhost", "/admin/login/", headers=for_client).ok
        outside = get(
            server.admin_url,
            "localhost",
            "/admin/login/",
            headers={"X-Forwarded-For": "192.168.1.1"},
        )
        assert outside.status_code == 403
        assert get(server.admin_url, "localhost", "/healthz").status_code == 200
        assert get(server.url, "localhost", "/mango").text == "This is the mango application."
    finally:
        server.stop()


def free_address():
    """Return a loopback address that nothing listens on now (a tiny race is accepted)."""
    sock = listening_socket()
    address = f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    return address


def test_admin_listener_survives_a_reload(tmp_path, demo_backends):
    # Address binds: gunicorn cannot reopen inherited sockets (fd://) on a reload.
    env = balancer_environment(tmp_path, demo_fixture(demo_backends))
    traffic, admin = free_address(), free_address()
    log = tmp_path / "balancer.log"
    with open(log, "wb") as log_file:
        process = start_balancer({**env, "ADMIN_BIND": admin}, "-b", traffic, log=log_file)
    try:
        wait_until_serving(f"http://{admin}/healthz", process)
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + PROPAGATION_BOUND
        while "Booting worker" not in log.read_text().partition("Hang up")[2]:
            assert time.monotonic() < deadline, f"gunicorn did not reload: {log.read_text()}"
            time.sleep(0.05)
        wait_until_serving(f"http://{admin}/healthz", process)
        assert get(f"http://{admin}", "localhost", "/healthz").text == "OK"
        assert get(f"http://{traffic}", "localhost", "/mango").text == (
            "This is the mango application."
        )
    finally:
        stop(process)


def test_admin_listener_survives_an_upgrade_to_a_new_master(tmp_path, demo_backends):
    env = balancer_environment(tmp_path, demo_fixture(demo_backends))
    traffic, admin = free_address(), free_address()
    log = tmp_path / "balancer.log"
    with open(log, "wb") as log_file:
        old = start_balancer({**env, "ADMIN_BIND": admin}, "-b", traffic, log=log_file)
    new_pid = None
    try:
        wait_until_serving(f"http://{admin}/healthz", old)
        old.send_signal(signal.SIGUSR2)  # gunicorn starts a new master beside the old one
        deadline = time.monotonic() + PROPAGATION_BOUND
        while len(masters := re.findall(r"\[(\d+)\] \[INFO\] Admin listener", log.read_text())) < 2:
            assert time.monotonic() < deadline, f"no new master: {log.read_text()}"
            time.sleep(0.05)
        new_pid = int(masters[1])
        stop(old)  # the upgrade's last step: the old master goes; the new one serves
        assert get(f"http://{admin}", "localhost", "/admin/login/").status_code == 200
        assert get(f"http://{traffic}", "localhost", "/admin/login/").status_code == 404
        assert get(f"http://{traffic}", "localhost", "/mango").text == (
            "This is the mango application."
        )
    finally:
        stop(old)
        if new_pid:
            os.kill(new_pid, signal.SIGTERM)


def start_balancer(env, *bind_args, pass_fds=(), log=None):
    """Start `gunicorn lbsite.wsgi` with these binds; return the process."""
    return subprocess.Popen(
        [GUNICORN, "lbsite.wsgi", *bind_args, "--workers", "1"],
        cwd=PROJECT_ROOT,
        env=env,
        pass_fds=pass_fds,
        stdout=log or subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=log is None,
    )


@pytest.mark.parametrize("inherited", [False, True])
def test_gunicorn_refuses_a_unix_traffic_socket_beside_the_admin(tmp_path, inherited):
    # On a Unix socket gunicorn takes SERVER_PORT from the client's Host header.
    path = str(tmp_path / "traffic.sock")
    env = {**os.environ, "ADMIN_BIND": free_address(), "SECRET_KEY": "x" * 50}
    if inherited:
        unix = socket.socket(socket.AF_UNIX)
        unix.bind(path)
        unix.listen()
        unix.set_inheritable(True)
        process = start_balancer(env, "-b", f"fd://{unix.fileno()}", pass_fds=(unix.fileno(),))
    else:
        process = start_balancer(env, "-b", f"unix:{path}")
    output, _ = process.communicate(timeout=30)
    assert process.returncode != 0
    assert "A traffic listener is a Unix socket" in output


def test_an_admin_listener_on_port_0_serves_the_admin_on_the_port_it_got(tmp_path, demo_backends):
    env = balancer_environment(tmp_path, demo_fixture(demo_backends), ADMIN_BIND="127.0.0.1:0")
    traffic = free_address()
    log = tmp_path / "balancer.log"
    with open(log, "wb") as log_file:
        process = start_balancer(env, "-b", traffic, log=log_file)
    try:
        wait_until_serving(f"http://{traffic}/mango", process)
        admin = re.search(r"Admin listener at: (http://\S+)", log.read_text()).group(1)
        assert get(admin, "localhost", "/admin/login/").status_code == 200
        assert get(admin, "localhost", "/mango").status_code == 404  # nothing proxied there
        assert get(f"http://{traffic}", "localhost", "/admin/login/").status_code == 404
    finally:
        stop(process)


def test_gunicorn_refuses_an_admin_port_shared_with_traffic():
    address = free_address()
    process = start_balancer(
        {**os.environ, "ADMIN_BIND": address, "SECRET_KEY": "x" * 50}, "-b", address
    )
    output, _ = process.communicate(timeout=30)
    assert process.returncode != 0
    assert f"ADMIN_BIND {address} shares port" in output


def test_gunicorn_refuses_to_preload_the_balancer_under_gevent():
    # Preloaded, Django would be imported before gevent patches the worker.
    env = {**os.environ, "ADMIN_BIND": free_address(), "SECRET_KEY": "x" * 50}
    env.pop("GUNICORN_WORKER_CLASS", None)  # the default is under test, not the runner's
    process = start_balancer(env, "-b", free_address(), "--preload")
    try:
        output, _ = process.communicate(timeout=30)
    finally:
        stop(process)  # should it have started after all
    assert process.returncode != 0
    assert "preload_app cannot be used with the gevent worker" in output


WORKER_SETTINGS = ("GUNICORN_WORKER_CLASS", "GUNICORN_THREADS", "WORKER_CONNECTIONS")


@pytest.mark.parametrize(
    ("settings", "worker", "warned"),
    [
        ({}, "lbsite.workers.GeventWorker", False),
        ({"GUNICORN_THREADS": "4"}, "lbsite.workers.GeventWorker", True),
        ({"GUNICORN_WORKER_CLASS": "gthread", "GUNICORN_THREADS": "4"}, "gthread", False),
    ],
)
def test_the_worker_class_comes_from_the_environment(
    tmp_path, demo_backends, settings, worker, warned
):
    env = balancer_environment(tmp_path, demo_fixture(demo_backends))
    unset = dict.fromkeys(WORKER_SETTINGS, "")  # the defaults are under test, not the runner's
    server = Balancer({**env, **unset, **settings}, workers=1, log_path=tmp_path / "balancer.log")
    try:
        assert get(server.url, "www.mango.com").text == "This is the mango application."
    finally:
        server.stop()
    assert f"Using worker: {worker}" in server.log()
    assert ("GUNICORN_THREADS is read by the gthread worker only" in server.log()) == warned


def open_files_limit(pid):
    """Return a process's soft limit of open files."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open files limit")


def test_gunicorn_raises_the_open_files_limit_as_far_as_it_may(tmp_path, demo_backends):
    # 1000 connections a worker need 2,100 descriptors; the hard limit allows 1,500.
    env = balancer_environment(tmp_path, demo_fixture(demo_backends), WORKER_CONNECTIONS="1000")
    traffic, admin = free_address(), free_address()
    log = tmp_path / "balancer.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            # The shell lowers its limits, then becomes gunicorn.
            ["sh", "-c", 'ulimit -Sn 256 && ulimit -Hn 1500 && exec "$@"', "sh"]
            + [GUNICORN, "lbsite.wsgi", "-b", traffic, "--workers", "1"],
            cwd=PROJECT_ROOT,
            env={**env, "ADMIN_BIND": admin},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_serving(f"http://{admin}/healthz", process)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        assert [open_files_limit(pid) for pid in children] == [1500]
        assert "Open files limit 1500 is below the 2100" in log.read_text()
    finally:
        stop(process)


def log_in(balancer):
    """Return a requests session logged into the admin the way a browser does."""
    session = requests.Session()
    login = balancer + "/admin/login/"
    session.get(login, headers={"Host": "localhost"}, timeout=10)
    result = session.post(
        login,
        data={
            "username": "admin",
            "password": ADMIN_PASSWORD,
            "csrfmiddlewaretoken": session.cookies["lb_csrftoken"],
            "next": "/admin/",
        },
        headers={"Host": "localhost", "Referer": login},
        timeout=10,
    )
    assert result.url.endswith("/admin/"), "admin login failed"
    return session


def add_host_rule(session, balancer, host, pool_name):
    """Add a host rule through the admin's add form."""
    form_url = balancer + "/admin/routing/hostrule/add/"
    page = session.get(form_url, headers={"Host": "localhost"}, timeout=10).text
    pool_id = re.search(rf'<option value="(\d+)">{pool_name}</option>', page).group(1)
    result = session.post(
        form_url,
        data={
            "host": host,
            "pool": pool_id,
            "enabled": "on",
            "csrfmiddlewaretoken": session.cookies["lb_csrftoken"],
        },
        headers={"Host": "localhost", "Referer": form_url},
        timeout=10,
    )
    assert result.status_code == 200 and "was added successfully" in result.text


def test_admin_edit_reaches_every_worker_without_restart(balancer):
    # Every worker caches the table first, so a stale cache would show.
    for _ in range(10 * WORKERS):
        assert get(balancer.url, "www.kiwi.com").status_code == 404
    add_host_rule(log_in(balancer.admin_url), balancer.admin_url, "www.kiwi.com", "apple")
    deadline = time.monotonic() + PROPAGATION_BOUND
    while get(balancer.url, "www.kiwi.com").status_code != 200:
        assert time.monotonic() < deadline, "the new rule did not reach a worker"
        time.sleep(0.05)
    # Then every worker serves it: new connections land on either of them.
    while True:
        answers = {get(balancer.url, "www.kiwi.com").status_code for _ in range(10 * WORKERS)}
        if answers == {200}:
            break
        assert time.monotonic() < deadline, f"some worker still answers {answers}"
        time.sleep(0.05)
    assert get(balancer.url, "www.kiwi.com").text == "This is the apple application."


def database_files_open(pid):
    """Count the descriptors a process holds on its SQLite database file."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(fd).endswith("/db.sqlite3")
    return count


def test_a_worker_keeps_one_database_connection_however_many_clients_come_and_go(balancer):
    # Under gevent each client connection is served by a greenlet, and Django
    # keeps a database connection per greenlet: a request must close its own.
    operator = log_in(balancer.admin_url)
    pools = balancer.admin_url + "/admin/routing/pool/"
    for _ in range(30):
        assert get(balancer.url, "www.apple.com").status_code == 200
        page = operator.get(pools, headers={"Host": "localhost", "Connection": "close"}, timeout=10)
        assert "mango" in page.text
    for pid in balancer.worker_pids():
        # The refresher's, and at most one that SQLite keeps from a closed
        # connection for the next one (POSIX locks belong to the process).
        # The traffic sample's writer holds one more for the moment of each
        # write (every TRAFFIC_INTERVAL), then closes it; a leak never drops.
        deadline = time.monotonic() + WRITE_BOUND
        while (held := database_files_open(pid)) > 2:
            assert time.monotonic() < deadline, f"worker {pid} holds {held} connections"
            time.sleep(0.1)


def test_head_answer_has_the_backends_headers_and_no_body(balancer):
    answer = exchange(
        balancer.url, b"HEAD /mango/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nContent-Length: 30\r\n" in head + b"\r\n"
    assert body == b""


def requests_served(text, pool):
    """Sum a pool's lb_requests_total over its backends and status classes."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("lb_requests_total{") and f'pool="{pool}"' in line
    )


def scrape_when_served(url, pool, expected):
    """Scrape /metrics until the pool's total reaches expected (a request is counted when
    its response closes, a moment after the client has it); it must never pass it."""
    deadline = time.monotonic() + PROPAGATION_BOUND
    while True:
        text = get(url, "localhost", "/metrics").text  # url: the admin listener
        served = requests_served(text, pool)
        assert served <= expected, f"{served} counted, {expected} sent"
        if served == expected:
            return text
        assert time.monotonic() < deadline, f"only {served} of {expected} counted"
        time.sleep(0.05)


def test_metrics_add_up_across_workers_and_only_grow(balancer):
    before = requests_served(get(balancer.admin_url, "localhost", "/metrics").text, "apple")
    for round_number in (1, 2):
        for _ in range(10 * WORKERS):  # new connections: both workers serve some
            assert get(balancer.url, "www.apple.com").status_code == 200
        text = scrape_when_served(balancer.admin_url, "apple", before + round_number * 10 * WORKERS)
    assert metric(text, "lb_requests_in_flight") == 0
    assert metric(text, "lb_route_table_version") > 0


def test_gunicorn_terminates_tls(tmp_path, demo_backends):
    cert, key = self_signed_certificate(tmp_path)
    env = balancer_environment(
        tmp_path, demo_fixture(demo_backends), TLS_CERTFILE=str(cert), TLS_KEYFILE=str(key)
    )
    server = Balancer(env, workers=1, scheme="https", verify=str(cert))
    try:
        url = server.url
        assert url.startswith("https://")
        health = requests.get(
            server.admin_url + "/healthz", headers={"Host": "localhost"}, verify=str(cert)
        )
        assert health.text == "OK"
        seen = requests.get(
            url + "/apple/echo", headers={"Host": "localhost"}, verify=str(cert), timeout=10
        ).json()
        assert ["X-Forwarded-Proto", "https"] in seen["headers"]
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url + "/apple/", headers={"Host": "localhost"}, timeout=10)
    finally:
        server.stop()


def test_only_the_balancer_empties_the_metrics_directory(tmp_path, demo_backends):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    stale = metrics / "counter_1.db"
    stale.write_bytes(b"from another run")
    # A demo backend started from the project root reads gunicorn.conf.py too.
    sock = listening_socket()
    backend = start_gunicorn(
        "backend_app.wsgi", sock, {"APP": "kiwi", "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    )
    try:
        wait_until_serving(url_of(sock) + "/healthcheck", backend)
        assert stale.exists()
    finally:
        stop(backend)
        sock.close()
    env = balancer_environment(
        tmp_path, demo_fixture(demo_backends), PROMETHEUS_MULTIPROC_DIR=str(metrics)
    )
    server = Balancer(env, workers=1, log_path=tmp_path / "balancer.log")
    try:
        assert not stale.exists()
        assert get(server.url, "www.mango.com").status_code == 200
        scrape_when_served(server.admin_url, "mango", 1)
    finally:
        server.stop()


def test_trusted_proxies_with_host_bits_still_start_gunicorn():
    result = subprocess.run(
        [GUNICORN, "--check-config", "backend_app.wsgi"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "TRUSTED_PROXIES": "10.0.0.1/8, 127.0.0.1"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_access_log_lines_held_for_batching_are_written_when_the_balancer_stops(
    tmp_path, demo_backends
):
    # Held up to a minute: only the worker's exit can write them within the test.
    env = balancer_environment(tmp_path, demo_fixture(demo_backends), ACCESS_LOG_FLUSH="60")
    server = Balancer(env, workers=1, log_path=tmp_path / "balancer.log")
    try:
        for _ in range(3):
            assert get(server.url, "www.mango.com", "/held").status_code == 200
        assert "path=/held" not in server.log()
    finally:
        server.stop()
    assert server.log().count("path=/held") == 3
