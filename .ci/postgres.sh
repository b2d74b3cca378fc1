#!/usr/bin/env bash
# Start a throwaway PostgreSQL 15 cluster on a free loopback port, as the
# postgres user (initdb and pg_ctl refuse to run as root). Prints the
# DATABASE_URL to use; `.ci/postgres.sh stop DIR` stops it.
set -euo pipefail
BIN=/usr/lib/postgresql/15/bin
if [ "${1:-}" = stop ]; then
    runuser -u postgres -- "$BIN/pg_ctl" -D "$2/data" -m fast stop >/dev/null
    rm -rf "$2"
    exit 0
fi
dir=$(mktemp -d /tmp/lb-postgres-XXXXXX)
chown postgres "$dir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
runuser -u postgres -- "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust >/dev/null
runuser -u postgres -- "$BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
runuser -u postgres -- "$BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres lb
echo "$dir postgres://postgres@127.0.0.1:$port/lb"
