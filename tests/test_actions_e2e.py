"""Rule actions and the unreachable pool's 503 against the balancer under gunicorn.

Clients at other addresses are sockets bound to 127.0.0.2 (any 127/8
address is the loopback on Linux) or a trusted proxy's X-Forwarded-For.
"""

import http.client
import json
import socket
import time

import pytest

from .conftest import (
    Balancer,
    RawBackend,
    balancer_environment,
    manage,
    pool_rows,
    reset,
    rule_row,
    url_of,
)

BOUND = 5


@pytest.fixture(scope="module")
def balancer(tmp_path_factory, demo_backends):
    resetting = RawBackend(lambda conn, _read: reset(conn))
    # Bound but not listening: the port stays ours, and connecting is refused.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_url = url_of(closed)
    rows = [
        *pool_rows("mango", demo_backends["mango"]),
        rule_row(
            "mango",
            host="www.mango.com",
            request_headers={"set": {"MyCustomHeader": "Test"}, "remove": ["X-Debug"]},
            query={"set": {"MyCustomParam": "Test"}, "remove": ["RemoveMe"]},
            rewrite=[{"pattern": r"^/v1(/|$)", "replacement": r"/echo/v2\1"}],
            response_headers={"set": {"X-Frame-Options": "DENY"}},
            firewall={"deny": ["127.0.0.2"], "deny_paths": ["/private"]},
        ),
        rule_row("mango", host="allow.test", firewall={"allow": ["127.0.0.2/32"]}),
        *pool_rows("down", [closed_url], max_attempts=2),
        rule_row("down", host="www.orange.com", response_headers={"set": {"X-Rule": "orange"}}),
        *pool_rows("resetting", [resetting.url]),
        rule_row("resetting", host="reset.test"),
    ]
    home = tmp_path_factory.mktemp("actions")
    env = balancer_environment(home, rows, TRUSTED_PROXIES="127.0.0.3")
    server = Balancer(env, workers=2, log_path=home / "balancer.log")
    server.env = env
    yield server
    server.stop()
    resetting.close()
    closed.close()


def get(balancer, path, host, source="127.0.0.1", headers=None):
    """GET through the balancer from a socket bound to the source address."""
    address, port = balancer.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(
        address, int(port), timeout=BOUND, source_address=(source, 0)
    )
    try:
        connection.request("GET", path, headers={"Host": host, **(headers or {})})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_the_backend_gets_the_rules_headers_query_and_path(balancer):
    status, headers, body = get(
        balancer, "/v1/x?RemoveMe=Remove&keep=%7e", "www.mango.com", headers={"X-Debug": "1"}
    )
    assert status == 200, body
    seen = json.loads(body)
    assert (seen["path"], seen["query"]) == ("/echo/v2/x", "keep=%7e&MyCustomParam=Test")
    names = {name.lower(): value for name, value in seen["headers"]}
    assert names["mycustomheader"] == "Test"
    assert "x-debug" not in names
    assert headers["X-Frame-Options"] == "DENY"


def test_a_denied_client_address_gets_403(balancer):
    assert get(balancer, "/echo", "www.mango.com")[0] == 200
    status, headers, body = get(balancer, "/echo", "www.mango.com", source="127.0.0.2")
    assert (status, body, headers["X-Frame-Options"]) == (403, b"Forbidden", "DENY")
    assert 'cause="firewall: client 127.0.0.2 denied"' in wait_for_log(balancer, "127.0.0.2")


def test_an_allow_list_refuses_every_other_client(balancer):
    assert get(balancer, "/echo", "allow.test", source="127.0.0.2")[0] == 200
    assert get(balancer, "/echo", "allow.test")[0:3:2] == (403, b"Forbidden")


def test_a_trusted_proxy_reports_the_client_the_firewall_judges(balancer):
    forwarded = {"X-Forwarded-For": "127.0.0.2"}
    assert get(balancer, "/echo", "www.mango.com", "127.0.0.3", forwarded)[0] == 403
    # The same header from a peer that is no trusted proxy is not believed.
    assert get(balancer, "/echo", "www.mango.com", "127.0.0.4", forwarded)[0] == 200


@pytest.mark.parametrize(
    "path", ["/private", "/private/x", "/%70rivate", "/x/../private", "/x/%2E%2E/private?q"]
)
def test_denied_paths_are_denied_however_they_are_spelled(balancer, path):
    assert get(balancer, path, "www.mango.com")[0:3:2] == (403, b"Forbidden")


def test_a_path_that_only_starts_like_a_denied_one_passes(balancer):
    assert get(balancer, "/privateer", "www.mango.com")[0] == 200


def test_a_pool_that_cannot_be_connected_to_answers_503(balancer):
    status, headers, body = get(balancer, "/", "www.orange.com")
    assert (status, body) == (503, b"No backend servers available.")
    assert headers["X-Rule"] == "orange"


def test_a_reset_after_the_request_was_sent_stays_502(balancer):
    status, _headers, body = get(balancer, "/", "reset.test")
    assert (status, body) == (502, b"Bad Gateway")


def test_an_unknown_host_is_404_without_any_rules_headers(balancer):
    status, headers, body = get(balancer, "/", "www.nothing.com")
    assert (status, body) == (404, b"Not Found")
    assert "X-Frame-Options" not in headers and "X-Rule" not in headers


def test_an_action_edited_goes_live_within_a_second(balancer):
    assert get(balancer, "/echo", "allow.test")[0] == 403
    script = (
        "from routing.models import HostRule; "
        "HostRule.objects.filter(host='allow.test').update(firewall={})"
    )
    manage(balancer.env, "shell", "-c", script)
    deadline = time.monotonic() + BOUND
    while get(balancer, "/echo", "allow.test")[0] != 200:
        assert time.monotonic() < deadline, "the edit never went live"
        time.sleep(0.1)


def wait_for_log(balancer, text):
    deadline = time.monotonic() + BOUND
    while text not in balancer.log():
        assert time.monotonic() < deadline, balancer.log()
        time.sleep(0.05)
    return balancer.log()
