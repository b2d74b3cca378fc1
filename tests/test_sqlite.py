"""SQLite as the balancer runs it: write-ahead logging, and transactions that take
the write lock when they begin, so a write landing between a transaction's reads
and its writes never refuses it (the traffic sample, the health checker's heartbeat
and certificate loop write every few seconds)."""

from .conftest import balancer_environment, manage_output

# One process, two connections: an import-like transaction reads, another writer
# (the traffic sample's, which never waits) tries to write, then the transaction
# writes. The other writer must be the one refused, and the transaction go through.
SCRIPT = """
import sqlite3
from django.db import connection, transaction
from routing.models import Pool

with transaction.atomic():
    names = list(Pool.objects.values_list("name", flat=True))
    other = sqlite3.connect(connection.settings_dict["NAME"], timeout=0, isolation_level=None)
    try:
        other.execute("UPDATE routing_pool SET read_timeout = 11")
        print("other writer: wrote")
    except sqlite3.OperationalError as error:
        print("other writer:", error)
    Pool.objects.create(name="kiwi")
print("transaction: committed", sorted(Pool.objects.values_list("name", flat=True)))
"""


def test_a_transaction_keeps_the_write_lock_from_its_start(tmp_path):
    env = balancer_environment(tmp_path, [{"model": "routing.pool", "fields": {"name": "mango"}}])
    output = manage_output(env, "shell", "-c", SCRIPT)
    assert "other writer: database is locked" in output
    assert "transaction: committed ['kiwi', 'mango']" in output
    journal = manage_output(
        env,
        "shell",
        "-c",
        "from django.db import connection; "
        "print(connection.cursor().execute('PRAGMA journal_mode').fetchone()[0])",
    )
    assert journal.split()[-1] == "wal"
