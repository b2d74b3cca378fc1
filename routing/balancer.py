"""Choose a backend of a pool: pure strategies over snapshot backends and explicit state.

The state (round-robin positions, connection counts, passive failures) is
per process: each gunicorn worker balances on its own, as nginx workers do.
"""

import hashlib
import math
import random
import threading
import time
from dataclasses import dataclass, field


@dataclass
class PoolState:
    """What one process remembers about one pool between requests."""

    turn: int = 0
    current_weights: dict = field(default_factory=dict)
    in_flight: dict = field(default_factory=dict)
    failures: dict = field(default_factory=dict)
    down_until: dict = field(default_factory=dict)  # monotonic seconds
    down_since: dict = field(default_factory=dict)  # epoch seconds
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def choose_random(backends, state, client):
    """Pick a backend at random, in proportion to its weight."""
    return random.choices(backends, weights=[backend.weight for backend in backends])[0]


def choose_round_robin(backends, state, client):
    """Take the backends in turn, one request each."""
    state.turn += 1
    return backends[state.turn % len(backends)]


def choose_weighted(backends, state, client):
    """Smooth weighted round robin, as nginx does it: exact shares, evenly interleaved."""
    total = 0
    best = None
    for backend in backends:
        current = state.current_weights.get(backend.id, 0) + backend.weight
        state.current_weights[backend.id] = current
        total += backend.weight
        if best is None or current > state.current_weights[best.id]:
            best = backend
    state.current_weights[best.id] -= total
    return best


def choose_least_connections(backends, state, client):
    """Pick the backend with the fewest requests in flight for its weight; ties in turn."""
    state.turn += 1
    count = len(backends)
    return min(
        (backends[(state.turn + offset) % count] for offset in range(count)),
        key=lambda backend: state.in_flight.get(backend.id, 0) / backend.weight,
    )


def choose_ip_hash(backends, state, client):
    """Send a client address to the same backend everywhere: weighted rendezvous hashing.

    The score depends only on the address and the backend URL (SHA-256, not
    Python's salted hash()), so every worker and instance agrees, and a
    client moves only when its own backend leaves the pool.
    """

    def score(backend):
        digest = hashlib.sha256(f"{client}|{backend.url}".encode()).digest()
        unit = (int.from_bytes(digest[:8], "big") + 1) / (2**64 + 1)  # in (0, 1)
        return backend.weight / -math.log(unit)

    return max(backends, key=score)


STRATEGIES = {
    "random": choose_random,
    "round_robin": choose_round_robin,
    "weighted": choose_weighted,
    "least_connections": choose_least_connections,
    "ip_hash": choose_ip_hash,
}

_states = {}
_states_lock = threading.Lock()


def pool_state(pool_id):
    """Return this process's state of a pool."""
    state = _states.get(pool_id)
    if state is None:
        with _states_lock:
            state = _states.setdefault(pool_id, PoolState())
    return state


def all_pool_states():
    """Return this process's state of every pool it has balanced."""
    with _states_lock:
        return list(_states.values())


def available_backends(pool, state, exclude=(), now=None):
    """Return the pool's usable backends that are not cooling down or excluded."""
    now = time.monotonic() if now is None else now
    return [
        backend
        for backend in pool.usable_backends
        if backend.id not in exclude and not cooling_down(backend, state, now)
    ]


def cooling_down(backend, state, now):
    """Whether passive failures still keep a backend out.

    An active health check that passed after the failures ends the cool-down
    early: a revived backend gets traffic once the checker has seen it.
    """
    if state.down_until.get(backend.id, 0) <= now:
        return False
    return backend.checked_at <= state.down_since.get(backend.id, 0)


def cooling_backend_ids(states=None, now=None):
    """Return the ids of the backends this process is keeping out after failures."""
    states = all_pool_states() if states is None else states
    now = time.monotonic() if now is None else now
    cooling = set()
    for state in states:
        with state.lock:
            cooling.update(
                backend_id for backend_id, until in state.down_until.items() if until > now
            )
    return cooling


def end_cool_downs(passed_at, states=None):
    """End the cool-downs of backends that passed an active check after they went down.

    passed_at maps backend ids to the epoch seconds of their last passing
    check. The snapshot's checked_at does the same, but only once the table
    is rebuilt, which a routine passing check does not cause.
    """
    states = all_pool_states() if states is None else states
    for state in states:
        with state.lock:
            for backend_id, since in list(state.down_since.items()):
                if passed_at.get(backend_id, 0) > since:
                    state.down_until.pop(backend_id, None)
                    state.down_since.pop(backend_id, None)


def choose_backend(pool, client="", exclude=(), state=None):
    """Return a backend of the pool by its algorithm, or None if none is available."""
    state = pool_state(pool.id) if state is None else state
    with state.lock:
        backends = available_backends(pool, state, exclude)
        if not backends:
            return None
        return STRATEGIES[pool.algorithm](backends, state, client)


def record_success(pool, backend, state=None):
    """A backend answered: its run of failures is over."""
    state = pool_state(pool.id) if state is None else state
    with state.lock:
        state.failures.pop(backend.id, None)


def record_failure(pool, backend, state=None, now=None, wall_clock=None):
    """A backend failed; after max_fails in a row it is skipped for fail_timeout seconds."""
    state = pool_state(pool.id) if state is None else state
    now = time.monotonic() if now is None else now
    with state.lock:
        failures = state.failures.get(backend.id, 0) + 1
        state.failures[backend.id] = failures
        if failures >= pool.max_fails:
            state.down_until[backend.id] = now + pool.fail_timeout
            state.down_since[backend.id] = time.time() if wall_clock is None else wall_clock
            state.failures[backend.id] = 0


def request_started(pool, backend):
    state = pool_state(pool.id)
    with state.lock:
        state.in_flight[backend.id] = state.in_flight.get(backend.id, 0) + 1


def request_finished(pool, backend):
    state = pool_state(pool.id)
    with state.lock:
        state.in_flight[backend.id] = state.in_flight.get(backend.id, 1) - 1
