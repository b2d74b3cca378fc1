"""SQLite's write lock, taken when a transaction begins rather than at its first write.

On SQLite (write-ahead log), a transaction begins without the write lock. If
another process commits a write between the transaction's first read and its
first write (the traffic sample every few seconds, the health checker's
heartbeat), SQLite refuses the transaction's write with "database is locked":
its snapshot is stale, and waiting cannot help. A transaction that reads
before it writes therefore takes the lock first; SQLite then waits for
another writer (its busy timeout) instead. Only those transactions do:
BEGIN IMMEDIATE for every transaction would also make read-only admin pages
take the lock, and two greenlets of one gevent worker waiting for it inside
C code would hold up the whole worker. PostgreSQL needs none of this.
"""

from django.db import connection
from django.db.models import F

from .models import RoutingVersion

# What may change data: the transactions of requests with these methods hold
# the write lock from their start.
WRITING_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def take_write_lock():
    """Take SQLite's write lock now, inside a transaction (a no-op write); else nothing."""
    if connection.vendor == "sqlite" and connection.in_atomic_block:
        RoutingVersion.objects.filter(pk=RoutingVersion.SINGLETON_ID).update(version=F("version"))


class WriteLockMiddleware:
    """Begin the transactions of each admin-listener request that may write (an admin
    save, an action, an API call) with BEGIN IMMEDIATE: they hold SQLite's write lock
    from their start. Requests that only read begin theirs as usual."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if connection.vendor != "sqlite" or request.method not in WRITING_METHODS:
            return self.get_response(request)
        connection.ensure_connection()  # connecting sets the mode from OPTIONS
        mode, connection.transaction_mode = connection.transaction_mode, "IMMEDIATE"
        try:
            return self.get_response(request)
        finally:
            connection.transaction_mode = mode
