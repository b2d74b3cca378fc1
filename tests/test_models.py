"""The database guards the rules: validation, constraints and the routing version."""

import json

import pytest
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.management import call_command
from django.db import IntegrityError, connection, models, transaction
from django.db.models import F, ProtectedError, Value
from django.db.models.functions import Concat
from django.test.utils import CaptureQueriesContext

from routing.health import CheckResult, record_result
from routing.models import Backend, HostRule, PathRule, Pool, RoutingVersion
from routing.resolver import normalise_host, resolve
from routing.table import get_route_table

pytestmark = pytest.mark.django_db


@pytest.fixture
def mango():
    return Pool.objects.create(name="mango")


def error_codes(instance):
    with pytest.raises(ValidationError) as caught:
        instance.full_clean()
    return {error.code for errors in caught.value.error_dict.values() for error in errors}


@pytest.mark.parametrize(
    "host", ["www.mango.com", "*.mango.com", "localhost", "xn--mnchen-3ya.de", "a-b.c"]
)
def test_valid_hosts_are_accepted(mango, host):
    HostRule(host=host, pool=mango).full_clean()


@pytest.mark.parametrize(
    "host",
    [
        "http://www.mango.com:8080",
        "http://www.mango.com/shop",
        "www.mango.com:8000",
        "*mango.com",
        "www.*.mango.com",
        "*.*.mango.com",
        "*.com",
        "mango..com",
        "-mango.com",
        "man go.com",
        "www.mango.com/x",
        "a" * 64 + ".com",
    ],
)
def test_invalid_hosts_are_refused(mango, host):
    assert error_codes(HostRule(host=host, pool=mango)) & {
        "invalid_host",
        "wildcard_too_broad",
    }


def test_host_is_stored_lower_case_without_trailing_dot(mango):
    rule = HostRule(host="WWW.Mango.COM.", pool=mango)
    rule.full_clean()
    assert rule.host == "www.mango.com"


@pytest.mark.parametrize(
    ("prefix", "code"),
    [
        ("mango", "prefix_without_slash"),
        ("/mango?x=1", "prefix_not_a_path"),
        ("/man go", "prefix_not_a_path"),
        ("/mango//x", "prefix_bad_segment"),
        ("/mango/../admin", "prefix_bad_segment"),
    ],
)
def test_invalid_prefixes_are_refused(mango, prefix, code):
    assert code in error_codes(PathRule(prefix=prefix, pool=mango))


def test_prefix_loses_its_trailing_slash(mango):
    rule = PathRule(prefix="/mango/", pool=mango)
    rule.full_clean()
    assert rule.prefix == "/mango"


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://127.0.0.1:21", "invalid_backend_url"),
        ("127.0.0.1:8081", "invalid_backend_url"),
        ("http://:8081", "invalid_backend_url"),
        ("http://127.0.0.1:99999", "invalid_backend_url"),
        ("http://user:secret@127.0.0.1:8081", "backend_url_credentials"),
        ("http://127.0.0.1:8081/app", "backend_url_path"),
        ("http://127.0.0.1:8081?x=1", "backend_url_path"),
    ],
)
def test_invalid_backend_urls_are_refused(mango, url, code):
    assert code in error_codes(Backend(pool=mango, url=url))


def test_backend_url_is_unique_per_pool(mango):
    Backend.objects.create(pool=mango, url="http://127.0.0.1:8081")
    duplicate = Backend(pool=mango, url="http://127.0.0.1:8081/")
    with pytest.raises(ValidationError, match="already exists"):
        duplicate.full_clean()
    other_pool = Pool.objects.create(name="apple")
    Backend(pool=other_pool, url="http://127.0.0.1:8081").full_clean()


def test_duplicate_rules_are_refused(mango):
    HostRule.objects.create(host="www.mango.com", pool=mango)
    with pytest.raises(ValidationError, match="already exists"):
        HostRule(host="WWW.MANGO.COM", pool=mango).full_clean()
    PathRule.objects.create(prefix="/mango", pool=mango)
    with pytest.raises(ValidationError, match="already exists"):
        PathRule(prefix="/mango/", pool=mango).full_clean()


def test_root_path_rule_that_would_tie_with_a_host_rule_is_refused(mango):
    HostRule.objects.create(host="www.mango.com", pool=mango)
    assert "ties_with_host_rule" in error_codes(
        PathRule(prefix="/", host="www.mango.com", pool=mango)
    )
    PathRule(prefix="/", host="", pool=mango).full_clean()


def test_host_rule_that_would_tie_with_a_root_path_rule_is_refused(mango):
    PathRule.objects.create(prefix="/", host="www.mango.com", pool=mango)
    assert "ties_with_path_rule" in error_codes(HostRule(host="www.mango.com", pool=mango))


def test_pool_used_by_rules_cannot_be_deleted(mango):
    HostRule.objects.create(host="www.mango.com", pool=mango)
    with pytest.raises(ProtectedError):
        mango.delete()


def test_rules_read_like_what_they_do(mango):
    assert str(HostRule(host="www.mango.com", pool=mango)) == "www.mango.com → mango"
    assert str(PathRule(prefix="/mango", pool=mango)) == "/mango (any host) → mango"
    assert str(PathRule(prefix="/x", host="a.b", pool=mango)) == "a.b/x → mango"


@pytest.mark.parametrize(
    "write",
    [
        lambda pool, backend, rule: HostRule.objects.create(host="www.mango.com", pool=pool),
        lambda pool, backend, rule: pool.save(),
        lambda pool, backend, rule: Pool.objects.filter(pk=pool.pk).update(read_timeout=5),
        lambda pool, backend, rule: Backend.objects.bulk_create(
            [Backend(pool=pool, url="http://a:1")]
        ),
        lambda pool, backend, rule: backend.delete(),
        lambda pool, backend, rule: PathRule.objects.bulk_update([rule], ["prefix"]),
        lambda pool, backend, rule: Backend.objects.filter(pool=pool).delete(),
    ],
    ids=["create", "save", "update", "bulk_create", "delete", "bulk_update", "qs_delete"],
)
def test_every_kind_of_write_bumps_the_routing_version(mango, write):
    backend = Backend.objects.create(pool=mango, url="http://b:1")
    rule = PathRule.objects.create(prefix="/x", pool=mango)
    before = RoutingVersion.current()
    write(mango, backend, rule)
    assert RoutingVersion.current() > before


@pytest.mark.parametrize(
    ("written", "stored"),
    [("/%6Dango/", "/mango"), ("/caf\u00e9", "/caf%C3%A9"), ("/a%2fb", "/a%2Fb"), ("/", "/")],
)
def test_prefix_is_stored_in_one_canonical_spelling(mango, written, stored):
    rule = PathRule(prefix=written, pool=mango)
    rule.full_clean()
    assert rule.prefix == stored


def test_differently_spelled_duplicate_prefix_is_refused(mango):
    PathRule.objects.create(prefix="/mango", pool=mango)
    with pytest.raises(ValidationError, match="already exists"):
        PathRule(prefix="/%6Dango", pool=mango).full_clean()


@pytest.mark.parametrize("prefix", ["/%2e", "/x/%2E%2E/y", "/a/%2e/b"])
def test_encoded_dot_segments_in_a_prefix_are_refused(mango, prefix):
    assert "prefix_bad_segment" in error_codes(PathRule(prefix=prefix, pool=mango))


@pytest.mark.parametrize("url", ["http://h:1/?", "http://h:1#", "http://h:1/#"])
def test_backend_url_with_an_empty_query_or_fragment_is_refused(mango, url):
    assert "backend_url_path" in error_codes(Backend(pool=mango, url=url))


def test_backend_url_is_stored_as_a_bare_origin(mango):
    backend = Backend(pool=mango, url="HTTP://Example.COM:8081/")
    backend.full_clean()
    assert backend.url == "http://example.com:8081"


def test_host_with_a_newline_is_refused(mango):
    assert "invalid_host" in error_codes(HostRule(host="www\n.mango.com", pool=mango))


# Every way a row reaches the database runs the same checks as the admin's
# form: bad rows are refused with the admin's message, unnormalised ones are
# stored in their one spelling.


@pytest.fixture
def routing_rows(mango):
    """One row of each kind, for the writes that change an existing row."""
    return {
        Backend: Backend.objects.create(pool=mango, url="http://127.0.0.1:1"),
        HostRule: HostRule.objects.create(host="www.kiwi.com", pool=mango),
        PathRule: PathRule.objects.create(prefix="/", host="www.lime.com", pool=mango),
    }


def write_with_create(model, fields, row, pool, tmp_path):
    model.objects.create(pool=pool, **fields)


def write_with_save(model, fields, row, pool, tmp_path):
    model(pool=pool, **fields).save()


def write_with_loaddata(model, fields, row, pool, tmp_path):
    fixture = tmp_path / "rows.json"
    label = model._meta.label_lower
    fixture.write_text(json.dumps([{"model": label, "fields": {"pool": pool.pk, **fields}}]))
    call_command("loaddata", str(fixture), verbosity=0)


def write_with_bulk_create(model, fields, row, pool, tmp_path):
    model.objects.bulk_create([model(pool=pool, **fields)])


def write_with_update(model, fields, row, pool, tmp_path):
    model.objects.filter(pk=row.pk).update(**fields)


def write_with_bulk_update(model, fields, row, pool, tmp_path):
    for name, value in fields.items():
        setattr(row, name, value)
    model.objects.bulk_update([row], list(fields))


WRITE_PATHS = [
    write_with_create,
    write_with_save,
    write_with_loaddata,
    write_with_bulk_create,
    write_with_update,
    write_with_bulk_update,
]


def stored_rows():
    """Everything the routing tables hold, and their version."""
    return [
        [*model.objects.order_by("pk").values()] for model in (Pool, Backend, HostRule, PathRule)
    ] + [RoutingVersion.current()]


@pytest.mark.parametrize("write", WRITE_PATHS)
@pytest.mark.parametrize(
    ("model", "fields", "field", "code"),
    [
        (HostRule, {"host": "www.mango.com:8000"}, "host", "invalid_host"),
        (HostRule, {"host": "*.com"}, "host", "wildcard_too_broad"),
        (HostRule, {"host": "WWW.Lime.COM."}, "host", "ties_with_path_rule"),
        (PathRule, {"prefix": "mango"}, "prefix", "prefix_without_slash"),
        (PathRule, {"prefix": "/a/%2e%2e/b"}, "prefix", "prefix_bad_segment"),
        (PathRule, {"host": "www.kiwi.com", "prefix": "/"}, "prefix", "ties_with_host_rule"),
        (PathRule, {"host": "http://www.mango.com/x", "prefix": "/x"}, "host", "invalid_host"),
        (Backend, {"url": "http://127.0.0.1:8081/app"}, "url", "backend_url_path"),
        (Backend, {"url": "ftp://127.0.0.1:21"}, "url", "invalid_backend_url"),
    ],
    ids=[
        "host-with-port",
        "wildcard-too-broad",
        "host-ties-with-path-rule",
        "prefix-without-slash",
        "prefix-dot-segment",
        "prefix-ties-with-host-rule",
        "path-rule-host-with-scheme",
        "url-with-path",
        "url-not-http",
    ],
)
def test_every_write_path_refuses_a_bad_row_and_stores_nothing(
    mango, routing_rows, tmp_path, write, model, fields, field, code
):
    before = stored_rows()
    with pytest.raises(ValidationError) as caught:
        write(model, fields, routing_rows[model], mango, tmp_path)
    assert code in {error.code for error in caught.value.error_dict[field]}
    assert stored_rows() == before


@pytest.mark.parametrize("write", WRITE_PATHS)
@pytest.mark.parametrize(
    ("model", "fields", "stored"),
    [
        (HostRule, {"host": "WWW.Mango.COM."}, {"host": "www.mango.com"}),
        (
            PathRule,
            {"host": " *.Mango.COM.", "prefix": "/%6Dango/"},
            {"host": "*.mango.com", "prefix": "/mango"},
        ),
        (Backend, {"url": "HTTP://Example.COM:8081/"}, {"url": "http://example.com:8081"}),
    ],
    ids=["host", "path-rule", "backend-url"],
)
def test_every_write_path_stores_a_row_in_its_one_spelling(
    mango, routing_rows, tmp_path, write, model, fields, stored
):
    write(model, fields, routing_rows[model], mango, tmp_path)
    assert model.objects.filter(**stored).count() == 1


def test_a_host_rule_created_unnormalised_serves_its_host(mango):
    Backend.objects.create(pool=mango, url="http://127.0.0.1:8081")
    HostRule.objects.create(host="WWW.Mango.COM.", pool=mango)
    match = resolve(get_route_table(), normalise_host("www.mango.com"), "/")
    assert match is not None and match.route.pool.name == "mango"


def test_a_bad_row_in_a_fixture_names_its_field_and_loads_nothing(mango, tmp_path):
    fixture = tmp_path / "routes.json"
    fixture.write_text(
        json.dumps(
            [
                {
                    "model": "routing.hostrule",
                    "fields": {"host": "www.good.com", "pool": ["mango"]},
                },
                {"model": "routing.pathrule", "fields": {"prefix": "apple", "pool": ["mango"]}},
            ]
        )
    )
    with pytest.raises(ValidationError) as caught:
        call_command("loaddata", str(fixture), verbosity=0)
    assert caught.value.message_dict == {"prefix": ["A prefix starts with '/', e.g. /mango."]}
    assert not HostRule.objects.exists()


def test_loading_a_fixture_again_overwrites_its_rows():
    call_command("loaddata", "fruit_routes", verbosity=0)
    HostRule.objects.filter(host="www.mango.com").update(enabled=False)
    call_command("loaddata", "fruit_routes", verbosity=0)
    assert HostRule.objects.get(host="www.mango.com").enabled


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"max_attempts": F("max_attempts") - 3}, "max_attempts", "min_value"),
        ({"name": Concat(F("name"), Value(" pool"))}, "name", "invalid"),
    ],
    ids=["below-minimum", "not-a-slug"],
)
def test_an_update_computed_by_the_database_is_checked_row_by_row(mango, change, field, code):
    Pool.objects.create(name="apple", max_attempts=5)
    before = stored_rows()
    with pytest.raises(ValidationError) as caught:
        Pool.objects.update(**change)
    assert code in {error.code for error in caught.value.error_dict[field]}
    assert stored_rows() == before
    Pool.objects.filter(name="apple").update(max_attempts=F("max_attempts") - 3)
    assert Pool.objects.get(name="apple").max_attempts == 2


def test_an_update_of_many_rows_returns_how_many_it_changed(mango, routing_rows):
    Backend.objects.create(pool=mango, url="http://127.0.0.1:2")
    assert Backend.objects.filter(pool=mango).update(weight=0) == 2
    assert Backend.objects.filter(pool=mango, weight=0).count() == 2
    assert Backend.objects.filter(pool__name="none").update(weight=3) == 0


def test_a_related_managers_write_is_checked_and_bumps_the_version(mango):
    apple = Pool.objects.create(name="apple")
    backend = Backend.objects.create(pool=apple, url="http://127.0.0.1:1")
    before = RoutingVersion.current()
    mango.backends.add(backend)  # Django's own update(), through the base manager
    assert RoutingVersion.current() > before
    backend.refresh_from_db()
    assert backend.pool == mango
    twin = Backend.objects.create(pool=apple, url="http://127.0.0.1:1")
    with pytest.raises(ValidationError):
        mango.backends.add(twin)  # the same URL twice in one pool


def test_health_results_are_written_without_the_configuration_checks(mango):
    backend = Backend.objects.create(pool=mango, url="http://127.0.0.1:1")
    with CaptureQueriesContext(connection) as queries:
        record_result(backend, CheckResult(True, latency_ms=1.0))
    assert len(queries) == 1  # one UPDATE: no reads, no version bump


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (HostRule, {"host": "WWW.mango.com"}),
        (HostRule, {"host": "www.mango.com."}),
        (PathRule, {"host": "Www.mango.com", "prefix": "/x"}),
        (PathRule, {"prefix": "mango"}),
        (PathRule, {"prefix": "/mango/"}),
        (Backend, {"url": "HTTP://127.0.0.1:1"}),
        (Backend, {"url": "ftp://127.0.0.1:1"}),
    ],
)
def test_the_database_refuses_unnormalised_rows_written_around_the_models(mango, model, fields):
    with pytest.raises(IntegrityError), transaction.atomic():
        models.QuerySet(model).bulk_create([model(pool=mango, **fields)])  # around the checks


@pytest.mark.parametrize("write", WRITE_PATHS[:4])
@pytest.mark.parametrize(
    ("model", "fields", "field", "code"),
    [
        (HostRule, {"host": "WWW.Kiwi.COM"}, "host", "unique"),
        (PathRule, {"host": "www.lime.com", "prefix": "/"}, NON_FIELD_ERRORS, "unique_together"),
        (Backend, {"url": "http://127.0.0.1:1/"}, NON_FIELD_ERRORS, "unique_together"),
    ],
    ids=["host", "host-and-prefix", "pool-and-url"],
)
def test_every_write_path_refuses_a_duplicate_in_its_one_spelling(
    mango, routing_rows, tmp_path, write, model, fields, field, code
):
    before = stored_rows()
    with pytest.raises(ValidationError) as caught:
        write(model, fields, None, mango, tmp_path)
    assert code in {error.code for error in caught.value.error_dict[field]}
    assert stored_rows() == before


def test_duplicates_within_one_batch_are_refused(mango):
    with pytest.raises(ValidationError, match="already exists"):
        HostRule.objects.bulk_create(
            [HostRule(host="www.a.com", pool=mango), HostRule(host="WWW.A.COM", pool=mango)]
        )
    PathRule.objects.create(prefix="/a", pool=mango)
    rule = PathRule.objects.create(prefix="/b", pool=mango)
    with pytest.raises(ValidationError, match="already exists"):
        PathRule.objects.filter(pk=rule.pk).update(prefix="/%61")
    assert not HostRule.objects.exists()
    assert PathRule.objects.get(pk=rule.pk).prefix == "/b"


def test_a_row_needs_a_pool_that_exists(mango):
    with pytest.raises(ValidationError) as caught:
        HostRule.objects.create(host="www.mango.com", pool_id=mango.pk + 1000)
    assert caught.value.message_dict == {
        "pool": [f"pool instance with id {mango.pk + 1000} is not a valid choice."]
    }
    with pytest.raises(ValidationError) as caught:
        HostRule.objects.bulk_create([HostRule(host="www.mango.com")])
    # A rule without a pool must redirect or respond instead.
    assert caught.value.message_dict == {
        "pool": ["A rule needs a pool, a redirect or a fixed response."]
    }


def test_an_upsert_meets_the_stored_row_by_its_one_spelling(mango, routing_rows):
    HostRule.objects.bulk_create(
        [HostRule(host="WWW.Kiwi.COM.", pool=mango, enabled=False)],
        update_conflicts=True,
        unique_fields=["host"],
        update_fields=["enabled"],
    )
    assert list(HostRule.objects.values_list("host", "enabled")) == [("www.kiwi.com", False)]
