#!/usr/bin/env bash
# Start (or reuse) a throwaway PostgreSQL server on 127.0.0.1 for the tests and print its
# SQLAlchemy URL. Idempotent: a second run finds the running server and prints the same URL.
# Runs as root (CI) or as any user with sudo-less access to `runuser`; the server itself
# runs as the `postgres` user Debian's package creates.
set -euo pipefail
DIR=${QSTASH_JOBS_PG_DIR:-/tmp/qstash-jobs-pg}
DB=qstash_jobs_test

if ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_postgres() { runuser -u postgres -- "$@"; }

mkdir -p "$DIR"
chown postgres: "$DIR"
if [ ! -f "$DIR/data/PG_VERSION" ]; then
    as_postgres "$BIN/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 >&2
fi
if ! as_postgres "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
    # A free loopback port, chosen now: other test servers share this machine.
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_postgres "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
        -o "-p $port -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=200" start >&2
    echo "$port" >"$DIR/port"
fi
port=$(cat "$DIR/port")
if ! as_postgres psql -h 127.0.0.1 -p "$port" -U postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
    as_postgres createdb -h 127.0.0.1 -p "$port" -U postgres "$DB"
fi
echo "postgresql+psycopg://postgres@127.0.0.1:$port/$DB"
