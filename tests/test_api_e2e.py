"""The REST API against the balancer under gunicorn: tokens, writes that go live, rollback.

The API answers on the admin listener only; on the traffic listener /api/
is a path like any other, routed to a backend.
"""

import time

import pytest
import requests

from .conftest import (
    Balancer,
    DemoBackend,
    balancer_environment,
    manage,
    manage_output,
    pool_rows,
    rule_row,
    wait_until_serving,
)

BOUND = 5  # seconds; writes go live within one, polled with room for a busy machine
SCHEMA_PATHS = {
    "/api/pools/",
    "/api/pools/{name}/",
    "/api/backends/",
    "/api/backends/{id}/",
    "/api/backends/{id}/drain/",
    "/api/backends/{id}/undrain/",
    "/api/backends/{id}/enable/",
    "/api/backends/{id}/disable/",
    "/api/host-rules/",
    "/api/host-rules/{id}/",
    "/api/path-rules/",
    "/api/path-rules/{id}/",
    "/api/access-lists/",
    "/api/access-lists/{name}/",
    "/api/revisions/",
    "/api/revisions/{id}/",
    "/api/revisions/{id}/rollback/",
    "/api/routes",
    "/api/explain/",
    "/api/schema/",
}
VIEWER = """
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
user = User.objects.create_user("viewer")
user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
print(Token.objects.create(user=user).key)
"""


@pytest.fixture(scope="module")
def kiwi():
    server = DemoBackend("kiwi")
    wait_until_serving(server.url + "/healthcheck", server.process)
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def balancer(tmp_path_factory, demo_backends):
    """The balancer with /api routed to mango on its traffic listener, and two tokens."""
    rows = [
        *pool_rows("mango", demo_backends["mango"]),
        rule_row("mango", prefix="/api", strip_prefix=False),
    ]
    home = tmp_path_factory.mktemp("api")
    env = balancer_environment(home, rows)
    manage(env, "ensure_admin")
    server = Balancer(env, workers=2, log_path=home / "balancer.log")
    server.token = manage_output(env, "drf_create_token", "admin").split()[2]
    server.viewer_token = manage_output(env, "shell", "-c", VIEWER).split()[-1]
    yield server
    server.stop()


def call(balancer, method, path, json=None, token=None, **kwargs):
    """Call the API on the admin listener with a token (the admin's by default)."""
    headers = {"Authorization": f"Token {token or balancer.token}", **kwargs.pop("headers", {})}
    return requests.request(
        method, balancer.admin_url + path, json=json, headers=headers, timeout=10, **kwargs
    )


def traffic(balancer, host, path="/"):
    """GET through the traffic listener on a new connection, so any worker may answer."""
    return requests.get(
        balancer.url + path, headers={"Host": host, "Connection": "close"}, timeout=10
    )


def wait_for(condition, what):
    """Poll until condition() holds; return the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < BOUND, f"{what} did not happen in {BOUND}s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_no_token_is_refused(balancer):
    response = requests.get(balancer.admin_url + "/api/pools/", timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"
    session = requests.post(balancer.admin_url + "/api/pools/", json={"name": "x"}, timeout=10)
    assert session.status_code == 401


def test_the_api_is_a_routed_path_on_the_traffic_listener(balancer):
    response = requests.get(
        balancer.url + "/api/pools/",
        headers={"Authorization": f"Token {balancer.token}"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.text == "This is the mango application."


def test_the_api_is_absent_for_a_host_the_admin_does_not_answer_to(balancer):
    # A DNS-rebound page (or any other name) reaches the admin listener with its own Host.
    for path in ("/api/pools/", "/api/routes", "/api/schema/"):
        response = requests.get(
            balancer.admin_url + path,
            headers={"Authorization": f"Token {balancer.token}", "Host": "www.mango.com"},
            timeout=10,
        )
        assert (response.status_code, response.text) == (400, "Bad Request")


def test_a_route_made_through_the_api_is_routed_by(balancer, kiwi):
    assert call(balancer, "POST", "/api/pools/", {"name": "kiwi"}).status_code == 201
    backend = call(balancer, "POST", "/api/backends/", {"pool": "kiwi", "url": kiwi})
    assert backend.status_code == 201, backend.text
    rule = call(balancer, "POST", "/api/host-rules/", {"host": "www.kiwi.com", "pool": "kiwi"})
    assert rule.status_code == 201, rule.text
    kiwi_answer = "This is the kiwi application."
    wait_for(lambda: traffic(balancer, "www.kiwi.com").text == kiwi_answer, "the kiwi route")


@pytest.mark.parametrize(
    ("path", "data", "field", "message"),
    [
        (
            "/api/host-rules/",
            {"host": "www.mango.com:8000", "pool": "mango"},
            "host",
            "Enter a host name such as www.mango.com",
        ),
        (
            "/api/backends/",
            {"url": "http://127.0.0.1:8081/app", "pool": "mango"},
            "url",
            "A backend URL has no path, query or fragment",
        ),
    ],
)
def test_a_bad_row_is_400_naming_its_field(balancer, path, data, field, message):
    response = call(balancer, "POST", path, data)
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert response.json()[field][0].startswith(message)


def test_a_view_only_token_reads_but_cannot_write_or_roll_back(balancer):
    viewer = balancer.viewer_token
    assert call(balancer, "GET", "/api/pools/mango/", token=viewer).json()["name"] == "mango"
    revisions = call(balancer, "GET", "/api/revisions/", token=viewer)
    assert revisions.status_code == 200
    created = call(balancer, "POST", "/api/pools/", {"name": "lime"}, token=viewer)
    assert created.status_code == 403
    changed = call(balancer, "PATCH", "/api/pools/mango/", {"read_timeout": 1}, token=viewer)
    assert changed.status_code == 403
    oldest = revisions.json()[-1]["id"]
    rollback = call(balancer, "POST", f"/api/revisions/{oldest}/rollback/", token=viewer)
    assert rollback.status_code == 403
    assert call(balancer, "GET", "/api/pools/mango/").json()["read_timeout"] == 10.0
    assert call(balancer, "GET", "/api/pools/lime/").status_code == 404


def test_a_rollback_removes_a_route_made_after_it_within_a_second(balancer):
    before = call(balancer, "GET", "/api/revisions/").json()[0]
    rule = call(balancer, "POST", "/api/path-rules/", {"prefix": "/later", "pool": "mango"})
    assert rule.status_code == 201, rule.text
    wait_for(lambda: traffic(balancer, "any.host", "/later").status_code == 200, "/later")

    revisions = call(balancer, "GET", "/api/revisions/").json()
    numbers = [revision["number"] for revision in revisions]
    assert numbers == sorted(numbers, reverse=True)  # newest first
    assert revisions[0]["summary"] == "+ path /later" and revisions[0]["user"] == "admin"

    response = call(balancer, "POST", f"/api/revisions/{before['id']}/rollback/")
    assert response.status_code == 200, response.text
    assert response.json()["changes"] == ["- path /later"]
    took = wait_for(
        lambda: traffic(balancer, "any.host", "/later").status_code == 404, "the rollback"
    )
    assert took < 1.5  # the table polls four times a second; a slack for a busy machine
    newest = call(balancer, "GET", "/api/revisions/").json()[0]
    assert newest["number"] == revisions[0]["number"] + 1
    assert newest["summary"] == f"rollback to {before['number']}\n- path /later"


def test_the_schema_lists_every_path(balancer):
    schema = call(balancer, "GET", "/api/schema/", headers={"Accept": "application/json"})
    assert schema.status_code == 200
    assert set(schema.json()["paths"]) == SCHEMA_PATHS


def test_the_api_docs_load_their_files_from_the_admin_listener(balancer):
    session = requests.Session()
    login = balancer.admin_url + "/admin/login/"
    session.get(login, timeout=10)
    assert session.get(balancer.admin_url + "/api/docs/", timeout=10).status_code in (401, 403)
    page = call(balancer, "GET", "/api/docs/")
    assert page.status_code == 200
    scripts = [part.split('"')[0] for part in page.text.split('src="')[1:]]
    assert scripts and all(src.startswith("/static/") for src in scripts), scripts
    for src in scripts:
        assert requests.get(balancer.admin_url + src, timeout=10).status_code == 200
