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
from types import MappingProxyType
from urllib.parse import quote, unquote_plus, urlsplit

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
RATE_LIMIT_KEYS = ("requests", "per", "burst", "by")
RATE_LIMIT_BY = ("client", "rule")
REDIRECT_KEYS = ("to", "status", "keep_path")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
RESPOND_KEYS = ("status", "body", "content_type")

# The order each field's keys are written in when exported: PostgreSQL's jsonb keeps
# keys shorter first rather than as they were written. rewrite's steps are a list.
KEY_ORDER = {
    "firewall": FIREWALL_KEYS,
    "rate_limit": RATE_LIMIT_KEYS,
    "redirect": REDIRECT_KEYS,
    "respond": RESPOND_KEYS,
    "request_headers": HEADER_ACTION_KEYS,
    "response_headers": HEADER_ACTION_KEYS,
    "query": QUERY_ACTION_KEYS,
    "rewrite": REWRITE_STEP_KEYS,
}


def in_key_order(name, value):
    """Return a field's value with its keys in their documented order (see KEY_ORDER)."""
    keys = KEY_ORDER.get(name)
    if keys is None:
        return value
    if isinstance(value, list):
        return [in_key_order(name, step) for step in value]
    if not isinstance(value, dict):
        return value
    return {key: value[key] for key in sorted(value, key=lambda key: order_of(keys, key))}


def order_of(keys, key):
    """Return where a key goes among keys; a key they don't know goes last."""
    return keys.index(key) if key in keys else len(keys)


# What a redirect or a fixed answer is, when its value leaves it out.
DEFAULT_REDIRECT_STATUS = 302
DEFAULT_RESPOND_STATUS = 200
DEFAULT_RESPOND_CONTENT_TYPE = "text/plain; charset=utf-8"
# A fixed answer's body is a page, not a download.
MAX_RESPOND_BODY = 65536


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


def is_number(value, integer=False):
    kinds = int if integer else int | float
    return isinstance(value, kinds) and not isinstance(value, bool)


def validate_rate_limit(value):
    """Refuse a rate limit that is not {"requests": N, "per": SECONDS, "burst": B, "by": ...}."""
    example = '{"requests": 10, "per": 1, "burst": 20, "by": "client"}'
    check_keys(value, RATE_LIMIT_KEYS, "Rate limit", example)
    if not value:
        return
    requests = value.get("requests")
    if not is_number(requests, integer=True) or requests < 1:
        refuse(f"Rate limit: requests is a whole number above 0, e.g. {example}.", "rate_requests")
    per = value.get("per", 1)
    if not is_number(per) or not 0 < per <= 86400:
        refuse("Rate limit: per is a number of seconds above 0, at most a day.", "rate_per")
    burst = value.get("burst", 0)
    if not is_number(burst, integer=True) or burst < 0:
        refuse("Rate limit: burst is a whole number of requests, 0 or more.", "rate_burst")
    if value.get("by", "client") not in RATE_LIMIT_BY:
        refuse(
            "Rate limit: by is client (each client address apart) or rule (the whole rule).",
            "rate_by",
        )


def validate_redirect(value):
    """Refuse a redirect that is not {"to": URL, "status": 301..308, "keep_path": bool}."""
    example = '{"to": "https://www.example.com", "status": 301, "keep_path": true}'
    check_keys(value, REDIRECT_KEYS, "Redirect", example)
    if not value:
        return
    to = value.get("to")
    if not isinstance(to, str) or not HEADER_VALUE_RE.fullmatch(to):
        refuse(f"Redirect: to is a URL without control characters, e.g. {example}.", "redirect_to")
    try:
        parts = urlsplit(to)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in to
    except ValueError:
        valid = False
    if not valid:
        refuse(
            f"Redirect: {to!r} is not an http:// or https:// URL with a host, "
            "e.g. https://www.example.com.",
            "redirect_to",
        )
    keep_path = value.get("keep_path", False)
    if not isinstance(keep_path, bool):
        refuse("Redirect: keep_path is true or false.", "redirect_keep_path")
    if keep_path and (parts.query or parts.fragment or "?" in to or "#" in to):
        refuse(
            "Redirect: with keep_path, the request's path and query are appended to "
            "to, which therefore has no query or fragment of its own.",
            "redirect_to_query",
        )
    if value.get("status", DEFAULT_REDIRECT_STATUS) not in REDIRECT_STATUSES:
        refuse(
            f"Redirect: status is one of {', '.join(map(str, REDIRECT_STATUSES))}.",
            "redirect_status",
        )


def validate_respond(value):
    """Refuse a fixed answer that is not {"status": N, "body": TEXT, "content_type": TYPE}."""
    example = '{"status": 503, "body": "Down for maintenance.", "content_type": "text/plain"}'
    check_keys(value, RESPOND_KEYS, "Respond", example)
    if not value:
        return
    status = value.get("status", DEFAULT_RESPOND_STATUS)
    if not is_number(status, integer=True) or not 200 <= status <= 599:
        refuse("Respond: status is a number from 200 to 599.", "respond_status")
    body = value.get("body", "")
    if not isinstance(body, str) or len(body) > MAX_RESPOND_BODY:
        refuse(f"Respond: body is text of at most {MAX_RESPOND_BODY} characters.", "respond_body")
    if body and status in (204, 304):
        refuse(f"Respond: a {status} answer has no body.", "respond_body")
    content_type = value.get("content_type", DEFAULT_RESPOND_CONTENT_TYPE)
    if (
        not isinstance(content_type, str)
        or not content_type
        or not HEADER_VALUE_RE.fullmatch(content_type)
    ):
        refuse(
            "Respond: content_type is a media type on one line, e.g. text/html; charset=utf-8.",
            "respond_content_type",
        )


# Characters a query key or value the rule sets keeps unencoded: those of
# RFC 3986's query, bar the separators "&", "=" and "+" (a space to forms).
QUERY_SAFE_CHARACTERS = "!$'()*,;:@/?-._~"
# What a rewritten path keeps unencoded: a path's characters, "%" included,
# so the template can write escapes itself; "?", "#" and the rest are data.
PATH_SAFE_CHARACTERS = "/!$&'()*+,;=:@-._~%"


def resolve_actions(rule, access_lists=None):
    """Return a rule row's actions in the snapshot's form, ready for requests.

    access_lists: the table's access lists by id (snapshot.AccessList); read
    from the rule's own row when not given.
    """
    if not (
        rule.firewall
        or rule.request_headers
        or rule.query
        or rule.rewrite
        or rule.response_headers
        or rule.rate_limit
        or rule.access_list_id
        or rule.redirect
        or rule.respond
    ):
        return snapshot.NO_ACTIONS
    if rule.access_list_id is None:
        access_list = None
    elif access_lists is not None:
        access_list = access_lists[rule.access_list_id]
    else:
        access_list = resolve_access_list(rule.access_list)
    return snapshot.Actions(
        rate_limit=rate_limit_of(rule.rate_limit),
        access_list=access_list,
        redirect=redirect_of(rule.redirect),
        respond=respond_of(rule.respond),
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


def rate_limit_of(value):
    if not value:
        return None
    return snapshot.RateLimit(
        interval=value.get("per", 1) / value["requests"],
        burst=value.get("burst", 0),
        by_client=value.get("by", "client") == "client",
    )


def resolve_access_list(row, users=None):
    """Return an AccessList row as a snapshot; users: its (username, hash) pairs, if read."""
    if users is None:
        users = row.users.values_list("username", "password")
    return snapshot.AccessList(name=row.name, users=MappingProxyType(dict(users)))


def redirect_of(value):
    if not value:
        return None
    return snapshot.Redirect(
        to=value["to"],
        status=value.get("status", DEFAULT_REDIRECT_STATUS),
        keep_path=value.get("keep_path", False),
    )


def respond_of(value):
    if not value:
        return None
    return snapshot.Respond(
        status=value.get("status", DEFAULT_RESPOND_STATUS),
        body=value.get("body", "").encode(),
        content_type=value.get("content_type", DEFAULT_RESPOND_CONTENT_TYPE),
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
