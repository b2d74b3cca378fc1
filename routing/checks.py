"""System checks (`python manage.py check`) for routing tables that cannot work as meant."""

from pathlib import Path

from django.conf import settings
from django.core import checks
from django.db import DatabaseError

from .models import HostRule, PathRule, Pool
from .prefixes import prefix_segments

# A file collectstatic copies: without it the admin's pages have no style.
ADMIN_CSS = Path("admin") / "css" / "base.css"


@checks.register(checks.Tags.staticfiles)
def check_static_files(app_configs=None, **kwargs):
    """Warn when the admin's static files were not collected (served from STATIC_ROOT)."""
    if getattr(settings, "WHITENOISE_USE_FINDERS", settings.DEBUG):
        return []  # served from the apps' own folders
    if (Path(settings.STATIC_ROOT) / ADMIN_CSS).is_file():
        return []
    return [
        checks.Warning(
            f"The admin's static files are missing from STATIC_ROOT ({settings.STATIC_ROOT}): "
            "its pages would show without style.",
            hint="Run `python manage.py collectstatic --noinput`.",
            id="routing.W005",
        )
    ]


@checks.register(checks.Tags.database)
def check_routing_table(app_configs=None, databases=None, **kwargs):
    """Warn about rules that serve nothing and pools that retry past shutdown."""
    if not databases:  # the table lives in the database: only when asked to look there
        return []
    try:
        return [
            *empty_pool_warnings(),
            *shadowed_rule_warnings(),
            *slow_pool_warnings(),
            *per_worker_rate_limit_warnings(),
        ]
    except DatabaseError:  # not migrated yet
        return []


def enabled_rules():
    return [
        *HostRule.objects.filter(enabled=True).select_related("pool"),
        *PathRule.objects.filter(enabled=True).select_related("pool"),
    ]


def empty_pool_warnings():
    usable = set(
        Pool.objects.filter(
            backends__enabled=True, backends__draining=False, backends__weight__gt=0
        ).values_list("pk", flat=True)
    )
    return [
        checks.Warning(
            f"Rule {rule} sends requests to pool {rule.pool}, which has no enabled "
            "backend with a weight above 0: they all get 503.",
            hint="Add or enable a backend in the pool, or disable the rule.",
            obj=rule,
            id="routing.W001",
        )
        for rule in enabled_rules()
        if rule.pool_id is not None and rule.pool_id not in usable
    ]


def shadowed_rule_warnings():
    """Warn about a rule that an equal one (same host, same prefix) always beats."""
    seen = {}
    warnings = []
    for rule in sorted(enabled_rules(), key=lambda rule: (isinstance(rule, PathRule), rule.pk)):
        prefix = tuple(prefix_segments(rule.prefix)) if isinstance(rule, PathRule) else ()
        key = (rule.host.lower(), prefix)
        if key in seen:
            warnings.append(
                checks.Warning(
                    f"Rule {rule} can never win: {seen[key]} matches the same requests "
                    "and comes first.",
                    hint="Delete or disable one of the two.",
                    obj=rule,
                    id="routing.W002",
                )
            )
        else:
            seen[key] = rule
    return warnings


def slow_pool_warnings():
    return [
        checks.Warning(
            f"Pool {pool} may spend {pool.max_attempts} × {pool.read_timeout:g} s on one "
            f"request, longer than gunicorn's graceful timeout ({settings.GRACEFUL_TIMEOUT} s): "
            "requests in flight at shutdown could be cut off.",
            hint="Lower max attempts or the read timeout, or raise GRACEFUL_TIMEOUT.",
            obj=pool,
            id="routing.W003",
        )
        for pool in Pool.objects.all()
        if pool.max_attempts * pool.read_timeout > settings.GRACEFUL_TIMEOUT
    ]


def per_worker_rate_limit_warnings():
    """Warn that rate limits count per worker when there is no Redis to share the count."""
    if settings.REDIS_URL:
        return []
    return [
        checks.Warning(
            f"Rule {rule} has a rate limit, and REDIS_URL is not set: each gunicorn "
            "worker (and each instance) counts on its own, so clients get up to "
            "that many times the limit.",
            hint="Set REDIS_URL (e.g. redis://127.0.0.1:6379/0) to count in Redis.",
            obj=rule,
            id="routing.W004",
        )
        for rule in enabled_rules()
        if rule.rate_limit
    ]
