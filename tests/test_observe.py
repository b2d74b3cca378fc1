"""Access log, metrics, admin safety and production settings, through Django's test client."""

import ipaddress
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from datetime import datetime

import pytest
from django.core import checks
from django.db import models

from lbsite.settings import has_traceback
from routing import observe
from routing.models import Backend, HostRule, PathRule, Pool
from routing.observe import AccessLogLines

from .conftest import PROJECT_ROOT, metric

pytestmark = pytest.mark.django_db


def access_lines(caplog):
    return [record for record in caplog.records if record.name == "routing.access"]


def fields_of(line):
    """Parse a key=value access-log line (values with spaces are JSON strings)."""
    fields, rest = {}, line
    while rest:
        key, _, rest = rest.partition("=")
        if rest.startswith('"'):
            value, end = json.JSONDecoder().raw_decode(rest)
            rest = rest[end:].lstrip()
        else:
            value, _, rest = rest.partition(" ")
        fields[key] = value
    return fields


@pytest.mark.usefixtures("fruit_routes")
def test_access_log_has_one_line_per_proxied_request(client, caplog, demo_backends):
    caplog.set_level("INFO", logger="routing.access")
    client.get("/mango/x?y=1", headers={"Host": "www.shop.example"})
    (record,) = access_lines(caplog)
    line = fields_of(record.getMessage())
    assert line["client"] == "127.0.0.1"
    assert line["host"] == "www.shop.example"
    assert (line["method"], line["path"], line["status"]) == ("GET", "/mango/x?y=1", "200")
    assert line["rule"] == "path rule /mango (any host) → mango"
    assert line["backend"] in demo_backends["mango"]
    assert float(line["upstream_ms"]) > 0 and float(line["total_ms"]) >= float(line["upstream_ms"])
    assert line["bytes"] == str(len(b"This is the mango application."))


@pytest.mark.usefixtures("fruit_routes")
def test_access_log_lines_are_written_in_batches_within_the_flush_interval(
    client, caplog, settings
):
    caplog.set_level("INFO", logger="routing.access")
    settings.ACCESS_LOG_FLUSH = 0.3
    client.get("/", headers={"Host": "www.mango.com"})
    finished = time.time()
    client.get("/", headers={"Host": "www.apple.com"})
    assert access_lines(caplog) == []  # held for the flusher
    deadline = time.monotonic() + 10
    while len(access_lines(caplog)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    first, second = access_lines(caplog)
    assert fields_of(first.getMessage())["host"] == "www.mango.com"
    assert fields_of(second.getMessage())["host"] == "www.apple.com"
    # Each line keeps the time its request finished, not the time it was written.
    logged = datetime.fromisoformat(fields_of(first.getMessage())["time"]).timestamp()
    assert abs(logged - finished) < 0.2 and abs(first.created - logged) < 0.002


def test_the_flusher_writes_a_slice_at_a_time_oldest_first(caplog):
    caplog.set_level("INFO", logger="routing.access")
    lines = AccessLogLines()
    for n in range(5):
        lines.pending.append((logging.INFO, {"time": time.time(), "n": n}))
    lines.flush(most=2)
    assert [fields_of(r.getMessage())["n"] for r in access_lines(caplog)] == ["0", "1"]
    lines.flush()
    assert [fields_of(r.getMessage())["n"] for r in access_lines(caplog)] == list("01234")


def test_the_remembered_process_id_is_renewed_in_a_forked_child():
    assert observe.process_id() == os.getpid()
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report what it remembers, and leave at once
        os.write(writer, f"{observe.process_id()} {os.getpid()}".encode())
        os._exit(0)
    os.close(writer)
    remembered, actual = os.read(reader, 100).decode().split()
    os.waitpid(child, 0)
    os.close(reader)
    assert remembered == actual != str(os.getpid())


def test_access_log_in_json_says_why_a_request_failed(
    client, caplog, settings, make_route, closed_port_url
):
    settings.ACCESS_LOG_FORMAT = "json"
    caplog.set_level("INFO", logger="routing.access")
    make_route([closed_port_url], host="www.kiwi.com")
    client.get("/", headers={"Host": "www.kiwi.com"})
    client.get("/", headers={"Host": "nothing.example"})
    failed, missing = (json.loads(record.getMessage()) for record in access_lines(caplog))
    assert failed["status"] == 503 and "refused" in failed["cause"].lower()
    assert failed["backend"] == closed_port_url
    assert (missing["status"], missing["rule"], missing["backend"]) == (404, "-", "-")


def test_access_log_can_be_turned_off(client, caplog, settings, fruit_routes):
    settings.ACCESS_LOG = False
    caplog.set_level("INFO", logger="routing.access")
    client.get("/mango")
    assert access_lines(caplog) == []


def test_metrics_count_requests_and_show_backend_health(
    client, admin_site, fruit_routes, demo_backends
):
    before = admin_site.get("/metrics").content.decode()
    for _ in range(3):
        client.get("/apple")
    after = admin_site.get("/metrics")
    text = after.content.decode()
    assert after["Content-Type"].startswith("text/plain")
    for backend in demo_backends["apple"]:
        assert metric(text, "lb_backend_up", pool="apple", backend=backend) == 1
    served = sum(
        metric(text, "lb_requests_total", pool="apple", backend=url, status_class="2xx")
        - metric(before, "lb_requests_total", pool="apple", backend=url, status_class="2xx")
        for url in demo_backends["apple"]
    )
    assert served == 3
    assert "lb_upstream_latency_seconds_bucket" in text
    assert metric(text, "lb_route_table_version") > 0


def test_metrics_exist_on_the_admin_listener_only(client, fruit_routes):
    HostRule.objects.create(host="www.shop.example", pool=Pool.objects.get(name="mango"))
    other = client.get("/metrics", headers={"Host": "www.shop.example"})
    assert other.content == b"This is the mango application."
    assert client.get("/metrics").status_code == 404  # localhost: routed, and no rule matches


def test_admin_listener_can_be_limited_to_client_networks(
    client, admin_site, settings, fruit_routes
):
    settings.ADMIN_ALLOWED_NETWORKS = [ipaddress.ip_network("10.0.0.0/8")]
    for path in ("/admin/", "/metrics", "/static/admin/css/base.css"):
        refused = admin_site.get(path)
        assert (refused.status_code, refused.content) == (403, b"Forbidden")
    assert admin_site.get("/healthz").content == b"OK"
    assert client.get("/mango").content == b"This is the mango application."
    settings.ADMIN_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.0/8")]
    assert admin_site.get("/admin/").status_code == 302


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "allowed"),
    [
        ("10.1.2.3", "", False),  # the trusted proxy itself is no admin client
        ("10.1.2.3", "192.168.5.6", True),  # the client it reports is
        ("10.1.2.3", "172.16.0.1", False),
        ("172.16.0.9", "192.168.5.6", False),  # an untrusted peer's claim counts for nothing
    ],
)
def test_admin_networks_judge_the_client_a_trusted_proxy_reports(
    admin_site, settings, peer, forwarded_for, allowed
):
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/8")]
    settings.ADMIN_ALLOWED_NETWORKS = [ipaddress.ip_network("192.168.0.0/16")]
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    result = admin_site.get("/admin/", headers=headers, REMOTE_ADDR=peer)
    assert result.status_code == (302 if allowed else 403)


def routing_warnings():
    return {
        message.id
        for message in checks.run_checks(databases=["default"])
        if message.id.startswith("routing.")
    }


def test_system_checks_warn_about_routing_that_cannot_work(settings):
    empty = Pool.objects.create(name="empty")
    HostRule.objects.create(host="www.empty.com", pool=empty)
    assert routing_warnings() == {"routing.W001"}
    Backend.objects.create(pool=empty, url="http://127.0.0.1:1")
    # Written around the model layer, as raw SQL would be: its writes refuse
    # such a pair, and the database's constraints cannot tell the spellings apart.
    models.QuerySet(PathRule).bulk_create(
        [
            PathRule(prefix="/a", pool=empty),
            PathRule(prefix="/%61", host="", pool=empty),
        ]
    )
    assert routing_warnings() == {"routing.W002"}
    PathRule.objects.all().delete()
    Pool.objects.filter(pk=empty.pk).update(max_attempts=4, read_timeout=10)
    settings.GRACEFUL_TIMEOUT = 30
    assert routing_warnings() == {"routing.W003"}


def manage_check(*args, **env):
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE")
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check", *args],
        cwd=PROJECT_ROOT,
        env={**environment, **env},
        capture_output=True,
        text=True,
    )


PRODUCTION = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "SESSION_COOKIE_SECURE": "1",
    "CSRF_COOKIE_SECURE": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
}


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    # The static files collected, as `collectstatic` leaves them (else routing.W005).
    (tmp_path / "admin" / "css").mkdir(parents=True)
    (tmp_path / "admin" / "css" / "base.css").write_text("")
    result = manage_check(
        "--deploy", "--fail-level", "WARNING", STATIC_ROOT=str(tmp_path), **PRODUCTION
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (1 silenced)." in result.stdout


def test_check_warns_when_the_static_files_were_not_collected(tmp_path):
    result = manage_check("--deploy", STATIC_ROOT=str(tmp_path), **PRODUCTION)
    assert "routing.W005" in result.stdout + result.stderr
    assert "collectstatic" in result.stdout + result.stderr


def test_secret_key_is_required_when_debug_is_off():
    result = manage_check()
    assert result.returncode != 0
    assert "Set SECRET_KEY in the environment" in result.stderr


def test_django_request_log_keeps_only_the_balancers_own_crashes(
    client, caplog, make_route, wsgi_backend
):
    def failing(environ, start_response):
        start_response("500 Internal Server Error", [("Content-Length", "4")])
        return [b"oops"]

    make_route([wsgi_backend(failing)], host="www.kiwi.com")
    caplog.set_level("INFO")
    assert client.get("/", headers={"Host": "www.kiwi.com"}).status_code == 500
    assert [record for record in caplog.records if record.name == "django.request"] == []
    crash = logging.makeLogRecord({"exc_info": (ValueError, ValueError("bug"), None)})
    assert has_traceback(crash)
