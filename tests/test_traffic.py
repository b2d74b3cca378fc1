"""The traffic sample: counts in memory on the request path, written off it, read by the page."""

import json

import pytest
from django.db import OperationalError

from routing import traffic
from routing.models import HostRule, Pool, RecentRequest, TrafficSample
from routing.traffic import RECORDER, percentile, traffic_report

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_recorder():
    RECORDER.__init__()  # the worker's memory: another test's counts are not this one's
    yield
    RECORDER.__init__()


def test_the_sample_keeps_method_host_and_path_never_query_headers_or_body(client, fruit_routes):
    client.post(
        "/apple/pie?token=s3cr3t",
        data=b"password=hunter2",
        content_type="application/x-www-form-urlencoded",
        headers={"host": "WWW.Mango.com:8000", "authorization": "Basic c2VjcmV0"},
    )
    client.get("/apple/pie?other=1", headers={"host": "www.mango.com"})
    RECORDER.write()
    rows = list(RecentRequest.objects.values("method", "host", "path", "count"))
    assert sorted(rows, key=lambda row: row["method"]) == [
        {"method": "GET", "host": "www.mango.com", "path": "/apple/pie", "count": 1},
        {"method": "POST", "host": "www.mango.com", "path": "/apple/pie", "count": 1},
    ]
    stored = json.dumps(list(RecentRequest.objects.values()), default=str)
    for secret in ("s3cr3t", "token", "other", "hunter2", "c2VjcmV0", "Basic"):
        assert secret not in stored


def test_a_write_adds_the_period_so_far_and_rewrites_rather_than_duplicates(client, fruit_routes):
    RECORDER.period = traffic.period_of(1_000_000)
    for _ in range(3):
        client.get("/mango/x", headers={"host": "shop.test"})
    RECORDER.write(now=1_000_000)
    client.get("/mango/x", headers={"host": "shop.test"})
    RECORDER.write(now=1_000_005)
    row = RecentRequest.objects.get()
    assert (row.path, row.count) == ("/mango/x", 4)
    client.get("/mango/x", headers={"host": "shop.test"})
    RECORDER.write(now=1_000_000 + traffic.PERIOD)  # ends the period: the next starts at 0
    client.get("/mango/x", headers={"host": "shop.test"})
    RECORDER.write(now=1_000_000 + traffic.PERIOD + 5)
    assert list(RecentRequest.objects.order_by("period").values_list("count", flat=True)) == [5, 1]


def test_the_sample_is_bounded(client, fruit_routes, settings):
    settings.TRAFFIC_SAMPLE_SIZE = 3
    for index in range(10):
        client.get(f"/nowhere/{index}", headers={"host": "shop.test"})
    client.get("/nowhere/0", headers={"host": "shop.test"})  # one already known still counts
    RECORDER.write()
    counts = dict(RecentRequest.objects.values_list("path", "count"))
    assert counts == {"/nowhere/0": 2, "/nowhere/1": 1, "/nowhere/2": 1}


def test_proxied_requests_are_written_per_backend_with_their_statuses(client, fruit_routes):
    for path in ("/apple/", "/apple/", "/apple/status/404"):
        client.get(path, headers={"host": "shop.test"})
    RECORDER.write(now=2_000_000)
    rows = TrafficSample.objects.filter(pool="apple")
    assert sum(row.requests for row in rows) == 3
    assert sum(row.status_4xx for row in rows) + sum(row.status_5xx for row in rows) <= 1
    assert {row.at for row in rows} == {2_000_000}
    assert all(sum(row.latency_buckets) == row.requests for row in rows)
    assert all(row.up for row in rows)


def test_rows_older_than_the_retention_go(settings):
    settings.TRAFFIC_RETENTION = 3600
    RECORDER.exchange_finished("mango", "http://127.0.0.1:1", 200, 0.003)
    RECORDER.write(now=1_000_000)
    RECORDER.exchange_finished("mango", "http://127.0.0.1:1", 502, None)
    RECORDER.write(now=1_000_000 + 3000)
    assert TrafficSample.objects.count() == 2
    RECORDER.write(now=1_000_000 + 3601)  # nothing new to write, the first row expired
    assert list(TrafficSample.objects.values_list("status_5xx", flat=True)) == [1]


def test_idle_backends_that_are_up_write_nothing():
    RECORDER.write(now=1_000_000)
    assert not TrafficSample.objects.exists()


def test_the_report_adds_up_every_writer(settings):
    settings.TRAFFIC_INTERVAL = 5
    now = 1_000_000
    for writer, status in (("a:1", 200), ("b:2", 500)):
        for _ in range(5):
            RECORDER.exchange_finished("mango", "http://m1", status, 0.02)
        for row in RECORDER.traffic_rows(writer, now - 5):
            row.save()
    report = traffic_report(900, now=now)
    assert report["step"] == 5
    assert len(report["times"]) == 180
    (pool,) = [pool for pool in report["pools"] if pool["name"] == "mango"]
    index = report["times"].index(now - 5)
    assert pool["series"]["rps"][index] == 2.0  # 10 requests in 5 s
    assert pool["series"]["share_5xx"][index] == 50.0
    assert 10 <= pool["series"]["p50"][index] <= 25
    (backend,) = pool["backends"]
    assert backend["url"] == "http://m1"
    assert backend["series"]["rps"][index] == 2.0
    assert pool["series"]["rps"][index - 1] == 0


def test_a_down_backend_shows_down(settings):
    settings.TRAFFIC_INTERVAL = 5
    now = 1_000_000
    TrafficSample.objects.create(at=now, writer="a:1", pool="mango", backend="http://m1", up=False)
    report = traffic_report(900, now=now)
    (pool,) = report["pools"]
    assert pool["backends"][0]["series"]["up"][-1] == 0
    assert pool["backends"][0]["series"]["up"][0] == 1


@pytest.mark.parametrize(
    ("histogram", "fraction", "expected"),
    [
        ([], 0.5, None),
        ([0, 0, 0, 0, 10] + [0] * 10, 0.5, 17.5),  # halfway into 10-25 ms
        ([10] + [0] * 14, 0.95, 0.95),
        ([0] * 14 + [4], 0.5, 30_000),  # slower than the last bound: the bound
    ],
)
def test_percentile_from_the_histogram(histogram, fraction, expected):
    assert percentile(histogram, fraction) == expected


def test_the_traffic_page_and_its_data_need_a_staff_login(admin_site):
    assert admin_site.get("/admin/routing/traffic/").status_code == 302
    assert admin_site.get("/admin/routing/traffic/data/").status_code == 302


def test_the_traffic_page_is_linked_from_the_index_and_serves_json(admin_client, fruit_routes):
    index = admin_client.get("/admin/").content.decode()
    assert 'href="/admin/routing/traffic/">Traffic</a>' in index
    page = admin_client.get("/admin/routing/traffic/").content.decode()
    assert "uPlot-1.6.32.iife.min.js" in page
    data = admin_client.get("/admin/routing/traffic/data/?window=3600").json()
    assert data["window"] == 3600
    assert [pool["name"] for pool in data["pools"]] == ["apple", "mango"]
    bad = admin_client.get("/admin/routing/traffic/data/?window=7")
    assert bad.status_code == 400
    assert bad["Content-Type"].startswith("text/plain")


def test_the_traffic_data_links_each_pool_and_the_rules_that_use_it(admin_client, fruit_routes):
    data = admin_client.get("/admin/routing/traffic/data/").json()
    mango = next(pool for pool in data["pools"] if pool["name"] == "mango")
    assert mango["url"] == f"/admin/routing/pool/{Pool.objects.get(name='mango').pk}/change/"
    rule = HostRule.objects.get(host="www.mango.com")
    assert {"label": str(rule), "url": f"/admin/routing/hostrule/{rule.pk}/change/"} in mango[
        "rules"
    ]
    assert all(link["url"].startswith("/admin/routing/") for link in mango["rules"])


def test_the_chart_library_is_vendored_with_its_licence():
    vendor = traffic.__file__.rsplit("/", 1)[0] + "/static/routing/vendor/"
    with open(vendor + "uPlot-1.6.32.LICENSE") as licence:
        assert "MIT" in licence.read()


def test_rows_a_busy_database_refused_are_written_with_the_next(monkeypatch):
    RECORDER.period = traffic.period_of(1_000_000)
    RECORDER.exchange_finished("mango", "http://m1", 200, 0.01)
    RECORDER.request_seen("GET", "www.mango.com", "/a")

    def busy(*args):
        raise OperationalError("database is locked")

    with monkeypatch.context() as patch:
        patch.setattr(traffic, "store", busy)
        with pytest.raises(OperationalError):
            RECORDER.write(now=1_000_000)
    RECORDER.request_seen("GET", "www.mango.com", "/a")
    RECORDER.write(now=1_000_005)
    assert TrafficSample.objects.count() == 1
    assert list(RecentRequest.objects.values_list("path", "count")) == [("/a", 2)]
