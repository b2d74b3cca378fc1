"""SQLite as the balancer runs it: write-ahead logging, and transactions that read
before they write take the write lock first (routing/write_lock.py), so that a
write another process lands between their reads and their writes (the traffic
sample, the health checker's heartbeat) never refuses them."""

import pytest
from django.db import connection

from .conftest import balancer_environment, manage_output

# One process, two connections: a transaction reads, another writer (the traffic
# sample's, which never waits) tries to write, then the transaction writes.
SCRIPT = """
import sqlite3
from django.db import connection, transaction
from routing.models import Pool
from routing.write_lock import take_write_lock

try:
    with transaction.atomic():
        if LOCK_FIRST:
            take_write_lock()
        names = list(Pool.objects.values_list("name", flat=True))
        other = sqlite3.connect(connection.settings_dict["NAME"], timeout=0, isolation_level=None)
        try:
            other.execute("UPDATE routing_pool SET read_timeout = 11")
            print("other writer: wrote")
        except sqlite3.OperationalError as error:
            print("other writer:", error)
        Pool.objects.create(name=NAME)
    print("transaction: committed", sorted(Pool.objects.values_list("name", flat=True)))
except Exception as error:
    print("transaction:", error)
"""


@pytest.fixture
def env(tmp_path):
    return balancer_environment(tmp_path, [{"model": "routing.pool", "fields": {"name": "mango"}}])


def test_a_transaction_that_takes_the_write_lock_first_is_never_refused(env):
    output = manage_output(env, "shell", "-c", "LOCK_FIRST, NAME = True, 'kiwi'\n" + SCRIPT)
    assert "other writer: database is locked" in output
    assert "transaction: committed ['kiwi', 'mango']" in output
    # Without it, the other writer's commit makes the transaction's snapshot stale.
    output = manage_output(env, "shell", "-c", "LOCK_FIRST, NAME = False, 'lime'\n" + SCRIPT)
    assert "other writer: wrote" in output
    assert "transaction: database is locked" in output


def test_the_database_runs_in_write_ahead_log_mode(env):
    journal = manage_output(
        env,
        "shell",
        "-c",
        "from django.db import connection; "
        "print(connection.cursor().execute('PRAGMA journal_mode').fetchone()[0])",
    )
    assert journal.split()[-1] == "wal"


@pytest.mark.skipif(
    connection.vendor != "sqlite", reason="the test database is not SQLite (DATABASE_URL)"
)
@pytest.mark.django_db(transaction=True)
def test_admin_requests_that_may_write_begin_their_transactions_with_the_lock(admin_client):
    def statements_of(request):
        statements = []

        def record(execute, sql, params, many, context):
            statements.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(record):
            request()
        return statements

    read = statements_of(lambda: admin_client.get("/admin/routing/pool/add/"))
    assert "BEGIN IMMEDIATE" not in read  # a page that only reads
    written = statements_of(lambda: admin_client.post("/admin/routing/pool/add/", {"name": "kiwi"}))
    assert "BEGIN IMMEDIATE" in written
    assert connection.transaction_mode is None  # the next request begins as usual
