"""Automatic HTTPS against a real ACME CA (Pebble) under gunicorn.

Two balancer masters share one database: the plain one (traffic, where the
CA validates HTTP-01 challenges and force_https redirects, and the admin)
and the HTTPS one (TLS=auto, ADMIN_BIND=off), which chooses each
connection's certificate by SNI. Clients reach the hosts with curl's
--resolve, trusting only the CA's root.
"""

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from cryptography import x509

from .acme_ca import Pebble
from .conftest import (
    PROJECT_ROOT,
    Balancer,
    balancer_environment,
    listening_socket,
    manage_output,
    pool_rows,
    rule_row,
    start_gunicorn,
    stop,
    url_of,
    wait_until_serving,
)

# The HTTPS listener is first polled without checking its certificate.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
BOUND = 60  # seconds; a busy machine's CA takes a few of them per order
# Seconds a stored certificate may take to be served (the workers poll every 0.25 s).
PICKUP = 5


@pytest.fixture(scope="module")
def https(tmp_path_factory, demo_backends):
    """Pebble, the plain balancer on the port it validates, and the HTTPS balancer."""
    home = tmp_path_factory.mktemp("acme")
    tls_sock = listening_socket()
    tls_port = tls_sock.getsockname()[1]
    rows = [
        *pool_rows("mango", demo_backends["mango"]),
        rule_row("mango", host="www.mango.test", tls="auto", force_https=True),
        rule_row("mango", host="unreachable.test", tls="auto"),
        rule_row("mango", host="plain.test"),
    ]
    env = balancer_environment(home, rows, HTTPS_PORT=str(tls_port))
    plain = Balancer(env, workers=1, log_path=home / "plain.log")
    pebble = tls_master = None
    try:
        pebble = Pebble(home, http_port=plain.sock.getsockname()[1])
        # The CA finds this host at an address where nothing listens.
        pebble.resolve("unreachable.test", "127.0.0.9")
        env.update(
            ACME_DIRECTORY_URL=pebble.directory_url,
            ACME_CA_BUNDLE=str(pebble.cert),
            ACME_EMAIL="ops@mango.test",
        )
        tls_log = open(home / "tls.log", "wb")  # noqa: SIM115
        tls_master = start_gunicorn(
            "lbsite.wsgi",
            tls_sock,
            {**env, "TLS": "auto", "ADMIN_BIND": "off"},
            workers=2,
            threads=None,
            log=tls_log,
        )
        tls_url = url_of(tls_sock).replace("http", "https", 1)
        wait_until_serving(tls_url + "/", tls_master, verify=False)
        yield _Setup(env, home, plain, pebble, tls_port, tls_master)
    finally:
        if tls_master is not None:
            stop(tls_master)
        if pebble is not None:
            pebble.stop()
        plain.stop()
        tls_sock.close()


class _Setup:
    def __init__(self, env, home, plain, pebble, tls_port, tls_master):
        self.env, self.home, self.plain, self.pebble, self.tls_port = (
            env,
            home,
            plain,
            pebble,
            tls_port,
        )
        self.tls_master = tls_master
        self.first_round = None

    def certificates(self, *args, **env):
        return manage_output({**self.env, **env}, "certificates", *args)

    def curl(self, host, path="/echo", *options):
        """Fetch https://HOST:PORT/path from the HTTPS master, trusting only the CA's root."""
        result = subprocess.run(
            [
                "curl",
                "--silent",
                "--show-error",
                "--max-time",
                "20",
                "--resolve",
                f"{host}:{self.tls_port}:127.0.0.1",
                "--cacert",
                str(self.pebble.root),
                "--write-out",
                "\n%{http_code} %{http_version}",
                *options,
                f"https://{host}:{self.tls_port}{path}",
            ],
            capture_output=True,
            text=True,
        )
        return result

    def served_certificate(self, host, verify=True):
        """Return the certificate the HTTPS master shows for a name (verified against the root)."""
        context = ssl.create_default_context(cafile=str(self.pebble.root))
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            with (
                socket.create_connection(("127.0.0.1", self.tls_port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname=host) as conn,
            ):
                return x509.load_der_x509_certificate(conn.getpeercert(binary_form=True))
        except ssl.SSLError as error:
            log = (self.home / "tls.log").read_text()[-3000:]
            raise AssertionError(f"{host}: {error}\nThe HTTPS master's log ends:\n{log}") from None


@pytest.fixture(scope="module")
def issued(https):
    """The first round of `manage.py certificates`: one host issued, one failed.

    The running HTTPS master serves the issued certificate within seconds.
    """
    https.first_round = https.certificates()
    deadline = time.monotonic() + PICKUP
    while https.curl("www.mango.test", "/").returncode != 0:
        assert time.monotonic() < deadline, "the issued certificate is not served"
        time.sleep(0.1)
    return https


def test_a_round_issues_what_it_can_and_records_what_failed(issued):
    lines = issued.first_round.splitlines()
    assert any(line.split() == ["www.mango.test", "issued"] for line in lines), lines
    assert any(
        line.startswith("unreachable.test") and "FAILED" in line and "127.0.0.9" in line
        for line in lines
    ), lines
    assert not any(line.startswith("plain.test") for line in lines)
    assert lines[-1] == "2 certificates due, 1 failed."
    # Keys are stored, never printed or logged.
    for text in (issued.first_round, issued.plain.log(), (issued.home / "tls.log").read_text()):
        assert "PRIVATE KEY" not in text


def test_the_failure_is_stored_with_a_back_off_and_not_retried_before_it(issued):
    printed = (
        manage_output(
            issued.env,
            "shell",
            "-c",
            "import json; from routing.models import Certificate as C; "
            "c = C.objects.get(host='unreachable.test'); "
            "print(json.dumps([c.failures, c.last_error, c.chain_pem, "
            "c.next_attempt.isoformat()]))",
        )
        .strip()
        .splitlines()[-1]
    )
    stored = json.loads(printed)
    failures, last_error, chain, next_attempt = stored
    assert failures == 1 and "127.0.0.9" in last_error and chain == ""
    assert next_attempt > time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() + 60))
    # Within the back-off, nothing is due.
    assert issued.certificates().splitlines()[-1] == "0 certificates due, 0 failed."


def test_https_serves_the_issued_chain_and_the_backend_sees_https(issued):
    result = issued.curl("www.mango.test", "/echo", "--http2")
    assert result.returncode == 0, result.stderr  # the chain verified against the CA's root
    body, _, status = result.stdout.rpartition("\n")
    assert status == "200 2"  # HTTP/2 by ALPN, as with a certificate file
    headers = {name.lower(): value for name, value in json.loads(body)["headers"]}
    assert headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-port"] == str(issued.tls_port)

    served = issued.served_certificate("www.mango.test")
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.value.get_values_for_type(x509.DNSName) == ["www.mango.test"]
    assert "Pebble" in served.issuer.rfc4514_string()


def listening_ports(pid):
    """Return the TCP ports a process listens on (from /proc: its sockets in state LISTEN)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_the_https_master_listens_on_its_bind_alone_and_serves_no_admin(issued):
    assert listening_ports(issued.tls_master.pid) == {issued.tls_port}
    assert len(listening_ports(issued.plain.process.pid)) == 2  # traffic and admin
    # /admin/ on the HTTPS listener is traffic like any other path: the backend answers.
    result = issued.curl("www.mango.test", "/admin/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("This is the mango application.")


def test_http11_over_tls_works_too(issued):
    result = issued.curl("www.mango.test", "/", "--http1.1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("200 1.1")
    assert result.stdout.startswith("This is the mango application.")


def test_force_https_redirects_plain_http_to_the_https_port(issued):
    answer = requests.get(
        issued.plain.url + "/a/b?x=1&y",
        headers={"Host": "WWW.Mango.test:8000"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 308
    assert answer.headers["Location"] == f"https://www.mango.test:{issued.tls_port}/a/b?x=1&y"
    # A host without force_https is proxied over plain HTTP.
    plain = requests.get(issued.plain.url + "/", headers={"Host": "plain.test"}, timeout=10)
    assert plain.status_code == 200 and plain.text == "This is the mango application."


def test_a_name_without_certificate_gets_the_self_signed_fallback(issued):
    served = issued.served_certificate("plain.test", verify=False)
    assert served.issuer == served.subject
    assert "django-lb fallback" in served.subject.rfc4514_string()
    # A client that checks gets a verification failure, not another host's certificate.
    result = issued.curl("plain.test", "/")
    assert result.returncode == 60, result  # curl: peer certificate cannot be authenticated


def test_a_server_name_that_is_not_ascii_fails_its_handshake_in_one_log_line(issued):
    # Python refuses such a name before the SNI callback sees it; openssl sends it as it is.
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{issued.tls_port}"]
        + ["-servername", "\u00e9.mango.test"],
        input="",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert "alert internal error" in result.stdout + result.stderr
    deadline = time.monotonic() + BOUND
    while "server name that is not ASCII" not in (log := (issued.home / "tls.log").read_text()):
        assert time.monotonic() < deadline, log[-2000:]
        time.sleep(0.2)
    assert "Traceback" not in log and "UnicodeDecodeError" not in log
    assert issued.curl("www.mango.test", "/").returncode == 0  # the worker serves on


def test_the_routes_file_keeps_tls_and_force_https(issued):
    exported = manage_output(issued.env, "export_routes")
    assert "tls: auto" in exported and "force_https: true" in exported
    assert "BEGIN" not in exported  # certificates are state, never in the routes file


def test_a_host_added_later_is_served_with_its_own_certificate_without_a_restart(issued):
    table = yaml.safe_load(manage_output(issued.env, "export_routes"))
    table["hosts"].append({"host": "www.kiwi.test", "pool": "mango", "tls": "auto"})
    routes = issued.home / "routes.yaml"
    routes.write_text(yaml.safe_dump(table))
    manage_output(issued.env, "import_routes", str(routes))
    loop = subprocess.Popen(
        [sys.executable, "manage.py", "certificates", "--loop", "--interval", "0.5"],
        cwd=PROJECT_ROOT,
        env=issued.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + BOUND
        while True:
            result = issued.curl("www.kiwi.test", "/")
            if result.returncode == 0:
                break
            assert time.monotonic() < deadline, result.stderr
            time.sleep(0.5)
    finally:
        stop(loop)
    assert result.stdout.startswith("This is the mango application.")
    served = issued.served_certificate("www.kiwi.test")
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.value.get_values_for_type(x509.DNSName) == ["www.kiwi.test"]


def test_a_certificate_near_expiry_is_renewed_and_served_without_a_restart(issued):
    before = issued.served_certificate("www.mango.test").serial_number
    # Nothing is near expiry yet...
    assert "www.mango.test" not in issued.certificates()
    # ...until expiry is within the renewal window.
    # The account is the same one; its new contact address is told to the CA.
    renewed = issued.certificates(ACME_RENEW_DAYS="100000", ACME_EMAIL="certs@mango.test")
    assert any(line.split() == ["www.mango.test", "issued"] for line in renewed.splitlines()), (
        renewed
    )
    accounts = manage_output(
        issued.env,
        "shell",
        "-c",
        "from routing.models import AcmeAccount as A; print(list(A.objects.values_list('email')))",
    )
    assert accounts.strip().splitlines()[-1] == "[('certs@mango.test',)]"
    # Stored, it is served within seconds by the running workers.
    deadline = time.monotonic() + PICKUP
    while issued.served_certificate("www.mango.test").serial_number == before:
        assert time.monotonic() < deadline
        time.sleep(0.2)
