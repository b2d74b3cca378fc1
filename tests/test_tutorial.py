"""The tutorial's finished test suite, over HTTP: its loadbalancer.yaml behind gunicorn.

The tutorial's file (docs/loadbalancer.yaml) is imported unchanged with
import_routes. Its servers are localhost:8081 and so on, ports this machine
may well be using for something else: so, as a user moving the file to other
servers would, the test then exports the table, points each server's port at
a test backend (the orange ones at ports that refuse connections: its
servers are down), and imports the edited export. Everything but the ports
is the tutorial's file as it was read.

The tutorial's Flask backend is tests.backends:tutorial. Client addresses
come from a trusted proxy's X-Forwarded-For (TRUSTED_PROXIES=127.0.0.1), and
from a socket bound to 127.0.0.2.
"""

import http.client
import re
import socket

import pytest
import requests

from .conftest import (
    PROJECT_ROOT,
    Balancer,
    balancer_environment,
    listening_socket,
    manage_output,
    start_gunicorn,
    stop,
    url_of,
    wait_until_serving,
)

TUTORIAL_FILE = PROJECT_ROOT / "docs/loadbalancer.yaml"
# The tutorial's servers: the app each ran, or None for those that are down.
TUTORIAL_SERVERS = {
    8081: "mango",
    8082: "mango",
    9081: "apple",
    9082: "apple",
    8888: "apple",
    1111: None,
    1212: None,
}


@pytest.fixture(scope="module")
def tutorial_ports():
    """Start the tutorial's backends on free loopback ports; return {tutorial port: port}."""
    servers, closed = {}, {}
    for port, app in TUTORIAL_SERVERS.items():
        if app is None:
            # Bound but not listening: the port stays ours, and connecting is refused.
            closed[port] = socket.socket()
            closed[port].bind(("127.0.0.1", 0))
        else:
            sock = listening_socket()
            servers[port] = (sock, start_gunicorn("tests.backends:tutorial", sock, {"APP": app}))
    try:
        for sock, process in servers.values():
            wait_until_serving(url_of(sock) + "/healthcheck", process)
        yield {
            port: sock.getsockname()[1]
            for port, sock in [*closed.items(), *((p, s) for p, (s, _) in servers.items())]
        }
    finally:
        for _sock, process in servers.values():
            process.terminate()  # all at once: each takes its graceful timeout to go
        for sock, process in servers.values():
            stop(process)
            sock.close()
        for sock in closed.values():
            sock.close()


@pytest.fixture(scope="module")
def balancer(tmp_path_factory, tutorial_ports):
    """gunicorn lbsite.wsgi with the tutorial's routes, behind a trusted proxy on 127.0.0.1."""
    home = tmp_path_factory.mktemp("tutorial")
    env = balancer_environment(home, [], TRUSTED_PROXIES="127.0.0.1")
    manage_output(env, "import_routes", str(TUTORIAL_FILE))
    exported = manage_output(env, "export_routes")
    moved = re.sub(
        r"//localhost:(\d+)$",
        lambda found: f"//localhost:{tutorial_ports[int(found[1])]}",
        exported,
        flags=re.MULTILINE,
    )
    changes = manage_output(env, "import_routes", "-", input=moved)
    assert "~ host" not in changes and "path" not in changes  # only backends moved
    server = Balancer(env, workers=2, log_path=home / "balancer.log")
    yield server
    server.stop()


def get(balancer, host, path="/", **headers):
    return requests.get(
        balancer.url + path, headers={"Host": host, "Connection": "close", **headers}, timeout=10
    )


def mango_hosts(tutorial_ports):
    return {f"localhost:{tutorial_ports[port]}" for port in (8081, 8082)}


def test_host_rule_sets_the_header_and_the_query_and_sends_the_backends_own_host(
    balancer, tutorial_ports
):
    result = get(balancer, "www.mango.com", "/?RemoveMe=Remove")
    seen = result.json()
    assert seen["message"] == "This is the mango application."
    assert seen["custom_header"] == "Test"
    assert seen["host_header"] in mango_hosts(tutorial_ports)
    assert seen["server"] == f"http://{seen['host_header']}/"
    assert seen["custom_params"] == "Test"
    assert seen["query_strings"] == "MyCustomParam=Test"


def test_every_request_to_mango_gets_the_header_whichever_backend_answers(balancer, tutorial_ports):
    seen = [get(balancer, "www.mango.com").json() for _ in range(20)]
    assert {answer["custom_header"] for answer in seen} == {"Test"}
    assert {answer["host_header"] for answer in seen} == mango_hosts(tutorial_ports)


def test_path_rewrite_sends_v1_to_v2(balancer):
    assert get(balancer, "www.mango.com", "/v1").text == "This is V2"
    # The path is forwarded as it is otherwise (the tutorial's balancer always asked for /).
    assert get(balancer, "www.mango.com", "/v2").text == "This is V2"
    missing = get(balancer, "www.mango.com", "/v3")
    assert (missing.status_code, missing.text) == (404, "Not Found")  # the backend's own 404


@pytest.mark.parametrize("client", ["10.192.0.1", "10.192.0.2"])
def test_rejected_client_gets_403(balancer, client):
    result = get(balancer, "www.mango.com", **{"X-Forwarded-For": client})
    assert (result.status_code, result.text) == (403, "Forbidden")


def test_other_clients_pass_the_firewall(balancer):
    result = get(balancer, "www.mango.com", **{"X-Forwarded-For": "10.192.0.3"})
    assert result.json()["custom_header"] == "Test"


def test_an_untrusted_clients_forwarded_for_is_not_believed(balancer):
    """A client at 127.0.0.2 is no trusted proxy: it is judged by its own address."""
    host, port = balancer.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(
        host, int(port), timeout=10, source_address=("127.0.0.2", 0)
    )
    try:
        connection.request(
            "GET", "/", headers={"Host": "www.mango.com", "X-Forwarded-For": "10.192.0.1"}
        )
        answer = connection.getresponse()
        assert answer.status == 200
        assert b"This is the mango application." in answer.read()
    finally:
        connection.close()


@pytest.mark.parametrize("path", ["/messages", "/apps", "/apps/x", "/%6Dessages", "/x/../apps"])
def test_rejected_path_gets_403(balancer, path):
    result = get(balancer, "www.apple.com", path)
    assert (result.status_code, result.text) == (403, "Forbidden")


def test_apple_serves_other_paths(balancer):
    assert get(balancer, "www.apple.com").json()["message"] == "This is the apple application."
    assert get(balancer, "www.apple.com", "/v1").text == "This is V1"  # no rewrite on apple


@pytest.mark.parametrize(("host", "path"), [("www.orange.com", "/"), ("localhost", "/orange")])
def test_pool_whose_servers_are_down_gets_503(balancer, host, path):
    for _ in range(3):  # refused at first, then skipped as failing: 503 both ways
        result = get(balancer, host, path)
        assert (result.status_code, result.text) == (503, "No backend servers available.")


@pytest.mark.parametrize(
    ("path", "message"),
    [("/mango", "This is the mango application."), ("/apple", "This is the apple application.")],
)
def test_path_rules_route_any_host(balancer, path, message):
    seen = get(balancer, "localhost", path).json()
    assert seen["message"] == message
    assert seen["custom_header"] is None  # the host rule's actions are not the path rule's


@pytest.mark.parametrize(("host", "path"), [("www.notmango.com", "/"), ("localhost", "/notmango")])
def test_unknown_host_or_path_gets_404(balancer, host, path):
    result = get(balancer, host, path)
    assert (result.status_code, result.text) == (404, "Not Found")
