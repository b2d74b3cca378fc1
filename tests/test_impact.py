"""The impact preview: which recent requests an edit would send elsewhere, before it is made."""

import io
from datetime import UTC, datetime

import pytest
from django.core.management import call_command

from routing.impact import Move, moves, preview_import
from routing.models import HostRule, PathRule, RecentRequest, Revision
from routing.revisions import record_revision
from routing.routes_file import dump_routes, export_routes
from routing.table import build_route_table

from . import test_api

api, token = test_api.api, test_api.token  # the API's fixtures: a superuser's token

pytestmark = pytest.mark.django_db

MOVED = (
    "GET www.mango.com/apple/pie (5 in the last hour): "
    "host rule www.mango.com → pool mango ⇒ pool apple"
)


def seen(method, host, path, count, writer="w:1"):
    RecentRequest.objects.create(
        writer=writer,
        period=0,
        method=method,
        host=host,
        path=path,
        count=count,
        last_seen=datetime.now(UTC),
    )


@pytest.fixture
def recent(fruit_routes):
    seen("GET", "www.mango.com", "/apple/pie", 3, writer="a:1")
    seen("GET", "www.mango.com", "/apple/pie", 2, writer="b:2")  # another worker's
    seen("GET", "www.apple.com", "/", 7)
    seen("POST", "shop.test", "/mango/cart", 4)
    seen("GET", "shop.test", "/kiwi", 1)


def mango_to_apple():
    """The table as a routes file, with www.mango.com sent to pool apple."""
    document = export_routes()
    for rule in document["hosts"]:
        if rule["host"] == "www.mango.com":
            rule["pool"] = "apple"
    return document


def test_a_dry_run_import_names_the_requests_it_moves_and_no_other(recent):
    out = io.StringIO()
    stdin = io.StringIO(dump_routes(mango_to_apple()))
    call_command("import_routes", "-", "--dry-run", stdin=stdin, stdout=out)
    lines = out.getvalue().splitlines()
    assert lines == [
        "~ host www.mango.com: pool mango -> apple",
        "Dry run: 1 change not written.",
        "Requests of the last hour that would go elsewhere:",
        f"  {MOVED}",
    ]
    assert HostRule.objects.get(host="www.mango.com").pool.name == "mango"  # nothing written


def test_a_dry_run_that_moves_nothing_says_so(recent):
    document = export_routes()
    document["pools"]["apple"]["read_timeout"] = 7
    out = io.StringIO()
    call_command(
        "import_routes", "-", "--dry-run", stdin=io.StringIO(dump_routes(document)), stdout=out
    )
    assert out.getvalue().splitlines()[-1] == "No request of the last hour would go elsewhere."


def test_a_real_import_prints_no_preview(recent):
    out = io.StringIO()
    call_command("import_routes", "-", stdin=io.StringIO(dump_routes(mango_to_apple())), stdout=out)
    assert "elsewhere" not in out.getvalue()
    assert HostRule.objects.get(host="www.mango.com").pool.name == "apple"


def test_new_rules_deleted_rules_and_answers_are_all_named(recent):
    document = export_routes()
    document["paths"] = [rule for rule in document["paths"] if rule["prefix"] != "/mango"]
    document["paths"].append({"prefix": "/kiwi", "respond": {"status": 200, "body": "soon"}})
    _changes, found = preview_import(document)
    assert [str(move) for move in found] == [
        "POST shop.test/mango/cart (4 in the last hour): "
        "path rule */mango → pool mango ⇒ no rule (404)",
        "GET shop.test/kiwi (1 in the last hour): "
        "no rule (404) ⇒ path rule */kiwi → fixed response 200",
    ]


def test_requests_older_than_an_hour_are_left_out(fruit_routes):
    seen("GET", "www.mango.com", "/old", 9)
    RecentRequest.objects.update(last_seen=datetime(2020, 1, 1, tzinfo=UTC))
    assert preview_import(mango_to_apple())[1] == []


def test_moves_compares_two_tables_without_the_database():
    from routing import snapshot

    mango = snapshot.Pool(id=1, name="mango")
    apple = snapshot.Pool(id=2, name="apple")
    before = snapshot.RouteTable.from_routes(
        [snapshot.Route(kind="host", rule_id=1, pool=mango, host="www.mango.com")],
        version=1,
        pools=[mango, apple],
    )
    after = snapshot.RouteTable.from_routes(
        [
            snapshot.Route(kind="host", rule_id=1, pool=mango, host="www.mango.com"),
            snapshot.Route(
                kind="path", rule_id=2, pool=apple, host="www.mango.com", prefix=("apple",)
            ),
        ],
        version=2,
        pools=[mango, apple],
    )
    requests = [("GET", "www.mango.com", "/apple/pie", 5), ("GET", "www.mango.com", "/", 2)]
    assert moves(before, after, requests) == [
        Move(
            "GET",
            "www.mango.com",
            "/apple/pie",
            5,
            "host rule www.mango.com → pool mango",
            "path rule www.mango.com/apple → pool apple",
        )
    ]


def test_the_api_dry_run_has_the_preview(recent, api):
    response = api("PUT", "/api/routes?dry_run=1", mango_to_apple(), Accept="application/json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["changes"] == ["~ host www.mango.com: pool mango -> apple"]
    assert [move["line"] for move in body["impact"]] == [MOVED]
    assert body["impact"][0]["count"] == 5
    assert HostRule.objects.get(host="www.mango.com").pool.name == "mango"
    real = api("PUT", "/api/routes", mango_to_apple(), Accept="application/json").json()
    assert "impact" not in real


def test_the_api_rollback_dry_run_has_the_preview(recent, api):
    first = record_revision()
    HostRule.objects.filter(host="www.mango.com").update(enabled=False)
    record_revision()
    body = api("POST", f"/api/revisions/{first.pk}/rollback/?dry_run=1").json()
    assert [move["line"] for move in body["impact"]] == [
        "GET www.mango.com/apple/pie (5 in the last hour): "
        "path rule */apple → pool apple ⇒ host rule www.mango.com → pool mango"
    ]


def test_the_rollback_confirmation_shows_the_preview(recent, admin_client):
    first = record_revision()
    rule = HostRule.objects.get(host="www.mango.com")
    rule.pool = PathRule.objects.get(prefix="/apple").pool
    rule.save()
    assert Revision.objects.count() >= 1
    page = admin_client.get(f"/admin/routing/history/{first.number}/rollback/").content.decode()
    assert (
        "GET www.mango.com/apple/pie (5 in the last hour): "
        "host rule www.mango.com → pool apple ⇒ pool mango"
    ) in page
    assert "www.apple.com" not in page.split('id="impact-preview"')[1]


def test_the_rule_form_previews_the_impact_and_saves_nothing(recent, admin_client):
    rule = HostRule.objects.get(host="www.mango.com")
    apple = PathRule.objects.get(prefix="/apple").pool
    url = f"/admin/routing/hostrule/{rule.pk}/change/"
    form = admin_client.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(
        {"host": "www.mango.com", "answer": "pool", "pool": apple.pk, "enabled": "on"},
        _preview_impact="Preview impact",
    )
    data = {**flat_form_data(form), **data}
    response = admin_client.post(url, data)
    assert response.status_code == 200
    page = response.content.decode()
    assert MOVED in page.replace("&gt;", ">")
    assert "nothing was saved" in page
    assert HostRule.objects.get(pk=rule.pk).pool.name == "mango"
    assert build_route_table().exact["www.mango.com"].by_prefix[()].pool.name == "mango"


def flat_form_data(form):
    """The form's fields as a browser would post them, widgets' sub-fields included."""
    data = {}
    for bound in form:
        value = bound.value()
        widget = bound.field.widget
        if hasattr(widget, "widgets"):
            values = widget.decompress(value) if not isinstance(value, list) else value
            for index, sub in enumerate(values):
                if sub not in (None, False):
                    data[f"{bound.html_name}_{index}"] = sub
        elif value not in (None, False):
            data[bound.html_name] = value
    return data


def test_the_rule_form_preview_shows_form_errors_without_a_preview(recent, admin_client):
    rule = HostRule.objects.get(host="www.mango.com")
    url = f"/admin/routing/hostrule/{rule.pk}/change/"
    form = admin_client.get(url).context["adminform"].form
    data = {**flat_form_data(form), "host": "not a host!", "_preview_impact": "1"}
    page = admin_client.post(url, data).content.decode()
    assert "errornote" in page
    assert 'id="impact-preview"' not in page


def test_the_add_form_previews_a_new_rule(recent, admin_client):
    url = "/admin/routing/pathrule/add/"
    form = admin_client.get(url).context["adminform"].form
    apple = PathRule.objects.get(prefix="/apple").pool
    data = {
        **flat_form_data(form),
        "prefix": "/apple",
        "host": "www.mango.com",
        "answer": "pool",
        "pool": apple.pk,
        "enabled": "on",
        "_preview_impact": "Preview impact",
    }
    page = admin_client.post(url, data).content.decode().replace("&gt;", ">")
    assert (
        "GET www.mango.com/apple/pie (5 in the last hour): "
        "host rule www.mango.com → pool mango ⇒ path rule www.mango.com/apple → pool apple"
    ) in page
    assert "www.apple.com/" not in page.split('id="impact-preview"')[1]
    assert not PathRule.objects.filter(host="www.mango.com").exists()
