"""Redirects, fixed answers, access lists and rate limits: models, admin, routes file,
explainer and the request path, through the test client and against the test database."""

import base64
import io
import re

import pytest
from django.contrib.auth.hashers import check_password, make_password
from django.core import checks
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from prometheus_client import REGISTRY

from routing import guards, ratelimit
from routing.explain import explain
from routing.models import AccessList, AccessListUser, Backend, HostRule, PathRule, Pool
from routing.routes_file import export_routes
from routing.table import get_route_table

pytestmark = pytest.mark.django_db

ALICE = "Basic " + base64.b64encode(b"alice:s3cret pass").decode()
FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fast_hashes(settings):
    """Cheap hashes for these tests; the end-to-end tests use the real, slow default."""
    settings.PASSWORD_HASHERS = FAST_HASHERS
    ratelimit.LOCAL.tats.clear()


@pytest.fixture
def mango(demo_backends):
    pool = Pool.objects.create(name="mango")
    for url in demo_backends["mango"]:
        Backend.objects.create(pool=pool, url=url)
    return pool


@pytest.fixture
def staff():
    access_list = AccessList.objects.create(name="staff")
    user = AccessListUser(access_list=access_list, username="alice")
    user.set_password("s3cret pass")
    user.save()
    return access_list


# The model


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "A rule needs a pool, a redirect or a fixed response."),
        (
            {"redirect": {"to": "https://a.test"}, "respond": {"status": 404}},
            "A rule has one answer, a pool, a redirect or a fixed response, "
            "not redirect and respond.",
        ),
    ],
)
def test_a_rule_has_exactly_one_answer(fields, message):
    with pytest.raises(ValidationError) as caught:
        HostRule.objects.create(host="a.test", **fields)
    assert message in caught.value.messages


def test_a_rule_with_a_pool_and_a_redirect_is_refused_on_every_write_path(mango):
    rule = HostRule.objects.create(host="a.test", pool=mango)
    with pytest.raises(ValidationError, match="not pool and redirect"):
        HostRule.objects.filter(pk=rule.pk).update(redirect={"to": "https://b.test"})
    with pytest.raises(ValidationError, match="not pool and respond"):
        PathRule.objects.bulk_create([PathRule(prefix="/x", pool=mango, respond={"status": 404})])


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("redirect", {"to": "https://a.test", "status": 300}, "redirect_status"),
        ("redirect", {"to": "/relative"}, "redirect_to"),
        ("redirect", {"to": "https://a.test/\r\nX: y"}, "redirect_to"),
        ("redirect", {"to": "https://a.test/?q=1", "keep_path": True}, "redirect_to_query"),
        ("redirect", {"to": "https://a.test", "keep": True}, "action_unknown_key"),
        ("respond", {"status": 99}, "respond_status"),
        ("respond", {"status": 204, "body": "x"}, "respond_body"),
        ("respond", {"status": 200, "content_type": "text/html\n"}, "respond_content_type"),
        ("rate_limit", {"requests": 0}, "rate_requests"),
        ("rate_limit", {"requests": 5, "per": 0}, "rate_per"),
        ("rate_limit", {"requests": 5, "burst": -1}, "rate_burst"),
        ("rate_limit", {"requests": 5, "by": "header"}, "rate_by"),
    ],
)
def test_a_malformed_guard_or_answer_is_refused(mango, field, value, code):
    answer = {} if field in ("redirect", "respond") else {"pool": mango}
    with pytest.raises(ValidationError) as caught:
        HostRule.objects.create(host="a.test", **answer, **{field: value})
    assert [error.code for error in caught.value.error_dict[field]] == [code]


def test_a_password_in_plain_text_is_never_stored(staff):
    with pytest.raises(ValidationError) as caught:
        AccessListUser.objects.create(access_list=staff, username="bob", password="hunter2")
    assert caught.value.error_dict["password"][0].code == "password_not_hashed"
    with pytest.raises(ValidationError):
        AccessListUser.objects.filter(username="alice").update(password="hunter2")
    assert AccessListUser.objects.get(username="alice").check_password("s3cret pass")


def test_a_username_with_a_colon_is_refused(staff):
    with pytest.raises(ValidationError, match="no colon"):
        AccessListUser.objects.create(
            access_list=staff, username="a:b", password=make_password("x")
        )


def test_an_access_list_that_rules_use_cannot_be_deleted(mango, staff):
    HostRule.objects.create(host="a.test", pool=mango, access_list=staff)
    with pytest.raises(Exception, match="protected"):
        staff.delete()


def test_editing_an_access_list_user_is_a_routing_change(mango, staff):
    HostRule.objects.create(host="a.test", pool=mango, access_list=staff)
    before = get_route_table()
    user = AccessListUser.objects.get()
    user.set_password("new one")
    user.save()
    after = get_route_table()
    assert after.version > before.version
    assert check_password(
        "new one", after.exact["a.test"].by_prefix[()].actions.access_list.users["alice"]
    )


# The system check


def rate_limit_warnings():
    return [
        message
        for message in checks.run_checks(databases=["default"])
        if message.id == "routing.W004"
    ]


def test_a_rate_limit_without_redis_is_warned_about(mango, settings):
    settings.REDIS_URL = ""
    HostRule.objects.create(host="a.test", pool=mango)
    assert rate_limit_warnings() == []
    HostRule.objects.create(host="b.test", pool=mango, rate_limit={"requests": 5})
    HostRule.objects.create(host="c.test", pool=mango, rate_limit={"requests": 5}, enabled=False)
    warnings = rate_limit_warnings()
    assert [warning.obj.host for warning in warnings] == ["b.test"]
    assert "each gunicorn worker" in warnings[0].msg
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    assert rate_limit_warnings() == []


# The request path (test client)


def test_a_redirect_keeps_the_path_after_the_prefix(client):
    PathRule.objects.create(
        prefix="/old",
        redirect={"to": "https://new.test/base", "status": 301, "keep_path": True},
        response_headers={"set": {"X-Rule": "old"}},
    )
    result = client.get("/old/a/b?c=1&d")
    assert (result.status_code, result["Location"]) == (301, "https://new.test/base/a/b?c=1&d")
    assert result["X-Rule"] == "old"


def test_basic_auth_none_wrong_right(client, mango, staff):
    HostRule.objects.create(host="staff.test", pool=mango, access_list=staff)
    headers = {"Host": "staff.test"}
    refused = client.get("/echo", headers=headers)
    assert (refused.status_code, refused["WWW-Authenticate"]) == (401, 'Basic realm="staff"')
    wrong = "Basic " + base64.b64encode(b"alice:nope").decode()
    assert client.get("/echo", headers={**headers, "Authorization": wrong}).status_code == 401
    assert client.get("/echo", headers={**headers, "Authorization": "Bearer x"}).status_code == 401
    assert client.get("/echo", headers={**headers, "Authorization": ALICE}).status_code == 200


def test_a_warm_request_with_guards_makes_no_query(client, mango, staff, django_assert_num_queries):
    HostRule.objects.create(
        host="staff.test",
        pool=mango,
        access_list=staff,
        rate_limit={"requests": 100, "per": 1, "burst": 100},
        response_headers={"set": {"X-Rule": "staff"}},
    )
    HostRule.objects.create(host="down.test", respond={"status": 503, "body": "Later."})
    headers = {"Host": "staff.test", "Authorization": ALICE}
    client.get("/echo", headers=headers)
    with django_assert_num_queries(0):
        assert client.get("/echo", headers=headers).status_code == 200
        assert client.get("/", headers={"Host": "down.test"}).content == b"Later."


def test_credentials_are_remembered_by_a_hash_of_them_until_the_list_changes(mango, staff):
    HostRule.objects.create(host="staff.test", pool=mango, access_list=staff)
    access_list = get_route_table().exact["staff.test"].by_prefix[()].actions.access_list
    assert guards.authenticated_user(access_list, ALICE) == "alice"
    assert len(access_list.verified) == 1
    assert all(ALICE.encode() not in key and b"s3cret" not in key for key in access_list.verified)
    AccessListUser.objects.filter(username="alice").update(password=make_password("changed"))
    fresh = get_route_table().exact["staff.test"].by_prefix[()].actions.access_list
    assert fresh.verified == {}
    assert guards.authenticated_user(fresh, ALICE) is None


def test_the_rate_limit_without_redis_counts_in_the_worker(client, mango, settings):
    settings.REDIS_URL = ""
    HostRule.objects.create(host="a.test", pool=mango, rate_limit={"requests": 1, "per": 10})
    assert client.get("/", headers={"Host": "a.test"}).status_code == 200
    refused = client.get("/", headers={"Host": "a.test"})
    assert (refused.status_code, refused.content) == (429, b"Too Many Requests")
    assert 9 <= int(refused["Retry-After"]) <= 10


@pytest.mark.parametrize(
    ("burst", "passes"),
    [(0, 1), (5, 6)],
)
def test_gcra_lets_a_burst_through_then_one_per_interval(burst, passes):
    counter = ratelimit.LocalCounter()
    tolerance = 0.2 * burst
    results = [counter.take("k", 0.2, tolerance, now=100.0) for _ in range(10)]
    assert results.count(None) == passes
    assert results[passes] == pytest.approx(0.2)
    assert counter.take("k", 0.2, tolerance, now=100.2) is None


@pytest.mark.parametrize(
    ("header", "credentials"),
    [
        (ALICE, ("alice", "s3cret pass")),
        ("basic " + base64.b64encode(b"a:b:c").decode(), ("a", "b:c")),
        ("Basic " + base64.b64encode(b"nocolon").decode(), None),
        ("Basic !!!", None),
        ("Digest x", None),
    ],
)
def test_basic_credentials_are_read_from_the_header(header, credentials):
    assert guards.basic_credentials(header) == credentials


# The admin


def test_the_admin_form_makes_a_redirect_rule(admin_client, mango):
    result = admin_client.post(
        "/admin/routing/hostrule/add/",
        {
            "host": "old.test",
            "answer": "redirect",
            "pool": mango.pk,  # left from a first choice: the answer chosen wins
            "redirect_0": "https://new.test",
            "redirect_1": "308",
            "redirect_2": "on",
            "enabled": "on",
        },
    )
    assert result.status_code == 302, result.content.decode()
    rule = HostRule.objects.get()
    assert rule.pool is None
    assert rule.redirect == {"to": "https://new.test", "status": 308, "keep_path": True}
    page = admin_client.get(f"/admin/routing/hostrule/{rule.pk}/change/").content.decode()
    assert re.search(r'<input type="radio" name="answer" value="redirect"[^>]* checked', page)


def test_the_admin_form_keeps_the_pool_as_the_default(admin_client, mango):
    page = admin_client.get("/admin/routing/hostrule/add/").content.decode()
    assert '<select name="pool"' in page
    result = admin_client.post(
        "/admin/routing/hostrule/add/", {"host": "a.test", "pool": mango.pk, "enabled": "on"}
    )
    assert result.status_code == 302
    assert HostRule.objects.get().pool == mango


def test_the_admin_form_asks_for_the_chosen_answer(admin_client, mango):
    result = admin_client.post(
        "/admin/routing/hostrule/add/", {"host": "a.test", "answer": "respond", "enabled": "on"}
    )
    assert "Give the status to respond with." in result.content.decode()
    assert not HostRule.objects.exists()


def test_an_access_list_user_is_added_with_djangos_password_form(admin_client, staff):
    result = admin_client.post(
        "/admin/routing/accesslistuser/add/",
        {
            "access_list": staff.pk,
            "username": "bob",
            "password1": "a long passphrase 1",
            "password2": "a long passphrase 1",
        },
    )
    assert result.status_code == 302, result.content.decode()
    bob = AccessListUser.objects.get(username="bob")
    assert bob.password.startswith("md5$") and bob.check_password("a long passphrase 1")
    page = admin_client.get(f"/admin/routing/accesslistuser/{bob.pk}/change/").content.decode()
    assert bob.password not in page and "a long passphrase" not in page


def test_a_password_is_set_twice_typed_and_never_shown(admin_client, staff):
    alice = AccessListUser.objects.get()
    url = f"/admin/routing/accesslistuser/{alice.pk}/password/"
    page = admin_client.get(url).content.decode()
    assert 'name="password1"' in page and alice.password not in page
    mismatch = admin_client.post(url, {"password1": "another passphrase", "password2": "other"})
    assert "didn’t match" in mismatch.content.decode()
    done = admin_client.post(
        url, {"password1": "another passphrase", "password2": "another passphrase"}
    )
    assert done.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("another passphrase")


# The explainer


def test_the_explainer_shows_the_answer_and_the_guards(mango, staff):
    PathRule.objects.create(
        prefix="/old", redirect={"to": "https://new.test", "status": 301, "keep_path": True}
    )
    HostRule.objects.create(
        host="staff.test",
        pool=mango,
        access_list=staff,
        rate_limit={"requests": 10, "per": 1, "burst": 20},
    )
    redirect = explain(get_route_table(), "http://any.test/old/a?b=1")
    assert (redirect.status, redirect.location) == (301, "https://new.test/a?b=1")
    guarded = explain(get_route_table(), "http://staff.test/")
    assert guarded.guards == (
        "rate limit: 10 requests a second on average, 20 more at once, for each client "
        "address apart; over it 429 Too Many Requests",
        "access list staff: HTTP Basic with one of its 1 users, else 401 Unauthorized "
        '(WWW-Authenticate: Basic realm="staff")',
    )
    out = io.StringIO()
    call_command("explain_route", "http://any.test/old/a?b=1", stdout=out)
    assert "Answer    301 redirect to https://new.test/a?b=1" in out.getvalue()


# The routes file


ROUTES = """\
pools:
  mango:
    backends:
    - http://127.0.0.1:8081
access_lists:
  staff:
    users:
      alice: {alice}
hosts:
- host: old.example.com
  redirect:
    to: https://new.example.com
    status: 301
    keep_path: true
- host: staff.example.com
  pool: mango
  rate_limit:
    requests: 5
    per: 1
    burst: 5
  access_list: staff
paths:
- prefix: /maintenance
  respond:
    status: 503
    body: Back at ten.
    content_type: text/plain
"""


def import_routes(text):
    out = io.StringIO()
    call_command("import_routes", "-", stdin=io.StringIO(text), stdout=out)
    return out.getvalue()


def export():
    out = io.StringIO()
    call_command("export_routes", stdout=out)
    return out.getvalue()


def test_a_routes_file_round_trip_with_every_guard_and_answer():
    alice = make_password("s3cret pass")
    output = import_routes(ROUTES.format(alice=alice))
    assert "+ access list staff" in output and "+ user alice (staff)" in output
    rule = HostRule.objects.get(host="staff.example.com")
    assert (rule.access_list.name, rule.rate_limit["requests"]) == ("staff", 5)
    assert AccessListUser.objects.get().check_password("s3cret pass")
    exported = export()
    assert exported.partition("pools:")[2] == ROUTES.format(alice=alice).partition("pools:")[2]
    assert import_routes(exported) == "No changes.\n"


def test_an_export_writes_action_keys_in_their_documented_order_whatever_the_database_keeps():
    # PostgreSQL's jsonb keeps keys shorter first, then by bytes, not as they were written.
    rule = HostRule.objects.create(
        host="shuffled.example.com",
        rate_limit={"by": "rule", "per": 1, "burst": 5, "requests": 5},
        respond={"body": "Back at ten.", "status": 503, "content_type": "text/plain"},
        rewrite=[{"replacement": "/v2/", "pattern": "^/v1/"}],
    )
    (entry,) = [host for host in export_routes()["hosts"] if host["host"] == rule.host]
    assert list(entry["rate_limit"]) == ["requests", "per", "burst", "by"]
    assert list(entry["respond"]) == ["status", "body", "content_type"]
    assert list(entry["rewrite"][0]) == ["pattern", "replacement"]


def test_a_plain_text_password_in_a_routes_file_is_refused_at_its_place():
    err = io.StringIO()
    with pytest.raises(CommandError, match="nothing was written"):
        call_command(
            "import_routes", "-", stdin=io.StringIO(ROUTES.format(alice="hunter2")), stderr=err
        )
    lines = err.getvalue().splitlines()
    assert any(
        line.startswith("access_lists.staff.users.alice: Not a Django password hash")
        for line in lines
    )
    assert not any("hunter2" in line for line in lines)
    assert not AccessList.objects.exists()


def test_a_rule_naming_no_known_access_list_is_an_error_at_its_place():
    text = ROUTES.format(alice=make_password("x")).replace("access_list: staff", "access_list: ops")
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_routes", "-", stdin=io.StringIO(text), stderr=err)
    assert 'hosts[1].access_list: no access list named "ops"' in err.getvalue()


def test_an_access_list_changed_in_the_file_changes_its_users():
    import_routes(ROUTES.format(alice=make_password("one")))
    output = import_routes(ROUTES.format(alice=make_password("two")))
    assert "~ user alice (staff): password changed" in output
    assert "one" not in output.replace("done", "")
    assert AccessListUser.objects.get().check_password("two")


def test_the_admin_pages_show_rules_that_answer_by_themselves(admin_client, mango):
    PathRule.objects.create(prefix="/old", redirect={"to": "https://new.test", "status": 308})
    page = admin_client.get("/admin/routing/explain/", {"url": "http://a.test/old/x"})
    html = page.content.decode()
    assert "308 redirect to https://new.test" in html
    assert "Backend receives" not in html
    table = admin_client.get("/admin/routing/table/").content.decode()
    assert "redirect https://new.test" in table


def test_a_firewalls_403_is_counted_as_a_refusal(client, mango):
    HostRule.objects.create(host="a.test", pool=mango, firewall={"deny": ["127.0.0.1"]})
    labels = {"rule": "host rule a.test → mango", "cause": "firewall"}
    before = REGISTRY.get_sample_value("lb_refused_total", labels) or 0
    assert client.get("/", headers={"Host": "a.test"}, REMOTE_ADDR="127.0.0.1").status_code == 403
    assert REGISTRY.get_sample_value("lb_refused_total", labels) == before + 1


def test_a_redis_restart_costs_no_request_its_count(settings, redis_server):
    settings.REDIS_URL = redis_server.url
    ratelimit.gcra_script.cache_clear()
    counter = ratelimit.RedisCounter()
    try:
        # One request a minute, no burst: the first passes, the second waits.
        assert counter.take("restart", 60.0, 0.0) is None
        assert counter.take("restart", 60.0, 0.0) > 50
        redis_server.stop()
        redis_server.start()  # empty again: the kept connection is stale
        errors = REGISTRY.get_sample_value("lb_rate_limit_redis_errors_total") or 0
        assert counter.take("restart", 60.0, 0.0) is None  # counted, on a new connection
        assert counter.take("restart", 60.0, 0.0) > 50
        assert (REGISTRY.get_sample_value("lb_rate_limit_redis_errors_total") or 0) == errors
    finally:
        ratelimit.gcra_script.cache_clear()
