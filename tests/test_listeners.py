"""ADMIN_BIND: which addresses the admin listener may take, and its port."""

import pytest

from lbsite.listeners import ADMIN_PORT_VARIABLE, admin_bind, admin_port


@pytest.mark.parametrize(
    ("value", "bind", "port"),
    [
        (None, "127.0.0.1:8001", "8001"),  # the default
        ("127.0.0.1:9001", "127.0.0.1:9001", "9001"),
        ("0.0.0.0:8001", "0.0.0.0:8001", "8001"),
        ("[::1]:8001", "[::1]:8001", "8001"),
        ("localhost:8001", "localhost:8001", "8001"),
        ("off", None, None),
        ("OFF", None, None),
    ],
)
def test_admin_bind_and_its_port(value, bind, port):
    environ = {} if value is None else {"ADMIN_BIND": value}
    assert admin_bind(environ) == bind
    assert admin_port(environ) == port


@pytest.mark.parametrize(
    "value",
    [
        "8001",  # gunicorn would read a host named 8001, on port 8000
        ":8001",  # no host: every interface, by accident
        "unix:/run/lb-admin.sock",  # gunicorn takes SERVER_PORT from the Host header there
        "127.0.0.1",
        "127.0.0.1:99999",
        "fd://x",
    ],
)
def test_admin_bind_refuses_what_cannot_be_told_apart_by_port(value):
    with pytest.raises(ValueError, match="ADMIN_BIND"):
        admin_bind({"ADMIN_BIND": value})


def test_gunicorn_tells_its_workers_the_port_it_found():
    environ = {"ADMIN_BIND": "127.0.0.1:0", ADMIN_PORT_VARIABLE: "40123"}
    assert admin_port(environ) == "40123"
    assert admin_port({"ADMIN_BIND": "fd://5", ADMIN_PORT_VARIABLE: "40124"}) == "40124"
    with pytest.raises(ValueError, match="under gunicorn only"):
        admin_port({"ADMIN_BIND": "fd://5"})
