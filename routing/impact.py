"""Foresee an edit: which recent requests it would send elsewhere, before it is made.

The recent requests are the sample the workers write (traffic.py): method,
host and path, with how often they came in the last hour. Each is resolved
against the table as it is and as the edit would make it, both read from
the database inside the edit's rolled-back transaction; a request whose rule,
answer (pool, redirect, fixed response) or guards change is listed, one
line each, e.g. (on one line):

    GET www.mango.com/apple/pie (5 in the last hour):
        host rule www.mango.com → pool mango ⇒ pool apple
"""

import copy
from dataclasses import dataclass

from django.db import transaction

from .resolver import resolve
from .routes_file import import_routes
from .table import build_route_table
from .traffic import recent_requests

NO_RULE = "no rule (404)"


@dataclass(frozen=True)
class Move:
    """A recent request that an edit sends elsewhere."""

    method: str
    host: str
    path: str
    count: int
    now: str  # where it goes now
    then: str  # where it would go

    def __str__(self):
        return (
            f"{self.method} {self.host}{self.path} ({self.count} in the last hour): "
            f"{self.now} ⇒ {self.then}"
        )


class TableChange:
    """Read the route table from the database on entering and on leaving without error."""

    before = after = None

    def __enter__(self):
        self.before = build_route_table()
        return self

    def __exit__(self, kind, error, traceback):
        if kind is None:
            self.after = build_route_table()


def rule_name(route):
    """Name a route's rule: `host rule www.mango.com`, `path rule */apple`."""
    path = "/" + "/".join(route.prefix) if route.kind == "path" else ""
    return f"{route.kind} rule {route.host or '*'}{path}"


def answer_of(route):
    """Say what answers a route's requests, and what stands before: `pool mango (firewall)`."""
    rule_actions = route.actions
    if rule_actions.redirect:
        answer = f"redirect {rule_actions.redirect.status} to {rule_actions.redirect.to}"
    elif rule_actions.respond:
        answer = f"fixed response {rule_actions.respond.status}"
    else:
        answer = f"pool {route.pool.name}" if route.pool else "no pool"
    guards = [
        name
        for name, present in (
            ("firewall", rule_actions.firewall),
            ("rate limit", rule_actions.rate_limit),
            (
                f"access list {rule_actions.access_list.name}" if rule_actions.access_list else "",
                rule_actions.access_list,
            ),
        )
        if present
    ]
    return f"{answer} ({', '.join(guards)})" if guards else answer


def destination(table, host, path):
    """Return (rule name or None, answer) of a request under a table."""
    match = resolve(table, host, path)
    if match is None:
        return None, NO_RULE
    return rule_name(match.route), answer_of(match.route)


def describe(rule, answer):
    return f"{rule} → {answer}" if rule else answer


def moves(before, after, requests=None):
    """Return the Moves of the recent requests that go elsewhere under `after` than `before`."""
    if before is None or after is None:
        return []
    requests = recent_requests() if requests is None else requests
    found = []
    for method, host, path, count in requests:
        old_rule, old_answer = destination(before, host, path)
        new_rule, new_answer = destination(after, host, path)
        if (old_rule, old_answer) == (new_rule, new_answer):
            continue
        now = describe(old_rule, old_answer)
        # The same rule with another answer names the answer alone, as an edit of that rule.
        then = new_answer if new_rule == old_rule else describe(new_rule, new_answer)
        found.append(Move(method, host, path, count, now, then))
    return found


def preview_import(document):
    """Return (change lines, Moves) of importing a routes file's document; write nothing.

    Raises RoutesFileError as the import would.
    """
    change = TableChange()
    lines = import_routes(document, dry_run=True, around_writes=change)
    return lines, moves(change.before, change.after)


def preview_rule_form(form):
    """Return the Moves of saving a valid rule form; write nothing."""
    with transaction.atomic():
        with TableChange() as change:
            copy.copy(form.instance).save()
        transaction.set_rollback(True)
    return moves(change.before, change.after)
