"""The database guards the rules: validation, constraints and the routing version."""

import pytest
from django.core.exceptions import ValidationError
from django.db.models import ProtectedError

from routing.models import Backend, HostRule, PathRule, Pool, RoutingVersion

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
        "http://www.mango.com",
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
    assert str(PathRule(prefix="/mango", pool=mango)) == "*/mango → mango"
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
