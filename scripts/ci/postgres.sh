#!/usr/bin/env bash
# A throwaway PostgreSQL for the sweep tests: `postgres.sh start DIR` creates a cluster in DIR
# (a temporary folder), starts it on a free port of 127.0.0.1 only (its socket in DIR too) and
# prints its URL; `postgres.sh stop DIR` stops it (pg_ctl's own stop, fast mode) and removes DIR.
# The server refuses to run as root, so as root it runs as the `postgres` user that the Debian
# package creates. Used by .ci/run and by the tests' fixture (tests/helpers_postgres.py).
set -euo pipefail
cmd="${1:-}"; dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

bin=""
if command -v pg_ctl >/dev/null 2>&1; then
  bin="$(dirname "$(command -v pg_ctl)")"
else
  for b in /usr/lib/postgresql/*/bin; do [ -x "$b/pg_ctl" ] && bin="$b"; done
fi
[ -n "$bin" ] || { echo "postgres.sh: no pg_ctl on the PATH or under /usr/lib/postgresql/*/bin (apt-get install postgresql)" >&2; exit 3; }

as_owner() {  # run a server command as a user PostgreSQL accepts
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 \
      || { echo "postgres.sh: initdb failed:" >&2; tail -5 "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >/dev/null \
      || { echo "postgres.sh: the server did not start:" >&2; tail -5 "$dir/server.log" >&2; exit 1; }
    echo "postgresql://postgres@127.0.0.1:$port/postgres" | tee "$dir/url"
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null
    fi
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
