"""Choose a backend of a pool: pure strategies over snapshot backends."""

import random


def choose_random(backends):
    """Pick a backend at random, in proportion to its weight."""
    return random.choices(backends, weights=[backend.weight for backend in backends])[0]


STRATEGIES = {
    "random": choose_random,
}


def choose_backend(pool):
    """Return a usable backend of the pool by its algorithm, or None if it has none."""
    backends = pool.usable_backends
    if not backends:
        return None
    return STRATEGIES[pool.algorithm](backends)
