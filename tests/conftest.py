"""Small composable fixtures: real servers on loopback ports, pools and rules."""

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import psycopg
import pytest
import requests
import urllib3
from django.core.management import call_command
from django.test import Client

from lbsite.listeners import admin_port
from routing import balancer
from routing.models import Backend, HostRule, PathRule, Pool
from routing.table import clear_route_table

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
STARTUP_TIMEOUT = 20
# gunicorn's default backlog, which it keeps for the sockets it is handed: a
# burst of connections waits for accept(), not for a dropped SYN's retry.
LISTEN_BACKLOG = 2048

# Where the demo fixture's backends listen, and which test server replaces each.
FRUIT_PORTS = {
    8081: ("mango", 0),
    8082: ("mango", 1),
    9081: ("apple", 0),
    9082: ("apple", 1),
}


def listening_socket():
    """Return a socket bound to a free loopback port, ready to hand to a server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


def url_of(sock):
    host, port = sock.getsockname()
    return f"http://{host}:{port}"


def wait_until_serving(url, process, host="localhost", verify=True):
    """Poll a URL until it answers, failing fast if the server process died."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        try:
            with warnings.catch_warnings():  # verify=False: a self-signed test certificate
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                requests.get(url, headers={"Host": host}, timeout=1, verify=verify)
            return
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or a busy machine
            time.sleep(0.05)
    raise RuntimeError(f"server at {url} did not answer in {STARTUP_TIMEOUT}s")


def start_gunicorn(
    app,
    sock,
    env=None,
    workers=1,
    threads=4,
    log=subprocess.DEVNULL,
    cwd=None,
    executable=GUNICORN,
    extra_args=(),
    new_session=False,
    extra_sockets=(),
):
    """Start gunicorn on an already-bound socket and return the process.

    extra_sockets are handed to it too, for binds it takes from its
    environment (the balancer's ADMIN_BIND=fd://N).
    """
    fd = sock.fileno()
    return subprocess.Popen(
        [
            executable,
            *extra_args,
            app,
            "--bind",
            f"fd://{fd}",
            "--workers",
            str(workers),
            *(("--threads", str(threads)) if threads else ()),
            "--graceful-timeout",
            "2",
        ],
        cwd=cwd or PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        pass_fds=(fd, *(extra.fileno() for extra in extra_sockets)),
        start_new_session=new_session,
        stdout=log,
        stderr=subprocess.STDOUT if log is not subprocess.DEVNULL else subprocess.DEVNULL,
    )


def manage(env, *args):
    """Run a management command in a subprocess, against the database env names."""
    subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def manage_output(env, *args, input=None):
    """Run a management command in a subprocess, as a user would; return what it printed.

    A command that fails fails the test with what it wrote to stderr.
    """
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=env,
        input=input,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise AssertionError(
            f"manage.py {args[0]} exited with {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return done.stdout


def pool_rows(name, backend_urls, **fields):
    """Fixture rows for a pool and its backends, for `manage.py loaddata`."""
    return [{"model": "routing.pool", "fields": {"name": name, **fields}}] + [
        {"model": "routing.backend", "fields": {"pool": [name], "url": url}} for url in backend_urls
    ]


def rule_row(pool, host="", prefix=None, **fields):
    """A fixture row for a host rule, or a path rule when a prefix is given."""
    pool = {} if pool is None else {"pool": [pool]}  # none: the rule redirects or responds
    if prefix is None:
        return {"model": "routing.hostrule", "fields": {"host": host, **pool, **fields}}
    return {
        "model": "routing.pathrule",
        "fields": {"host": host, "prefix": prefix, **pool, **fields},
    }


def on_postgresql():
    """Whether the tests run against PostgreSQL (.ci/run's second pass)."""
    return os.environ.get("DATABASE_URL", "").startswith("postgres")


DATABASE_FIXTURES = {"db", "transactional_db", "django_db_reset_sequences", "django_db_setup"}


def uses_the_configured_database(item):
    """Whether a test uses DATABASE_URL's database.

    That is Django's test database, or one of its own that
    database_of_its_own makes on that server (its module says so with the
    database_url marker). The other tests run balancers on SQLite files of
    their own whatever DATABASE_URL says.
    """
    return (
        item.get_closest_marker("django_db") is not None
        or item.get_closest_marker("database_url") is not None
        or not DATABASE_FIXTURES.isdisjoint(item.fixturenames)
    )


def pytest_collection_modifyitems(config, items):
    # On PostgreSQL, the tests that would run exactly as they did on SQLite
    # are not run twice.
    if not on_postgresql():
        return
    deselected = [item for item in items if not uses_the_configured_database(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if uses_the_configured_database(item)]


RUNNING = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    RUNNING["test"] = item


@contextlib.contextmanager
def database_of_its_own(home):
    """Yield the URL of a new database: PostgreSQL's under DATABASE_URL=postgres://...

    (as .ci/run's second pass runs the suite), dropped afterwards; else a
    SQLite file in home. Its test is marked database_url, so that the
    second pass runs it.
    """
    test = RUNNING.get("test")
    assert test is not None and test.get_closest_marker("database_url"), (
        "a test using database_of_its_own is marked @pytest.mark.database_url"
    )
    if not on_postgresql():
        yield f"sqlite:///{home / 'own.sqlite3'}"
        return
    url = os.environ["DATABASE_URL"]
    name = f"lb_test_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


class PreparedOnce:
    """What every test balancer starts from, made once per test run.

    A migrated SQLite database (each balancer gets a copy, as `migrate`
    would leave it) and the admin's collected static files (read only, so
    shared). Both take seconds to make, and dozens of balancers need them.
    """

    def __init__(self):
        self.home = Path(tempfile.mkdtemp(prefix="lb-tests-"))
        self._database = None
        self._static = None

    def environment(self, **settings):
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "lbsite.settings",
            "SECRET_KEY": secrets.token_urlsafe(50),
            **settings,
        }

    def migrated_copy(self, destination):
        """Make destination a migrated SQLite database with no routes."""
        if self._database is None:
            template = self.home / "migrated.sqlite3"
            manage(self.environment(DATABASE_URL=f"sqlite:///{template}"), "migrate", "--noinput")
            self._database = template
        # The backup API copies what the write-ahead log holds too.
        with (
            contextlib.closing(sqlite3.connect(self._database)) as source,
            contextlib.closing(sqlite3.connect(destination)) as copy,
        ):
            source.backup(copy)

    def static_root(self):
        if self._static is None:
            static = self.home / "static"
            manage(self.environment(STATIC_ROOT=str(static)), "collectstatic", "--noinput")
            self._static = static
        return str(self._static)

    def remove(self):
        shutil.rmtree(self.home, ignore_errors=True)


PREPARED = PreparedOnce()


@pytest.fixture(scope="session", autouse=True)
def _remove_what_was_prepared_once():
    yield
    PREPARED.remove()


def balancer_environment(home, rows, **settings):
    """Return the environment of a balancer whose migrated database holds these rows.

    Its database is a SQLite file in home unless settings name another
    (DATABASE_URL); the admin's static files are the run's shared ones
    unless settings name a STATIC_ROOT.
    """
    env = PREPARED.environment(
        **{
            "DATABASE_URL": f"sqlite:///{home / 'db.sqlite3'}",
            # Each access-log line as its request ends, for the tests that read
            # them; test_observe.py runs the default, batched writing too.
            "ACCESS_LOG_FLUSH": "0",
            **settings,
        }
    )
    sqlite_file = Path(env["DATABASE_URL"].removeprefix("sqlite:///"))
    if env["DATABASE_URL"].startswith("sqlite:///") and not sqlite_file.exists():
        PREPARED.migrated_copy(sqlite_file)
    else:
        manage(env, "migrate", "--noinput")
    if "STATIC_ROOT" in settings:
        manage(env, "collectstatic", "--noinput")
    else:
        env["STATIC_ROOT"] = PREPARED.static_root()
    fixture = home / "routes.json"
    fixture.write_text(json.dumps(rows))
    manage(env, "loaddata", str(fixture))
    return env


def demo_fixture(demo_backends):
    """The fruit_routes fixture, with its backends moved to the test servers."""
    rows = json.loads((PROJECT_ROOT / "routing/fixtures/fruit_routes.json").read_text())
    urls = iter(demo_backends["mango"] + demo_backends["apple"])
    for row in rows:
        if row["model"] == "routing.backend":
            row["fields"]["url"] = next(urls)
    return rows


class Balancer:
    """`gunicorn lbsite.wsgi` on free loopback ports, its log kept in a file.

    url is the traffic listener (gunicorn's bind), admin_url the admin
    listener (ADMIN_BIND), each on a socket of its own.
    """

    def __init__(self, env, workers=2, log_path=None, scheme="http", verify=True):
        self.sock = listening_socket()
        self.admin_sock = listening_socket()
        self.url = url_of(self.sock).replace("http", scheme, 1)
        self.admin_url = url_of(self.admin_sock).replace("http", scheme, 1)
        self.log_path = log_path
        log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
        # Threads and timeouts come from the project's gunicorn.conf.py, as in production.
        self.process = start_gunicorn(
            "lbsite.wsgi",
            self.sock,
            {**env, "ADMIN_BIND": f"fd://{self.admin_sock.fileno()}"},
            workers=workers,
            threads=None,
            log=log,
            extra_sockets=(self.admin_sock,),
        )
        try:
            wait_until_serving(self.admin_url + "/healthz", self.process, verify=verify)
        except BaseException:
            self.stop()  # no test will: it never got the balancer
            raise

    def log(self):
        return self.log_path.read_text() if self.log_path else ""

    def worker_pids(self):
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def stop(self):
        stop(self.process)
        self.sock.close()
        self.admin_sock.close()


def stop(process):
    """End a server process this test run started."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class DemoBackend:
    """A demo backend (backend_app) under gunicorn on a free loopback port."""

    def __init__(self, app_name):
        self.app_name = app_name
        self.sock = listening_socket()
        self.url = url_of(self.sock)
        self.process = start_gunicorn("backend_app.wsgi", self.sock, {"APP": app_name})

    def stop(self):
        stop(self.process)
        self.sock.close()


@pytest.fixture(scope="session")
def demo_backends():
    """Two mango and two apple demo backends for the whole run: {name: [url, url]}."""
    servers = [DemoBackend(name) for name in ("mango", "mango", "apple", "apple")]
    try:
        for server in servers:
            wait_until_serving(server.url + "/healthcheck", server.process)
        urls = {}
        for server in servers:
            urls.setdefault(server.app_name, []).append(server.url)
        yield urls
    finally:
        for server in servers:
            server.stop()


class RedisServer:
    """Debian's redis-server on a free loopback port, nothing saved to disk."""

    def __init__(self, home):
        self.home = home
        with socket.socket() as probe:  # a free port; redis-server binds it by number
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.home)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self):
        stop(self.process)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A Redis of the tests' own (stopped by its PID afterwards)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def closed_port_url():
    """A loopback URL on which nothing listens: connections are refused."""
    # Bound but not listening: the port stays ours, and connecting is refused.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield url_of(sock)
    sock.close()


@pytest.fixture
def silent_backend_url():
    """A loopback URL that accepts connections and never answers."""
    sock = listening_socket()
    yield url_of(sock)
    sock.close()


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def wsgi_backend():
    """Serve a WSGI callable written in the test on a free loopback port; return its URL."""
    servers = []

    def serve(app):
        server = make_server("127.0.0.1", 0, app, ThreadingWSGIServer, handler_class=QuietHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


class RawBackend:
    """A loopback server that answers each connection as the test says, byte by byte.

    `answer` is the bytes to send after the request head, or a function that
    gets the connection and what was read of the request so far (the head,
    perhaps some body) and does as it likes (reset it, stall, ...).
    """

    def __init__(self, answer):
        self.sock = listening_socket()
        self.url = url_of(self.sock)
        self.answer = answer if callable(answer) else lambda conn, _read: conn.sendall(answer)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                self.answer(conn, read_request_head(conn))

    def close(self):
        self.sock.close()


def reset(conn):
    """Close a connection with a TCP reset instead of an orderly FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


@pytest.fixture
def raw_backend():
    """Start RawBackends for one test; return a function that gives each one's URL."""
    servers = []

    def serve(answer):
        servers.append(RawBackend(answer))
        return servers[-1].url

    yield serve
    for server in servers:
        server.close()


def read_request_head(conn):
    """Read from a connection until the end of the request head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def retarget_fruit_backends(demo_backends):
    """Point the demo fixture's backends at the test servers, through the ORM."""
    for backend in Backend.objects.all():
        port = int(backend.url.rsplit(":", 1)[1])
        name, index = FRUIT_PORTS[port]
        backend.url = demo_backends[name][index]
        backend.save()


@pytest.fixture
def fruit_routes(db, demo_backends):
    """The demo routes, loaded with loaddata, served by the test backends."""
    call_command("loaddata", "fruit_routes", verbosity=0)
    retarget_fruit_backends(demo_backends)


@pytest.fixture
def make_route(db):
    """Create a pool with the given backend URLs and a rule for it; return the pool."""

    def make(backend_urls, host="", prefix=None, **options):
        pool = Pool.objects.create(name=f"pool{Pool.objects.count() + 1}")
        for url in backend_urls:
            Backend.objects.create(pool=pool, url=url)
        if prefix is None:
            HostRule.objects.create(host=host, pool=pool, **options)
        else:
            PathRule.objects.create(host=host, prefix=prefix, pool=pool, **options)
        return pool

    return make


@pytest.fixture(autouse=True)
def fresh_route_table():
    """Start every test with no cached table: a rolled-back test sends no signal.

    Nor with another test's passive failures: a rolled-back database hands
    out the same pool and backend ids again, and the balancer's per-process
    state is keyed by them.
    """
    clear_route_table()
    balancer._states.clear()
    yield
    clear_route_table()
    balancer._states.clear()


class FlaskLikeClient(Client):
    """Django's test client with two habits of Flask's (it sends Host: localhost,
    and a streamed response's body is read into .content) and one of gunicorn's:
    the raw request target is in RAW_URI, as the client wrote it."""

    def __init__(self, **kwargs):
        super().__init__(headers={"host": "localhost"}, **kwargs)

    def generic(self, method, path, *args, **extra):
        query = extra.get("QUERY_STRING")
        extra.setdefault("RAW_URI", f"{path}?{query}" if query else path)
        return super().generic(method, path, *args, **extra)

    def request(self, **request):
        response = super().request(**request)
        if response.streaming:
            # Reading to the end closes the response, as the test client does it.
            body = b"".join(response.streaming_content)
            cls = type(response)
            response.__class__ = type(f"Read{cls.__name__}", (cls,), {"content": body})
        return response


@pytest.fixture
def client():
    """The test client the tutorial's tests expect (see FlaskLikeClient): the traffic listener."""
    return FlaskLikeClient()


class AdminListenerClient(Client):
    """Django's test client on the admin listener: its port, Host localhost."""

    def __init__(self, **kwargs):
        super().__init__(headers={"host": "localhost"}, SERVER_NAME="127.0.0.1", **kwargs)

    def generic(self, *args, **extra):
        # generic() sets SERVER_PORT itself, over the client's defaults.
        extra.setdefault("SERVER_PORT", admin_port())
        return super().generic(*args, **extra)


@pytest.fixture
def admin_site():
    """A test client for the admin listener (ADMIN_BIND), not logged in."""
    return AdminListenerClient()


@pytest.fixture
def admin_client(admin_site, admin_user):
    """The admin listener's test client, logged in as a superuser (pytest-django's name)."""
    admin_site.force_login(admin_user)
    return admin_site


SAMPLE_RE = re.compile(r"(?P<name>[a-z_]+)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric(text, name, **labels):
    """Return the value of one sample in Prometheus text, 0 if absent."""
    for line in text.splitlines():
        sample = SAMPLE_RE.match(line)
        if (
            sample
            and sample["name"] == name
            and dict(LABEL_RE.findall(sample["labels"] or "")) == labels
        ):
            return float(sample["value"])
    return 0.0


def self_signed_certificate(home, name=""):
    """Make a certificate for 127.0.0.1 (and localhost) with openssl; return (cert, key) paths.

    Its files are home/NAMEcert.pem and home/NAMEkey.pem.
    """
    cert, key = home / f"{name}cert.pem", home / f"{name}key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def exchange(base_url, request_bytes, timeout=10):
    """Send raw bytes to a server on a new connection; return all that comes back."""
    host, port = base_url.split("://", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(request_bytes)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer
