"""Immutable, database-free snapshots of the routing table that requests read."""

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class Backend:
    id: int
    url: str
    weight: int = 1
    enabled: bool = True
    healthy: bool = True
    draining: bool = False
    checked_at: float = 0.0  # epoch seconds of the last active check, 0 if never

    @property
    def usable(self):
        """Whether the backend may take new requests."""
        return self.enabled and self.healthy and not self.draining and self.weight > 0


@dataclass(frozen=True)
class Pool:
    id: int
    name: str
    backends: tuple[Backend, ...] = ()
    algorithm: str = "random"
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    # requests' verify: True, False, or the path of a CA bundle.
    tls_verify: bool | str = True
    max_attempts: int = 3
    max_fails: int = 3
    fail_timeout: float = 10.0
    usable_backends: tuple[Backend, ...] = field(init=False, repr=False)

    def __post_init__(self):
        usable = tuple(backend for backend in self.backends if backend.usable)
        object.__setattr__(self, "usable_backends", usable)


@dataclass(frozen=True)
class HeaderEdit:
    """Headers a rule sets (replacing any of the name) and removes, names matched lower-cased."""

    set: tuple[tuple[str, str], ...] = ()
    remove: frozenset[str] = frozenset()
    # Every lower-cased name whose existing values go: the removed and the set.
    dropped: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        dropped = self.remove | {name.lower() for name, _value in self.set}
        object.__setattr__(self, "dropped", frozenset(dropped))

    def __bool__(self):
        return bool(self.set or self.remove)


@dataclass(frozen=True)
class QueryEdit:
    """Query parameters a rule sets (already encoded as `key=value`) and removes (decoded keys)."""

    set: tuple[str, ...] = ()
    remove: frozenset[str] = frozenset()  # the removed keys and the set ones

    def __bool__(self):
        return bool(self.set or self.remove)


@dataclass(frozen=True)
class RewriteStep:
    pattern: re.Pattern
    replacement: str


@dataclass(frozen=True)
class Firewall:
    """Who and what a rule refuses: networks, and denied prefixes as decoded segments."""

    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    deny: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    deny_paths: tuple[tuple[str, ...], ...] = ()

    def __bool__(self):
        return bool(self.allow or self.deny or self.deny_paths)


@dataclass(frozen=True)
class RateLimit:
    """A rule's rate limit: one request per `interval` seconds on average, `burst` more at once."""

    interval: float
    burst: int
    by_client: bool = True


@dataclass(frozen=True)
class AccessList:
    """An access list's users and their password hashes, as one table version has them.

    `verified` is this worker's memory of credentials already checked against
    these hashes (see guards.py): a new table, after any change, starts it empty.
    """

    name: str
    users: MappingProxyType  # username -> Django password hash
    verified: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Redirect:
    to: str
    status: int = 302
    keep_path: bool = False


@dataclass(frozen=True)
class Respond:
    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Actions:
    """What a rule does to a request besides choosing its pool (see actions.py)."""

    firewall: Firewall = Firewall()
    rate_limit: RateLimit | None = None
    access_list: AccessList | None = None
    redirect: Redirect | None = None
    respond: Respond | None = None
    request_headers: HeaderEdit = HeaderEdit()
    query: QueryEdit = QueryEdit()
    rewrite: tuple[RewriteStep, ...] = ()
    response_headers: HeaderEdit = HeaderEdit()


NO_ACTIONS = Actions()


@dataclass(frozen=True)
class Route:
    """One enabled rule, ready to match: a host pattern ('' = any) and a prefix."""

    kind: str  # "host" or "path"
    rule_id: int
    pool: Pool | None  # None for a rule that redirects or responds itself
    host: str = ""
    prefix: tuple[str, ...] = ()
    strip_prefix: bool = False
    preserve_host: bool = False
    actions: Actions = NO_ACTIONS
    force_https: bool = False

    @functools.cached_property
    def label(self):
        """How logs and pages name the rule: `path rule /mango (any host) → mango`."""
        path = "/" + "/".join(self.prefix) if self.kind == "path" else ""
        where = f"{self.host}{path}" if self.host else f"{path} (any host)"
        return f"{self.kind} rule {where} → {self.target}"

    @property
    def target(self):
        """What answers the rule's requests: its pool's name, a redirect or a fixed answer."""
        if self.actions.redirect:
            return f"redirect {self.actions.redirect.to}"
        if self.actions.respond:
            return f"respond {self.actions.respond.status}"
        return self.pool.name if self.pool else "-"

    def __str__(self):
        return self.label


@dataclass(frozen=True)
class HostRoutes:
    """The routes of one host pattern, indexed by their prefix segments."""

    by_prefix: MappingProxyType
    depth: int

    @classmethod
    def from_routes(cls, routes):
        by_prefix = {route.prefix: route for route in routes}
        return cls(MappingProxyType(by_prefix), max(map(len, by_prefix), default=0))


@dataclass(frozen=True)
class RouteTable:
    """Every enabled route, indexed by exact host, wildcard suffix and any host."""

    version: int
    exact: MappingProxyType
    wildcard: MappingProxyType
    any_host: HostRoutes
    pools: tuple[Pool, ...] = ()

    @classmethod
    def from_routes(cls, routes, version=0, pools=()):
        """Index routes by host; a later route with the same host and prefix loses."""
        groups = {}
        for route in routes:
            groups.setdefault(route.host, {}).setdefault(route.prefix, route)
        exact, wildcard = {}, {}
        for host, by_prefix in groups.items():
            host_routes = HostRoutes.from_routes(by_prefix.values())
            if host.startswith("*."):
                wildcard[host[2:]] = host_routes
            elif host:
                exact[host] = host_routes
        return cls(
            version=version,
            exact=MappingProxyType(exact),
            wildcard=MappingProxyType(wildcard),
            any_host=HostRoutes.from_routes(groups.get("", {}).values()),
            pools=tuple(pools),
        )
