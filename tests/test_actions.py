"""Rule actions: checked on every write, resolved into the snapshot, applied to requests."""

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
