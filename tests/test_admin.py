"""Editing the routing table in the admin, through Django's test client."""

import pytest
from django.db import models
from django.utils import timezone

from routing.models import Backend, HostRule, PathRule, Pool, RoutingVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def mango(demo_backends):
    pool = Pool.objects.create(name="mango")
    Backend.objects.create(pool=pool, url=demo_backends["mango"][0])
    return pool


def test_admin_index_lists_the_routing_models(admin_client):
    page = admin_client.get("/admin/").content.decode()
    for name in ("Pools", "Backends", "Host rules", "Path rules"):
        assert name in page


def test_host_rule_added_in_the_admin_routes_at_once(admin_client, client, mango):
    assert client.get("/", headers={"Host": "www.mango.com"}).status_code == 404
    result = admin_client.post(
        "/admin/routing/hostrule/add/",
        {"host": "WWW.Mango.com", "pool": mango.pk, "enabled": "on"},
    )
    assert result.status_code == 302, result.content.decode()
    assert HostRule.objects.get().host == "www.mango.com"
    routed = client.get("/", headers={"Host": "www.mango.com"})
    assert routed.content == b"This is the mango application."


@pytest.mark.parametrize(
    ("url", "form", "message"),
    [
        (
            "/admin/routing/hostrule/add/",
            {"host": "http://www.mango.com:8080/"},
            "Enter a host name such as www.mango.com",
        ),
        (
            "/admin/routing/pathrule/add/",
            {"prefix": "mango", "strip_prefix": "on"},
            "A prefix starts with &#x27;/&#x27;",
        ),
    ],
)
def test_invalid_rules_are_refused_with_a_clear_message(admin_client, mango, url, form, message):
    result = admin_client.post(url, {**form, "pool": mango.pk, "enabled": "on"})
    assert result.status_code == 200
    assert message in result.content.decode()
    assert not HostRule.objects.exists() and not PathRule.objects.exists()


def test_backend_url_with_credentials_is_refused_in_the_pool_form(admin_client, mango):
    result = admin_client.post(
        f"/admin/routing/pool/{mango.pk}/change/",
        {
            "name": "mango",
            "algorithm": "random",
            "connect_timeout": "3",
            "read_timeout": "30",
            "health_check_path": "/healthcheck",
            "backends-TOTAL_FORMS": "2",
            "backends-INITIAL_FORMS": "1",
            "backends-0-id": mango.backends.get().pk,
            "backends-0-pool": mango.pk,
            "backends-0-url": mango.backends.get().url,
            "backends-0-weight": "1",
            "backends-0-enabled": "on",
            "backends-1-pool": mango.pk,
            "backends-1-url": "http://user:pw@127.0.0.1:8082/app",
            "backends-1-weight": "1",
            "backends-1-enabled": "on",
        },
    )
    assert result.status_code == 200
    assert "A backend URL carries no credentials." in result.content.decode()
    assert mango.backends.count() == 1


def test_duplicate_host_rule_is_refused(admin_client, mango):
    HostRule.objects.create(host="www.mango.com", pool=mango)
    result = admin_client.post(
        "/admin/routing/hostrule/add/", {"host": "www.mango.com", "pool": mango.pk}
    )
    assert "Host rule with this Host already exists." in result.content.decode()


def test_deleting_a_pool_in_use_is_refused_naming_its_rules(admin_client, mango):
    HostRule.objects.create(host="www.mango.com", pool=mango)
    PathRule.objects.create(prefix="/mango", pool=mango)
    page = admin_client.get(f"/admin/routing/pool/{mango.pk}/delete/").content.decode()
    assert "would require deleting the following protected related objects" in page
    assert "www.mango.com → mango" in page
    assert "/mango (any host) → mango" in page
    admin_client.post(f"/admin/routing/pool/{mango.pk}/delete/", {"post": "yes"})
    assert Pool.objects.filter(pk=mango.pk).exists()


def test_an_action_on_a_row_that_breaks_a_rule_says_so_instead_of_failing(admin_client, mango):
    # A tie written around the models (raw SQL would do the same): no
    # constraint in the database can see it, and the checks refuse the update.
    HostRule.objects.create(host="www.mango.com", pool=mango)
    (tie,) = models.QuerySet(PathRule).bulk_create(
        [PathRule(host="www.mango.com", prefix="/", pool=mango)]
    )
    result = admin_client.post(
        "/admin/routing/pathrule/",
        {"action": "disable_selected", "_selected_action": [tie.pk]},
        follow=True,
    )
    assert result.status_code == 200
    assert "Nothing was changed: A host rule for www.mango.com already exists" in (
        result.content.decode()
    )
    tie.refresh_from_db()
    assert tie.enabled


def test_disable_action_bumps_the_version_and_stops_routing(admin_client, client, mango):
    rule = HostRule.objects.create(host="www.mango.com", pool=mango)
    assert client.get("/", headers={"Host": "www.mango.com"}).status_code == 200
    before = RoutingVersion.current()
    admin_client.post(
        "/admin/routing/hostrule/",
        {"action": "disable_selected", "_selected_action": [rule.pk]},
    )
    assert RoutingVersion.current() > before
    assert client.get("/", headers={"Host": "www.mango.com"}).status_code == 404


def test_admin_lists_show_rules_and_backends(admin_client, mango):
    HostRule.objects.create(host="www.mango.com", pool=mango)
    PathRule.objects.create(prefix="/mango", pool=mango)
    assert "www.mango.com" in admin_client.get("/admin/routing/hostrule/").content.decode()
    paths = admin_client.get("/admin/routing/pathrule/").content.decode()
    assert "/mango" in paths and "any host" in paths
    pools = admin_client.get("/admin/routing/pool/").content.decode()
    assert mango.backends.get().url in pools
    backends = admin_client.get("/admin/routing/backend/").content.decode()
    assert "healthy" in backends


def test_admin_is_not_served_on_the_traffic_listener(admin_client, client, mango):
    HostRule.objects.create(host="www.mango.com", pool=mango)
    PathRule.objects.create(prefix="/admin", pool=mango, strip_prefix=False)
    for host in ("www.mango.com", "localhost"):
        result = client.get("/admin/", headers={"Host": host})
        assert result.content == b"This is the mango application."
    assert admin_client.get("/admin/").status_code == 200


def test_admin_pages_keep_django_security_headers(admin_client):
    result = admin_client.get("/admin/")
    assert result["X-Frame-Options"] == "DENY"
    assert result["X-Content-Type-Options"] == "nosniff"


def test_drain_action_stops_new_requests_to_a_backend(admin_client, client, mango, demo_backends):
    drained = mango.backends.get()
    other = Backend.objects.create(pool=mango, url=demo_backends["mango"][1])
    HostRule.objects.create(host="www.mango.com", pool=mango)
    admin_client.post(
        "/admin/routing/backend/",
        {"action": "drain_selected", "_selected_action": [drained.pk]},
    )
    drained.refresh_from_db()
    assert (drained.draining, drained.weight) == (True, 1)
    seen = {client.get("/echo", headers={"Host": "www.mango.com"}).content for _ in range(10)}
    assert len(seen) == 1 and other.url.removeprefix("http://").encode() in seen.pop()


def test_backend_health_shows_as_badges_with_the_last_check(admin_client, mango):
    Backend.objects.filter(pool=mango).update(
        healthy=False, last_error="Connection refused", last_checked=timezone.now()
    )
    Backend.objects.create(pool=mango, url="http://127.0.0.1:2", draining=True)
    Backend.objects.create(pool=mango, url="http://127.0.0.1:3", enabled=False)
    page = admin_client.get("/admin/routing/backend/").content.decode()
    # The error in a few words, its full text on hover.
    for label in ("● down", "● draining", "● disabled", 'title="Connection refused"'):
        assert label in page
    assert ">connection refused<" in page
    pools = admin_client.get("/admin/routing/pool/").content.decode()
    assert "● down" in pools and "● draining" in pools


ACTION_FORM = {
    "firewall_0": "",
    "firewall_1": "10.192.0.1\n10.192.0.2",
    "firewall_2": "/messages\n/apps",
    "rewrite": r"^/v1(/|$) => /v2\1",
    "query_0": "MyCustomParam=Test",
    "query_1": "RemoveMe",
    "request_headers_0": "MyCustomHeader: Test\nX-Env: a: b",
    "request_headers_1": "X-Debug",
    "response_headers_0": "X-Frame-Options: DENY",
    "response_headers_1": "",
}


def test_actions_edited_in_the_rule_form_are_stored_and_live(admin_client, client, mango):
    result = admin_client.post(
        "/admin/routing/hostrule/add/",
        {"host": "www.mango.com", "pool": mango.pk, "enabled": "on", **ACTION_FORM},
    )
    assert result.status_code == 302, result.content.decode()
    rule = HostRule.objects.get()
    assert rule.firewall == {
        "deny": ["10.192.0.1", "10.192.0.2"],
        "deny_paths": ["/messages", "/apps"],
    }
    assert rule.rewrite == [{"pattern": r"^/v1(/|$)", "replacement": r"/v2\1"}]
    assert rule.query == {"set": {"MyCustomParam": "Test"}, "remove": ["RemoveMe"]}
    assert rule.request_headers == {
        "set": {"MyCustomHeader": "Test", "X-Env": "a: b"},
        "remove": ["X-Debug"],
    }
    assert rule.response_headers == {"set": {"X-Frame-Options": "DENY"}}
    assert client.get("/messages", headers={"Host": "www.mango.com"}).status_code == 403
    assert client.get("/", headers={"Host": "www.mango.com"})["X-Frame-Options"] == "DENY"


def test_a_rules_actions_show_as_lines_and_a_plain_save_keeps_them(admin_client, mango):
    rule = HostRule.objects.create(
        host="www.mango.com",
        pool=mango,
        rewrite=[{"pattern": "^/old/(.*)", "replacement": r"/new/\1"}],
        request_headers={"set": {"X-Env": "prod"}, "remove": ["X-Debug"]},
        firewall={"allow": ["10.0.0.0/8"]},
    )
    page = admin_client.get(f"/admin/routing/hostrule/{rule.pk}/change/").content.decode()
    assert "^/old/(.*) =&gt; /new/\\1</textarea>" in page
    assert "X-Env: prod</textarea>" in page
    assert "10.0.0.0/8</textarea>" in page
    form = {
        "host": "www.mango.com",
        "pool": mango.pk,
        "enabled": "on",
        "rewrite": r"^/old/(.*) => /new/\1",
        "request_headers_0": "X-Env: prod",
        "request_headers_1": "X-Debug",
        "firewall_0": "10.0.0.0/8",
    }
    result = admin_client.post(f"/admin/routing/hostrule/{rule.pk}/change/", form)
    assert result.status_code == 302, result.content.decode()
    saved = HostRule.objects.get()
    assert (saved.rewrite, saved.request_headers, saved.firewall) == (
        rule.rewrite,
        rule.request_headers,
        rule.firewall,
    )
    assert (saved.query, saved.response_headers) == ({}, {})


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        ("rewrite", "( => /x", "the pattern does not compile"),
        ("rewrite", "just a path", "is not “pattern =&gt; replacement”"),
        ("request_headers_0", "Host: evil", "Host is the balancer&#x27;s own to write"),
        ("request_headers_0", "no colon", "is not “Name: value”"),
        ("response_headers_1", "Content-Length", "Content-Length is the balancer&#x27;s own"),
        ("firewall_1", "10.0.0.300", "is not an address or network"),
        ("firewall_2", "private", "A prefix starts with"),
        ("query_0", "=x", "is not “key=value”"),
    ],
)
def test_bad_actions_are_refused_in_the_form_with_a_clear_message(
    admin_client, mango, field, text, message
):
    result = admin_client.post(
        "/admin/routing/pathrule/add/",
        {"prefix": "/mango", "pool": mango.pk, "enabled": "on", field: text},
    )
    assert result.status_code == 200
    page = result.content.decode()
    assert message in page
    assert 'class="errorlist' in page
    assert not PathRule.objects.exists()
