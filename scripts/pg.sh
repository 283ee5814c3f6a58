#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for tests: a temp dir, a free port on 127.0.0.1, its
# unix socket inside the temp dir, a superuser with a random password.
#
#   scripts/pg.sh run -- COMMAND...   start a cluster, run COMMAND with
#                                     ST_PETER_TEST_POSTGRES_URL and ST_PETER_TEST_PG_DIR
#                                     set, and always stop and delete the cluster
#   eval "$(scripts/pg.sh start)"     start one and print `export` lines for both variables
#   scripts/pg.sh stop [DIR]          stop and delete the cluster (DIR defaults to
#                                     $ST_PETER_TEST_PG_DIR)
#   scripts/pg.sh ctl ARGS...         pg_ctl ARGS on $ST_PETER_TEST_PG_DIR as the cluster's
#                                     user, e.g. `ctl stop -m fast`, `ctl start` (the outage
#                                     test uses it)
#
# Run as root, initdb and pg_ctl run as the unprivileged system user `st-peter-pg`
# (created when missing), which owns the temp dir. When the binaries are missing they are
# installed with apt-get (postgresql-15), as on a clean CI machine.
set -euo pipefail

PG_VERSION=15
PG_BIN="/usr/lib/postgresql/$PG_VERSION/bin"
PG_USER=st-peter-pg
DB_USER=st_peter

ensure_binaries() {
  if [[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]]; then
    return
  fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "pg.sh: $PG_BIN/initdb is missing; install postgresql-$PG_VERSION (needs root)" >&2
    exit 1
  fi
  echo "pg.sh: installing postgresql-$PG_VERSION with apt-get" >&2
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    "postgresql-$PG_VERSION" >&2
}

# Runs a command as the cluster's owner: the unprivileged user when we are root.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u "$PG_USER" -- "$@"
  else
    "$@"
  fi
}

ensure_user() {
  if [[ $(id -u) -eq 0 ]] && ! id "$PG_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
      "$PG_USER"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts a cluster; prints its directory on stdout. The URL is in DIR/url.
start_cluster() {
  ensure_binaries
  ensure_user
  local dir port password
  dir=$(mktemp -d "${TMPDIR:-/tmp}/st-peter-pg.XXXXXX")
  chmod 0755 "$dir"
  if [[ $(id -u) -eq 0 ]]; then
    chown "$PG_USER" "$dir"
  fi
  password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  printf '%s\n' "$password" | as_owner tee "$dir/pwfile" >/dev/null
  as_owner "$PG_BIN/initdb" --pgdata="$dir/data" --username="$DB_USER" \
    --pwfile="$dir/pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    exit 1
  }
  rm -f "$dir/pwfile"
  # Settings in a file of their own, so `pg.sh ctl start` after a stop keeps them.
  echo "include_if_exists = 'st-peter.conf'" | as_owner tee -a "$dir/data/postgresql.conf" >/dev/null
  # Another process may take the port between free_port and the start: try a few.
  local attempt
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    # Durability settings off: the cluster is thrown away after the tests.
    printf '%s\n' "listen_addresses = '127.0.0.1'" "port = $port" \
      "unix_socket_directories = '$dir'" "max_connections = 300" \
      "fsync = off" "synchronous_commit = off" "full_page_writes = off" |
      as_owner tee "$dir/data/st-peter.conf" >/dev/null
    if as_owner "$PG_BIN/pg_ctl" --pgdata="$dir/data" --log="$dir/postgres.log" --wait \
      --timeout=60 start >/dev/null; then
      break
    fi
    if [[ $attempt -eq 5 ]]; then
      cat "$dir/postgres.log" >&2
      exit 1
    fi
  done
  printf 'postgres://%s:%s@127.0.0.1:%s/postgres\n' "$DB_USER" "$password" "$port" >"$dir/url"
  echo "$dir"
}

stop_cluster() {
  local dir=$1
  [[ -d "$dir/data" ]] || return 0
  as_owner "$PG_BIN/pg_ctl" --pgdata="$dir/data" --mode=immediate --wait stop >/dev/null 2>&1 ||
    true
  rm -rf "$dir"
}

command=${1:-}
shift || true
case "$command" in
  start)
    dir=$(start_cluster)
    printf 'export ST_PETER_TEST_POSTGRES_URL=%q\n' "$(cat "$dir/url")"
    printf 'export ST_PETER_TEST_PG_DIR=%q\n' "$dir"
    ;;
  stop)
    stop_cluster "${1:-${ST_PETER_TEST_PG_DIR:?give the cluster dir or set ST_PETER_TEST_PG_DIR}}"
    ;;
  ctl)
    dir=${ST_PETER_TEST_PG_DIR:?set ST_PETER_TEST_PG_DIR (scripts/pg.sh start prints it)}
    as_owner "$PG_BIN/pg_ctl" --pgdata="$dir/data" --log="$dir/postgres.log" "$@"
    ;;
  run)
    [[ "${1:-}" == "--" ]] && shift
    [[ $# -gt 0 ]] || { echo "usage: scripts/pg.sh run -- COMMAND..." >&2; exit 2; }
    dir=$(start_cluster)
    trap 'stop_cluster "$dir"' EXIT
    ST_PETER_TEST_POSTGRES_URL=$(cat "$dir/url")
    export ST_PETER_TEST_POSTGRES_URL ST_PETER_TEST_PG_DIR=$dir
    echo "pg.sh: PostgreSQL $PG_VERSION on ${ST_PETER_TEST_POSTGRES_URL##*@} (dir $dir)" >&2
    "$@"
    ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2
    exit 2
    ;;
esac
