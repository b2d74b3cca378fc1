"""Migrations that change the rows already stored."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from routing.models import Backend, HostRule, PathRule, RoutingVersion

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_CHECKS = [("routing", "0003_pool_balancing_and_health")]


def migrate(targets=None):
    """Migrate the routing app to the targets (default: its latest); return their models."""
    executor = MigrationExecutor(connection)
    targets = targets or executor.loader.graph.leaf_nodes("routing")
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


@pytest.fixture
def old_models():
    """The routing models as they were before every write was checked."""
    apps = migrate(BEFORE_CHECKS)
    yield apps
    for name in ("PathRule", "HostRule", "Backend", "Pool"):
        apps.get_model("routing", name).objects.all().delete()
    migrate()


def test_rows_stored_before_the_checks_are_normalised(old_models):
    pool = old_models.get_model("routing", "Pool").objects.create(name="mango")
    old_models.get_model("routing", "HostRule").objects.create(host="WWW.Mango.COM.", pool=pool)
    old_models.get_model("routing", "PathRule").objects.create(
        host="*.Apple.COM", prefix="/%6Dango/", pool=pool
    )
    old_models.get_model("routing", "Backend").objects.create(
        url="HTTP://Example.COM:8081/", pool=pool
    )
    migrate()
    assert HostRule.objects.get().host == "www.mango.com"
    assert (PathRule.objects.get().host, PathRule.objects.get().prefix) == ("*.apple.com", "/mango")
    assert Backend.objects.get().url == "http://example.com:8081"
    assert RoutingVersion.current() == 1  # running workers reload


def test_rows_that_cannot_be_normalised_stop_the_migration_by_name(old_models):
    pool = old_models.get_model("routing", "Pool").objects.create(name="mango")
    rules = old_models.get_model("routing", "HostRule").objects
    rules.create(host="www.mango.com", pool=pool)
    twin = rules.create(host="WWW.MANGO.COM", pool=pool)
    paths = old_models.get_model("routing", "PathRule").objects
    bad = paths.create(prefix="mango", pool=pool)
    dots = paths.create(prefix="/a/../b", pool=pool)
    tie = paths.create(host="www.mango.com", prefix="/", pool=pool)
    odd = rules.create(host="bad host!", pool=pool)
    backend = old_models.get_model("routing", "Backend").objects.create(
        url="HTTP://User:PassWord@example.com:8081/some/path?q=1", pool=pool
    )
    with pytest.raises(RuntimeError) as caught:
        migrate()
    problems = str(caught.value)
    assert f"HostRule {twin.pk}: host 'WWW.MANGO.COM' is 'www.mango.com' normalised" in problems
    assert f"PathRule {bad.pk}: prefix 'mango' is not valid" in problems
    assert f"PathRule {dots.pk}: prefix '/a/../b' is not valid" in problems
    assert f"PathRule {tie.pk}: prefix / on 'www.mango.com' ties" in problems
    assert f"HostRule {odd.pk}: host 'bad host!' is not valid" in problems
    assert f"Backend {backend.pk}: url 'HTTP://User:PassWord@" in problems
    # Nothing was rewritten beyond its spelling: the credentials are still there.
    stored = old_models.get_model("routing", "Backend").objects.get(pk=backend.pk).url
    assert "PassWord" in stored
