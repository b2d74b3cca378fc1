"""The REST API through Django's test client on the admin listener: tokens, permissions,
the model's own validation, the routes file, the explainer, revisions."""

import json
from urllib.parse import urlencode

import pytest
import yaml
from django.contrib.auth.models import Permission, User
from django.db import IntegrityError
from django.db.models.signals import pre_save
from rest_framework.authtoken.models import Token

from routing.api.errors import exception_handler
from routing.models import AccessList, Backend, HostRule, PathRule, Pool, Revision
from tests.test_api_e2e import SCHEMA_PATHS

pytestmark = pytest.mark.django_db(transaction=True)

READ_MODELS = ("pool", "backend", "hostrule", "pathrule", "revision")
ROUTING_MODEL_NAMES = ("pool", "backend", "accesslist", "accesslistuser", "hostrule", "pathrule")


@pytest.fixture
def token(admin_user):
    return Token.objects.create(user=admin_user).key


@pytest.fixture
def viewer_token():
    user = User.objects.create_user("viewer", password="not-used-here")
    user.user_permissions.set(
        Permission.objects.filter(codename__in=[f"view_{model}" for model in READ_MODELS])
    )
    return Token.objects.create(user=user).key


@pytest.fixture
def api(admin_site, token):
    """Call the API as the superuser's token; return the response."""

    def call(method, path, data=None, key=token, **headers):
        body = json.dumps(data) if data is not None and not isinstance(data, str) else data
        return admin_site.generic(
            method,
            path,
            body or "",
            content_type="application/json",
            headers={"Authorization": f"Token {key}", **headers},
        )

    return call


@pytest.fixture
def mango(demo_backends):
    pool = Pool.objects.create(name="mango")
    Backend.objects.create(pool=pool, url=demo_backends["mango"][0])
    return pool


def test_no_token_is_401_asking_for_one(admin_site):
    response = admin_site.get("/api/pools/")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"


def test_a_wrong_token_is_401(api):
    assert api("GET", "/api/pools/", key="0" * 40).status_code == 401


def test_the_api_is_not_on_the_traffic_listener(client, token):
    response = client.get("/api/pools/", headers={"Authorization": f"Token {token}"})
    assert response.status_code == 404  # routed like any path: no rule matches
    assert b"pools" not in response.content


def test_pools_are_created_and_addressed_by_name(api):
    response = api("POST", "/api/pools/", {"name": "kiwi", "algorithm": "round_robin"})
    assert response.status_code == 201, response.content
    assert response.json()["name"] == "kiwi" and response.json()["max_attempts"] == 3
    assert api("GET", "/api/pools/kiwi/").json()["algorithm"] == "round_robin"
    assert api("PATCH", "/api/pools/kiwi/", {"read_timeout": 5}).json()["read_timeout"] == 5.0
    assert Pool.objects.get(name="kiwi").read_timeout == 5.0
    assert api("DELETE", "/api/pools/kiwi/").status_code == 204
    assert not Pool.objects.exists()


def test_a_rule_names_its_pool_and_its_values_come_back_normalised(api, mango):
    response = api("POST", "/api/host-rules/", {"host": "WWW.Mango.COM.", "pool": "mango"})
    assert response.status_code == 201, response.content
    assert response.json()["host"] == "www.mango.com" and response.json()["pool"] == "mango"
    assert HostRule.objects.get().pool == mango
    listed = api("GET", "/api/host-rules/?pool=mango").json()
    assert [rule["host"] for rule in listed] == ["www.mango.com"]
    assert api("GET", "/api/host-rules/?pool=apple").json() == []


@pytest.mark.parametrize(
    ("path", "data", "field", "message"),
    [
        (
            "/api/host-rules/",
            {"host": "http://www.mango.com:81/", "pool": "mango"},
            "host",
            "Enter a host name such as www.mango.com",
        ),
        (
            "/api/host-rules/",
            {"host": "www.mango.com", "pool": "lime"},
            "pool",
            "Object with name=lime does not exist.",
        ),
        (
            "/api/backends/",
            {"url": "http://127.0.0.1:8081/app", "pool": "mango"},
            "url",
            "A backend URL has no path, query or fragment",
        ),
        (
            "/api/path-rules/",
            {"prefix": "mango", "pool": "mango"},
            "prefix",
            "A prefix starts with '/'",
        ),
        ("/api/pools/", {"name": "mango"}, "name", "Pool with this Name already exists."),
        (
            "/api/pools/",
            {"name": "kiwi", "read_timeout": 0},
            "read_timeout",
            "Ensure this value is greater than or equal to 0.001.",
        ),
    ],
)
def test_a_bad_row_is_400_naming_its_field_as_the_admin_would(
    api, mango, path, data, field, message
):
    response = api("POST", path, data)
    assert response.status_code == 400
    errors = response.json()
    assert list(errors) == [field]
    assert errors[field][0].startswith(message), errors
    assert not HostRule.objects.exists() and Backend.objects.count() == 1


def test_a_tie_between_rules_is_400_naming_the_field(api, mango):
    api("POST", "/api/host-rules/", {"host": "www.mango.com", "pool": "mango"})
    response = api(
        "POST", "/api/path-rules/", {"prefix": "/", "host": "www.mango.com", "pool": "mango"}
    )
    assert response.status_code == 400
    assert response.json()["prefix"][0].startswith("A host rule for www.mango.com already exists")


def test_a_duplicate_backend_is_400_as_in_the_admin(api, mango):
    url = Backend.objects.get().url
    response = api("POST", "/api/backends/", {"url": url.upper(), "pool": "mango"})
    assert response.status_code == 400
    assert response.json() == {
        "non_field_errors": ["Backend with this Pool and URL already exists."]
    }


def test_deleting_a_pool_in_use_is_409_naming_its_rules(api, mango):
    api("POST", "/api/host-rules/", {"host": "www.mango.com", "pool": "mango"})
    response = api("DELETE", "/api/pools/mango/")
    assert response.status_code == 409
    assert "www.mango.com → mango" in response.json()["detail"]


def test_health_state_is_read_only(api, mango):
    backend = Backend.objects.get()
    response = api("PATCH", f"/api/backends/{backend.pk}/", {"healthy": False, "weight": 2})
    assert response.status_code == 200
    backend.refresh_from_db()
    assert (backend.healthy, backend.weight) == (True, 2)


@pytest.mark.parametrize(
    ("action", "field", "value"),
    [
        ("drain", "draining", True),
        ("undrain", "draining", False),
        ("disable", "enabled", False),
        ("enable", "enabled", True),
    ],
)
def test_backend_actions(api, mango, action, field, value):
    backend = Backend.objects.get()
    Backend.objects.filter(pk=backend.pk).update(enabled=action != "enable")
    response = api("POST", f"/api/backends/{backend.pk}/{action}/")
    assert response.status_code == 200, response.content
    assert response.json()[field] == value
    backend.refresh_from_db()
    assert getattr(backend, field) == value


def test_a_view_only_token_reads_but_cannot_write(api, mango, viewer_token):
    assert api("GET", "/api/pools/", key=viewer_token).status_code == 200
    assert api("GET", "/api/revisions/", key=viewer_token).status_code == 200
    assert api("POST", "/api/pools/", {"name": "kiwi"}, key=viewer_token).status_code == 403
    backend = Backend.objects.get()
    assert api("POST", f"/api/backends/{backend.pk}/drain/", key=viewer_token).status_code == 403
    assert api("PUT", "/api/routes", "pools: {}", key=viewer_token).status_code == 403
    revision = Revision.objects.first()
    rollback = api("POST", f"/api/revisions/{revision.pk}/rollback/", key=viewer_token)
    assert rollback.status_code == 403
    assert Pool.objects.count() == 1 and Backend.objects.get().weight == 1


def test_a_token_without_view_permission_cannot_read(api, mango):
    user = User.objects.create_user("nobody")
    key = Token.objects.create(user=user).key
    assert api("GET", "/api/pools/", key=key).status_code == 403
    assert api("GET", "/api/routes", key=key).status_code == 403


def test_routes_are_yaml_by_default_and_json_on_request(api, mango):
    api("POST", "/api/host-rules/", {"host": "www.mango.com", "pool": "mango"})
    as_yaml = api("GET", "/api/routes")
    assert as_yaml.headers["Content-Type"].startswith("application/yaml")
    document = yaml.safe_load(as_yaml.content)
    assert document["hosts"] == [{"host": "www.mango.com", "pool": "mango"}]
    as_json = api("GET", "/api/routes", Accept="application/json")
    assert as_json.json() == document


def test_routes_put_imports_and_dry_run_writes_nothing(api, mango):
    routes = (
        "pools:\n  kiwi:\n    backends: [http://127.0.0.1:7001]\n"
        "hosts:\n  - {host: www.kiwi.com, pool: kiwi}\n"
    )
    dry = api("PUT", "/api/routes?dry_run=1", routes, Accept="application/json")
    assert dry.status_code == 200
    changes = [
        "- backend " + Backend.objects.get().url + " (mango)",
        "- pool mango",
        "+ pool kiwi",
        "+ backend http://127.0.0.1:7001 (kiwi)",
        "+ host www.kiwi.com",
    ]
    assert dry.json() == {"dry_run": True, "changes": changes, "impact": []}
    assert list(Pool.objects.values_list("name", flat=True)) == ["mango"]
    done = api("PUT", "/api/routes", routes, Accept="application/json")
    assert done.json() == {"dry_run": False, "changes": changes}
    assert list(Pool.objects.values_list("name", flat=True)) == ["kiwi"]
    revision = Revision.objects.first()
    assert revision.summary == "\n".join(changes)


def test_routes_put_with_errors_is_400_naming_each_place(api, mango):
    routes = (
        "pools:\n  kiwi:\n    read_timeout: soon\nhosts:\n  - {host: www.kiwi.com, pool: lime}\n"
    )
    response = api("PUT", "/api/routes", routes, Accept="application/json")
    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            "pools.kiwi.read_timeout: “soon” value must be a float.",
            'hosts[0].pool: no pool named "lime"',
        ]
    }
    assert list(Pool.objects.values_list("name", flat=True)) == ["mango"]


def test_explain_answers_as_the_explainer(api, mango):
    api("POST", "/api/path-rules/", {"prefix": "/mango", "pool": "mango"})
    response = api("GET", "/api/explain/?url=http://www.x.com/mango/a%3Fb")
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["status"] == 200
    assert data["rule"]["label"] == "path rule /mango (any host) → mango"
    assert data["pool"]["name"] == "mango"
    assert data["upstream_path"] == "/a"
    assert [c["verdict"] for c in data["candidates"]] == ["serves this request"]
    assert api("GET", "/api/explain/?url=http://www.x.com/other").json()["status"] == 404
    assert api("GET", "/api/explain/").status_code == 400


def test_revisions_are_newest_first_and_roll_back(api, mango):
    api("POST", "/api/host-rules/", {"host": "www.mango.com", "pool": "mango"})
    api("POST", "/api/path-rules/", {"prefix": "/new", "pool": "mango"})
    revisions = api("GET", "/api/revisions/").json()
    numbers = [revision["number"] for revision in revisions]
    assert numbers == sorted(numbers, reverse=True) and len(numbers) == 4
    assert revisions[0]["summary"] == "+ path /new" and revisions[0]["user"] == "admin"
    before = revisions[1]
    assert before["summary"] == "+ host www.mango.com"
    rollback = f"/api/revisions/{before['id']}/rollback/"
    dry = api("POST", rollback + "?dry_run=1").json()
    assert dry == {"dry_run": True, "changes": ["- path /new"], "revision": None, "impact": []}
    response = api("POST", rollback)
    assert response.status_code == 200, response.content
    made = response.json()["revision"]
    assert made["number"] == numbers[0] + 1
    assert made["summary"] == f"rollback to {before['number']}\n- path /new"
    assert api("GET", "/api/path-rules/").json() == []


def test_the_schema_lists_every_path(api):
    schema = yaml.safe_load(api("GET", "/api/schema/").content)
    assert set(schema["paths"]) == SCHEMA_PATHS


def test_the_swagger_ui_loads_its_files_from_the_balancer(admin_client):
    page = admin_client.get("/api/docs/")
    assert page.status_code == 200
    assert b"swagger-ui" in page.content and b"cdn" not in page.content.lower()


def test_routes_put_takes_json_too(api, mango):
    document = api("GET", "/api/routes", Accept="application/json").json()
    document["pools"]["mango"]["read_timeout"] = 5
    response = api("PUT", "/api/routes", document, Accept="application/json")
    assert response.json()["changes"] == ["~ pool mango: read_timeout 10.0 -> 5.0"]
    assert Pool.objects.get().read_timeout == 5.0


def test_access_lists_take_passwords_and_store_only_hashes(api):
    response = api(
        "POST",
        "/api/access-lists/",
        {"name": "staff", "users": [{"username": "alice", "password": "wonderland"}]},
    )
    assert response.status_code == 201, response.content
    assert response.json()["users"] == [{"username": "alice"}]  # the password never comes back
    user = AccessList.objects.get(name="staff").users.get()
    assert user.password != "wonderland" and user.check_password("wonderland")
    assert "wonderland" not in api("GET", "/api/access-lists/staff/").content.decode()
    assert "wonderland" not in api("GET", "/api/routes").content.decode()


def test_an_access_lists_users_are_replaced_and_kept_hashes_stay(api):
    api(
        "POST",
        "/api/access-lists/",
        {"name": "staff", "users": [{"username": "alice", "password": "a-secret"}]},
    )
    kept = AccessList.objects.get(name="staff").users.get().password
    revisions = Revision.objects.count()
    response = api(
        "PATCH",
        "/api/access-lists/staff/",
        {"users": [{"username": "alice"}, {"username": "bob", "password": "b-secret"}]},
    )
    assert response.status_code == 200, response.content
    users = {user.username: user for user in AccessList.objects.get(name="staff").users.all()}
    assert users["alice"].password == kept and users["bob"].check_password("b-secret")
    api("PATCH", "/api/access-lists/staff/", {"users": [{"username": "bob"}]})
    assert [user.username for user in AccessList.objects.get(name="staff").users.all()] == ["bob"]
    assert Revision.objects.count() == revisions + 2  # one revision per write


@pytest.mark.parametrize(
    ("users", "field"),
    [
        ([{"username": "carol"}], "password"),  # a new user needs a password
        ([{"username": "a:b", "password": "x-secret"}], "username"),
        ([{"username": "dan", "password": "1"}, {"username": "dan", "password": "2"}], "username"),
    ],
)
def test_a_bad_access_list_user_is_400_naming_the_field(api, users, field):
    response = api("POST", "/api/access-lists/", {"name": "staff", "users": users})
    assert response.status_code == 400, response.content
    assert field in json.dumps(response.json())
    assert not AccessList.objects.exists()


def test_a_rule_refers_to_an_access_list_by_name(api, mango):
    api(
        "POST",
        "/api/access-lists/",
        {"name": "staff", "users": [{"username": "alice", "password": "a-secret"}]},
    )
    response = api(
        "POST",
        "/api/host-rules/",
        {"host": "www.mango.com", "pool": "mango", "access_list": "staff"},
    )
    assert response.status_code == 201, response.content
    assert HostRule.objects.get().access_list.name == "staff"
    assert api("DELETE", "/api/access-lists/staff/").status_code == 409  # still in use


def test_explain_answers_for_a_rule_that_redirects(api):
    HostRule.objects.create(
        host="old.example.com",
        redirect={"to": "https://new.example.com", "status": 301, "keep_path": True},
    )
    response = api("GET", "/api/explain/?url=http://old.example.com/a/b?c=1")
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["pool"] is None and data["location"] == "https://new.example.com/a/b?c=1"
    assert data["status"] == 301


def test_tls_auto_on_a_wildcard_host_is_400_naming_tls(api, mango):
    response = api(
        "POST", "/api/host-rules/", {"host": "*.mango.com", "pool": "mango", "tls": "auto"}
    )
    assert response.status_code == 400 and "tls" in response.json(), response.content
    response = api(
        "POST",
        "/api/host-rules/",
        {"host": "www.mango.com", "pool": "mango", "tls": "auto", "force_https": True},
    )
    assert response.status_code == 201, response.content
    assert HostRule.objects.get().tls == "auto" and HostRule.objects.get().force_https


def token_with(*codenames, username="scoped"):
    """Return the key of a new user's token with these permissions (codenames) only."""
    user = User.objects.create_user(username, password="not-used-here")
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return Token.objects.create(user=user).key


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/api/pools/", {"name": "kiwi"}),
        ("/api/backends/", {"pool": "mango", "url": "http://127.0.0.1:7001"}),
        ("/api/host-rules/", {"host": "www.kiwi.com", "pool": "mango"}),
    ],
)
@pytest.mark.parametrize("encoding", ["application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_form_body_is_415_never_a_row_with_its_switches_off(
    admin_site, token, mango, path, fields, encoding
):
    # A form leaves an unticked checkbox out, so DRF reads any boolean it lacks as
    # False: a pool without TLS verification, a disabled backend or rule.
    headers = {"Authorization": f"Token {token}"}
    if encoding == "multipart/form-data":
        response = admin_site.post(path, fields, headers=headers)
    else:
        response = admin_site.generic("POST", path, urlencode(fields), encoding, headers=headers)
    assert response.status_code == 415, response.content
    assert not Pool.objects.exclude(pk=mango.pk).exists()
    assert Backend.objects.count() == 1 and not HostRule.objects.exists()


def test_a_revisions_table_needs_view_permission_on_the_whole_table(api, mango):
    api(
        "POST",
        "/api/access-lists/",
        {"name": "staff", "users": [{"username": "alice", "password": "wonderland"}]},
    )
    password_hash = AccessList.objects.get().users.get().password
    revision = Revision.objects.first()
    key = token_with("view_revision")
    listed = api("GET", "/api/revisions/", key=key)
    assert listed.status_code == 200 and listed.json()[0]["id"] == revision.pk
    assert password_hash not in listed.content.decode()
    assert api("GET", f"/api/revisions/{revision.pk}/", key=key).status_code == 403
    table = [f"view_{model}" for model in ROUTING_MODEL_NAMES]
    whole = api(
        "GET",
        f"/api/revisions/{revision.pk}/",
        key=token_with("view_revision", *table, username="reader"),
    )
    assert whole.status_code == 200 and password_hash in whole.json()["routes"]


def test_writing_an_access_lists_users_needs_permission_on_access_list_users(api):
    lists = ["view_accesslist", "add_accesslist", "change_accesslist"]
    key = token_with(*lists)
    staff = {"name": "staff", "users": [{"username": "alice", "password": "wonderland"}]}
    assert api("POST", "/api/access-lists/", staff, key=key).status_code == 403
    assert not AccessList.objects.exists()
    assert api("POST", "/api/access-lists/", {"name": "staff"}, key=key).status_code == 201
    patch = api("PATCH", "/api/access-lists/staff/", {"users": staff["users"]}, key=key)
    assert patch.status_code == 403 and not AccessList.objects.get().users.exists()
    users = ["add_accesslistuser", "change_accesslistuser", "delete_accesslistuser"]
    User.objects.get(username="scoped").user_permissions.add(
        *Permission.objects.filter(codename__in=users)
    )
    patch = api("PATCH", "/api/access-lists/staff/", {"users": staff["users"]}, key=key)
    assert patch.status_code == 200, patch.content
    assert AccessList.objects.get().users.get().check_password("wonderland")


def test_a_name_a_concurrent_request_took_first_is_400_naming_the_field(api):
    raced = []

    def lose_the_race(sender, instance, raw=False, **kwargs):
        # Another request stores the same name after this save's own check, before its insert.
        if not raced:
            raced.append(instance.name)
            Pool.objects.create(name=instance.name)

    pre_save.connect(lose_the_race, sender=Pool)  # after the model's check, connected first
    try:
        response = api("POST", "/api/pools/", {"name": "kiwi"})
    finally:
        pre_save.disconnect(lose_the_race, sender=Pool)
    assert response.status_code == 400, response.content
    assert response.json() == {"name": ["Pool with this Name already exists."]}
    assert Pool.objects.filter(name="kiwi").count() == 1


def test_a_conflict_the_check_cannot_name_is_409_not_a_traceback():
    response = exception_handler(IntegrityError("UNIQUE constraint failed"), {})
    assert response.status_code == 409
    assert "try again" in response.data["detail"]


def test_a_rule_takes_its_actions_and_a_bad_one_is_400_naming_it(api, mango):
    actions = {
        "firewall": {"allow": ["10.0.0.0/8"], "deny": [], "deny_paths": ["/admin"]},
        "rate_limit": {"requests": 10, "per": 1, "burst": 20, "by": "client"},
        "rewrite": [{"pattern": "^/v1/", "replacement": "/v2/"}],
        "request_headers": {"set": {"X-Env": "prod"}, "remove": ["Cookie"]},
        "query": {"set": {"lang": "en"}, "remove": ["debug"]},
        "response_headers": {"set": {"X-Frame-Options": "DENY"}, "remove": []},
    }
    response = api("POST", "/api/path-rules/", {"prefix": "/v1", "pool": "mango", **actions})
    assert response.status_code == 201, response.content
    stored = api("GET", f"/api/path-rules/{response.json()['id']}/").json()
    assert {name: stored[name] for name in actions} == actions
    bad = api(
        "POST",
        "/api/path-rules/",
        {"prefix": "/v2", "pool": "mango", "rewrite": [{"pattern": "(", "replacement": ""}]},
    )
    assert bad.status_code == 400 and list(bad.json()) == ["rewrite"], bad.content
    hop = api(
        "POST",
        "/api/host-rules/",
        {"host": "www.mango.com", "pool": "mango", "request_headers": {"set": {"Connection": "x"}}},
    )
    assert hop.status_code == 400 and list(hop.json()) == ["request_headers"], hop.content
    assert not HostRule.objects.exists()


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_revisions_are_read_only(api, mango, method):
    revision = Revision.objects.first()
    path = "/api/revisions/" if method == "POST" else f"/api/revisions/{revision.pk}/"
    assert api(method, path, {"summary": "forged"}).status_code == 405
    assert Revision.objects.get(pk=revision.pk).summary == revision.summary


def test_an_api_rollback_needs_change_permission_on_every_routing_model(api, mango):
    first = Revision.objects.first()
    api("POST", "/api/path-rules/", {"prefix": "/later", "pool": "mango"})
    changes = [f"change_{model}" for model in ROUTING_MODEL_NAMES]
    partial = token_with(*changes[:-1], username="most")
    rollback = f"/api/revisions/{first.pk}/rollback/"
    assert api("POST", rollback, key=partial).status_code == 403
    assert PathRule.objects.filter(prefix="/later").exists()
    response = api("POST", rollback, key=token_with(*changes, username="all"))
    assert response.status_code == 200, response.content
    assert response.json()["changes"] == ["- path /later"]
    assert not PathRule.objects.exists()


def test_a_logged_in_admin_browses_the_api_with_a_json_form(admin_client, mango):
    page = admin_client.get("/api/pools/", headers={"Accept": "text/html"})
    assert page.status_code == 200
    html = page.content.decode()
    assert "mango" in html and 'id="post-generic-content-form"' in html
    assert 'value="application/json"' in html
