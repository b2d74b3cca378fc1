"""TLS=auto as gunicorn.conf.py reads it: the setting, the fallback certificate, ALPN."""

import os
import stat
import subprocess
import sys

import pytest
from cryptography import x509

from lbsite import tls

from .conftest import PROJECT_ROOT, Balancer, balancer_environment, listening_socket


@pytest.mark.parametrize(
    ("value", "mode"), [(None, "off"), ("", "off"), ("off", "off"), (" AUTO ", "auto")]
)
def test_tls_is_off_or_auto(value, mode):
    assert tls.tls_mode({} if value is None else {"TLS": value}) == mode


def test_another_tls_value_is_refused():
    with pytest.raises(ValueError, match="TLS is off or auto"):
        tls.tls_mode({"TLS": "on"})


def test_the_fallback_is_self_signed_and_its_key_readable_by_this_user_only():
    certfile, keyfile = tls.fallback_certificate_files()
    certificate = x509.load_pem_x509_certificate(open(certfile, "rb").read())  # noqa: SIM115
    assert certificate.issuer == certificate.subject
    assert "django-lb fallback certificate" in certificate.subject.rfc4514_string()
    assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(keyfile)).st_mode) == 0o700


@pytest.mark.parametrize(
    ("protocols", "alpn"),
    [(["h2", "h1"], ["h2", "http/1.1"]), (["h1"], []), (["h1", "h2"], ["http/1.1", "h2"])],
)
def test_alpn_follows_gunicorns_http_protocols(protocols, alpn):
    assert tls.alpn_protocols(protocols) == alpn


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TLS": "yes"}, "TLS is off or auto"),
        ({"TLS": "auto", "TLS_CERTFILE": "/x.pem", "TLS_KEYFILE": "/x.key"}, "unset TLS_CERTFILE"),
    ],
)
def test_gunicorn_refuses_to_start_with_a_bad_tls_setting(env, message):
    sock = listening_socket()
    try:
        result = subprocess.run(
            [
                os.path.join(os.path.dirname(sys.executable), "gunicorn"),
                "lbsite.wsgi",
                "--bind",
                f"fd://{sock.fileno()}",
                "--check-config",
            ],
            cwd=PROJECT_ROOT,
            env={**os.environ, "ADMIN_BIND": "off", **env},
            pass_fds=(sock.fileno(),),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        sock.close()
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_a_masters_run_directories_go_when_it_stops(tmp_path):
    """The metrics files and the TLS fallback's are the run's: none is left behind."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = balancer_environment(tmp_path, [], TMPDIR=str(scratch), TLS="auto")
    server = Balancer(env, workers=1, scheme="https", verify=False)
    try:
        made = sorted(path.name.split("-")[1] for path in scratch.iterdir())
        assert made == ["metrics", "tls"]
    finally:
        server.stop()
    assert list(scratch.iterdir()) == []
