"""Rule actions: what a host or path rule does to a request besides choosing its pool.

Three parts, one module: the checks the model runs on every write (a value
that fails them never reaches the database), the resolving of a rule's
actions into the snapshot's immutable form (compiled patterns, parsed
networks, decoded segments: no work left for a request), and the pure
functions the request path applies them with. In a request's order: the
firewall (after the rule is resolved, before a backend is chosen), then the
rewrite, query and request headers of the upstream request, then the
response headers of whatever the client is answered.
"""

import ipaddress
import re
from urllib.parse import quote, unquote_plus

from django.core.exceptions import ValidationError

from . import headers, snapshot
from .errors import Forbidden
from .prefixes import prefix_segments, validate_prefix
from .resolver import ORIGIN_FORM_RE, path_segments

# Names a rule may not set or remove on the way to the backend: the
# balancer writes them itself (Host, X-Forwarded-*, Via, Forwarded) or they
# frame the message or the connection, which is the balancer's job.
FORBIDDEN_REQUEST_HEADERS = (
    headers.HOP_BY_HOP_HEADERS
    | headers.REPLACED_REQUEST_HEADERS
    | {"content-length", "via", "forwarded"}
)

# Names a rule may not set or remove on the way back: the framing of the
# answer, and what gunicorn and the balancer always write themselves.
FORBIDDEN_RESPONSE_HEADERS = (
    headers.HOP_BY_HOP_HEADERS | headers.REPLACED_RESPONSE_HEADERS | {"content-length"}
)

# Header values a rule sets: printable ASCII and tabs, never CR or LF.
HEADER_VALUE_RE = re.compile(r"[\t\x20-\x7e]*")

HEADER_ACTION_KEYS = ("set", "remove")
QUERY_ACTION_KEYS = ("set", "remove")
REWRITE_STEP_KEYS = ("pattern", "replacement")
FIREWALL_KEYS = ("allow", "deny", "deny_paths")


def refuse(message, code):
    raise ValidationError(message, code=code)


def check_keys(value, allowed, what, example):
    """Refuse a value that is not an object of the allowed keys."""
    if not isinstance(value, dict):
        refuse(f"{what} is an object, e.g. {example}.", "action_not_an_object")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        refuse(
            f"{what} has no key {', '.join(map(repr, unknown))}: it takes {', '.join(allowed)}.",
            "action_unknown_key",
        )


def check_text_map(value, what):
    """Refuse a `set` that is not an object of text values."""
    if not isinstance(value, dict):
        refuse(f"{what} is an object of names and values.", "action_set_not_an_object")
    for name, text in value.items():
        if not isinstance(text, str):
            refuse(
                f"{what}: the value of {name!r} is text, not {type(text).__name__}.",
                "action_value_not_text",
            )


def check_text_list(value, what):
    """Refuse a `remove` that is not a list of text."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        refuse(f"{what} is a list of names.", "action_remove_not_a_list")


def check_header_name(name, forbidden, what):
    if not headers.TOKEN_RE.fullmatch(name):
        refuse(
            f"{what}: {name!r} is not a header name (letters, digits and !#$%&'*+-.^_`|~ only).",
            "header_name_invalid",
        )
    lower = name.lower()
    if lower in forbidden or lower.startswith("x-forwarded-"):
        refuse(
            f"{what}: {name} is the balancer's own to write (hop-by-hop, framing, "
            "Host, Via, Forwarded or X-Forwarded-*) and cannot be changed by a rule.",
            "header_name_reserved",
        )


def validate_header_action(value, forbidden, what):
    """Refuse a header action that is not {"set": {Name: value}, "remove": [Name]}."""
    check_keys(value, HEADER_ACTION_KEYS, what, '{"set": {"X-Env": "prod"}, "remove": ["X-Debug"]}')
    set_values = value.get("set", {})
    check_text_map(set_values, f"{what} set")
    check_text_list(value.get("remove", []), f"{what} remove")
    seen = set()
    for name in [*set_values, *value.get("remove", [])]:
        check_header_name(name, forbidden, what)
    for name, text in set_values.items():
        if name.lower() in seen:
            refuse(f"{what}: {name} is set twice.", "header_set_twice")
        seen.add(name.lower())
        if not HEADER_VALUE_RE.fullmatch(text):
            refuse(
                f"{what}: the value of {name} holds a line break or a character "
                "that is not printable ASCII.",
                "header_value_invalid",
            )


def validate_request_headers(value):
    """Refuse request headers a rule may not set or remove, or a malformed action."""
    validate_header_action(value, FORBIDDEN_REQUEST_HEADERS, "Request headers")


def validate_response_headers(value):
    """Refuse response headers a rule may not set or remove, or a malformed action."""
    validate_header_action(value, FORBIDDEN_RESPONSE_HEADERS, "Response headers")


def validate_query(value):
    """Refuse a query action that is not {"set": {key: value}, "remove": [key]}."""
    check_keys(value, QUERY_ACTION_KEYS, "Query", '{"set": {"lang": "en"}, "remove": ["debug"]}')
    set_values = value.get("set", {})
    check_text_map(set_values, "Query set")
    check_text_list(value.get("remove", []), "Query remove")
    for key in [*set_values, *value.get("remove", [])]:
        if not key or not key.isprintable():
            refuse(
                f"Query: {key!r} is not a parameter name (not empty, no control characters).",
                "query_key_invalid",
            )
    for key, text in set_values.items():
        if not text.isprintable():
            refuse(f"Query: the value of {key!r} holds control characters.", "query_value_invalid")


def validate_rewrite(value):
    """Refuse a rewrite that is not a list of steps whose patterns and templates compile."""
    example = '[{"pattern": "^/v1/", "replacement": "/v2/"}]'
    if not isinstance(value, list):
        refuse(f"Rewrite is a list of steps, e.g. {example}.", "rewrite_not_a_list")
    for number, step in enumerate(value, start=1):
        what = f"Rewrite step {number}"
        check_keys(step, REWRITE_STEP_KEYS, what, example[1:-1])
        pattern, replacement = step.get("pattern"), step.get("replacement")
        if not isinstance(pattern, str) or not isinstance(replacement, str):
            refuse(
                f"{what} needs a pattern and a replacement, both text.", "rewrite_step_incomplete"
            )
        try:
            compiled = re.compile(pattern)
        except re.error as error:
            refuse(f"{what}: the pattern does not compile: {error}.", "rewrite_bad_pattern")
        try:
            # The template is parsed against the pattern's groups even when
            # nothing matches.
            compiled.sub(replacement, "")
        except (re.error, IndexError) as error:
            refuse(
                f"{what}: the replacement does not fit the pattern: {error}.",
                "rewrite_bad_replacement",
            )


def parse_network(text):
    """Return the network a CIDR or a single address names."""
    return ipaddress.ip_network(text.strip(), strict=True)


def validate_firewall(value):
    """Refuse a firewall whose networks or denied paths are malformed."""
    check_keys(
        value,
        FIREWALL_KEYS,
        "Firewall",
        '{"allow": ["10.0.0.0/8"], "deny": ["10.0.0.9"], "deny_paths": ["/admin"]}',
    )
    for key in FIREWALL_KEYS:
        check_text_list(value.get(key, []), f"Firewall {key}")
    for key in ("allow", "deny"):
        for text in value.get(key, []):
            try:
                parse_network(text)
            except ValueError as error:
                refuse(
                    f"Firewall {key}: {text!r} is not an address or network "
                    f"such as 10.0.0.1 or 10.0.0.0/8 ({error}).",
                    "firewall_bad_network",
                )
    for prefix in value.get("deny_paths", []):
        try:
            validate_prefix(prefix)
        except ValidationError as error:
            refuse(f"Firewall deny_paths: {prefix!r}: {error.messages[0]}", error.code)


# Characters a query key or value the rule sets keeps unencoded: those of
# RFC 3986's query, bar the separators "&", "=" and "+" (a space to forms).
QUERY_SAFE_CHARACTERS = "!$'()*,;:@/?-._~"
# What a rewritten path keeps unencoded: a path's characters, "%" included,
# so the template can write escapes itself; "?", "#" and the rest are data.
PATH_SAFE_CHARACTERS = "/!$&'()*+,;=:@-._~%"


def resolve_actions(rule):
    """Return a rule row's actions in the snapshot's form, ready for requests."""
    if not (
        rule.firewall or rule.request_headers or rule.query or rule.rewrite or rule.response_headers
    ):
        return snapshot.NO_ACTIONS
    return snapshot.Actions(
        firewall=snapshot.Firewall(
            allow=tuple(parse_network(text) for text in rule.firewall.get("allow", [])),
            deny=tuple(parse_network(text) for text in rule.firewall.get("deny", [])),
            deny_paths=tuple(
                tuple(prefix_segments(prefix)) for prefix in rule.firewall.get("deny_paths", [])
            ),
        ),
        request_headers=header_edit(rule.request_headers),
        query=query_edit(rule.query),
        rewrite=tuple(
            snapshot.RewriteStep(re.compile(step["pattern"]), step["replacement"])
            for step in rule.rewrite
        ),
        response_headers=header_edit(rule.response_headers),
    )


def header_edit(value):
    return snapshot.HeaderEdit(
        set=tuple(value.get("set", {}).items()),
        remove=frozenset(name.lower() for name in value.get("remove", [])),
    )


def query_edit(value):
    set_values = value.get("set", {})
    return snapshot.QueryEdit(
        set=tuple(
            f"{quote(key, safe=QUERY_SAFE_CHARACTERS)}={quote(text, safe=QUERY_SAFE_CHARACTERS)}"
            for key, text in set_values.items()
        ),
        remove=frozenset([*value.get("remove", []), *set_values]),
    )


def enforce_firewall(firewall, client, raw_path):
    """Raise Forbidden if a rule's firewall refuses this client address or raw path."""
    cause = firewall_refusal(firewall, client, raw_path) if firewall else None
    if cause:
        raise Forbidden(cause)


def firewall_refusal(firewall, client, raw_path):
    """Return why a firewall refuses a client address and raw path, or None if it lets them by.

    client None (the route explainer, when it is given none) judges the path alone.
    """
    if client is not None and (firewall.allow or firewall.deny):
        address = client_address(client)
        if address is not None and any(address in network for network in firewall.deny):
            return f"firewall: client {client} denied"
        if firewall.allow and (
            address is None or not any(address in network for network in firewall.allow)
        ):
            return f"firewall: client {client} not allowed"
    if firewall.deny_paths:
        decoded = tuple(segment for _raw, segment in path_segments(raw_path))
        for prefix in firewall.deny_paths:
            if decoded[: len(prefix)] == prefix:
                return f"firewall: path /{'/'.join(prefix)} denied"
    return None


def client_address(text):
    """Return a client's address parsed (an IPv4-mapped IPv6 one as IPv4), None if it is none."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return getattr(address, "ipv4_mapped", None) or address


def upstream_target(rule_actions, path, query, has_query):
    """Return the target a backend is asked for: the path after the rule's rewrite, and the
    query (present when has_query) after its query action."""
    if rule_actions.rewrite:
        path = rewrite_path(rule_actions.rewrite, path)
    if rule_actions.query:
        query = edit_query(rule_actions.query, query)
        has_query = bool(query)
    return path + ("?" + query if has_query else "")


def rewrite_path(steps, path):
    """Return the path after a rule's rewrite steps, always a path: starting with '/'."""
    for step in steps:
        path = step.pattern.sub(step.replacement, path)
    if not path.startswith("/"):
        path = "/" + path
    if "?" in path or not ORIGIN_FORM_RE.fullmatch(path):
        path = quote(path, safe=PATH_SAFE_CHARACTERS)
    return path


def edit_query(edit, raw_query):
    """Return a raw query string with a rule's parameters removed and set.

    The other parameters keep their bytes and order; the set ones come last.
    """
    kept = (
        [
            piece
            for piece in raw_query.split("&")
            if piece and unquote_plus(piece.partition("=")[0]) not in edit.remove
        ]
        if raw_query
        else []
    )
    return "&".join([*kept, *edit.set])


def edit_headers(edit, header_list):
    """Return a (name, value) list with a rule's headers removed and set."""
    if not edit:
        return header_list
    kept = [(name, value) for name, value in header_list if name.lower() not in edit.dropped]
    return kept + list(edit.set)
