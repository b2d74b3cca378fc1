"""An admin an operator can trust: true state, feedback on every action, a reversible
drain, warnings where a mistake is likely, and one view per site."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from routing import checks
from routing.health import run_checks
from routing.models import (
    Backend,
    HostRule,
    PathRule,
    Pool,
    RecentRequest,
    Revision,
    RoutingVersion,
)
from routing.revisions import record_revision
from routing.routes_file import dump_routes, export_routes, import_routes, read_routes_file
from routing.table import build_route_table

pytestmark = pytest.mark.django_db(transaction=True)

BACKEND = "http://127.0.0.1:9"  # nothing listens: a check fails with connection refused


@pytest.fixture
def kiwi():
    pool = Pool.objects.create(name="kiwi", health_check_path="")
    Backend.objects.create(pool=pool, url=BACKEND, weight=3)
    HostRule.objects.create(host="www.kiwi.com", pool=pool)
    return pool


def post_action(admin_client, action, backends, **extra):
    return admin_client.post(
        "/admin/routing/backend/",
        {"action": action, "_selected_action": [b.pk for b in backends], **extra},
        follow=True,
    )


# Reversible drain.


def test_drain_keeps_the_weight_and_the_table_skips_the_backend(kiwi):
    backend = kiwi.backends.get()
    Backend.objects.filter(pk=backend.pk).drain()
    backend.refresh_from_db()
    assert (backend.draining, backend.weight) == (True, 3)
    table = build_route_table()
    route = table.exact["www.kiwi.com"].by_prefix[()]
    assert route.pool.usable_backends == ()
    Backend.objects.filter(pk=backend.pk).undrain()
    route = build_route_table().exact["www.kiwi.com"].by_prefix[()]
    assert [b.weight for b in route.pool.usable_backends] == [3]


def test_drain_disable_enable_brings_the_backend_back_at_its_weight(kiwi):
    backends = Backend.objects.filter(pool=kiwi)
    backends.drain()
    backends.disable()
    backends.enable()
    backend = backends.get()
    assert (backend.enabled, backend.draining, backend.weight) == (True, False, 3)


def test_the_routes_file_carries_draining_both_ways(kiwi):
    Backend.objects.filter(pool=kiwi).drain()
    document = export_routes()
    assert document["pools"]["kiwi"]["backends"][0]["draining"] is True
    Backend.objects.filter(pool=kiwi).undrain()
    import_routes(read_routes_file(dump_routes(document)))
    backend = Backend.objects.get()
    assert (backend.draining, backend.weight) == (True, 3)


# True state.


def test_unchecked_is_a_neutral_badge_never_healthy(admin_client, kiwi):
    page = admin_client.get("/admin/routing/backend/").content.decode()
    assert "● unchecked" in page
    assert "healthy" not in page.split('id="result_list"')[1].split("</table>")[0]


def test_the_health_checker_beats_without_a_revision_or_a_version(kiwi):
    kiwi.health_check_path = "/healthcheck"
    kiwi.save()
    assert RoutingVersion.last_health_round() is None
    Backend.objects.filter(pool=kiwi).update(healthy=False)  # no flip on a failed check
    version, revisions = RoutingVersion.current(), Revision.objects.count()
    run_checks()
    assert RoutingVersion.last_health_round() is not None
    assert RoutingVersion.current() == version
    assert Revision.objects.count() == revisions
    assert record_revision() is None
    assert "health_checked_at" not in dump_routes(export_routes())


def test_the_admin_shows_when_the_checker_last_ran_amber_when_stale(admin_client, kiwi):
    page = admin_client.get("/admin/routing/backend/").content.decode()
    assert "heartbeat-stale" in page and "never run" in page
    RoutingVersion.beat(timezone.now())
    page = admin_client.get("/admin/routing/backend/").content.decode()
    assert "heartbeat-fresh" in page and "last ran" in page
    RoutingVersion.beat(timezone.now() - timedelta(hours=1))
    page = admin_client.get(f"/admin/routing/pool/{kiwi.pk}/change/").content.decode()
    assert "heartbeat-stale" in page and "looks stopped" in page


def test_latency_to_a_tenth_of_a_millisecond_and_errors_summarised(admin_client, kiwi):
    Backend.objects.filter(pool=kiwi).update(
        latency_ms=3.1777309995959513,
        last_checked=timezone.now(),
        last_error="HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded "
        "(Caused by NewConnectionError('[Errno 111] Connection refused'))",
    )
    page = admin_client.get("/admin/routing/backend/").content.decode()
    assert "3.2 ms" in page and "3.177" not in page
    assert ">connection refused<" in page and 'title="HTTPConnectionPool' in page


# Feedback and safety.


def test_taking_a_live_rules_last_backend_asks_first_then_says_what_it_did(admin_client, kiwi):
    backend = kiwi.backends.get()
    page = post_action(admin_client, "disable_selected", [backend]).content.decode()
    assert 'id="confirm-action"' in page
    assert "kiwi: 0 usable backends of 1; www.kiwi.com now answers 503" in page
    assert Backend.objects.get().enabled  # nothing changed yet
    page = post_action(
        admin_client, "disable_selected", [backend], confirmed="yes"
    ).content.decode()
    assert not Backend.objects.get().enabled
    assert "kiwi: 0 usable backends of 1; www.kiwi.com now answers 503" in page
    entry = LogEntry.objects.get(object_id=str(backend.pk))
    revision = Revision.objects.first().number
    assert entry.get_change_message() == (
        f"Disabled (admin action): enabled: yes → no. Revision {revision}."
    )
    assert f"#revision-{revision}" in page  # the message links the revision
    history = admin_client.get(f"/admin/routing/backend/{backend.pk}/history/").content.decode()
    assert "enabled: yes → no" in history


def test_an_action_that_leaves_a_usable_backend_needs_no_confirmation(admin_client, kiwi):
    Backend.objects.create(pool=kiwi, url="http://127.0.0.1:10")
    backend = Backend.objects.get(weight=3)
    page = post_action(admin_client, "drain_selected", [backend]).content.decode()
    assert "Yes, I&#x27;m sure" not in page
    assert "kiwi: 1 usable backend of 2; www.kiwi.com served" in page
    page = post_action(admin_client, "undrain_selected", [backend]).content.decode()
    assert "kiwi: 2 usable backends of 2" in page
    assert Backend.objects.get(pk=backend.pk).weight == 3


def test_history_says_old_and_new_values(admin_client, kiwi):
    backend = kiwi.backends.get()
    admin_client.post(
        f"/admin/routing/backend/{backend.pk}/change/",
        {"pool": kiwi.pk, "url": BACKEND, "weight": "5", "enabled": "on"},
    )
    entry = LogEntry.objects.get(object_id=str(backend.pk))
    assert entry.get_change_message() == "Changed weight: 3 → 5."


# Warnings where a mistake is likely.


def test_a_prefix_with_pattern_characters_and_a_host_typo_are_warned(admin_client, kiwi):
    page = admin_client.post(
        "/admin/routing/pathrule/add/",
        {"prefix": "/shop*", "host": "www.kiwl.com", "pool": kiwi.pk, "enabled": "on"},
        follow=True,
    ).content.decode()
    assert PathRule.objects.get().prefix == "/shop*"  # a warning, not an error
    assert "contains *, which match literally" in page
    assert "No host rule matches www.kiwl.com, and no recent request was for it" in page
    admin_client.post(
        "/admin/routing/pathrule/add/",
        {"prefix": "/shop", "host": "www.kiwi.com", "pool": kiwi.pk, "enabled": "on"},
    )
    page = admin_client.get("/admin/routing/pathrule/").content.decode()
    assert "No host rule matches www.kiwi.com" not in page


def test_a_path_rules_host_that_recent_traffic_asked_for_is_not_warned(admin_client, kiwi):
    RecentRequest.objects.create(
        writer="web-1:42",
        period=0,
        method="GET",
        host="api.kiwi.com",
        path="/",
        count=3,
        last_seen=timezone.now(),
    )
    page = admin_client.post(
        "/admin/routing/pathrule/add/",
        {"prefix": "/v1", "host": "api.kiwi.com", "pool": kiwi.pk, "enabled": "on"},
        follow=True,
    ).content.decode()
    assert PathRule.objects.filter(host="api.kiwi.com").exists()
    assert "No host rule matches" not in page


def test_a_pasted_url_in_a_host_field_is_its_host(admin_client, kiwi):
    admin_client.post(
        "/admin/routing/hostrule/add/",
        {"host": "http://www.Banana.com/", "pool": kiwi.pk, "enabled": "on"},
    )
    assert HostRule.objects.filter(host="www.banana.com").exists()


# One view per site.


def test_a_pool_lists_its_rules_and_a_host_rule_its_path_rules(admin_client, kiwi):
    rule = HostRule.objects.get()
    path_rule = PathRule.objects.create(host="www.kiwi.com", prefix="/shop", pool=kiwi)
    page = admin_client.get(f"/admin/routing/pool/{kiwi.pk}/change/").content.decode()
    assert f'href="/admin/routing/hostrule/{rule.pk}/change/"' in page
    assert f'href="/admin/routing/pathrule/{path_rule.pk}/change/"' in page
    # Backends come before the folded settings.
    assert page.index('id="backends-group"') < page.index("TLS to https://")
    assert page.count("collapse") >= 3
    page = admin_client.get(f"/admin/routing/hostrule/{rule.pk}/change/").content.decode()
    assert f'href="/admin/routing/pathrule/{path_rule.pk}/change/"' in page


def test_a_saved_rule_offers_to_explain_it(admin_client, kiwi):
    page = admin_client.post(
        "/admin/routing/pathrule/add/",
        {"prefix": "/shop", "pool": kiwi.pk, "enabled": "on"},
        follow=True,
    ).content.decode()
    assert 'class="explain-link"' in page
    assert "/admin/routing/explain/?url=http%3A%2F%2Fwww.example.com%2Fshop" in page


def test_live_is_a_worded_badge_filterable_and_sortable(admin_client, kiwi):
    empty = Pool.objects.create(name="empty")
    HostRule.objects.create(host="www.empty.com", pool=empty)
    HostRule.objects.create(host="www.off.com", pool=kiwi, enabled=False)
    page = admin_client.get("/admin/routing/hostrule/").content.decode()
    for label in (">live<", ">503: no usable backend<", ">off: disabled<"):
        assert label in page
    assert "icon-no.svg" not in page  # options are words, not red crosses
    down = admin_client.get("/admin/routing/hostrule/", {"live": "2"}).content.decode()
    assert "www.empty.com" in down and "www.kiwi.com" not in down
    ordered = admin_client.get("/admin/routing/hostrule/", {"o": "3"}).content.decode()
    listed = ordered[ordered.index('id="result_list"') :]
    assert listed.index("www.kiwi.com") < listed.index("www.empty.com")
    assert listed.index("www.empty.com") < listed.index("www.off.com")


def test_the_index_and_sidebar_list_rules_pools_backends_then_tools(admin_client):
    page = admin_client.get("/admin/").content.decode()
    content = page[page.index('id="content-main"') :]
    names = ["Host rules", "Path rules", "Pools", "Backends", "Access lists"]
    assert [content.index(f">{name}<") for name in names] == sorted(
        content.index(f">{name}<") for name in names
    )
    sidebar = admin_client.get("/admin/routing/pool/").content.decode()
    nav = sidebar[sidebar.index('id="nav-sidebar"') :]
    positions = [nav.index(f">{name}<") for name in names]
    assert positions == sorted(positions) and positions[-1] < nav.index("Explain a route")


def test_the_routing_table_links_rules_and_pools(admin_client, kiwi):
    rule = HostRule.objects.get()
    page = admin_client.get("/admin/routing/table/").content.decode()
    assert f'href="/admin/routing/hostrule/{rule.pk}/change/"' in page
    assert f'href="/admin/routing/pool/{kiwi.pk}/change/"' in page


# Running it yourself.


def test_a_system_check_warns_when_the_static_files_are_missing(tmp_path):
    with override_settings(STATIC_ROOT=tmp_path, WHITENOISE_USE_FINDERS=False):
        assert [w.id for w in checks.check_static_files()] == ["routing.W005"]
        (tmp_path / "admin" / "css").mkdir(parents=True)
        (tmp_path / "admin" / "css" / "base.css").write_text("")
        assert checks.check_static_files() == []
        call_command("check")  # a warning, not an error


def test_a_save_that_takes_a_live_rule_down_asks_first(admin_client, kiwi):
    backend = kiwi.backends.get()
    form = {"pool": kiwi.pk, "url": BACKEND, "weight": "3", "draining": "on", "enabled": "on"}
    url = f"/admin/routing/backend/{backend.pk}/change/"
    page = admin_client.post(url, form).content.decode()
    assert 'id="confirm-save"' in page
    assert "kiwi: 0 usable backends of 1; www.kiwi.com now answers 503" in page
    assert not Backend.objects.get().draining
    page = admin_client.post(url, {**form, "_confirmed": "yes"}, follow=True).content.decode()
    assert Backend.objects.get().draining
    assert "www.kiwi.com now answers 503" in page


def test_a_rule_save_onto_a_pool_with_no_usable_backend_asks_first(admin_client, kiwi):
    empty = Pool.objects.create(name="empty")
    Backend.objects.create(pool=empty, url="http://127.0.0.1:10", enabled=False)
    rule = HostRule.objects.get()
    form = {"host": "www.kiwi.com", "answer": "pool", "pool": empty.pk, "enabled": "on"}
    url = f"/admin/routing/hostrule/{rule.pk}/change/"
    page = admin_client.post(url, form).content.decode()
    assert 'id="confirm-save"' in page, page[page.find("errorlist") - 300 :][:800]
    assert "empty: 0 usable backends of 1; www.kiwi.com now answers 503" in page
    assert HostRule.objects.get().pool == kiwi
    admin_client.post(url, {**form, "_confirmed": "yes"})
    assert HostRule.objects.get().pool == empty
    # A rule that already answers 503, or a save onto a usable pool, asks nothing.
    page = admin_client.post(url, {**form, "preserve_host": "on"}, follow=True).content.decode()
    assert 'id="confirm-save"' not in page and HostRule.objects.get().preserve_host
    page = admin_client.post(url, {**form, "pool": kiwi.pk}, follow=True).content.decode()
    assert 'id="confirm-save"' not in page and HostRule.objects.get().pool == kiwi


def test_a_pool_save_that_disables_its_last_backend_asks_first(admin_client, kiwi):
    backend = kiwi.backends.get()
    form = {
        "name": "kiwi",
        "algorithm": "random",
        "connect_timeout": "3",
        "read_timeout": "10",
        "max_attempts": "3",
        "health_check_path": "",
        "health_check_interval": "5",
        "health_check_timeout": "2",
        "max_fails": "3",
        "fail_timeout": "10",
        "tls_verify": "on",
        "backends-TOTAL_FORMS": "1",
        "backends-INITIAL_FORMS": "1",
        "backends-0-id": backend.pk,
        "backends-0-pool": kiwi.pk,
        "backends-0-url": BACKEND,
        "backends-0-weight": "3",
    }
    url = f"/admin/routing/pool/{kiwi.pk}/change/"
    page = admin_client.post(url, form).content.decode()
    assert 'id="confirm-save"' in page, page[page.find("errorlist") - 300 :][:800]
    assert Backend.objects.get().enabled
    admin_client.post(url, {**form, "_confirmed": "yes"})
    assert not Backend.objects.get().enabled
    entry = LogEntry.objects.filter(object_id=str(kiwi.pk)).first()
    assert "enabled: yes → no" in entry.get_change_message()


def test_a_rule_action_says_what_changed_for_traffic_and_is_logged(admin_client, kiwi):
    rule = HostRule.objects.get()
    page = admin_client.post(
        "/admin/routing/hostrule/",
        {"action": "disable_selected", "_selected_action": [rule.pk]},
        follow=True,
    ).content.decode()
    assert "www.kiwi.com is no longer routed by this rule" in page
    revision = Revision.objects.first().number
    entry = LogEntry.objects.get(object_id=str(rule.pk))
    assert entry.get_change_message() == (
        f"Disabled (admin action): enabled: yes → no. Revision {revision}."
    )
    history = admin_client.get(f"/admin/routing/hostrule/{rule.pk}/history/").content.decode()
    assert 'href="/admin/routing/history/"' in history
    index = admin_client.get("/admin/").content.decode()
    assert "www.kiwi.com" in index  # in Recent actions
