"""Build the route table from the database and keep one snapshot per process.

Warm requests read the cached snapshot and never query. Every write bumps
RoutingVersion; a small background thread in each process polls that number
and rebuilds the snapshot when it moves, so an admin edit reaches every worker
and every instance without touching the request path. When only the health
version moved (a backend passed an active check), the thread re-reads just
when this process's cooling backends last passed, and ends their cool-downs.
The same query reads the certificate version, for the certificate watchers
(tls.py, in a worker serving TLS=auto).
"""

import contextlib
import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections, connection

from . import balancer, snapshot
from .actions import resolve_access_list, resolve_actions
from .models import AccessList, AccessListUser, Backend, HostRule, PathRule, Pool, RoutingVersion
from .prefixes import prefix_segments

logger = logging.getLogger(__name__)

_table = None
_lock = threading.Lock()
_refresher = None
# Increased by every clear. A build that a clear overtook may have read rows
# the clearing change made stale: its table serves only the request that built it.
_generation = 0
# The health version this process last acted on (None: not yet looked).
_health_version = None
# Called by the refresher with each certificate version it reads: tls.py
# reloads a TLS worker's certificates when it moved.
certificate_watchers = []


def build_route_table():
    """Read the rules, pools and backends into a new RouteTable snapshot."""
    # Read the version first: a change that lands while the rows are read
    # bumps it past this number, so the next poll rebuilds again.
    version = RoutingVersion.current()
    backends = {}
    for row in Backend.objects.order_by("id"):
        backends.setdefault(row.pool_id, []).append(
            snapshot.Backend(
                id=row.id,
                url=row.url.rstrip("/"),
                weight=row.weight,
                enabled=row.enabled,
                healthy=row.healthy,
                draining=row.draining,
                checked_at=row.last_checked.timestamp() if row.last_checked else 0.0,
            )
        )
    pools = {
        row.id: snapshot.Pool(
            id=row.id,
            name=row.name,
            algorithm=row.algorithm,
            connect_timeout=row.connect_timeout,
            read_timeout=row.read_timeout,
            tls_verify=row.tls_verification,
            max_attempts=row.max_attempts,
            max_fails=row.max_fails,
            fail_timeout=row.fail_timeout,
            backends=tuple(backends.get(row.id, ())),
        )
        for row in Pool.objects.all()
    }
    users = {}
    for access_list_id, username, password in AccessListUser.objects.values_list(
        "access_list_id", "username", "password"
    ):
        users.setdefault(access_list_id, []).append((username, password))
    access_lists = {
        row.id: resolve_access_list(row, users.get(row.id, ())) for row in AccessList.objects.all()
    }
    host_rules = list(HostRule.objects.filter(enabled=True).order_by("id"))
    # force_https is the host's: every rule of that host pattern redirects.
    forced_hosts = {rule.host for rule in host_rules if rule.force_https}
    routes = [
        snapshot.Route(
            kind="host",
            rule_id=rule.id,
            pool=pools.get(rule.pool_id),
            host=rule.host.lower(),
            preserve_host=rule.preserve_host,
            actions=resolve_actions(rule, access_lists),
            force_https=rule.force_https,
        )
        for rule in host_rules
    ]
    routes += [
        snapshot.Route(
            kind="path",
            rule_id=rule.id,
            pool=pools.get(rule.pool_id),
            host=rule.host.lower(),
            prefix=tuple(prefix_segments(rule.prefix)),
            strip_prefix=rule.strip_prefix,
            preserve_host=rule.preserve_host,
            actions=resolve_actions(rule, access_lists),
            force_https=bool(rule.host) and rule.host in forced_hosts,
        )
        for rule in PathRule.objects.filter(enabled=True).order_by("id")
    ]
    return snapshot.RouteTable.from_routes(routes, version=version, pools=pools.values())


def get_route_table():
    """Return this process's route table, building it on first use."""
    table = _table
    if table is None:
        with _lock:
            table = _table  # another thread may have built it while this one waited
            if table is None:
                table = _build_and_install()
                release_connection()
    ensure_refresher()
    return table


def current_route_table():
    """Return this process's route table if it has one, never building it."""
    return _table


def release_connection():
    """Close the database connection this request opened to build the table.

    Proxied requests skip Django's request signals (handler.py), so a request
    that had to build the table (a worker's first request, or the first after
    an edit made in this process) closes its connection itself. It keeps none
    for later: under gevent its thread is the client connection's greenlet,
    which ends with it. A connection inside a transaction (a test's) is left
    alone.
    """
    if not connection.in_atomic_block:
        connection.close()


def refresh_route_table():
    """Build the table now and make it the one requests read."""
    with _lock:
        return _build_and_install()


def _build_and_install():
    global _table
    generation = _generation
    table = build_route_table()
    if generation == _generation:
        _table = table
    return table


def clear_route_table():
    """Forget the cached table so the next request builds a fresh one."""
    global _table, _generation
    _generation += 1
    _table = None


def ensure_refresher():
    """Start this process's refresher thread if it is not running.

    Threads do not survive a fork, so each gunicorn worker starts its own on
    its first request; one that died is started again.
    """
    global _refresher
    interval = settings.ROUTE_TABLE_REFRESH_INTERVAL
    if interval <= 0 or (_refresher is not None and _refresher.is_alive()):
        return
    with _lock:
        if _refresher is not None and _refresher.is_alive():
            return
        _refresher = threading.Thread(
            target=watch_routing_version,
            args=(interval,),
            name="route-table-refresher",
            daemon=True,
        )
        _refresher.start()


def watch_routing_version(interval):
    """Rebuild the table whenever the routing version moves; runs forever."""
    while True:
        time.sleep(interval)
        refresh_if_changed()


def refresh_if_changed():
    """Rebuild the table if the version moved; end cool-downs if only the health version did.

    The certificate version is read too, and handed to the certificate watchers.
    """
    global _health_version
    try:
        table = _table
        version, health_version, certificate_version = RoutingVersion.all_versions()
        if table is None or version != table.version:
            refresh_route_table()  # its backends' check times are as new as health_version
        elif health_version != _health_version:
            end_cool_downs_after_passed_checks()
        _health_version = health_version
        for watcher in certificate_watchers:
            watcher(certificate_version)
    except Exception:
        # A database hiccup must not stop the refresher: keep serving the last
        # good table, drop the connection, and try again on the next tick.
        logger.exception("Could not refresh the route table")
        with contextlib.suppress(Exception):
            connection.close()
    finally:
        with contextlib.suppress(Exception):
            close_old_connections()


def end_cool_downs_after_passed_checks():
    """End this process's cool-downs of backends that passed an active check since."""
    cooling = balancer.cooling_backend_ids()
    if not cooling:
        return
    passed = Backend.objects.filter(pk__in=cooling, healthy=True, last_checked__isnull=False)
    balancer.end_cool_downs(
        {pk: checked.timestamp() for pk, checked in passed.values_list("pk", "last_checked")}
    )
