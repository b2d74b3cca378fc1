"""Each process's route table: rebuilt when the rules change, never kept stale."""

import threading

import pytest
from django.db import connection, connections, transaction

from routing import balancer, table
from routing.health import run_checks
from routing.models import Backend, HostRule, Pool
from routing.resolver import resolve

pytestmark = pytest.mark.django_db(transaction=True)


def serves(host):
    """Whether this process's table has a route for the host."""
    return resolve(table.get_route_table(), host, "/") is not None


@pytest.fixture
def kiwi():
    pool = Pool.objects.create(name="kiwi")
    Backend.objects.create(pool=pool, url="http://127.0.0.1:1")
    HostRule.objects.create(host="www.kiwi.com", pool=pool)
    return pool


class RequestThread(threading.Thread):
    """A request thread that reads the route table on a database connection of its own."""

    def __init__(self):
        super().__init__(daemon=True)
        self.errors = []

    def run(self):
        try:
            table.get_route_table()
        except Exception as error:
            self.errors.append(error)
        finally:
            connections.close_all()

    def finish(self):
        self.join(timeout=10)
        assert not self.is_alive() and not self.errors


def test_a_table_rebuilt_while_an_edit_is_uncommitted_is_dropped_at_commit(kiwi):
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip("a second connection cannot read SQLite's shared in-memory database mid-write")
    with transaction.atomic():
        HostRule.objects.create(host="www.lime.com", pool=kiwi)
        reader = RequestThread()  # sees only the committed rules: no www.lime.com yet
        reader.start()
        reader.finish()
    assert serves("www.lime.com")


@pytest.mark.parametrize("installed", ["before the commit", "after the commit"])
def test_a_table_built_from_rows_read_before_an_edit_is_not_kept(kiwi, monkeypatch, installed):
    built, resume = threading.Event(), threading.Event()
    build_route_table = table.build_route_table

    def build_then_wait():
        built_table = build_route_table()
        if threading.current_thread() is reader:
            built.set()
            resume.wait(10)
        return built_table

    monkeypatch.setattr(table, "build_route_table", build_then_wait)
    table.clear_route_table()
    reader = RequestThread()
    reader.start()
    assert built.wait(10)  # the reader has read the rules without www.lime.com
    with transaction.atomic():
        HostRule.objects.create(host="www.lime.com", pool=kiwi)
        if installed == "before the commit":
            resume.set()
            reader.finish()
    resume.set()
    reader.finish()
    assert serves("www.lime.com")


def test_a_passing_check_ends_a_cool_down_without_rebuilding_the_table(demo_backends, monkeypatch):
    monkeypatch.setattr(balancer, "_states", {})  # this process's counters, fresh
    pool = Pool.objects.create(name="mango", max_fails=1, fail_timeout=60)
    Backend.objects.create(pool=pool, url=demo_backends["mango"][0])
    HostRule.objects.create(host="www.mango.com", pool=pool)
    built = table.get_route_table()
    table.refresh_if_changed()  # the refresher's first look: it knows the health version now
    (snapshot,) = built.pools
    balancer.record_failure(snapshot, snapshot.backends[0])
    assert balancer.choose_backend(snapshot) is None  # cooling down for a minute
    run_checks()  # passes; the backend was healthy all along, so no version bump
    table.refresh_if_changed()
    assert table.get_route_table() is built
    assert balancer.choose_backend(snapshot) == snapshot.backends[0]
