"""Explain how a URL is routed: the real resolver's answer, and why every other rule lost."""

from dataclasses import dataclass
from urllib.parse import urlsplit

from . import actions, guards
from .challenges import https_url
from .models import HostRule, PathRule
from .prefixes import prefix_segments
from .resolver import normalise_host, path_segments, resolve, split_target

HOST_LEVELS = ("exact host", "wildcard host", "any host")


@dataclass(frozen=True)
class Candidate:
    """One rule of the table, and what it has to do with the URL explained."""

    rule: object  # the HostRule or PathRule row
    verdict: str
    matches: bool = False
    wins: bool = False

    @property
    def admin_url_name(self):
        return f"admin:routing_{self.rule._meta.model_name}_change"


@dataclass(frozen=True)
class Explanation:
    url: str
    host: str | None
    path: str
    # What the client would get before any backend is asked: 200, 400, 403, 404, 503;
    # 0 for a URL of the admin listener, which is never routed.
    status: int
    match: object = None  # resolver.Match
    candidates: tuple = ()
    client: str | None = None  # the client address judged, if one was given
    upstream_target: str = ""  # path and query the backend would be asked for
    firewall: str = ""  # the firewall's verdict; "" when the rule has none
    # What else stands before the answer: the rate limit and the access list.
    guards: tuple = ()
    # What answers when the guards let the request by: a sentence.
    answer: str = ""
    location: str = ""  # a redirect's Location

    @property
    def pool(self):
        return self.match.route.pool if self.match else None

    @property
    def actions(self):
        return self.match.route.actions if self.match else None

    @property
    def upstream_path(self):
        return self.upstream_target.partition("?")[0]

    @property
    def upstream_query(self):
        return self.upstream_target.partition("?")[2]

    def header_changes(self, edit):
        """Return what a header action does, a line each: `set Name: value`, `remove Name`."""
        return [f"set {name}: {value}" for name, value in edit.set] + [
            f"remove {name}" for name in sorted(edit.remove)
        ]

    @property
    def request_header_changes(self):
        return self.header_changes(self.actions.request_headers) if self.match else []

    @property
    def response_header_changes(self):
        return self.header_changes(self.actions.response_headers) if self.match else []


def host_rank(pattern, host):
    """Return how specifically a rule's host pattern matches a host: lower is better.

    (0, 0) exact, (1, -suffix length) wildcard, (2, 0) any host; None: no match.
    The resolver applies this same order through its indexes.
    """
    if not pattern:
        return (2, 0)
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return (1, -len(suffix)) if host.endswith(suffix) and len(host) > len(suffix) else None
    return (0, 0) if pattern == host else None


def split_url(url):
    """Return (host header, request target) of a URL such as http://www.mango.com/apple/x.

    Raises ValueError for what is no URL at all.
    """
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.netloc.rpartition("@")[2], target  # credentials are no part of Host


def explain(table, url, client=None, admin_hosts=()):
    """Explain how the balancer routes a URL, with the rules as they are in the database.

    With a client address, the rule's firewall judges it too; without, the path alone.
    A URL whose host:port is one of admin_hosts (the admin listener's) is not routed.
    """
    try:
        raw_host, target = split_url(url)
    except ValueError:
        return Explanation(url, None, "", 400, client=client)
    if raw_host.lower() in admin_hosts:
        return Explanation(url, raw_host.lower(), target, 0, client=client)
    host = normalise_host(raw_host)
    split = split_target(target)
    if host is None or split is None:
        return Explanation(url, host, target, 400, client=client)
    path, query = split
    match = resolve(table, host, path)
    decoded = tuple(segment for _raw, segment in path_segments(path))
    candidates = tuple(
        judge(rule, host, decoded, match)
        for rule in [
            *HostRule.objects.select_related("pool"),
            *PathRule.objects.select_related("pool"),
        ]
    )
    candidates = tuple(sorted(candidates, key=lambda c: (not c.wins, not c.matches)))
    if match is None:
        return Explanation(url, host, path, 404, None, candidates, client)
    firewall, verdict, refusal = match.route.actions.firewall, "", None
    if firewall:
        refusal = actions.firewall_refusal(firewall, client, path)
        verdict = refusal or (
            "lets it through" if client is not None else "lets the path through (no client given)"
        )
    rule_actions, location = match.route.actions, ""
    if match.route.force_https and not url.lower().startswith("https://"):
        status, location = 308, https_url(host, target)
        answer, verdict = f"308 redirect to {location} (force HTTPS)", ""
    elif refusal:
        status, answer = 403, "403 Forbidden"
    elif rule_actions.redirect:
        redirect = rule_actions.redirect
        status = redirect.status
        location = guards.redirect_location(redirect, match.upstream_path, query, "?" in target)
        answer = f"{status} redirect to {location}"
    elif rule_actions.respond:
        respond = rule_actions.respond
        status = respond.status
        answer = f"{status} fixed response ({respond.content_type}, {len(respond.body)} bytes)"
    elif not match.route.pool.usable_backends:
        status, answer = 503, "503 No backend servers available."
    else:
        status, answer = 200, f"from a usable backend of pool {match.route.pool.name}"
    upstream_target = actions.upstream_target(
        match.route.actions, match.upstream_path, query, "?" in target
    )
    return Explanation(
        url,
        host,
        path,
        status,
        match,
        candidates,
        client,
        upstream_target,
        verdict,
        guards=tuple(guard_lines(rule_actions)),
        answer=answer,
        location=location,
    )


def guard_lines(rule_actions):
    """Say what the rule's rate limit and access list ask of a request, a line each."""
    limit = rule_actions.rate_limit
    if limit:
        scope = "each client address apart" if limit.by_client else "the whole rule"
        yield (
            f"rate limit: {1 / limit.interval:g} requests a second on average, "
            f"{limit.burst} more at once, for {scope}; over it 429 Too Many Requests"
        )
    if rule_actions.access_list:
        name = rule_actions.access_list.name
        users = len(rule_actions.access_list.users)
        yield (
            f"access list {name}: HTTP Basic with one of its {users} users, else "
            f'401 Unauthorized (WWW-Authenticate: Basic realm="{name}")'
        )


def judge(rule, host, decoded, match):
    """Say whether a rule matches the request, and why it does not serve it if it loses."""
    is_path_rule = isinstance(rule, PathRule)
    prefix = tuple(prefix_segments(rule.prefix)) if is_path_rule else ()
    rank = host_rank(rule.host.lower(), host)
    if rank is None:
        return Candidate(rule, "host does not match")
    if decoded[: len(prefix)] != prefix:
        return Candidate(rule, "path does not start with the prefix")
    if not rule.enabled:
        return Candidate(rule, "would match, but the rule is disabled", matches=True)
    if match is None:
        return Candidate(rule, "would match, but the workers have not loaded it yet", matches=True)
    winner = match.route
    if winner.kind == ("path" if is_path_rule else "host") and winner.rule_id == rule.pk:
        return Candidate(rule, "serves this request", matches=True, wins=True)
    winner_rank = host_rank(winner.host, host)
    if rank > winner_rank:
        return Candidate(
            rule,
            f"loses: {HOST_LEVELS[winner_rank[0]]}{' ' + winner.host if winner.host else ''} "
            "is more specific",
            matches=True,
        )
    if len(prefix) == len(winner.prefix):
        return Candidate(rule, "loses: an equal rule came first", matches=True)
    return Candidate(
        rule, f"loses: the longer prefix /{'/'.join(winner.prefix)} wins", matches=True
    )


def table_in_resolver_order(table):
    """Return (host label, routes longest prefix first) in the order resolve() tries them."""
    groups = [(host, routes) for host, routes in sorted(table.exact.items())]
    groups += [
        (f"*.{suffix}", routes)
        for suffix, routes in sorted(table.wildcard.items(), key=lambda item: -len(item[0]))
    ]
    groups.append(("any host", table.any_host))
    return [
        (label, sorted(routes.by_prefix.values(), key=lambda route: -len(route.prefix)))
        for label, routes in groups
        if routes.by_prefix
    ]
