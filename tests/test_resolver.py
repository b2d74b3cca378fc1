"""The resolver over plain snapshot tables: no database, no I/O."""

import pytest

from routing.prefixes import prefix_segments
from routing.resolver import normalise_host, path_segments, resolve, split_target
from routing.snapshot import Pool, Route, RouteTable

MANGO = Pool(id=1, name="mango")
APPLE = Pool(id=2, name="apple")
KIWI = Pool(id=3, name="kiwi")
POOLS = {pool.name: pool for pool in (MANGO, APPLE, KIWI)}


def host_rule(host, pool):
    return Route(kind="host", rule_id=0, pool=POOLS[pool], host=host)


def path_rule(prefix, pool, host="", strip_prefix=True):
    return Route(
        kind="path",
        rule_id=0,
        pool=POOLS[pool],
        host=host,
        prefix=tuple(prefix_segments(prefix)),
        strip_prefix=strip_prefix,
    )


def serve(rules, raw_host, raw_path):
    """Return (pool name, upstream path) for a request, or None when nothing matches."""
    host = normalise_host(raw_host)
    match = resolve(RouteTable.from_routes(rules), host, raw_path)
    return match and (match.route.pool.name, match.upstream_path)


MANGO_HOST = [host_rule("www.mango.com", "mango")]
APPLE_PATH = [path_rule("/apple", "apple")]


# The example table of docs/architecture.md, "Routing semantics", row by row.
@pytest.mark.parametrize(
    ("rules", "host", "path", "expected"),
    [
        (MANGO_HOST, "www.mango.com", "/", ("mango", "/")),
        (MANGO_HOST, "WWW.Mango.com:8000", "/x", ("mango", "/x")),
        (MANGO_HOST, "www.notmango.com", "/", None),
        (APPLE_PATH, "anything.example", "/apple/x", ("apple", "/x")),
        (APPLE_PATH, "anything.example", "/applesauce", None),
        (MANGO_HOST + APPLE_PATH, "www.mango.com", "/apple", ("mango", "/apple")),
        ([host_rule("*.mango.com", "mango")], "a.b.mango.com", "/", ("mango", "/")),
        ([host_rule("*.mango.com", "mango")], "mango.com", "/", None),
    ],
)
def test_design_table(rules, host, path, expected):
    assert serve(rules, host, path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/apple", ("apple", "/")),
        ("/apple/", ("apple", "/")),
        ("/apple/x", ("apple", "/x")),
        ("/apple/x/", ("apple", "/x/")),
        ("/apple//x", ("apple", "//x")),
        ("/applesauce", None),
        ("/apple%2Fx", None),
        ("/Apple", None),
        ("/", None),
    ],
)
def test_prefix_matches_whole_segments(path, expected):
    assert serve(APPLE_PATH, "h.example", path) == expected


@pytest.mark.parametrize(
    ("rules", "path", "expected"),
    [
        # The longest prefix wins among rules of one host.
        (
            [path_rule("/api", "mango"), path_rule("/api/v2", "apple")],
            "/api/v2/users",
            ("apple", "/users"),
        ),
        (
            [path_rule("/api", "mango"), path_rule("/api/v2", "apple")],
            "/api/v1/users",
            ("mango", "/v1/users"),
        ),
        # A catch-all path rule.
        ([path_rule("/", "kiwi")], "/anything/at/all", ("kiwi", "/anything/at/all")),
        # strip_prefix off: the backend sees the whole path.
        (
            [path_rule("/apple", "apple", strip_prefix=False)],
            "/apple/x",
            ("apple", "/apple/x"),
        ),
    ],
)
def test_longest_prefix_wins(rules, path, expected):
    assert serve(rules, "h.example", path) == expected


def test_most_specific_host_wins_before_prefix_length():
    rules = [
        path_rule("/shop/cart", "kiwi"),  # any host, longer prefix
        path_rule("/shop", "apple", host="*.mango.com"),
        path_rule("/", "mango", host="www.mango.com"),
    ]
    assert serve(rules, "www.mango.com", "/shop/cart") == ("mango", "/shop/cart")
    assert serve(rules, "eu.mango.com", "/shop/cart") == ("apple", "/cart")
    assert serve(rules, "www.kiwi.com", "/shop/cart") == ("kiwi", "/")


def test_longest_wildcard_suffix_wins():
    rules = [host_rule("*.mango.com", "mango"), host_rule("*.eu.mango.com", "apple")]
    assert serve(rules, "shop.eu.mango.com", "/") == ("apple", "/")
    assert serve(rules, "shop.us.mango.com", "/") == ("mango", "/")


def test_less_specific_host_serves_when_specific_host_has_no_matching_prefix():
    rules = [path_rule("/api", "mango", host="www.mango.com"), path_rule("/", "kiwi")]
    assert serve(rules, "www.mango.com", "/api/x") == ("mango", "/x")
    assert serve(rules, "www.mango.com", "/other") == ("kiwi", "/other")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # Dot segments are removed before matching, plain or percent-encoded.
        ("/public/../apple/x", ("apple", "/x")),
        ("/apple/./x", ("apple", "/x")),
        ("/%2e%2e/apple/x", ("apple", "/x")),
        ("/apple/x/..", ("apple", "/")),
        ("/apple/../admin", None),
        ("/apple/%2E%2E/admin", None),
        # Encoded characters are matched decoded, and forwarded as sent.
        ("/%61pple/caf%C3%A9", ("apple", "/caf%C3%A9")),
        ("/apple/a%2Fb", ("apple", "/a%2Fb")),
    ],
)
def test_paths_match_after_decoding_and_dot_segment_removal(path, expected):
    assert serve(APPLE_PATH, "h.example", path) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("www.mango.com", "www.mango.com"),
        ("WWW.Mango.COM:8000.", "www.mango.com"),
        ("WWW.Mango.COM.:8000", "www.mango.com"),
        ("www.mango.com.", "www.mango.com"),
        ("127.0.0.1:8000", "127.0.0.1"),
        ("[::1]:8000", "[::1]"),
        ("", None),
        (None, None),
        ("www.mango.com:port", None),
        ("bad host", None),
        ("evil.example/x", None),
        ("user@www.mango.com", None),
        ("www.mango.com..", None),
        (".mango.com", None),
        ("www..mango.com", None),
        ("www.mango.com\n", None),
    ],
)
def test_normalise_host(raw, expected):
    assert normalise_host(raw) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/", ("/", "")),
        ("/a/b?x=1&x=2", ("/a/b", "x=1&x=2")),
        ("/a?", ("/a", "")),
        ("http://evil.example/", None),
        ("*", None),
        ("/a b", None),
        ("/caf\u00e9", None),
        ("/a\n", None),
        ("/a#frag", None),
    ],
)
def test_split_target(target, expected):
    assert split_target(target) == expected


def test_encoded_slash_stays_inside_its_segment():
    assert path_segments("/a%2Fb/c") == [("a%2Fb", "a/b"), ("c", "c")]


def test_route_table_ignores_a_later_duplicate():
    rules = [host_rule("www.mango.com", "mango"), host_rule("www.mango.com", "apple")]
    assert serve(rules, "www.mango.com", "/") == ("mango", "/")
