#!/usr/bin/env bash
# A private PostgreSQL cluster in a directory of its own, for tests and the
# robustness runs: made with initdb, trust auth for user postgres, listening
# on 127.0.0.1 only (no Unix socket), so it neither reaches nor collides with
# the machine's own cluster.
#
#   private-postgres.sh start DIR [PORT]   make the cluster in DIR if it holds
#                                          none (listening on PORT), start it
#                                          if stopped, wait until it answers;
#                                          prints its URL
#   private-postgres.sh stop DIR [MODE]    stop it if running; MODE is pg_ctl's
#                                          (fast by default; immediate is a crash)
#   private-postgres.sh url DIR            its URL
#   private-postgres.sh answers URL        whether a PostgreSQL accepts
#                                          connections at URL (exit status)
#   private-postgres.sh free-port [PORT]   PORT if nothing listens on it on
#                                          127.0.0.1, else a port nothing does
#
# The server's binaries are taken from /usr/lib/postgresql/<version>/bin
# (Debian keeps them off PATH), or PATH; when there are none, the
# distribution's package is installed with apt-get. initdb refuses to run as
# root: a root caller hands the cluster to the `postgres` system user (the
# owner of an existing cluster), who must be able to reach DIR.
set -euo pipefail

SYSTEM_USER=postgres

die() { echo "private-postgres: $*" >&2; exit 1; }

# The directory holding initdb and pg_ctl, for VERSION when given.
find_bindir() {
  local version=${1:-} dir
  if [ -n "$version" ]; then
    dir=/usr/lib/postgresql/$version/bin
    [ -x "$dir/initdb" ] && { echo "$dir"; return; }
  fi
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && { echo "$dir"; return; }
  dir=$(command -v initdb 2>/dev/null) && { dirname "$dir"; return; }
  return 1
}

install_server() {
  echo "private-postgres: installing PostgreSQL's server from the distribution" >&2
  local conf=/etc/postgresql-common/createcluster.conf marker="create_main_cluster = false # private-postgres"
  # Installing the server makes and starts a system cluster on port 5432
  # with password auth, unless told not to: it would answer the tests'
  # default URL and refuse them. The setting holds for this install only.
  (
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq postgresql-common && echo "$marker" >>"$conf" || exit
    status=0
    apt-get install -y -qq postgresql || status=$?
    sed -i "/^$marker\$/d" "$conf"
    exit $status
  ) >&2 || die "cannot install PostgreSQL (apt-get install -y postgresql)"
}

bindir() {
  find_bindir "${1:-}" && return
  install_server
  find_bindir "${1:-}" || die "no initdb after installing PostgreSQL"
}

# Runs a PostgreSQL program as the user owning DIR's cluster when root.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$owner" -- "$@"
  else
    "$@"
  fi
}

port_of() { sed -n "s/^port = \([0-9]*\)$/\1/p" "$1/data/postgresql.conf" 2>/dev/null | tail -n 1 || true; }

url_of() {
  local port
  port=$(port_of "$1")
  [ -n "$port" ] || die "no port in $1/data/postgresql.conf"
  echo "postgres://postgres@127.0.0.1:$port/postgres"
}

listening() { (: </dev/tcp/127.0.0.1/"$1") 2>/dev/null; }

# Sets dir, data, log and owner for the cluster in $1.
cluster() {
  dir=$(mkdir -p "$1" && cd "$1" && pwd)
  data=$dir/data
  log=$dir/postgres.log
  owner=$(id -un)
  if [ "$(id -u)" = 0 ]; then
    if [ -e "$data/PG_VERSION" ]; then
      owner=$(stat -c %U "$data")
    else
      owner=$SYSTEM_USER
    fi
  fi
}

init() {
  local port=$1 bin
  bin=$(bindir)
  if [ "$(id -u)" = 0 ]; then
    getent passwd "$owner" >/dev/null || die "no user $owner to run PostgreSQL as (initdb refuses root)"
    chown "$owner:" "$dir"
    runuser -u "$owner" -- test -w "$dir" ||
      die "user $owner cannot reach $dir: every directory above it needs o+x"
  fi
  rm -rf "$data"
  as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; die "initdb failed in $data"; }
  printf "\nport = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n" "$port" \
    >>"$data/postgresql.conf"
}

# The binaries of the cluster's version, in $bin.
cluster_bin() { bin=$(bindir "$(cat "$data/PG_VERSION")"); }

running() { as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; }

start() {
  local port=${1:-}
  if [ ! -e "$data/PG_VERSION" ]; then
    [ -n "$port" ] || die "no cluster in $dir: give a port to make one"
    init "$port"
  fi
  cluster_bin
  port=$(port_of "$dir")
  if running; then
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -t 60 ||
      { tail -n 20 "$log" >&2; die "the cluster in $dir runs but does not answer on 127.0.0.1:$port"; }
  else
    listening "$port" && die "127.0.0.1:$port is taken: cannot start the cluster in $dir"
    # -w: returns once the server accepts connections.
    as_owner "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null ||
      { tail -n 20 "$log" >&2; die "the cluster in $dir did not start"; }
  fi
  url_of "$dir"
}

stop() {
  local mode=${1:-fast}
  [ -e "$data/PG_VERSION" ] || return 0
  cluster_bin
  running || return 0
  as_owner "$bin/pg_ctl" -D "$data" -m "$mode" -w stop >/dev/null ||
    { tail -n 20 "$log" >&2; die "the cluster in $dir did not stop"; }
}

answers() {
  local pg_isready
  pg_isready=$(command -v pg_isready) || pg_isready=$(bindir)/pg_isready
  "$pg_isready" -q -t 5 -d "$1" 2>/dev/null
}

free_port() {
  local port=${1:-}
  if [ -n "$port" ] && ! listening "$port"; then
    echo "$port"
    return
  fi
  for port in $(seq 25432 25532); do
    listening "$port" || { echo "$port"; return; }
  done
  die "no free port in 25432-25532 on 127.0.0.1"
}

command=${1:-}
case "$command" in
  start) [ $# -ge 2 ] || die "usage: $0 start DIR [PORT]"; cluster "$2"; start "${3:-}" ;;
  stop)
    [ $# -ge 2 ] || die "usage: $0 stop DIR [fast|smart|immediate]"
    [ -d "$2" ] || exit 0
    cluster "$2"; stop "${3:-}" ;;
  url) [ $# -eq 2 ] || die "usage: $0 url DIR"; url_of "$2" ;;
  answers) [ $# -eq 2 ] || die "usage: $0 answers URL"; answers "$2" ;;
  free-port) free_port "${2:-}" ;;
  *) die "usage: $0 {start DIR [PORT]|stop DIR [MODE]|url DIR|answers URL|free-port [PORT]}" ;;
esac
