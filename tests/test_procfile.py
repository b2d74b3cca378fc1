"""`make run`'s last step: honcho runs the Procfile, and Ctrl-C stops every process."""

import os
import re
import secrets
import signal
import subprocess
import sys
import time

import pytest
import requests

from .conftest import PROJECT_ROOT, manage

PORTS = {
    "mango1": 8081,
    "mango2": 8082,
    "apple1": 9081,
    "apple2": 9082,
    "balancer": 8000,
}
HONCHO = os.path.join(os.path.dirname(sys.executable), "honcho")
BOUND = 30
PID_RE = re.compile(r"started \(pid=(\d+)\)|Listening at: \S+ \((\d+)\)|worker with pid: (\d+)")


def answers(port, host="localhost"):
    try:
        return requests.get(f"http://127.0.0.1:{port}/", headers={"Host": host}, timeout=2)
    except requests.ConnectionError:
        return None


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def run_env(tmp_path):
    busy = [name for name, port in PORTS.items() if answers(port) is not None]
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


def test_procfile_runs_demo_and_ctrl_c_stops_it_all(run_env, tmp_path):
    log = open(tmp_path / "honcho.log", "w+")  # noqa: SIM115 (read after the run)
    honcho = subprocess.Popen(
        [HONCHO, "start"],
        cwd=PROJECT_ROOT,
        env=run_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + BOUND
        while not all(answers(port) is not None for port in PORTS.values()):
            assert honcho.poll() is None, "honcho exited early"
            assert time.monotonic() < deadline, "not every process came up"
            time.sleep(0.2)
        mango = answers(8000, host="www.mango.com")
        assert mango.text == "This is the mango application."
        assert answers(8000, host="www.apple.com").text == "This is the apple application."
        # Ctrl-C in a terminal sends SIGINT to the whole foreground group.
        os.killpg(honcho.pid, signal.SIGINT)
        honcho.wait(timeout=BOUND)
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
    log.seek(0)
    # Shells, gunicorn masters and their workers: each must be gone.
    pids = {int(pid) for found in PID_RE.findall(log.read()) for pid in found if pid}
    assert len(pids) >= 3 * len(PORTS)
    deadline = time.monotonic() + BOUND
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "a process outlived Ctrl-C"
        time.sleep(0.1)
    assert all(answers(port) is None for port in PORTS.values())
