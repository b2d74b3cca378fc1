"""The routing table's history: one revision per committed change, and rollback to one.

Every change to the routing configuration sends routing_changed (models.py)
however it is written: admin, API, import_routes, loaddata, the shell. The
first one in a transaction schedules record_revision() for its commit; the
others find it scheduled. At commit, the whole table is exported as a routes
file and stored as a new revision, unless it equals the last one: a write
that changed nothing, or health state (the health checker's writes also
tell the workers, but a routes file holds no health state).

The user is known for requests on the admin listener (admin and API), which
RevisionUserMiddleware names; a rollback names the revision it went back to.
"""

import contextlib
import contextvars
import logging

from django.db import IntegrityError, connection, transaction

from .models import AccessList, AccessListUser, Backend, HostRule, PathRule, Pool, Revision
from .routes_file import (
    RoutesFileError,
    check_entries,
    document_entries,
    document_rows,
    dump_routes,
    export_routes,
    import_routes,
    plan_import,
    read_routes_file,
)

logger = logging.getLogger(__name__)

# The models whose rows a revision holds: rolling back changes any of them.
ROUTING_MODELS = (Pool, Backend, AccessList, AccessListUser, HostRule, PathRule)
# The table before the first revision.
EMPTY_TABLE = {"pools": {}}
# The summary when the revision before no longer reads as a routes file.
UNREADABLE_PREVIOUS = "(the revision before no longer reads as a routes file: changes not listed)"
# Tries at a revision number that a concurrent writer may take first.
NUMBER_ATTEMPTS = 5

# The request on the admin listener being served (its user may be known
# only after the API has authenticated its token), and why a change is made.
_request = contextvars.ContextVar("revision_request", default=None)
_note = contextvars.ContextVar("revision_note", default="")


@contextlib.contextmanager
def changes_by(request):
    """Attribute the revisions made while serving this request to its user."""
    token = _request.set(request)
    try:
        yield
    finally:
        _request.reset(token)


@contextlib.contextmanager
def changes_noted(note):
    """Start the summary of the revisions made inside with a note ("rollback to 3")."""
    token = _note.set(note)
    try:
        yield
    finally:
        _note.reset(token)


def acting_user_id():
    """Return the id of the user the current request is authenticated as, or None."""
    request = _request.get()
    user = getattr(request, "user", None)
    return user.pk if user is not None and user.is_authenticated else None


def schedule_revision():
    """Record a revision when the current transaction commits, once per transaction."""
    pending = getattr(connection, "run_on_commit", [])  # (savepoints, callback, robust)
    if any(getattr(callback, "records_revision", False) for _ids, callback, _robust in pending):
        return
    user_id, note = acting_user_id(), _note.get()

    def record():
        record_revision(user_id, note)

    record.records_revision = True
    # Robust: a history that cannot be written never undoes the change itself.
    transaction.on_commit(record, robust=True)


def record_revision(user_id=None, note=""):
    """Store the table as a new revision if it differs from the last one; return it or None."""
    document = export_routes()
    routes = dump_routes(document)
    for _attempt in range(NUMBER_ATTEMPTS):
        last = Revision.objects.order_by("-number").first()
        if last is not None and last.routes == routes:
            return None
        summary = "\n".join(filter(None, [note, *changes_since(last, document)]))
        try:
            with transaction.atomic():
                return Revision.objects.create(
                    number=last.number + 1 if last else 1,
                    user_id=user_id,
                    summary=summary,
                    routes=routes,
                )
        except IntegrityError:  # another process took the number: compare with its revision
            continue
    logger.error("No revision recorded: the revision number kept being taken")
    return None


def changes_since(revision, document):
    """Return the change lines from a revision's table (None: an empty one) to a document."""
    try:
        previous = read_routes_file(revision.routes) if revision else EMPTY_TABLE
        return diff_routes(previous, document)
    except RoutesFileError:
        # Rules that changed since (a newer release) may refuse an old table:
        # the new revision is recorded all the same.
        return [UNREADABLE_PREVIOUS]


def diff_routes(old_document, new_document):
    """Return the changes from one routes file to another, in import_routes' words."""
    entries = document_entries(new_document)
    check_entries(entries)
    return plan_import(entries, document_rows(old_document)).lines()


def roll_back(revision, dry_run=False, around_writes=None):
    """Make the table the revision's again, as one new revision; return the change lines.

    With dry_run, return the changes and write nothing. around_writes: as
    import_routes' (an impact preview).
    """
    with changes_noted(f"rollback to {revision.number}"):
        return import_routes(
            read_routes_file(revision.routes), dry_run=dry_run, around_writes=around_writes
        )


def rollback_permissions():
    """Return the permissions a rollback needs: change on every routing model."""
    return [f"{model._meta.app_label}.change_{model._meta.model_name}" for model in ROUTING_MODELS]
