"""The traffic sample, the impact preview and the Grafana dashboard, under gunicorn.

Real backends on loopback; the balancer's workers write the sample themselves.
"""

import json
import re
import sqlite3
import time

import pytest
import requests
import yaml

from .conftest import (
    PROJECT_ROOT,
    Balancer,
    balancer_environment,
    demo_fixture,
    manage_output,
    rule_row,
)

BOUND = 10  # seconds: the workers write every second here
DASHBOARD = PROJECT_ROOT / "docs/grafana/django-lb-dashboard.json"


@pytest.fixture
def balancer(tmp_path, demo_backends):
    rows = [
        *demo_fixture(demo_backends),
        rule_row("mango", host="guarded.test", firewall={"deny_paths": ["/private"]}),
    ]
    env = balancer_environment(tmp_path, rows, TRAFFIC_INTERVAL="1")
    server = Balancer(env, workers=2)
    server.env, server.database = env, tmp_path / "db.sqlite3"
    yield server
    server.stop()


def query(balancer, sql):
    with sqlite3.connect(balancer.database) as connection:
        return connection.execute(sql).fetchall()


def poll(balancer, sql, done):
    deadline = time.monotonic() + BOUND
    while True:
        rows = query(balancer, sql)
        if done(rows):
            return rows
        assert time.monotonic() < deadline, f"never: {sql} -> {rows}"
        time.sleep(0.2)


def send(balancer, host, target, count, method="GET"):
    for _ in range(count):
        requests.request(method, balancer.url + target, headers={"Host": host}, timeout=5)


def test_workers_write_the_traffic_per_backend(balancer):
    send(balancer, "www.mango.com", "/", 12)
    send(balancer, "www.apple.com", "/status/503", 0)  # pools without traffic write nothing
    rows = poll(
        balancer,
        "SELECT pool, backend, SUM(requests), COUNT(DISTINCT writer) FROM routing_trafficsample "
        "GROUP BY pool, backend",
        lambda rows: sum(row[2] for row in rows) >= 12,
    )
    assert {row[0] for row in rows} == {"mango"}
    assert sum(row[2] for row in rows) == 12
    assert len({row[1] for row in rows}) == 2  # both of mango's backends


def test_a_dry_run_import_names_the_recent_requests_an_edit_moves_and_none_it_does_not(balancer):
    send(balancer, "www.mango.com", "/apple/pie?session=s3cr3t", 5)
    send(balancer, "www.apple.com", "/apple/pie", 3)  # stays in pool apple
    send(balancer, "elsewhere.test", "/mango/x", 2)  # stays on path rule */mango
    poll(
        balancer,
        "SELECT SUM(count) FROM routing_recentrequest",
        lambda rows: rows[0][0] == 10,
    )
    stored = json.dumps(query(balancer, "SELECT * FROM routing_recentrequest"))
    assert "s3cr3t" not in stored and "session" not in stored
    document = yaml.safe_load(manage_output(balancer.env, "export_routes"))
    for rule in document["hosts"]:
        if rule["host"] == "www.mango.com":
            rule["pool"] = "apple"
    out = manage_output(
        balancer.env, "import_routes", "-", "--dry-run", input=yaml.safe_dump(document)
    )
    assert out.splitlines()[-2:] == [
        "Requests of the last hour that would go elsewhere:",
        "  GET www.mango.com/apple/pie (5 in the last hour): "
        "host rule www.mango.com → pool mango ⇒ pool apple",
    ]
    # Nothing was written: www.mango.com still answers from mango.
    mango = requests.get(balancer.url + "/", headers={"Host": "www.mango.com"}, timeout=5)
    assert mango.text == "This is the mango application."


def metric_names(expression):
    """The metric names a PromQL expression reads (functions and labels left out)."""
    without_labels = re.sub(r"\{[^}]*\}", "", expression)
    names = set(re.findall(r"\b(lb_[a-z_]+)\b", without_labels))
    return names


def test_every_metric_the_grafana_dashboard_queries_exists(balancer):
    send(balancer, "www.mango.com", "/", 3)
    send(balancer, "nowhere.test", "/", 1)
    send(balancer, "guarded.test", "/private", 1)  # refused: lb_refused counts it
    scrape = requests.get(balancer.admin_url + "/metrics", timeout=5).text
    exposed = {
        line.split("{")[0].split(" ")[0]
        for line in scrape.splitlines()
        if line and not line.startswith("#")
    }
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel["targets"]
    ] + [
        variable["query"]
        for variable in dashboard["templating"]["list"]
        if variable["type"] == "query"
    ]
    queried = set().union(*(metric_names(expression) for expression in expressions))
    assert len(queried) >= 8
    assert queried <= exposed, queried - exposed
