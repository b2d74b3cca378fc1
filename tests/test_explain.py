"""The route explainer, in the admin and on the command line: one code path, the resolver's."""

import pytest
from django.core.management import call_command

from routing.models import Backend, HostRule, PathRule, Pool
from tests.conftest import admin_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def rules():
    mango = Pool.objects.create(name="mango")
    apple = Pool.objects.create(name="apple")
    empty = Pool.objects.create(name="empty")
    Backend.objects.create(pool=mango, url="http://127.0.0.1:8081")
    Backend.objects.create(pool=apple, url="http://127.0.0.1:9081", weight=0)
    Backend.objects.create(pool=apple, url="http://127.0.0.1:9082")
    HostRule.objects.create(host="www.mango.com", pool=mango)
    HostRule.objects.create(host="*.mango.com", pool=apple)
    PathRule.objects.create(prefix="/apple", pool=apple)
    PathRule.objects.create(prefix="/apple/pie", pool=mango, enabled=False)
    PathRule.objects.create(prefix="/", pool=empty)


def explain_command(url, capsys):
    call_command("explain_route", url)
    return capsys.readouterr().out


def test_command_names_the_winner_the_pool_and_the_backend_path(rules, capsys):
    out = explain_command("http://shop.example/apple/x?q=1", capsys)
    assert "Rule      path rule /apple (any host) → apple" in out
    assert "Pool      apple (random)" in out
    assert "Backend receives  /x" in out
    assert "http://127.0.0.1:9081  weight 0  draining" in out
    assert "http://127.0.0.1:9082  weight 1  usable" in out


def test_command_says_why_every_other_rule_lost(rules, capsys):
    out = explain_command("http://www.mango.com/apple/pie", capsys)
    assert "* www.mango.com → mango: serves this request" in out
    assert "*.mango.com → apple: loses: exact host www.mango.com is more specific" in out
    assert "/apple (any host) → apple: loses: exact host www.mango.com is more specific" in out
    assert "/apple/pie (any host) → mango: would match, but the rule is disabled" in out
    out = explain_command("http://eu.mango.com/", capsys)
    assert "/ (any host) → empty: loses: wildcard host *.mango.com is more specific" in out
    out = explain_command("http://shop.example/apple/x", capsys)
    assert "/ (any host) → empty: loses: the longer prefix /apple wins" in out
    assert "www.mango.com → mango: host does not match" in out


def test_command_shows_503_and_400(rules, capsys):
    assert "503 No backend servers available." in explain_command("http://x.example/", capsys)
    assert "400 Bad Request" in explain_command("http://bad host/", capsys)


def test_admin_explainer_page(rules, admin_client):
    index = admin_client.get("/admin/").content.decode()
    assert 'href="/admin/routing/explain/"' in index
    page = admin_client.get("/admin/routing/explain/", {"url": "http://www.mango.com/apple/pie"})
    html = page.content.decode()
    assert page.status_code == 200
    rule = HostRule.objects.get(host="www.mango.com")
    # The rule, the pool and every candidate are links to their pages.
    assert (
        f'<td id="winning-rule"><a href="/admin/routing/hostrule/{rule.pk}/change/">'
        "host rule www.mango.com → mango</a></td>"
    ) in html
    assert f'href="/admin/routing/pool/{rule.pool_id}/change/"' in html
    for path_rule in PathRule.objects.all():
        assert f'href="/admin/routing/pathrule/{path_rule.pk}/change/"' in html
    assert '<code id="upstream-path">/apple/pie</code>' in html
    assert "would match, but the rule is disabled" in html
    # A backend no health check has seen yet is not called usable.
    assert "not yet checked" in html and ">usable<" not in html
    # One notation for a path rule on any host, as in the rule lists.
    assert "*/" not in html.replace("*/*", "")


def test_admin_explainer_shows_the_query_the_backend_receives(rules, admin_client):
    html = admin_client.get(
        "/admin/routing/explain/", {"url": "http://www.mango.com/apple/pie?x=1&y=2"}
    ).content.decode()
    assert '<code id="upstream-path">/apple/pie?x=1&amp;y=2</code>' in html


def test_admin_explainer_says_an_admin_listener_url_is_not_routed(rules, admin_client):
    port = int(admin_port())
    for url in (f"http://localhost:{port}/admin/", f"http://127.0.0.1:{port}/api/"):
        html = admin_client.get("/admin/routing/explain/", {"url": url}).content.decode()
        assert 'id="admin-listener"' in html and "never routed" in html
        assert 'id="winning-rule"' not in html
    # Another port of the same host is traffic, routed as usual.
    html = admin_client.get(
        "/admin/routing/explain/", {"url": f"http://localhost:{port + 1}/"}
    ).content.decode()
    assert 'id="admin-listener"' not in html


def test_admin_routing_table_lists_rules_in_resolver_order(rules, admin_client):
    page = admin_client.get("/admin/routing/table/").content.decode()
    html = page[page.index('id="route-table"') :]
    order = [html.index(label) for label in ("www.mango.com", "*.mango.com", "any host")]
    assert order == sorted(order)
    any_host = html[html.index("any host") :]
    assert any_host.index("<code>/apple</code>") < any_host.index("<code>/</code>")
    assert "/apple/pie" not in html  # disabled rules are not in the live table


def test_explainer_needs_a_staff_login(admin_site):
    assert admin_site.get("/admin/routing/explain/").status_code == 302


def test_urls_that_are_no_urls_get_400_and_credentials_are_ignored(rules, capsys):
    assert "400 Bad Request" in explain_command("http://[::1/x", capsys)
    out = explain_command("http://user:pw@shop.example/apple/x", capsys)
    assert "Rule      path rule /apple (any host) → apple" in out


@pytest.fixture
def tutorial_rule(rules):
    HostRule.objects.filter(host="www.mango.com").update(
        request_headers={"set": {"MyCustomHeader": "Test"}, "remove": ["X-Debug"]},
        query={"set": {"MyCustomParam": "Test"}, "remove": ["RemoveMe"]},
        rewrite=[{"pattern": "^/v1", "replacement": "/v2"}],
        response_headers={"set": {"X-Frame-Options": "DENY"}},
        firewall={"deny": ["10.192.0.1"], "deny_paths": ["/messages"]},
    )


def test_command_shows_what_the_rules_actions_would_do(tutorial_rule, capsys):
    out = explain_command("http://www.mango.com/v1/x?RemoveMe=Remove&keep=1", capsys)
    assert "Backend receives  /v2/x?keep=1&MyCustomParam=Test" in out
    assert "request header  set MyCustomHeader: Test" in out
    assert "request header  remove x-debug" in out
    assert "response header set X-Frame-Options: DENY" in out
    assert "Firewall  lets the path through (no client given)" in out


def test_command_gives_the_firewalls_verdict_for_a_client(tutorial_rule, capsys):
    call_command("explain_route", "http://www.mango.com/", "--client", "10.192.0.1")
    out = capsys.readouterr().out
    assert "Firewall  firewall: client 10.192.0.1 denied" in out
    assert "Answer    403 Forbidden" in out
    call_command("explain_route", "http://www.mango.com/%6Dessages/1", "--client", "10.0.0.1")
    assert "firewall: path /messages denied" in capsys.readouterr().out
    call_command("explain_route", "http://www.mango.com/", "--client", "10.0.0.1")
    assert "Firewall  lets it through" in capsys.readouterr().out


def test_admin_explainer_shows_the_actions_and_the_firewall(tutorial_rule, admin_client):
    page = admin_client.get(
        "/admin/routing/explain/",
        {"url": "http://www.mango.com/v1?RemoveMe=1", "client": "10.192.0.1"},
    )
    html = page.content.decode()
    assert '<code id="upstream-path">/v2?MyCustomParam=Test</code>' in html
    assert '<code id="upstream-query">MyCustomParam=Test</code>' in html
    assert "<code>set MyCustomHeader: Test</code>" in html
    assert "firewall: client 10.192.0.1 denied" in html
    assert "<strong>403 Forbidden</strong>" in html
