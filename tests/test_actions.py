"""Rule actions: checked on every write, resolved into the snapshot, applied to requests."""

import ipaddress
import json

import pytest
from django.core.exceptions import ValidationError

from routing.models import HostRule, PathRule, Pool

from .test_models import WRITE_PATHS, stored_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def mango():
    return Pool.objects.create(name="mango")


@pytest.fixture
def routing_rows(mango):
    return {
        HostRule: HostRule.objects.create(host="www.kiwi.com", pool=mango),
        PathRule: PathRule.objects.create(prefix="/kiwi", pool=mango),
    }


GOOD_ACTIONS = {
    "request_headers": {"set": {"X-Env": "prod", "MyCustomHeader": "Test"}, "remove": ["Cookie"]},
    "query": {"set": {"MyCustomParam": "Test"}, "remove": ["RemoveMe"]},
    "rewrite": [{"pattern": r"^/v1(/|$)", "replacement": r"/v2\1"}],
    "response_headers": {"set": {"X-Frame-Options": "DENY"}, "remove": ["X-Powered-By"]},
    "firewall": {
        "allow": ["10.0.0.0/8", "::1"],
        "deny": ["10.192.0.1"],
        "deny_paths": ["/messages", "/apps/"],
    },
}


@pytest.mark.parametrize("model", [HostRule, PathRule])
def test_every_action_is_stored_on_both_kinds_of_rule(mango, model):
    where = {"host": "www.mango.com"} if model is HostRule else {"prefix": "/mango"}
    rule = model.objects.create(pool=mango, **where, **GOOD_ACTIONS)
    rule.refresh_from_db()
    assert {name: getattr(rule, name) for name in GOOD_ACTIONS} == GOOD_ACTIONS


def test_a_rule_without_actions_has_empty_ones(mango):
    rule = HostRule.objects.create(pool=mango, host="www.mango.com")
    assert (rule.request_headers, rule.query, rule.rewrite) == ({}, {}, [])
    assert (rule.response_headers, rule.firewall) == ({}, {})


BAD_ACTIONS = [
    ("request_headers", {"add": {"X": "1"}}, "action_unknown_key"),
    ("request_headers", ["X"], "action_not_an_object"),
    ("request_headers", {"set": {"Host": "x"}}, "header_name_reserved"),
    ("request_headers", {"set": {"Connection": "close"}}, "header_name_reserved"),
    ("request_headers", {"set": {"X-Forwarded-User": "x"}}, "header_name_reserved"),
    ("request_headers", {"remove": ["X-Forwarded-For"]}, "header_name_reserved"),
    ("request_headers", {"set": {"Via": "x"}}, "header_name_reserved"),
    ("request_headers", {"set": {"Forwarded": "x"}}, "header_name_reserved"),
    ("request_headers", {"set": {"Transfer-Encoding": "x"}}, "header_name_reserved"),
    ("request_headers", {"set": {"X-A": "a\r\nX-Evil: 1"}}, "header_value_invalid"),
    ("request_headers", {"set": {"X-A": "a\nb"}}, "header_value_invalid"),
    ("request_headers", {"set": {"Bad Name": "x"}}, "header_name_invalid"),
    ("request_headers", {"set": {"X-A": 1}}, "action_value_not_text"),
    ("request_headers", {"set": {"X-A": "1", "x-a": "2"}}, "header_set_twice"),
    ("request_headers", {"remove": "X-A"}, "action_remove_not_a_list"),
    ("query", {"set": {"": "x"}}, "query_key_invalid"),
    ("query", {"set": {"a": "x\n"}}, "query_value_invalid"),
    ("query", {"replace": {}}, "action_unknown_key"),
    ("rewrite", {"pattern": "a", "replacement": "b"}, "rewrite_not_a_list"),
    ("rewrite", [{"pattern": "(", "replacement": "b"}], "rewrite_bad_pattern"),
    ("rewrite", [{"pattern": "a", "replacement": r"\1"}], "rewrite_bad_replacement"),
    ("rewrite", [{"pattern": "a", "replacement": r"\g<name>"}], "rewrite_bad_replacement"),
    ("rewrite", [{"pattern": "a"}], "rewrite_step_incomplete"),
    ("rewrite", [{"pattern": "a", "replacement": "b", "flags": "i"}], "action_unknown_key"),
    ("response_headers", {"set": {"Content-Length": "1"}}, "header_name_reserved"),
    ("response_headers", {"remove": ["Transfer-Encoding"]}, "header_name_reserved"),
    ("response_headers", {"set": {"X-A": "a\rb"}}, "header_value_invalid"),
    ("firewall", {"deny": ["10.0.0.300"]}, "firewall_bad_network"),
    ("firewall", {"allow": ["10.0.0.1/8"]}, "firewall_bad_network"),
    ("firewall", {"allow": "10.0.0.0/8"}, "action_remove_not_a_list"),
    ("firewall", {"deny_paths": ["messages"]}, "prefix_without_slash"),
    ("firewall", {"deny_paths": ["/a/../b"]}, "prefix_bad_segment"),
    ("firewall", {"ip_reject": ["10.0.0.1"]}, "action_unknown_key"),
]


@pytest.mark.parametrize(("field", "value", "code"), BAD_ACTIONS)
def test_bad_actions_are_refused_with_a_message(mango, field, value, code):
    rule = HostRule(pool=mango, host="www.mango.com", **{field: value})
    with pytest.raises(ValidationError) as caught:
        rule.full_clean()
    errors = caught.value.error_dict[field]
    assert code in {error.code for error in errors}
    assert all(error.messages[0] for error in errors)


@pytest.mark.parametrize("write", WRITE_PATHS)
@pytest.mark.parametrize("model", [HostRule, PathRule])
@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("request_headers", {"set": {"X-A": "a\r\nb"}}, "header_value_invalid"),
        ("rewrite", [{"pattern": "(", "replacement": ""}], "rewrite_bad_pattern"),
        ("firewall", {"deny": ["not-an-address"]}, "firewall_bad_network"),
    ],
    ids=["header-value", "regex", "cidr"],
)
def test_every_write_path_refuses_a_bad_action_and_stores_nothing(
    mango, routing_rows, tmp_path, write, model, field, value, code
):
    where = {"host": "www.lime.com"} if model is HostRule else {"prefix": "/lime"}
    fields = {field: value} if write.__name__.endswith("update") else {**where, field: value}
    before = stored_rows()
    with pytest.raises(ValidationError) as caught:
        write(model, fields, routing_rows[model], mango, tmp_path)
    assert code in {error.code for error in caught.value.error_dict[field]}
    assert stored_rows() == before


# The actions on the request path, through the Django test client, against
# the echo backend (what arrived upstream).


def echo(result):
    assert result.status_code == 200, result.content
    return json.loads(result.content)


def header(seen, name):
    return [value for key, value in seen["headers"] if key.lower() == name.lower()]


@pytest.fixture
def mango_rule(db, demo_backends, make_route):
    """A host rule for www.mango.com on the two mango echo backends; set its actions."""

    def make(model=HostRule, **actions):
        where = {"host": "www.mango.com"} if model is HostRule else {"prefix": "/mango"}
        make_route(demo_backends["mango"], **where, **actions)

    return make


MANGO = {"Host": "www.mango.com"}


def test_request_headers_are_set_over_the_clients_and_removed(client, mango_rule):
    mango_rule(
        request_headers={"set": {"MyCustomHeader": "Test", "X-Env": "prod"}, "remove": ["x-debug"]}
    )
    seen = echo(
        client.get(
            "/echo",
            headers={**MANGO, "X-Env": "dev", "X-Debug": "1", "X-Other": "kept"},
        )
    )
    assert header(seen, "MyCustomHeader") == ["Test"]
    assert header(seen, "X-Env") == ["prod"]
    assert header(seen, "X-Debug") == []
    assert header(seen, "X-Other") == ["kept"]


def test_tutorials_query_action_leaves_exactly_the_set_parameter(client, mango_rule):
    mango_rule(query={"set": {"MyCustomParam": "Test"}, "remove": ["RemoveMe"]})
    seen = echo(client.get("/echo?RemoveMe=Remove", headers=MANGO))
    assert seen["query"] == "MyCustomParam=Test"


@pytest.mark.parametrize(
    ("target", "query"),
    [
        ("/echo", "lang=en%20GB"),
        ("/echo?", "lang=en%20GB"),
        ("/echo?b=%7e&lang=fr&a=1&a=2&debug", "b=%7e&a=1&a=2&lang=en%20GB"),
        ("/echo?x=a+b&debug=1&lang", "x=a+b&lang=en%20GB"),
        ("/echo?%6Cang=fr&d%65bug=", "lang=en%20GB"),
    ],
)
def test_query_keeps_every_other_parameters_bytes_and_order(client, mango_rule, target, query):
    mango_rule(query={"set": {"lang": "en GB"}, "remove": ["debug"]})
    assert echo(client.get(target, headers=MANGO))["query"] == query


def test_query_removal_of_every_parameter_sends_no_query(client, mango_rule):
    mango_rule(query={"remove": ["a"]})
    seen = echo(client.get("/echo?a=1&a=2", headers=MANGO))
    assert (seen["path"], seen["query"]) == ("/echo", "")


def test_rewrite_replaces_v1_with_v2_and_leaves_the_query(client, mango_rule):
    mango_rule(rewrite=[{"pattern": r"^/v1(/|$)", "replacement": r"/echo/v2\1"}])
    seen = echo(client.get("/v1/items?v1=yes", headers=MANGO))
    assert (seen["path"], seen["query"]) == ("/echo/v2/items", "v1=yes")


def test_rewrite_acts_after_prefix_stripping_in_order(client, mango_rule):
    mango_rule(
        model=PathRule,
        rewrite=[
            {"pattern": "^/a", "replacement": "/b"},
            {"pattern": "^/b", "replacement": "echo/c"},  # no leading slash: one is added
        ],
    )
    seen = echo(client.get("/mango/a/x?q=1", headers=MANGO))
    assert (seen["path"], seen["query"]) == ("/echo/c/x", "q=1")


def test_a_rewrite_that_writes_a_question_mark_keeps_it_in_the_path(client, mango_rule):
    mango_rule(rewrite=[{"pattern": "^/echo/x", "replacement": "/echo/what?"}])
    seen = echo(client.get("/echo/x?q=1", headers=MANGO))
    assert (seen["path"], seen["query"]) == ("/echo/what%3F", "q=1")


def test_response_headers_are_set_and_removed_on_a_backends_answer(client, mango_rule):
    mango_rule(response_headers={"set": {"X-Frame-Options": "DENY"}, "remove": ["content-type"]})
    result = client.get("/echo", headers=MANGO)
    assert result.status_code == 200
    assert result["X-Frame-Options"] == "DENY"
    assert "Content-Type" not in result


def test_response_headers_go_on_the_balancers_own_answers_of_the_rule(
    client, make_route, closed_port_url
):
    actions = {"response_headers": {"set": {"X-Rule": "kiwi"}, "remove": ["Content-Type"]}}
    make_route([closed_port_url], host="www.kiwi.com", **actions)
    make_route([], host="www.empty.com", **actions)
    shut = {"deny": ["127.0.0.0/8"]}
    make_route([closed_port_url], host="www.shut.com", firewall=shut, **actions)
    for host, status in (("www.kiwi.com", 503), ("www.empty.com", 503), ("www.shut.com", 403)):
        result = client.get("/", headers={"Host": host})
        assert (result.status_code, result["X-Rule"]) == (status, "kiwi")
        assert "Content-Type" not in result
    missing = client.get("/", headers={"Host": "www.nothing.com"})
    assert missing.status_code == 404 and "X-Rule" not in missing


@pytest.mark.parametrize(
    ("firewall", "client_address", "path", "cause"),
    [
        ({"deny": ["10.192.0.1", "10.192.0.2"]}, "10.192.0.1", "/", "client 10.192.0.1 denied"),
        ({"deny": ["10.0.0.0/8"]}, "10.192.0.2", "/", "client 10.192.0.2 denied"),
        ({"allow": ["192.168.0.0/16"]}, "10.0.0.1", "/", "client 10.0.0.1 not allowed"),
        ({"deny": ["10.0.0.0/8"]}, "::ffff:10.0.0.1", "/", "client ::ffff:10.0.0.1 denied"),
        ({"allow": ["10.0.0.0/8"]}, "::1", "/", "client ::1 not allowed"),
        ({"deny_paths": ["/messages"]}, "10.0.0.1", "/messages", "path /messages denied"),
        ({"deny_paths": ["/messages"]}, "10.0.0.1", "/messages/1", "path /messages denied"),
        ({"deny_paths": ["/messages"]}, "10.0.0.1", "/%6Dessages", "path /messages denied"),
        ({"deny_paths": ["/messages"]}, "10.0.0.1", "/x/../messages", "path /messages denied"),
        ({"deny_paths": ["/messages"]}, "10.0.0.1", "/./messages/", "path /messages denied"),
        ({"deny_paths": ["/messages"]}, "10.0.0.1", "/x/%2e%2e/messages", "path /messages denied"),
        ({"deny_paths": ["/a%20b"]}, "10.0.0.1", "/a%20b/c", "path /a b denied"),
    ],
)
def test_firewall_refuses_with_403_and_logs_why(
    client, mango_rule, caplog, firewall, client_address, path, cause
):
    caplog.set_level("INFO", logger="routing.access")
    mango_rule(firewall=firewall)
    result = client.get(path, headers=MANGO, REMOTE_ADDR=client_address)
    assert (result.status_code, result.content) == (403, b"Forbidden")
    assert f'cause="firewall: {cause}"' in caplog.records[-1].getMessage()


@pytest.mark.parametrize(
    ("firewall", "client_address", "path"),
    [
        ({"deny": ["10.192.0.1"]}, "10.192.0.3", "/echo"),
        ({"allow": ["10.0.0.0/8"]}, "10.192.0.3", "/echo"),
        ({"allow": ["10.0.0.0/8"], "deny": ["10.0.0.1"]}, "10.0.0.2", "/echo"),
        ({"deny_paths": ["/messages"]}, "10.0.0.1", "/echo/messages"),
        ({"deny_paths": ["/echo/x"]}, "10.0.0.1", "/echo/xy"),
        ({"deny_paths": ["/echo/x"]}, "10.0.0.1", "/echo/x%2Fy"),
    ],
)
def test_firewall_lets_the_others_through(client, mango_rule, firewall, client_address, path):
    mango_rule(firewall=firewall)
    assert echo(client.get(path, headers=MANGO, REMOTE_ADDR=client_address))["method"] == "GET"


def test_firewall_judges_the_client_a_trusted_proxy_reports(client, mango_rule, settings):
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("127.0.0.1/32")]
    mango_rule(firewall={"deny": ["10.192.0.1"]})
    behind = {**MANGO, "X-Forwarded-For": "10.192.0.1"}
    assert client.get("/echo", headers=behind).status_code == 403
    allowed = {**MANGO, "X-Forwarded-For": "10.192.0.1, 10.0.0.7"}
    assert client.get("/echo", headers=allowed).status_code == 200


def test_an_untrusted_peers_forwarded_for_is_not_believed(client, mango_rule):
    mango_rule(firewall={"deny": ["10.192.0.1"]})
    result = client.get("/echo", headers={**MANGO, "X-Forwarded-For": "10.192.0.1"})
    assert result.status_code == 200


def test_a_refused_request_takes_no_backends_turn(client, demo_backends, make_route):
    pool = make_route(
        demo_backends["mango"], host="www.mango.com", firewall={"deny_paths": ["/private"]}
    )
    Pool.objects.filter(pk=pool.pk).update(algorithm="round_robin")
    seen = []
    for path in ("/echo", "/private", "/echo", "/private", "/echo"):
        result = client.get(path, headers=MANGO)
        if result.status_code == 200:
            seen.append(json.loads(result.content)["headers"])
    hosts = [dict(headers)["Host"] for headers in seen]
    assert hosts[0] != hosts[1] and hosts[0] == hosts[2]


def test_a_warm_request_with_every_action_makes_no_query(
    client, mango_rule, django_assert_num_queries
):
    mango_rule(**{**GOOD_ACTIONS, "firewall": {"deny": ["10.9.9.9"], "deny_paths": ["/x"]}})
    client.get("/echo", headers=MANGO)
    with django_assert_num_queries(0):
        seen = echo(client.get("/echo?RemoveMe=1", headers=MANGO))
    assert seen["query"] == "MyCustomParam=Test"


def test_an_edited_action_is_live_on_the_next_request(client, mango_rule):
    mango_rule()
    assert echo(client.get("/echo?a=1", headers=MANGO))["query"] == "a=1"
    HostRule.objects.filter(host="www.mango.com").update(query={"remove": ["a"]})
    assert echo(client.get("/echo?a=1", headers=MANGO))["query"] == ""
