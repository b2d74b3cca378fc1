"""The whole routing table as one YAML file: read into the table, written out of it.

A file holds pools keyed by name (each with its backends), and lists of host
and path rules that name their pool. Any field of a model appears by its
model name; an omitted one takes its default, and an export leaves out the
fields at their default. Importing makes the table equal to the file, in
one transaction and one routing change. Every value is checked by the model
itself (field validators, ties, duplicates): this module only maps a model's
error back to its place in the file.

The tutorial's `loadbalancer.yaml` is read as well, recognised by its
`servers:` lists: see tutorial_entries().
"""

import contextlib
import ipaddress
import json
import re
from collections.abc import Hashable
from dataclasses import dataclass, field

import yaml
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction

from .actions import in_key_order
from .models import (
    AccessList,
    AccessListUser,
    Backend,
    HostRule,
    PathRule,
    Pool,
    RoutingVersion,
    validate_password_hash,
)
from .write_lock import take_write_lock

TOP_LEVEL_KEYS = ("pools", "access_lists", "hosts", "paths")
# What the health checker writes: state, not configuration. A file neither
# holds it nor changes it.
HEALTH_STATE_FIELDS = ("healthy", "last_checked", "last_error", "latency_ms")
# The keys an entry starts with, in files and in error messages.
LEADING_KEYS = {
    Pool: ("name",),
    Backend: ("url",),
    AccessList: ("name",),
    AccessListUser: ("username",),
    HostRule: ("host", "pool"),
    PathRule: ("prefix", "host", "pool"),
}
# Room left in a pool's name for a "-2" when two tutorial entries would share one.
MAX_POOL_NAME = 90
# A pool's file entry holds its fields and this list.
BACKENDS_KEY = "backends"
# An access list's entry holds this mapping of usernames to password hashes.
USERS_KEY = "users"
# The foreign keys a file writes as the name of the row they point at.
REFERENCES = ("pool", "access_list")

# The tutorial's keys: an entry's own, and those of each of its rule blocks.
TUTORIAL_ENTRY_KEYS = {
    "hosts": ("host", "servers", "header_rules", "param_rules", "rewrite_rules", "firewall_rules"),
    "paths": ("path", "servers", "header_rules", "param_rules", "rewrite_rules", "firewall_rules"),
}
TUTORIAL_RULE_KEYS = {
    "header_rules": ("add", "remove"),
    "param_rules": ("add", "remove"),
    "rewrite_rules": ("replace",),
    "firewall_rules": ("ip_reject", "path_reject"),
}
# The model field each tutorial block becomes.
TUTORIAL_ACTION_FIELDS = {
    "header_rules": "request_headers",
    "param_rules": "query",
    "rewrite_rules": "rewrite",
    "firewall_rules": "firewall",
}


class RoutesFileError(Exception):
    """A routes file that cannot be imported; errors are "place: message" lines."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


# Reading YAML


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that repeats a key.

    A repeated key would otherwise silently replace the first (two pools
    named mango, say): an unnoticed half of the file.
    """

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the safe loader's own error names it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_routes_file(text):
    """Return the document a routes file holds; RoutesFileError if it is not YAML."""
    try:
        document = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        raise RoutesFileError([f"not valid YAML: {yaml_error_text(error)}"]) from None
    if document is None:
        raise RoutesFileError(
            ["the file is empty (to empty the routing table, import `pools: {}`)"]
        )
    return document


def yaml_error_text(error):
    """Return a YAML error on one line, starting with where it is: `line 3, column 3: ...`."""
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return str(error)
    what = ": ".join(filter(None, [getattr(error, "context", None), error.problem]))
    return f"line {mark.line + 1}, column {mark.column + 1}: {what}"


# Fields


def config_fields(model):
    """Return a model's fields that a routes file holds, in model order (pool by name)."""
    return [
        model_field
        for model_field in model._meta.concrete_fields
        if not model_field.primary_key and model_field.name not in HEALTH_STATE_FIELDS
    ]


def field_names(model, leave_out=()):
    """Return the keys of a model's entries: what identifies a row first, then model order."""
    first = LEADING_KEYS.get(model, ())
    rest = [f.name for f in config_fields(model) if f.name not in first]
    return [name for name in (*first, *rest) if name not in leave_out]


def value_of(row, model_field):
    """Return a field's value as a file holds it: a pool or an access list by its name."""
    if model_field.many_to_one:
        target = getattr(row, model_field.name)
        return None if target is None else target.name
    return getattr(row, model_field.attname)


def is_default(model_field, value):
    return value == model_field.get_default()


# Export


def export_routes():
    """Return the routing table as a routes file's document."""
    pools = {}
    for pool in Pool.objects.prefetch_related("backends").order_by("name"):
        entry = non_default_values(pool, leave_out=("name",))
        backends = [export_backend(backend) for backend in pool.backends.order_by("url")]
        if backends:
            entry[BACKENDS_KEY] = backends
        pools[pool.name] = entry
    access_lists = {
        access_list.name: {
            USERS_KEY: {user.username: user.password for user in access_list.users.all()}
        }
        for access_list in AccessList.objects.prefetch_related("users").order_by("name")
    }
    return {
        "pools": pools,
        # Only when there are any: a table without them exports as it always did.
        **({"access_lists": access_lists} if access_lists else {}),
        "hosts": [
            {"host": rule.host, **pool_of(rule), **non_default_values(rule, ("host",))}
            for rule in HostRule.objects.select_related("pool", "access_list").order_by("host")
        ],
        "paths": [
            {
                "prefix": rule.prefix,
                **({"host": rule.host} if rule.host else {}),
                **pool_of(rule),
                **non_default_values(rule, ("prefix", "host")),
            }
            for rule in PathRule.objects.select_related("pool", "access_list").order_by(
                "host", "prefix"
            )
        ],
    }


def pool_of(rule):
    """Return a rule's pool entry: none for a rule that redirects or responds."""
    return {"pool": rule.pool.name} if rule.pool_id else {}


def non_default_values(row, leave_out=()):
    """Return a row's fields that are not at their default, in model order; pool by name."""
    values = {}
    for model_field in config_fields(type(row)):
        if model_field.name in leave_out or model_field.name == "pool":
            continue
        value = value_of(row, model_field)
        if not is_default(model_field, value):
            values[model_field.name] = in_key_order(model_field.name, value)
    return values


def export_backend(backend):
    """Return a backend as a URL alone, or as a mapping when a field is not at its default."""
    values = non_default_values(backend, leave_out=("url",))
    return {"url": backend.url, **values} if values else backend.url


def dump_routes(document):
    """Return a routes file's document as YAML text."""
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


# Import: from the document to entries, each with the place of its values


@dataclass
class Entry:
    """One row a file asks for, before it is checked: its values and their places."""

    model: type
    place: str
    values: dict
    # Where each value came from, for errors: field name -> place in the file.
    places: dict = field(default_factory=dict)
    pool: str | None = None  # a backend's or rule's pool, by name
    access_list: str | None = None  # a user's or rule's access list, by name
    row: object = None  # the model instance, once built

    def place_of(self, name):
        return self.places.get(name, f"{self.place}.{name}")


def document_entries(document):
    """Return the entries of a routes file's document, in either schema.

    Raises RoutesFileError naming every place whose shape is wrong.
    """
    errors = []
    if not isinstance(document, dict):
        raise RoutesFileError(["the file holds a mapping with pools:, hosts: and paths:"])
    if is_tutorial_document(document):
        entries = tutorial_entries(document, errors)
    else:
        entries = project_entries(document, errors)
    if errors:
        raise RoutesFileError(errors)
    return entries


def unknown_key_errors(mapping, known, place, what):
    prefix = f"{place}." if place else ""
    return [
        f"{prefix}{key}: unknown key; {what} takes {', '.join(known)}"
        for key in mapping
        if key not in known
    ]


def listed(document, key, errors):
    """Return document[key] as a list of (index, item); an error if it is no list."""
    items = document.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        errors.append(f"{key}: a list of entries, each starting with '-'")
        return []
    return list(enumerate(items))


def project_entries(document, errors):
    """Return the entries of a file in the project's schema (pools:, hosts:, paths:)."""
    errors += unknown_key_errors(document, TOP_LEVEL_KEYS, "", "the file")
    entries = []
    pools = document.get("pools") or {}
    if not isinstance(pools, dict):
        errors.append("pools: a mapping of pool names to their fields")
        pools = {}
    pool_keys = [*field_names(Pool, ("name",)), BACKENDS_KEY]
    for name, fields in pools.items():
        place = f"pools.{name}"
        if not isinstance(name, str | int) or isinstance(name, bool):
            errors.append(f"{place}: a pool's name is text, e.g. mango")
            continue
        fields = {} if fields is None else fields
        if not isinstance(fields, dict):
            errors.append(f"{place}: a mapping of the pool's fields, e.g. algorithm: round_robin")
            continue
        errors += unknown_key_errors(fields, pool_keys, place, "a pool")
        values = {key: value for key, value in fields.items() if key in pool_keys}
        backends = values.pop(BACKENDS_KEY, None) or []
        entries.append(Entry(Pool, place, {"name": str(name), **values}, places={"name": place}))
        if not isinstance(backends, list):
            errors.append(f"{place}.{BACKENDS_KEY}: a list of URLs or of {{url, weight, enabled}}")
            continue
        for index, backend in enumerate(backends):
            entry = backend_entry(backend, f"{place}.{BACKENDS_KEY}[{index}]", str(name), errors)
            if entry:
                entries.append(entry)
    entries += access_list_entries(document.get("access_lists"), errors)
    for key, model, required in (("hosts", HostRule, ("host",)), ("paths", PathRule, ("prefix",))):
        known = field_names(model)
        for index, item in listed(document, key, errors):
            place = f"{key}[{index}]"
            if not isinstance(item, dict):
                errors.append(f"{place}: a mapping of the rule's fields, e.g. {required[0]}: ...")
                continue
            errors += unknown_key_errors(item, known, place, f"a {model._meta.verbose_name}")
            missing = [name for name in required if name not in item]
            errors += [f"{place}: no {name}" for name in missing]
            if missing:
                continue
            values = {name: value for name, value in item.items() if name in known}
            names = {name: pool_name(values.pop(name, None)) for name in REFERENCES}
            wrong = [
                name
                for name, value in names.items()
                if value is not None and not isinstance(value, str)
            ]
            errors += [f"{place}.{name}: the name of a {name.replace('_', ' ')}" for name in wrong]
            if not wrong:
                entries.append(Entry(model, place, values, **names))
    return entries


def access_list_entries(access_lists, errors):
    """Return the entries of a file's access_lists: {name: {users: {username: hash}}}."""
    if access_lists is None:
        return []
    if not isinstance(access_lists, dict):
        errors.append("access_lists: a mapping of names to {users: {username: password hash}}")
        return []
    entries = []
    for name, fields in access_lists.items():
        place = f"access_lists.{name}"
        fields = {} if fields is None else fields
        if not isinstance(fields, dict):
            errors.append(f"{place}: a mapping with users: {{username: password hash}}")
            continue
        errors += unknown_key_errors(fields, (USERS_KEY,), place, "an access list")
        entries.append(Entry(AccessList, place, {"name": str(name)}, places={"name": place}))
        users = fields.get(USERS_KEY) or {}
        if not isinstance(users, dict):
            errors.append(f"{place}.{USERS_KEY}: a mapping of usernames to password hashes")
            continue
        for username, password in users.items():
            user_place = f"{place}.{USERS_KEY}.{username}"
            values = {"username": str(username), "password": password}
            places = {"username": user_place, "password": user_place}
            if not isinstance(password, str):
                errors.append(f"{user_place}: a password hash, e.g. pbkdf2_sha256$...")
                continue
            try:
                validate_password_hash(password)
            except ValidationError as error:  # never echo what may be a password
                errors.append(f"{user_place}: {error.messages[0]}")
                continue
            entries.append(Entry(AccessListUser, user_place, values, places, access_list=str(name)))
    return entries


def backend_entry(backend, place, pool, errors):
    """Return the entry of a backend written as a URL alone or as a mapping."""
    if isinstance(backend, str):
        return Entry(Backend, place, {"url": backend}, places={"url": place}, pool=pool)
    if not isinstance(backend, dict) or "url" not in backend:
        errors.append(f"{place}: a URL, or a mapping with url (and weight, enabled)")
        return None
    known = field_names(Backend, ("pool",))
    errors += unknown_key_errors(backend, known, place, "a backend")
    values = {key: value for key, value in backend.items() if key in known}
    return Entry(Backend, place, values, pool=pool)


def pool_name(value):
    """Return a rule's pool name as text (YAML reads `pool: 7` as a number)."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def is_tutorial_document(document):
    """Tell whether a file is the tutorial's loadbalancer.yaml: its entries list servers."""
    return any(
        isinstance(item, dict) and "servers" in item
        for key in ("hosts", "paths")
        if isinstance(document.get(key), list)
        for item in document[key]
    )


def tutorial_entries(document, errors):
    """Return the entries of the tutorial's loadbalancer.yaml.

    Each entry's servers become a pool of its own, named after its host or
    path (www.mango.com: www-mango-com, /mango: mango), with backends
    http://HOST:PORT as written. header_rules and param_rules become the
    request_headers and query actions (removing Host is left out: the
    backend gets its own host by default), rewrite_rules.replace rewrites
    the literal text, firewall_rules denies client addresses (ip_reject) and
    path prefixes (path_reject).
    """
    errors += unknown_key_errors(document, ("hosts", "paths"), "", "the tutorial's file")
    entries = []
    names = set()
    for key, model in (("hosts", HostRule), ("paths", PathRule)):
        for index, item in listed(document, key, errors):
            place = f"{key}[{index}]"
            if not isinstance(item, dict):
                errors.append(f"{place}: a mapping with {key[:-1]}: and servers:")
                continue
            errors += unknown_key_errors(item, TUTORIAL_ENTRY_KEYS[key], place, "an entry")
            match_key = key[:-1]  # host or path
            missing = [name for name in (match_key, "servers") if name not in item]
            errors += [f"{place}: no {name}" for name in missing]
            if missing:
                continue
            name = unique_pool_name(item[match_key], names)
            servers = item["servers"]
            if not isinstance(servers, list):
                errors.append(f"{place}.servers: a list of HOST:PORT, e.g. [localhost:8081]")
                continue
            entries.append(Entry(Pool, f"{place}.servers", {"name": name}))
            for number, server in enumerate(servers):
                server_place = f"{place}.servers[{number}]"
                url = server_url(server)
                entries.append(
                    Entry(Backend, server_place, {"url": url}, {"url": server_place}, pool=name)
                )
            match_field = "host" if model is HostRule else "prefix"
            values = {match_field: item[match_key]}
            places = {match_field: f"{place}.{match_key}"}
            for block, action in TUTORIAL_ACTION_FIELDS.items():
                if block in item:
                    value = tutorial_action(block, item[block], f"{place}.{block}", errors)
                    if value:
                        values[action] = value
                        places[action] = f"{place}.{block}"
            entries.append(Entry(model, place, values, places, pool=name))
    return entries


def unique_pool_name(match, names):
    """Return a pool name made of a host or path, not yet taken: www.mango.com -> www-mango-com."""
    base = re.sub(r"[^a-z0-9_]+", "-", str(match).lower()).strip("-")[:MAX_POOL_NAME] or "root"
    name, number = base, 1
    while name in names:
        number += 1
        name = f"{base}-{number}"
    names.add(name)
    return name


def server_url(server):
    """Return the backend URL of a tutorial's server: localhost:8081 -> http://localhost:8081."""
    server = str(server)
    return server if "://" in server else f"http://{server}"


def tutorial_action(block, value, place, errors):
    """Return the action a tutorial rule block becomes, or None when it does nothing."""
    if not isinstance(value, dict):
        errors.append(f"{place}: a mapping of {', '.join(TUTORIAL_RULE_KEYS[block])}")
        return None
    errors += unknown_key_errors(value, TUTORIAL_RULE_KEYS[block], place, block)
    if block in ("header_rules", "param_rules"):
        add = names_and_values(value.get("add"), f"{place}.add", errors)
        remove = list(names_and_values(value.get("remove"), f"{place}.remove", errors))
        if block == "header_rules":
            # The tutorial removed Host to send the backend its own: the default here.
            remove = [name for name in remove if name.lower() != "host"]
        action = {}
        if add:
            action["set"] = {name: str(text) for name, text in add.items()}
        if remove:
            action["remove"] = remove
        return action
    if block == "rewrite_rules":
        replace = names_and_values(value.get("replace"), f"{place}.replace", errors)
        return [
            # The literal text, as str.replace did: escaped as a pattern and as a template.
            {"pattern": re.escape(str(old)), "replacement": str(new).replace("\\", "\\\\")}
            for old, new in replace.items()
        ]
    firewall = {}
    for key, action_key in (("ip_reject", "deny"), ("path_reject", "deny_paths")):
        items = value.get(key) or []
        if not isinstance(items, list):
            errors.append(f"{place}.{key}: a list, e.g. [10.192.0.1]")
            continue
        if items:
            firewall[action_key] = [
                single_address_network(item) if key == "ip_reject" else str(item) for item in items
            ]
    return firewall


def names_and_values(value, place, errors):
    """Return a tutorial's {name: value} mapping; a list of names is read as names alone."""
    if value is None:
        return {}
    if isinstance(value, list):
        return {str(name): "" for name in value}
    if not isinstance(value, dict):
        errors.append(f"{place}: a mapping of names and values, e.g. {{MyCustomHeader: Test}}")
        return {}
    return {str(name): text for name, text in value.items()}


def single_address_network(address):
    """Return an address as a network of that address alone: 10.192.0.1 -> 10.192.0.1/32."""
    try:
        return str(ipaddress.ip_network(str(address).strip()))
    except ValueError:
        return str(address)  # the firewall's own check names what is wrong with it


# Import: checking entries, then the plan of changes


def check_entries(entries):
    """Build each entry's row with the model's own checks; raise RoutesFileError if any fails.

    Field values are checked and stored in their one spelling by the model
    (clean_fields(), normalise()); a key used twice and a pool that the file
    does not define are this module's to find.
    """
    errors = []
    keys = {}
    pool_names = {entry.values["name"] for entry in entries if entry.model is Pool}
    list_names = {entry.values["name"] for entry in entries if entry.model is AccessList}
    for entry in entries:
        row = entry.model(**entry.values)
        try:
            row.clean_fields(exclude=list(REFERENCES))
        except ValidationError as error:
            errors += error_lines(entry, error)
            continue
        row.normalise()
        entry.row = row
        if entry.model is Backend and entry.pool not in pool_names:
            continue  # its pool's own entry is in error
        if entry.model is AccessListUser and entry.access_list not in list_names:
            continue  # its list's own entry is in error
        if entry.pool is not None and entry.pool not in pool_names:
            errors.append(f"{entry.place_of('pool')}: no pool named {json.dumps(entry.pool)}")
        if entry.model is not AccessListUser and entry.access_list not in (None, *list_names):
            errors.append(
                f"{entry.place_of('access_list')}: no access list named "
                f"{json.dumps(entry.access_list)}"
            )
        key = row_key(entry)
        if key in keys:
            errors.append(f"{entry.place}: {describe(entry)} is already at {keys[key].place}")
        keys.setdefault(key, entry)
    if errors:
        raise RoutesFileError(errors)


def error_lines(entry, error):
    """Return "place: message" for each message of a model's ValidationError."""
    if not hasattr(error, "error_dict"):
        return [f"{entry.place}: {message}" for message in error.messages]
    return [
        f"{entry.place if name == NON_FIELD_ERRORS else entry.place_of(name)}: {message}"
        for name, field_errors in error.error_dict.items()
        for message in ValidationError(field_errors).messages
    ]


def row_key(entry):
    """Return what identifies an entry's row: a file and the table are matched on it."""
    row = entry.row
    if entry.model is Pool:
        return (Pool, row.name)
    if entry.model is Backend:
        return (Backend, entry.pool, row.url)
    if entry.model is AccessList:
        return (AccessList, row.name)
    if entry.model is AccessListUser:
        return (AccessListUser, entry.access_list, row.username)
    if entry.model is HostRule:
        return (HostRule, row.host)
    return (PathRule, row.host, row.prefix)


def stored_key(row):
    """Return what identifies a stored row, as row_key() does for an entry's."""
    if isinstance(row, Pool):
        return (Pool, row.name)
    if isinstance(row, Backend):
        return (Backend, row.pool.name, row.url)
    if isinstance(row, AccessList):
        return (AccessList, row.name)
    if isinstance(row, AccessListUser):
        return (AccessListUser, row.access_list.name, row.username)
    if isinstance(row, HostRule):
        return (HostRule, row.host)
    return (PathRule, row.host, row.prefix)


def label(model, key):
    """Return how a change names its row: `pool mango`, `backend URL (mango)`, `path /old`."""
    if model is Pool:
        return f"pool {key[1]}"
    if model is Backend:
        return f"backend {key[2]} ({key[1]})"
    if model is AccessList:
        return f"access list {key[1]}"
    if model is AccessListUser:
        return f"user {key[2]} ({key[1]})"
    if model is HostRule:
        return f"host {key[1]}"
    return f"path {key[1]}{key[2]}"


def describe(entry):
    return label(entry.model, row_key(entry))


def shown(value):
    """Return a value as a change line shows it: YAML's spelling for scalars, JSON for the rest."""
    if value is None or isinstance(value, bool | dict | list):
        return json.dumps(value, ensure_ascii=False)
    if value == "":
        return '""'
    return str(value)


@dataclass
class Plan:
    """What an import does: rows to create, update (with the fields that change) and delete."""

    entries: list = field(default_factory=list)  # every entry of the file, in its order
    creates: list = field(default_factory=list)  # entries
    updates: list = field(default_factory=list)  # (entry, stored row, {name: (old, new)})
    deletes: list = field(default_factory=list)  # stored rows

    def lines(self):
        """Return one line per change, as the import prints them."""
        lines = [f"- {label(type(row), stored_key(row))}" for row in self.deletes]
        for item in self.changes_in_file_order():
            if isinstance(item, Entry):
                lines.append(f"+ {describe(item)}")
            else:
                entry, _row, changed = item
                details = ", ".join(
                    # A hash says nothing to a reader, and belongs in no log.
                    "password changed"
                    if name == "password"
                    else f"{name} {shown(old)} -> {shown(new)}"
                    for name, (old, new) in changed.items()
                )
                lines.append(f"~ {describe(entry)}: {details}")
        return lines

    def changes_in_file_order(self):
        order = {id(entry): index for index, entry in enumerate(self.entries)}
        items = [*self.creates, *self.updates]
        return sorted(items, key=lambda item: order[id(entry_of(item))])


def plan_import(entries, stored_rows=None):
    """Compare checked entries with the stored table; return the Plan that makes them equal.

    stored_rows: the rows to compare with instead of the database's (document_rows()).
    """
    if stored_rows is None:
        stored_rows = [
            *Pool.objects.all(),
            *Backend.objects.select_related("pool"),
            *AccessList.objects.all(),
            *AccessListUser.objects.select_related("access_list"),
            *HostRule.objects.select_related("pool", "access_list"),
            *PathRule.objects.select_related("pool", "access_list"),
        ]
    stored = {stored_key(row): row for row in stored_rows}
    plan = Plan(entries=entries)
    wanted = set()
    for entry in entries:
        key = row_key(entry)
        wanted.add(key)
        row = stored.get(key)
        if row is None:
            plan.creates.append(entry)
            continue
        changed = {}
        for model_field in config_fields(entry.model):
            old = value_of(row, model_field)
            if model_field.name in REFERENCES:
                new = getattr(entry, model_field.name)
            else:
                new = value_of(entry.row, model_field)
            if old != new:
                changed[model_field.name] = (old, new)
        if changed:
            plan.updates.append((entry, row, changed))
    # The order deletes are listed and done in.
    kinds = (HostRule, PathRule, AccessListUser, Backend, AccessList, Pool)
    plan.deletes = sorted(
        (row for key, row in stored.items() if key not in wanted),
        key=lambda row: (kinds.index(type(row)), stored_key(row)[1:]),
    )
    return plan


def document_rows(document):
    """Return the unsaved rows a routes file's document describes, with their references.

    For comparing two files (plan_import(entries, document_rows(other)))
    without the database. Raises RoutesFileError as an import would.
    """
    entries = document_entries(document)
    check_entries(entries)
    parents = {
        model: {entry.row.name: entry.row for entry in entries if entry.model is model}
        for model in (Pool, AccessList)
    }
    for entry in entries:
        if entry.model in (Backend, HostRule, PathRule):
            entry.row.pool = parents[Pool].get(entry.pool)
        if entry.model in (AccessListUser, HostRule, PathRule):
            entry.row.access_list = parents[AccessList].get(entry.access_list)
    return [entry.row for entry in entries]


def entry_of(item):
    """Return the entry of a plan's create (an entry) or update (entry, row, changes)."""
    return item if isinstance(item, Entry) else item[0]


class DryRun(Exception):
    """Raised to roll back an import that was only a preview."""


def import_routes(document, dry_run=False, around_writes=None):
    """Make the routing table equal to a routes file's document; return the change lines.

    One transaction, one routing version bump (none when nothing changes).
    Backends that stay keep their health state. Raises RoutesFileError, and
    writes nothing, when any entry is wrong; with dry_run, writes nothing
    either way. The writes are made (and rolled back) in a dry run too, so
    that it finds every error a real import would. around_writes: a context
    manager entered around the writes, inside the transaction (an impact
    preview reads the table before and after them).
    """
    entries = document_entries(document)
    check_entries(entries)
    try:
        with transaction.atomic(), RoutingVersion.one_bump():
            take_write_lock()  # it reads the table before it writes (write_lock.py)
            plan = plan_import(entries)
            with around_writes or contextlib.nullcontext():
                write_plan(plan)
            if dry_run:
                raise DryRun
    except DryRun:
        pass
    return plan.lines()


def write_plan(plan):
    """Write a plan's changes in an order that never breaks a rule on the way.

    Rules go first (a host rule may be replaced by a path rule for / on its
    host), then pools, backends, access lists and their users, then the
    rules that stay or come, and last the pools and access lists no rule
    holds any more (PROTECT).
    """
    errors = []
    parents = {
        Pool: {row.name: row for row in Pool.objects.all()},
        AccessList: {row.name: row for row in AccessList.objects.all()},
    }
    late = (Pool, AccessList)
    old_parents = [row for row in plan.deletes if isinstance(row, late)]
    for row in plan.deletes:
        if not isinstance(row, late):
            row.delete()
    writes = [*plan.creates, *plan.updates]
    kinds = (Pool, Backend, AccessList, AccessListUser, HostRule, PathRule)
    failed = set()  # (model, name) of the pools and access lists that could not be written
    for item in sorted(writes, key=lambda item: kinds.index(entry_of(item).model)):
        entry = entry_of(item)
        if (Pool, entry.pool) in failed or (AccessList, entry.access_list) in failed:
            continue
        if isinstance(item, Entry):
            row = entry.row
        else:
            _entry, row, changed = item
            for name in changed:
                if name not in REFERENCES:
                    setattr(row, name, getattr(entry.row, name))
        if entry.model not in late:
            if entry.model is not AccessListUser:
                row.pool = parents[Pool].get(entry.pool)
            if entry.model is not Backend:
                row.access_list = parents[AccessList].get(entry.access_list)
        try:
            row.save()
        except ValidationError as error:
            errors += error_lines(entry, error)
            if entry.model in late:
                failed.add((entry.model, entry.values["name"]))
            continue
        if entry.model in late:
            parents[entry.model][row.name] = row
    if errors:
        raise RoutesFileError(errors)
    for row in old_parents:
        row.delete()
