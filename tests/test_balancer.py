"""Backend choice within a pool: pure strategies over snapshot backends and explicit state."""

import subprocess
import sys
from collections import Counter

import pytest

from routing.balancer import (
    STRATEGIES,
    PoolState,
    available_backends,
    choose_backend,
    cooling_backend_ids,
    end_cool_downs,
    record_failure,
    record_success,
)
from routing.snapshot import Backend, Pool

from .conftest import PROJECT_ROOT

FOUR = tuple(Backend(n, f"http://10.0.0.{n}:80") for n in range(1, 5))


def pool_of(*backends, algorithm="random", **options):
    return Pool(id=1, name="mango", backends=tuple(backends), algorithm=algorithm, **options)


def shares(pool, count=1000, client=""):
    state = PoolState()
    return Counter(choose_backend(pool, client, state=state).id for _ in range(count))


def test_random_spreads_in_proportion_to_weight():
    pool = pool_of(Backend(1, "http://a:1", weight=3), Backend(2, "http://b:1", weight=1))
    seen = shares(pool, 4000)
    assert 2600 < seen[1] < 3400


def test_round_robin_gives_exactly_equal_shares_in_turn():
    pool = pool_of(*FOUR, algorithm="round_robin")
    state = PoolState()
    first = [choose_backend(pool, state=state).id for _ in range(8)]
    assert first[:4] == first[4:] and sorted(first[:4]) == [1, 2, 3, 4]
    assert shares(pool) == {1: 250, 2: 250, 3: 250, 4: 250}


def test_weighted_gives_exactly_the_configured_shares_smoothly():
    pool = pool_of(
        Backend(1, "http://a:1", weight=5),
        Backend(2, "http://b:1", weight=3),
        Backend(3, "http://c:1", weight=2),
        algorithm="weighted",
    )
    assert shares(pool) == {1: 500, 2: 300, 3: 200}
    state = PoolState()
    cycle = [choose_backend(pool, state=state).id for _ in range(10)]
    # nginx's smooth order: the heaviest is never chosen 5 times in a row.
    assert cycle == [1, 2, 3, 1, 1, 2, 1, 3, 2, 1]


def test_least_connections_prefers_the_least_busy_for_its_weight():
    a, b = Backend(1, "http://a:1", weight=1), Backend(2, "http://b:1", weight=2)
    pool = pool_of(a, b, algorithm="least_connections")
    state = PoolState(in_flight={1: 1, 2: 1})
    assert choose_backend(pool, state=state) == b  # 1/2 < 1/1
    state = PoolState(in_flight={1: 0, 2: 3})
    assert choose_backend(pool, state=state) == a
    idle = PoolState()
    assert {choose_backend(pool, state=idle).id for _ in range(4)} == {1, 2}  # ties in turn


def test_ip_hash_is_stable_and_spreads_clients():
    pool = pool_of(*FOUR, algorithm="ip_hash")
    clients = [f"198.51.{n // 250}.{n % 250}" for n in range(1000)]
    chosen = {client: choose_backend(pool, client, state=PoolState()).id for client in clients}
    assert all(choose_backend(pool, c, state=PoolState()).id == chosen[c] for c in clients[:50])
    spread = Counter(chosen.values())
    assert min(spread.values()) >= 150, spread


def test_ip_hash_agrees_across_processes():
    code = (
        "from routing.balancer import choose_ip_hash, PoolState;"
        "from routing.snapshot import Backend;"
        "backends = [Backend(n, 'http://10.0.0.%d:80' % n) for n in range(1, 5)];"
        "print(','.join(str(choose_ip_hash(backends, PoolState(), f'203.0.113.{n}').id)"
        " for n in range(50)))"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed},
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(runs) == 1 and runs.pop().count(",") == 49


def test_ip_hash_keeps_a_client_when_another_backend_leaves():
    pool = pool_of(*FOUR, algorithm="ip_hash")
    client = "192.0.2.77"
    mine = choose_backend(pool, client, state=PoolState())
    others = tuple(backend for backend in FOUR if backend != mine)
    smaller = pool_of(mine, *others[1:], algorithm="ip_hash")
    assert choose_backend(smaller, client, state=PoolState()) == mine


@pytest.mark.parametrize("algorithm", sorted(STRATEGIES))
@pytest.mark.parametrize(
    "unusable",
    [
        Backend(2, "http://b:1", enabled=False),
        Backend(2, "http://b:1", weight=0),
        Backend(2, "http://b:1", healthy=False),
    ],
    ids=["disabled", "drained", "unhealthy"],
)
def test_unusable_backend_gets_no_new_requests_under_any_algorithm(algorithm, unusable):
    pool = pool_of(Backend(1, "http://a:1"), unusable, algorithm=algorithm)
    assert set(shares(pool, 200, client="192.0.2.1")) == {1}
    assert {choose_backend(pool, f"192.0.2.{n}", state=PoolState()).id for n in range(50)} == {1}


@pytest.mark.parametrize("algorithm", sorted(STRATEGIES))
def test_pool_without_usable_backend_gives_none(algorithm):
    assert choose_backend(pool_of(algorithm=algorithm), state=PoolState()) is None
    disabled = pool_of(Backend(1, "http://a:1", enabled=False), algorithm=algorithm)
    assert choose_backend(disabled, state=PoolState()) is None


def test_tried_backends_are_excluded():
    pool = pool_of(*FOUR, algorithm="round_robin")
    state = PoolState()
    seen = {choose_backend(pool, exclude={1, 2}, state=state).id for _ in range(10)}
    assert seen == {3, 4}
    assert choose_backend(pool, exclude={1, 2, 3, 4}, state=state) is None


def test_backend_failing_max_fails_in_a_row_cools_down_then_returns():
    a, b = Backend(1, "http://a:1"), Backend(2, "http://b:1")
    pool = pool_of(a, b, max_fails=2, fail_timeout=10)
    state = PoolState()
    record_failure(pool, a, state, now=100)
    record_success(pool, a, state)
    record_failure(pool, a, state, now=100)
    assert available_backends(pool, state, now=100) == [a, b]  # not twice in a row yet
    record_failure(pool, a, state, now=100)
    assert available_backends(pool, state, now=105) == [b]
    assert available_backends(pool, state, now=111) == [a, b]


def test_a_passing_health_check_ends_the_cool_down_early():
    down = Backend(1, "http://a:1", checked_at=1000.0)
    pool = pool_of(down, max_fails=1, fail_timeout=30)
    state = PoolState()
    record_failure(pool, down, state, now=100, wall_clock=2000.0)
    assert available_backends(pool, state, now=101) == []
    checked_before = pool_of(Backend(1, "http://a:1", checked_at=1999.0))
    assert available_backends(checked_before, state, now=101) == []
    revived = pool_of(Backend(1, "http://a:1", checked_at=2001.0))
    assert available_backends(revived, state, now=101) == [revived.backends[0]]


def test_a_check_passed_after_the_failures_ends_the_cool_down_without_a_new_snapshot():
    a, b = Backend(1, "http://a:1"), Backend(2, "http://b:1")
    pool = pool_of(a, b, max_fails=1, fail_timeout=30)
    state = PoolState()
    record_failure(pool, a, state, now=100, wall_clock=2000.0)
    record_failure(pool, b, state, now=100, wall_clock=2000.0)
    assert cooling_backend_ids([state], now=101) == {1, 2}
    end_cool_downs({1: 1999.0, 2: 2001.0}, [state])  # only b passed after it went down
    assert available_backends(pool, state, now=101) == [b]
    assert cooling_backend_ids([state], now=101) == {1}
    assert cooling_backend_ids([state], now=131) == set()
