"""`make run`'s last step: honcho runs the Procfile, and Ctrl-C stops every process."""

import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from .conftest import PROJECT_ROOT, manage

PORTS = {
    "mango1": 8081,
    "mango2": 8082,
    "apple1": 9081,
    "apple2": 9082,
    "balancer": 8000,
    "balancer's admin": 8001,
}
# Where `make run`'s Redis listens (REDIS_URL of the balancer in the Procfile).
REDIS_PORT = 6380
HTTPS_PORT = 8443
HONCHO = os.path.join(os.path.dirname(sys.executable), "honcho")
# The HTTPS listener is first polled without checking its certificate.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
BOUND = 30


def answers(port, host="localhost", scheme="http"):
    try:
        return requests.get(
            f"{scheme}://127.0.0.1:{port}/", headers={"Host": host}, timeout=2, verify=False
        )
    except requests.ConnectionError:
        return None


def answers_https(host="localhost"):
    return answers(HTTPS_PORT, host, scheme="https")


@pytest.fixture
def run_env(tmp_path):
    busy = [name for name, port in PORTS.items() if answers(port) is not None]
    busy += ["balancer's HTTPS"] if answers_https() is not None else []
    assert not busy, f"ports of {busy} are in use (is `make run` running?)"
    env = {
        **os.environ,
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
        "DJANGO_SETTINGS_MODULE": "lbsite.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "SECRET_KEY": secrets.token_urlsafe(50),
    }
    manage(env, "migrate", "--noinput")
    manage(env, "load_demo_routes")
    return env


def test_procfile_runs_demo_and_ctrl_c_stops_it_all(run_env):
    honcho = subprocess.Popen(
        [HONCHO, "start"],
        cwd=PROJECT_ROOT,
        env=run_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + BOUND
        while not all(answers(port) is not None for port in PORTS.values()) or (
            answers_https() is None
        ):
            assert honcho.poll() is None, "honcho exited early"
            assert time.monotonic() < deadline, "not every process came up"
            time.sleep(0.2)
        mango = answers(8000, host="www.mango.com")
        assert mango.text == "This is the mango application."
        assert answers(8000, host="www.apple.com").text == "This is the apple application."
        # The HTTPS master: the same routes, each host's certificate by SNI (here the
        # self-signed fallback: the demo hosts have none), and no admin listener.
        assert answers_https("www.mango.com").text == "This is the mango application."
        admin = requests.get("http://127.0.0.1:8001/admin/login/", timeout=2)
        assert admin.status_code == 200 and 'id="login-form"' in admin.text
        started = processes_of(run_env)
        assert any(b"healthcheck" in cmdline for cmdline in started.values())
        # Redis beside the balancer, where its rate limits are counted.
        assert any(b"redis-server" in cmdline for cmdline in started.values())
        with socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=2) as redis:
            redis.sendall(b"PING\r\n")
            assert redis.recv(16).startswith(b"+PONG")
        assert any(b"certificates\0--loop" in cmdline for cmdline in started.values())
        # The health checker ran: the demo backends have been checked.
        deadline = time.monotonic() + BOUND
        while not checked_backends(run_env):
            assert time.monotonic() < deadline, "the health checker never checked"
            time.sleep(0.2)
        # Ctrl-C in a terminal sends SIGINT to the whole foreground group.
        os.killpg(honcho.pid, signal.SIGINT)
        honcho.wait(timeout=BOUND)
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
    # Shells, gunicorn masters and workers, the checker: each must be gone.
    deadline = time.monotonic() + BOUND
    while processes_of(run_env):
        assert time.monotonic() < deadline, f"outlived Ctrl-C: {processes_of(run_env)}"
        time.sleep(0.1)
    assert len(started) >= 3 * len(PORTS)
    assert all(answers(port) is None for port in PORTS.values())
    assert answers_https() is None


def processes_of(env):
    """Return {pid: command line} of every process running with this run's database."""
    marker = f"DATABASE_URL={env['DATABASE_URL']}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:  # gone meanwhile, or not ours to read
                continue
    return found


def checked_backends(env):
    """Count the backends the health checker has checked, read from the run's database."""
    database = env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        return connection.execute(
            "SELECT COUNT(*) FROM routing_backend WHERE last_checked IS NOT NULL"
        ).fetchone()[0]
