"""The routes file: import_routes and export_routes, against the test database."""

import io
import textwrap
import time
from datetime import UTC, datetime

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from routing.models import Backend, HostRule, PathRule, Pool, RoutingVersion

from .conftest import (
    PROJECT_ROOT,
    Balancer,
    balancer_environment,
    demo_fixture,
    manage_output,
)
from .test_gunicorn_e2e import PROPAGATION_BOUND, get

pytestmark = pytest.mark.django_db

TUTORIAL_FILE = PROJECT_ROOT / "docs/loadbalancer.yaml"

ROUTES = """\
pools:
  apple:
    backends:
      - http://127.0.0.1:9081
  mango:
    algorithm: round_robin
    read_timeout: 5
    backends:
      - http://127.0.0.1:8081
      - {url: http://127.0.0.1:8082, weight: 3, enabled: false}
hosts:
  - host: www.mango.com
    pool: mango
    request_headers: {set: {X-Env: prod}, remove: [X-Debug]}
    query: {set: {lang: en}}
  - host: www.apple.com
    pool: apple
    enabled: false
paths:
  - prefix: /apple
    pool: apple
    strip_prefix: false
    rewrite: [{pattern: ^/apple/v1/, replacement: /apple/v2/}]
  - prefix: /mango
    host: "*.mango.com"
    pool: mango
    firewall: {deny: [10.0.0.0/8], deny_paths: [/private]}
    response_headers: {set: {X-Served-By: lb}}
"""


def import_routes(text, *args, stdin=None):
    """Import a routes file given as text; return what the command printed."""
    out = io.StringIO()
    call_command("import_routes", "-", *args, stdin=io.StringIO(text), stdout=out)
    return out.getvalue()


def import_errors(text):
    """Import a file that must fail; return its error lines, checking nothing was written."""
    before = export()
    err = io.StringIO()
    with pytest.raises(CommandError, match="nothing was written"):
        call_command("import_routes", "-", stdin=io.StringIO(text), stderr=err)
    assert export() == before
    return err.getvalue().splitlines()


def export():
    out = io.StringIO()
    call_command("export_routes", stdout=out)
    return out.getvalue()


def changes(output):
    return [line for line in output.splitlines() if line[:2] in ("+ ", "~ ", "- ")]


@pytest.fixture
def routes():
    """The table of ROUTES, imported."""
    import_routes(ROUTES)


def test_import_creates_every_row_of_the_file(routes):
    mango = Pool.objects.get(name="mango")
    assert (mango.algorithm, mango.read_timeout, mango.connect_timeout) == ("round_robin", 5.0, 3.0)
    assert list(mango.backends.values_list("url", "weight", "enabled")) == [
        ("http://127.0.0.1:8081", 1, True),
        ("http://127.0.0.1:8082", 3, False),
    ]
    rule = HostRule.objects.get(host="www.mango.com")
    assert rule.request_headers == {"set": {"X-Env": "prod"}, "remove": ["X-Debug"]}
    assert rule.query == {"set": {"lang": "en"}}
    assert not HostRule.objects.get(host="www.apple.com").enabled
    scoped = PathRule.objects.get(prefix="/mango")
    assert (scoped.host, str(scoped.pool)) == ("*.mango.com", "mango")
    assert scoped.firewall == {"deny": ["10.0.0.0/8"], "deny_paths": ["/private"]}
    apple = PathRule.objects.get(prefix="/apple")
    assert apple.rewrite == [{"pattern": "^/apple/v1/", "replacement": "/apple/v2/"}]
    assert not apple.strip_prefix


def test_import_prints_each_change_of_a_replace():
    import_routes(ROUTES)
    edited = (
        ROUTES.replace("read_timeout: 5", "read_timeout: 7")
        .replace(
            "  - host: www.mango.com\n    pool: mango", "  - host: www.mango.com\n    pool: apple"
        )
        .replace("- prefix: /apple", "- prefix: /kiwi")
        .replace("pools:\n", "pools:\n  kiwi:\n    backends: [http://127.0.0.1:7001]\n")
    )
    assert changes(import_routes(edited)) == [
        "- path /apple",
        "+ pool kiwi",
        "+ backend http://127.0.0.1:7001 (kiwi)",
        "~ pool mango: read_timeout 5.0 -> 7.0",
        "~ host www.mango.com: pool mango -> apple",
        "+ path /kiwi",
    ]
    assert HostRule.objects.get(host="www.mango.com").pool.name == "apple"
    assert set(PathRule.objects.values_list("prefix", flat=True)) == {"/kiwi", "/mango"}


def test_import_deletes_what_the_file_no_longer_has(routes):
    output = import_routes("pools:\n  apple: {backends: [http://127.0.0.1:9081]}\n")
    assert changes(output) == [
        "- host www.apple.com",
        "- host www.mango.com",
        "- path /apple",
        "- path *.mango.com/mango",
        "- backend http://127.0.0.1:8081 (mango)",
        "- backend http://127.0.0.1:8082 (mango)",
        "- pool mango",
    ]
    assert list(Pool.objects.values_list("name", flat=True)) == ["apple"]
    assert not HostRule.objects.exists() and not PathRule.objects.exists()


def test_export_then_import_changes_nothing(routes):
    exported = export()
    version = RoutingVersion.current()
    assert import_routes(exported).splitlines() == ["No changes."]
    assert RoutingVersion.current() == version
    assert export() == exported


def test_export_of_the_demo_routes_leaves_out_defaults():
    call_command("loaddata", "fruit_routes", verbosity=0)
    assert yaml.safe_load(export()) == {
        "pools": {
            "apple": {"backends": ["http://127.0.0.1:9081", "http://127.0.0.1:9082"]},
            "mango": {"backends": ["http://127.0.0.1:8081", "http://127.0.0.1:8082"]},
        },
        "hosts": [
            {"host": "www.apple.com", "pool": "apple"},
            {"host": "www.mango.com", "pool": "mango"},
        ],
        "paths": [{"prefix": "/apple", "pool": "apple"}, {"prefix": "/mango", "pool": "mango"}],
    }


def test_export_reads_back_as_the_file_it_came_from(routes):
    assert yaml.safe_load(export()) == yaml.safe_load(
        ROUTES.replace("read_timeout: 5", "read_timeout: 5.0")
    ) | {  # an export lists rules sorted: hosts by host, paths by host then prefix
        "hosts": yaml.safe_load(ROUTES)["hosts"][::-1]
    }


def test_dry_run_prints_the_changes_and_writes_nothing(routes):
    before, version = export(), RoutingVersion.current()
    output = import_routes(ROUTES.replace("read_timeout: 5", "read_timeout: 9"), "--dry-run")
    assert output.splitlines() == [
        "~ pool mango: read_timeout 5.0 -> 9.0",
        "Dry run: 1 change not written.",
        "No request of the last hour would go elsewhere.",  # the impact preview
    ]
    assert export() == before
    assert RoutingVersion.current() == version


def test_dry_run_finds_what_only_the_database_can_tell(routes):
    """A path rule for / ties with a host rule on its host: the model finds it on write."""
    tie = ROUTES + "  - {prefix: /, host: www.mango.com, pool: mango}\n"
    err = io.StringIO()
    with pytest.raises(CommandError, match="1 error in standard input"):
        call_command("import_routes", "-", "--dry-run", stdin=io.StringIO(tie), stderr=err)
    assert err.getvalue().startswith("paths[2].prefix: A host rule for www.mango.com already")


def test_an_import_is_one_routing_change(routes):
    version = RoutingVersion.current()
    edited = ROUTES.replace("read_timeout: 5", "read_timeout: 6").replace("weight: 3", "weight: 4")
    assert len(changes(import_routes(edited.replace("/mango", "/mangoes")))) == 4
    assert RoutingVersion.current() == version + 1


def test_one_bump_collapses_writes_and_bumps_nothing_for_none(db):
    version = RoutingVersion.current()
    with RoutingVersion.one_bump():
        pool = Pool.objects.create(name="kiwi")
        with RoutingVersion.one_bump():  # nested: still one
            Backend.objects.create(pool=pool, url="http://127.0.0.1:7001")
        Pool.objects.filter(name="kiwi").update(read_timeout=4)
        assert RoutingVersion.current() == version
    assert RoutingVersion.current() == version + 1
    with RoutingVersion.one_bump():
        pass
    assert RoutingVersion.current() == version + 1
    Pool.objects.filter(name="kiwi").update(read_timeout=5)  # outside: bumps again at once
    assert RoutingVersion.current() == version + 2


def test_import_keeps_the_health_state_of_backends(routes):
    checked = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    Backend.health_rows().update(
        healthy=False, last_checked=checked, last_error="refused", latency_ms=1.5
    )
    # The pool changes, one backend's weight changes, the others stay as they were.
    edited = ROUTES.replace("read_timeout: 5", "read_timeout: 6").replace("weight: 3", "weight: 2")
    assert len(changes(import_routes(edited))) == 2
    for backend in Backend.objects.all():
        assert (backend.healthy, backend.last_checked, backend.last_error) == (
            False,
            checked,
            "refused",
        )


def test_a_bad_pool_name_is_an_error_at_its_place(routes):
    bad = ROUTES + "  - {prefix: /lime, pool: lime}\n"
    assert import_errors(bad) == ['paths[2].pool: no pool named "lime"']
    hosts = "pools: {mango: {}}\nhosts:\n" + "".join(
        f"  - {{host: www.{name}.com, pool: {pool}}}\n"
        for name, pool in (("mango", "mango"), ("apple", "mango"), ("lime", "lime"))
    )
    assert import_errors(hosts) == ['hosts[2].pool: no pool named "lime"']


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("groups: {staff: {}}\n", "groups: unknown key; the file takes pools, access_lists, hosts"),
        (
            "access_lists: {staff: {members: {}}}\n",
            "access_lists.staff.members: unknown key; an access list takes users",
        ),
        (
            "pools: {mango: {timeout: 5}}\n",
            "pools.mango.timeout: unknown key; a pool takes algorithm",
        ),
        (
            "pools: {mango: {backends: [{url: 'http://a:1', wieght: 2}]}}\n",
            "pools.mango.backends[0].wieght: unknown key; a backend takes url, weight, enabled",
        ),
        (
            "pools: {mango: {}}\nhosts: [{host: a.com, pool: mango, redirect_to: x}]\n",
            "hosts[0].redirect_to: unknown key; a host rule takes host, pool, redirect, "
            "respond, enabled",
        ),
        (
            "pools: {mango: {}}\npaths: [{prefix: /a, pool: mango, limit: {}}]\n",
            "paths[0].limit: unknown key; a path rule takes prefix, host, pool, redirect, "
            "respond, enabled",
        ),
        (
            "hosts: [{host: a.com, servers: [localhost:1], header_rules: {append: {}}}]\n",
            "hosts[0].header_rules.append: unknown key; header_rules takes add, remove",
        ),
    ],
)
def test_an_unknown_key_is_an_error_at_its_place(routes, text, error):
    (line,) = import_errors(text)
    assert line.startswith(error)


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (("read_timeout: 5", "read_timeout: soon"), "pools.mango.read_timeout: “soon” value must"),
        (
            ("algorithm: round_robin", "algorithm: fastest"),
            "pools.mango.algorithm: Value 'fastest'",
        ),
        (
            ("- http://127.0.0.1:8081", "- ftp://127.0.0.1:8081"),
            "pools.mango.backends[0]: Enter an",
        ),
        (("weight: 3", "weight: -3"), "pools.mango.backends[1].weight: Ensure this value"),
        (("host: www.apple.com", "host: www.apple.com:80"), "hosts[1].host: Enter a host name"),
        (("prefix: /apple", "prefix: apple"), "paths[0].prefix: A prefix starts with '/'"),
        (("X-Debug", "Host"), "hosts[0].request_headers: Request headers: Host is the balancer's"),
        (("^/apple/v1/", "'(unclosed'"), "paths[0].rewrite: Rewrite step 1: the pattern does not"),
        (("10.0.0.0/8", "10.0.0.0/33"), "paths[1].firewall: Firewall deny: '10.0.0.0/33'"),
        (("host: www.apple.com", "host: www.mango.com"), "hosts[1]: host www.mango.com is already"),
    ],
)
def test_a_value_the_model_refuses_is_an_error_at_its_place(edit, error):
    (line,) = import_errors(ROUTES.replace(*edit))
    assert line.startswith(error)


def test_every_error_of_a_file_is_reported():
    bad = ROUTES.replace("read_timeout: 5", "read_timeout: x").replace("pool: apple\n", "pool: a\n")
    assert [line.split(":")[0] for line in import_errors(bad)] == [
        "pools.mango.read_timeout",
        "hosts[1].pool",
        "paths[0].pool",
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "the file is empty"),
        ("pools: [mango\n", "not valid YAML: line 2, column 1: while parsing a flow sequence"),
        ("pools:\n  mango: {}\n  mango: {}\n", "not valid YAML: line 3, column 3: duplicate key"),
        ("- pools\n", "the file holds a mapping with pools:, hosts: and paths:"),
        ("hosts: {host: a.com}\n", "hosts: a list of entries"),
        ("pools: {mango: {}}\nhosts: [{pool: mango}]\n", "hosts[0]: no host"),
        ("pools: {mango: {}}\nhosts: [{host: a.com, pool: [mango]}]\n", "hosts[0].pool: the name"),
        (
            "pools: {? [a]\n : {}}\n",
            "not valid YAML: line 1, column 11: while constructing a mapping",
        ),
    ],
)
def test_a_malformed_file_is_an_error(routes, text, error):
    lines = import_errors(text)
    assert lines[0].startswith(error)


def test_import_reads_a_file_by_name(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES)
    out = io.StringIO()
    call_command("import_routes", str(path), stdout=out)
    assert out.getvalue().splitlines()[-1] == "Imported: 9 changes."
    assert HostRule.objects.count() == 2


def test_import_of_a_missing_file_fails():
    with pytest.raises(CommandError, match="Cannot read /nonexistent.yaml"):
        call_command("import_routes", "/nonexistent.yaml")


def test_the_tutorials_file_imports_as_it_is():
    output = import_routes(TUTORIAL_FILE.read_text())
    assert output.splitlines()[-1] == "Imported: 26 changes."
    assert yaml.safe_load(export()) == yaml.safe_load(
        textwrap.dedent(
            """\
            pools:
              apple:
                backends: [http://localhost:8888, http://localhost:9081, http://localhost:9082]
              mango:
                backends: [http://localhost:8081, http://localhost:8082]
              orange:
                backends: [http://localhost:1111, http://localhost:1212]
              www-apple-com:
                backends: [http://localhost:8888, http://localhost:9081, http://localhost:9082]
              www-mango-com:
                backends: [http://localhost:8081, http://localhost:8082]
              www-orange-com:
                backends: [http://localhost:1111, http://localhost:1212]
            hosts:
              - host: www.apple.com
                pool: www-apple-com
                firewall: {deny_paths: [/messages, /apps]}
              - host: www.mango.com
                pool: www-mango-com
                firewall: {deny: [10.192.0.1/32, 10.192.0.2/32]}
                request_headers: {set: {MyCustomHeader: Test}}
                query: {set: {MyCustomParam: Test}, remove: [RemoveMe]}
                rewrite: [{pattern: v1, replacement: v2}]
              - host: www.orange.com
                pool: www-orange-com
            paths:
              - {prefix: /apple, pool: apple}
              - {prefix: /mango, pool: mango}
              - {prefix: /orange, pool: orange}
            """
        )
    )
    assert all(rule.strip_prefix for rule in PathRule.objects.all())
    assert not any(rule.preserve_host for rule in HostRule.objects.all())
    assert import_routes(TUTORIAL_FILE.read_text()).splitlines() == ["No changes."]


def test_tutorial_rewrites_replace_literal_text():
    text = """\
hosts:
  - host: www.kiwi.com
    rewrite_rules: {replace: {"v1.0": 'v\\1', "a+b": "c"}}
    header_rules: {remove: [Host, X-Debug]}
    servers: [localhost:8081]
"""
    import_routes(text)
    rule = HostRule.objects.get()
    assert rule.rewrite == [
        {"pattern": r"v1\.0", "replacement": r"v\\1"},
        {"pattern": r"a\+b", "replacement": "c"},
    ]
    assert rule.request_headers == {"remove": ["X-Debug"]}


def test_tutorial_entries_name_their_places_in_errors():
    text = """\
hosts:
  - host: www.kiwi.com
    header_rules: {add: {"Bad Name": x}}
    servers: [localhost:8081, "localhost:x"]
  - host: www.lime.com
    firewall_rules: {ip_reject: [10.0.0.300]}
    servers: [localhost:8081]
"""
    assert [line.split(": ")[0] for line in import_errors(text)] == [
        "hosts[0].servers[1]",
        "hosts[0].header_rules",
        "hosts[1].firewall_rules",
    ]


def test_export_edit_import_under_a_running_balancer_goes_live(tmp_path, demo_backends):
    """As a user would: export, edit the text, import it from standard input."""
    env = balancer_environment(tmp_path, demo_fixture(demo_backends))
    balancer = Balancer(env, workers=2)
    try:
        for _ in range(10):  # both workers cache the table first
            assert get(balancer.url, "www.mango.com").text == "This is the mango application."
        exported = manage_output(env, "export_routes")
        edited = exported.replace(
            "- host: www.mango.com\n  pool: mango", "- host: www.mango.com\n  pool: apple"
        )
        output = manage_output(env, "import_routes", "-", input=edited)
        assert output.splitlines() == [
            "~ host www.mango.com: pool mango -> apple",
            "Imported: 1 change.",
        ]
        deadline = time.monotonic() + PROPAGATION_BOUND
        while {get(balancer.url, "www.mango.com").text for _ in range(10)} != {
            "This is the apple application."
        }:
            assert time.monotonic() < deadline, "the import never reached every worker"
            time.sleep(0.05)
        assert manage_output(env, "import_routes", "-", input=edited).splitlines() == [
            "No changes."
        ]
    finally:
        balancer.stop()
