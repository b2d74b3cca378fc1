"""Backend choice within a pool: pure strategies over snapshot backends."""

from collections import Counter

import pytest

from routing.balancer import choose_backend
from routing.snapshot import Backend, Pool


def pool_of(*backends):
    return Pool(id=1, name="mango", backends=tuple(backends))


def test_random_spreads_over_every_usable_backend():
    pool = pool_of(Backend(1, "http://a:1"), Backend(2, "http://b:1"))
    seen = Counter(choose_backend(pool).id for _ in range(400))
    assert set(seen) == {1, 2}
    assert min(seen.values()) > 100


def test_random_follows_weights():
    pool = pool_of(Backend(1, "http://a:1", weight=3), Backend(2, "http://b:1", weight=1))
    seen = Counter(choose_backend(pool).id for _ in range(4000))
    assert 2600 < seen[1] < 3400


@pytest.mark.parametrize(
    "unusable",
    [
        Backend(2, "http://b:1", enabled=False),
        Backend(2, "http://b:1", weight=0),
        Backend(2, "http://b:1", healthy=False),
    ],
    ids=["disabled", "drained", "unhealthy"],
)
def test_unusable_backend_gets_no_requests(unusable):
    pool = pool_of(Backend(1, "http://a:1"), unusable)
    assert {choose_backend(pool).id for _ in range(200)} == {1}


def test_pool_without_usable_backend_gives_none():
    assert choose_backend(pool_of()) is None
    assert choose_backend(pool_of(Backend(1, "http://a:1", enabled=False))) is None
