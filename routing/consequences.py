"""What a change to backends means for traffic, in words an operator reads after acting."""

from .models import Backend, HostRule, PathRule


def is_usable(backend):
    """Whether a backend row takes new requests (one never checked counts as healthy)."""
    return backend.enabled and backend.healthy and not backend.draining and backend.weight > 0


def site(rule):
    """Name what a rule serves: www.kiwi.com, www.kiwi.com/shop, /shop (any host)."""
    if isinstance(rule, PathRule):
        return f"{rule.host}{rule.prefix}" if rule.host else f"{rule.prefix} (any host)"
    return rule.host


def live_rules(pool):
    """The enabled rules whose requests the pool serves."""
    return [
        *HostRule.objects.filter(pool=pool, enabled=True),
        *PathRule.objects.filter(pool=pool, enabled=True),
    ]


def pool_consequence(pool, backends=None):
    """Say how many backends of a pool take requests, and what its rules now answer."""
    backends = list(pool.backends.all() if backends is None else backends)
    usable = sum(is_usable(backend) for backend in backends)
    sites = ", ".join(site(rule) for rule in live_rules(pool))
    count = backend_count(pool, backends)
    if not sites:
        return f"{count}; no enabled rule uses it"
    if usable == 0:
        return f"{count}; {sites} now answer{'s' if ',' not in sites else ''} 503"
    return f"{count}; {sites} served"


def pools_taken_down(backends, **changes):
    """Return the pools with live rules that the changes to these backends leave with no
    usable backend, where they had one: what a confirmation must show first."""
    changed = {backend.pk: backend for backend in backends}
    for backend in changed.values():
        for name, value in changes.items():
            setattr(backend, name, value)
    pools = {backend.pool_id: backend.pool for backend in changed.values()}
    return [
        pool
        for pool in pools.values()
        if taken_down(pool, [changed.get(b.pk, b) for b in pool.backends.all()])
    ]


def taken_down(pool, backends_after):
    """Whether a pool that serves live rules goes from some usable backend to none."""
    before = Backend.objects.filter(pool=pool).usable().exists()
    return before and not any(map(is_usable, backends_after)) and bool(live_rules(pool))


def answers_503(rule):
    """Whether an enabled rule forwards to a pool with no usable backend."""
    return (
        rule.enabled
        and rule.pool_id is not None
        and not Backend.objects.filter(pool_id=rule.pool_id).usable().exists()
    )


def rule_consequence(rule):
    """Say what a rule whose pool has no usable backend answers."""
    return f"{backend_count(rule.pool, rule.pool.backends.all())}; {site(rule)} now answers 503"


def backend_count(pool, backends):
    """Say how many of a pool's backends take requests: kiwi: 1 usable backend of 2."""
    backends = list(backends)
    usable = sum(is_usable(backend) for backend in backends)
    return f"{pool.name}: {usable} usable backend{'' if usable == 1 else 's'} of {len(backends)}"


def summarise_error(text):
    """A health check's error in a few words: connection refused, timed out, status 500."""
    lowered = text.lower()
    for needle, summary in (
        ("refused", "connection refused"),
        ("timed out", "timed out"),
        ("timeout", "timed out"),
        ("name or service not known", "name not resolved"),
        ("nameresolution", "name not resolved"),
        ("certificate", "TLS certificate refused"),
        ("ssl", "TLS error"),
        ("reset", "connection reset"),
        ("unreachable", "network unreachable"),
    ):
        if needle in lowered:
            return summary
    return text if len(text) <= 40 else text[:39] + "…"
