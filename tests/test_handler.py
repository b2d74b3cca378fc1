"""The WSGI application of `gunicorn lbsite.wsgi`, called the way a WSGI server calls it."""

import io
import sys

import pytest
from django.db import connections

from lbsite.wsgi import application
from routing.balancer import pool_state
from routing.models import Pool
from routing.observe import render_metrics
from routing.table import get_route_table

from .conftest import metric


def environ(path, host="localhost", port="8000"):
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "RAW_URI": path,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": port,
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": host,
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
    }


def call(path, host="localhost", port="8000"):
    """Call the application; return (status, headers, body) once it is closed.

    Port 8000 is the traffic listener's, 8001 the admin listener's (ADMIN_BIND).
    """
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen.update(status=status, headers=headers)

    body = application(environ(path, host, port), start_response)
    try:
        return seen["status"], seen["headers"], b"".join(body)
    finally:
        body.close()


def nothing_in_flight():
    gauge = metric(render_metrics(get_route_table)[0].decode(), "lb_requests_in_flight")
    backends = [n for pool in Pool.objects.all() for n in pool_state(pool.id).in_flight.values()]
    return gauge == 0 and not any(backends)


@pytest.mark.django_db
@pytest.mark.usefixtures("fruit_routes")
def test_each_listener_answers_its_own_requests():
    status, headers, body = call("/mango")
    assert (status, body) == ("200 OK", b"This is the mango application.")
    assert "X-Frame-Options" not in dict(headers)
    status, _headers, body = call("/admin/login/")
    assert (status, body) == ("404 Not Found", b"Not Found")  # routed: no rule for it
    status, headers, _body = call("/admin/login/", port="8001")
    assert status == "200 OK"
    assert dict(headers)["X-Frame-Options"] == "DENY"
    status, _headers, body = call("/nowhere")
    assert (status, body) == ("404 Not Found", b"Not Found")
    status, _headers, _body = call("/mango", port="8001")
    assert status == "404 Not Found"  # the admin listener proxies nothing


@pytest.mark.django_db
@pytest.mark.usefixtures("fruit_routes")
def test_a_refused_status_line_still_releases_the_backend_and_the_counts():
    def refusing(status, headers, exc_info=None):
        raise ValueError("the server refused the headers")

    with pytest.raises(ValueError):
        application(environ("/mango"), refusing)
    assert nothing_in_flight()
    # The connection went back neither half read nor stuck: the next request is served.
    assert call("/mango")[2] == b"This is the mango application."


class CloseRecorder:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1


@pytest.fixture
def closes(monkeypatch):
    """Count the closes of database connections (an in-memory database ignores them)."""
    recorder = CloseRecorder()
    monkeypatch.setattr(type(connections["default"]), "close", recorder)
    return recorder


@pytest.mark.django_db(transaction=True)
def test_a_request_that_builds_the_table_closes_its_connection(closes):
    get_route_table()
    get_route_table()  # warm: no database at all
    assert closes.calls == 1


@pytest.mark.django_db
def test_a_connection_inside_a_transaction_is_left_alone(closes):
    get_route_table()
    assert closes.calls == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("admin_user")  # the connection is open
def test_an_admin_request_closes_its_connection(closes):
    status, _headers, _body = call("/admin/login/", port="8001")
    assert status == "200 OK"
    assert closes.calls == 1
