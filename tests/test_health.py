"""Active health checks against real servers; results shared through the database."""

import datetime
import time

import pytest
from django.core.management import call_command
from django.utils import timezone

from routing.health import run_checks
from routing.models import Backend, Pool, RoutingVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def pool():
    return Pool.objects.create(name="mango", health_check_timeout=1)


def test_a_backend_never_checked_counts_as_healthy(pool):
    backend = Backend.objects.create(pool=pool, url="http://127.0.0.1:1")
    assert backend.healthy and backend.last_checked is None


def test_check_stores_health_latency_and_error(pool, demo_backends, closed_port_url):
    up = Backend.objects.create(pool=pool, url=demo_backends["mango"][0])
    down = Backend.objects.create(pool=pool, url=closed_port_url)
    run_checks()
    up.refresh_from_db()
    down.refresh_from_db()
    assert up.healthy and up.last_checked and up.latency_ms > 0 and not up.last_error
    assert not down.healthy and down.last_checked and "refused" in down.last_error.lower()


def test_error_status_is_unhealthy(pool, wsgi_backend):
    def failing(environ, start_response):
        start_response("500 Internal Server Error", [("Content-Length", "0")])
        return [b""]

    backend = Backend.objects.create(pool=pool, url=wsgi_backend(failing))
    run_checks()
    backend.refresh_from_db()
    assert (backend.healthy, backend.last_error) == (False, "status 500")


def test_pool_health_path_and_disabled_backends(pool, wsgi_backend):
    paths = []

    def recording(environ, start_response):
        paths.append(environ["PATH_INFO"])
        start_response("204 No Content", [])
        return [b""]

    Pool.objects.filter(pk=pool.pk).update(health_check_path="/status/ready")
    Backend.objects.create(pool=pool, url=wsgi_backend(recording))
    Backend.objects.create(pool=pool, url=wsgi_backend(recording), enabled=False)
    run_checks()
    assert paths == ["/status/ready"]


def test_only_a_change_of_health_tells_the_workers(pool, demo_backends, closed_port_url):
    Backend.objects.create(pool=pool, url=demo_backends["mango"][0])
    backend = Backend.objects.create(pool=pool, url=closed_port_url)
    run_checks()
    after_first = RoutingVersion.current()
    run_checks()
    assert RoutingVersion.current() == after_first  # nothing flipped
    Backend.objects.filter(pk=backend.pk).update(url=demo_backends["mango"][1])
    before = RoutingVersion.current()
    run_checks()
    assert RoutingVersion.current() > before  # down -> healthy
    backend.refresh_from_db()
    assert backend.healthy and backend.last_error == ""


def test_healthcheck_command_reports_each_backend(pool, demo_backends, closed_port_url, capsys):
    Backend.objects.create(pool=pool, url=demo_backends["mango"][0])
    Backend.objects.create(pool=pool, url=closed_port_url)
    call_command("healthcheck")
    out = capsys.readouterr().out
    assert "2 backends checked, 1 down." in out
    assert f"{demo_backends['mango'][0]}" in out and "DOWN" in out


def test_pool_with_blank_health_path_is_not_checked(pool, closed_port_url):
    Pool.objects.filter(pk=pool.pk).update(health_check_path="")
    backend = Backend.objects.create(pool=pool, url=closed_port_url)
    assert run_checks() == []
    backend.refresh_from_db()
    assert backend.healthy and backend.last_checked is None


def test_a_check_that_cannot_even_start_marks_the_backend_down(pool, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    Pool.objects.filter(pk=pool.pk).update(tls_ca_bundle=str(bundle))
    backend = Backend.objects.create(pool=pool, url="https://127.0.0.1:1")
    bundle.unlink()
    run_checks()
    backend.refresh_from_db()
    assert not backend.healthy and "CA" in backend.last_error


def test_a_passing_check_moves_the_health_version_but_not_the_routing_version(
    pool, demo_backends, closed_port_url
):
    down = Backend.objects.create(pool=pool, url=closed_port_url)
    run_checks()  # down: the routing version moves, the health version does not
    versions = RoutingVersion.current_versions()
    run_checks()
    assert RoutingVersion.current_versions() == versions
    Backend.objects.create(pool=pool, url=demo_backends["mango"][0])
    down.delete()
    version, health_version = RoutingVersion.current_versions()
    run_checks()
    run_checks()
    assert RoutingVersion.current_versions() == (version, health_version + 2)


def test_a_check_is_stored_as_of_when_it_started(pool, wsgi_backend):
    # A probe that began before a worker's passive failures proves nothing
    # about the backend after them, however late the round is stored.
    def slow(environ, start_response):
        time.sleep(0.3)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"OK"]

    backend = Backend.objects.create(pool=pool, url=wsgi_backend(slow))
    before = timezone.now()
    run_checks()
    backend.refresh_from_db()
    assert before <= backend.last_checked < before + datetime.timedelta(seconds=0.2)
