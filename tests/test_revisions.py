"""The routing table's history: one revision per committed change, rollback to one."""

import io
import json

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import transaction

from routing.health import run_checks
from routing.models import Backend, HostRule, PathRule, Pool, Revision, RoutingVersion
from routing.revisions import roll_back
from routing.routes_file import export_routes, read_routes_file

from .conftest import AdminListenerClient, pool_rows, rule_row

# Revisions are written when a transaction commits: these tests commit.
pytestmark = pytest.mark.django_db(transaction=True)


def summaries():
    return [revision.summary for revision in Revision.objects.order_by("number")]


@pytest.fixture
def apple():
    """Pools apple and mango, and www.mango.com routed to apple: revision 1."""
    with transaction.atomic():
        apple = Pool.objects.create(name="apple")
        mango = Pool.objects.create(name="mango")
        Backend.objects.create(pool=apple, url="http://127.0.0.1:9081")
        Backend.objects.create(pool=mango, url="http://127.0.0.1:8081")
        HostRule.objects.create(host="www.mango.com", pool=apple)
    return apple


def test_a_transaction_makes_one_revision_with_the_whole_table(apple):
    assert summaries() == [
        "+ pool apple\n+ backend http://127.0.0.1:9081 (apple)\n+ pool mango\n"
        "+ backend http://127.0.0.1:8081 (mango)\n+ host www.mango.com"
    ]
    revision = Revision.objects.get()
    assert revision.number == 1 and revision.user is None
    assert read_routes_file(revision.routes) == export_routes()


def test_each_write_outside_a_transaction_makes_its_own_revision(apple):
    rule = HostRule.objects.get()
    rule.pool = Pool.objects.get(name="mango")
    rule.save()
    PathRule.objects.create(prefix="/apple", pool=apple)
    assert summaries()[1:] == ["~ host www.mango.com: pool apple -> mango", "+ path /apple"]
    assert list(Revision.objects.values_list("number", flat=True)) == [3, 2, 1]  # newest first


def test_a_write_that_changes_nothing_makes_no_revision(apple):
    version = RoutingVersion.current()
    apple.save()
    Backend.objects.filter(pool=apple).update(weight=1)
    assert RoutingVersion.current() > version  # the workers were told all the same
    assert Revision.objects.count() == 1


def test_a_rolled_back_transaction_makes_no_revision(apple):
    with pytest.raises(RuntimeError), transaction.atomic():
        Pool.objects.create(name="kiwi")
        raise RuntimeError
    call_command(
        "import_routes", "-", "--dry-run", stdin=io.StringIO("pools: {}"), stdout=io.StringIO()
    )
    assert Revision.objects.count() == 1


def test_loaddata_makes_one_revision(tmp_path):
    fixture = tmp_path / "routes.json"
    rows = [*pool_rows("kiwi", ["http://127.0.0.1:7001", "http://127.0.0.1:7002"])]
    rows.append(rule_row("kiwi", host="www.kiwi.com"))
    fixture.write_text(json.dumps(rows))
    call_command("loaddata", str(fixture), verbosity=0)
    assert summaries() == [
        "+ pool kiwi\n+ backend http://127.0.0.1:7001 (kiwi)\n"
        "+ backend http://127.0.0.1:7002 (kiwi)\n+ host www.kiwi.com"
    ]


def test_an_import_makes_one_revision(apple):
    routes = export_routes()
    routes["pools"]["mango"]["read_timeout"] = 5.0
    del routes["pools"]["apple"]
    routes["hosts"][0]["pool"] = "mango"
    call_command("import_routes", "-", stdin=io.StringIO(json.dumps(routes)), stdout=io.StringIO())
    assert summaries()[1:] == [
        "- backend http://127.0.0.1:9081 (apple)\n- pool apple\n"
        "~ pool mango: read_timeout 10.0 -> 5.0\n~ host www.mango.com: pool apple -> mango"
    ]


def test_health_checks_make_no_revision(apple, closed_port_url):
    backend = Backend.objects.get(pool=apple)
    Backend.objects.filter(pk=backend.pk).update(url=closed_port_url)
    assert Revision.objects.count() == 2
    version = RoutingVersion.current()
    run_checks()
    backend.refresh_from_db()
    assert not backend.healthy  # the check flipped it, and told the workers
    assert RoutingVersion.current() > version
    assert Revision.objects.count() == 2


def test_rollback_restores_the_table_as_a_new_revision(apple):
    first = Revision.objects.get()
    mango = Pool.objects.get(name="mango")
    HostRule.objects.filter(host="www.mango.com").update(pool=mango)
    PathRule.objects.create(prefix="/new", pool=mango)
    assert roll_back(first, dry_run=True) == [
        "- path /new",
        "~ host www.mango.com: pool mango -> apple",
    ]
    assert Revision.objects.count() == 3  # a dry run writes nothing
    changes = roll_back(first)
    assert changes == ["- path /new", "~ host www.mango.com: pool mango -> apple"]
    latest = Revision.objects.first()
    assert latest.number == 4
    assert latest.summary == "rollback to 1\n- path /new\n~ host www.mango.com: pool mango -> apple"
    assert latest.routes == first.routes
    assert not PathRule.objects.exists()


def test_a_change_in_the_admin_names_its_user(admin_client, admin_user, apple):
    response = admin_client.post(
        "/admin/routing/pathrule/add/",
        {"prefix": "/apple", "pool": apple.pk, "enabled": "on", "strip_prefix": "on"},
    )
    assert response.status_code == 302, response.content.decode()
    latest = Revision.objects.first()
    assert (latest.number, latest.user, latest.summary) == (2, admin_user, "+ path /apple")


def test_routes_history_and_rollback_routes_commands(apple):
    PathRule.objects.create(prefix="/new", pool=apple)
    history = io.StringIO()
    call_command("routes_history", stdout=history)
    lines = history.getvalue().splitlines()
    assert lines[0].startswith("revision 2  ") and lines[1] == "  + path /new"
    assert lines[2].startswith("revision 1  ") and lines[3] == "  + pool apple"
    output = io.StringIO()
    call_command("rollback_routes", "1", stdout=output)
    assert output.getvalue().splitlines() == [
        "- path /new",
        "Rolled back to revision 1: revision 3.",
    ]
    assert Revision.objects.first().summary == "rollback to 1\n- path /new"


def test_rollback_routes_dry_run_writes_nothing(apple):
    PathRule.objects.create(prefix="/new", pool=apple)
    output = io.StringIO()
    call_command("rollback_routes", "1", "--dry-run", stdout=output)
    assert output.getvalue().splitlines() == ["- path /new", "Dry run: 1 change not written."]
    assert PathRule.objects.exists() and Revision.objects.count() == 2


@pytest.mark.parametrize(("limit", "numbers"), [(1, ["2"]), (0, ["2", "1"])])
def test_routes_history_limit(apple, limit, numbers):
    PathRule.objects.create(prefix="/new", pool=apple)
    history = io.StringIO()
    call_command("routes_history", "--limit", str(limit), stdout=history)
    heads = [line.split()[1] for line in history.getvalue().splitlines() if line[0] != " "]
    assert heads == numbers


def test_a_negative_routes_history_limit_is_refused_with_a_message(apple):
    with pytest.raises(CommandError, match="--limit"):
        call_command("routes_history", "--limit", "-1")


def test_the_history_page_lists_revisions_with_their_changes(admin_client, apple):
    PathRule.objects.create(prefix="/new", pool=apple)
    page = admin_client.get("/admin/routing/history/").content.decode()
    assert page.index('id="revision-2"') < page.index('id="revision-1"')  # newest first
    assert "+ path /new" in page and "+ host www.mango.com" in page
    assert 'href="/admin/routing/history/1/rollback/"' in page
    assert 'href="/admin/routing/history/2/rollback/"' not in page  # the current table
    for linking in ("/admin/", "/admin/routing/pool/"):  # the index and the sidebar
        assert 'href="/admin/routing/history/"' in admin_client.get(linking).content.decode()


def test_rollback_in_the_admin_shows_the_changes_then_asks(admin_client, admin_user, apple):
    PathRule.objects.create(prefix="/new", pool=apple)
    preview = admin_client.get("/admin/routing/history/1/rollback/")
    assert "- path /new" in preview.content.decode()
    assert 'type="submit"' in preview.content.decode()
    assert PathRule.objects.exists() and Revision.objects.count() == 2
    done = admin_client.post("/admin/routing/history/1/rollback/")
    assert done.status_code == 302 and done.headers["Location"] == "/admin/routing/history/"
    assert not PathRule.objects.exists()
    latest = Revision.objects.first()
    assert (latest.number, latest.user, latest.summary) == (
        3,
        admin_user,
        "rollback to 1\n- path /new",
    )


def test_rollback_in_the_admin_needs_change_permission_on_the_table(
    admin_site, django_user_model, apple
):
    user = django_user_model.objects.create_user("viewer", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    admin_site.force_login(user)
    PathRule.objects.create(prefix="/new", pool=apple)
    page = admin_site.get("/admin/routing/history/")
    assert page.status_code == 200 and "Roll back to this" not in page.content.decode()
    assert admin_site.get("/admin/routing/history/1/rollback/").status_code == 403
    assert admin_site.post("/admin/routing/history/1/rollback/").status_code == 403
    assert PathRule.objects.exists()
    user.user_permissions.clear()
    assert admin_site.get("/admin/routing/history/").status_code == 403


def test_a_rollback_without_the_csrf_token_is_refused(admin_user, apple):
    browser = AdminListenerClient(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    PathRule.objects.create(prefix="/new", pool=apple)
    assert browser.post("/admin/routing/history/1/rollback/").status_code == 403
    assert PathRule.objects.exists() and Revision.objects.count() == 2


def test_a_revision_that_cannot_be_written_leaves_the_change_and_logs(monkeypatch, caplog):
    def broken():
        raise RuntimeError("the database went away")

    monkeypatch.setattr("routing.revisions.export_routes", broken)
    Pool.objects.create(name="kiwi")
    assert Pool.objects.filter(name="kiwi").exists() and not Revision.objects.exists()
    assert "the database went away" in caplog.text


def test_a_revision_before_that_no_longer_reads_does_not_stop_the_history(apple):
    Revision.objects.filter(number=1).update(routes="pools: [not, a, mapping]")
    PathRule.objects.create(prefix="/new", pool=apple)
    latest = Revision.objects.first()
    assert latest.number == 2 and "changes not listed" in latest.summary
    assert read_routes_file(latest.routes) == export_routes()


def pool_form_defaults():
    """The pool form's fields at their defaults, as a browser posts them (unticked: absent)."""
    fields = [field for field in Pool._meta.concrete_fields if not field.primary_key]
    return {
        field.name: "on" if field.get_default() is True else field.get_default()
        for field in fields
        if field.get_default() is not False
    }


def test_a_pool_saved_with_its_backends_in_the_admin_is_one_revision(admin_client):
    response = admin_client.post(
        "/admin/routing/pool/add/",
        {
            **pool_form_defaults(),
            "name": "kiwi",
            "backends-TOTAL_FORMS": "2",
            "backends-INITIAL_FORMS": "0",
            "backends-0-url": "http://127.0.0.1:7001",
            "backends-0-weight": "1",
            "backends-0-enabled": "on",
            "backends-1-url": "http://127.0.0.1:7002",
            "backends-1-weight": "1",
            "backends-1-enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()
    assert summaries() == [
        "+ pool kiwi\n+ backend http://127.0.0.1:7001 (kiwi)\n"
        "+ backend http://127.0.0.1:7002 (kiwi)"
    ]
