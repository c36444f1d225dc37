#!/usr/bin/env bash
# `make test` on a machine where no PostgreSQL answers: scripts/test-services.sh
# is pointed at a closed loopback port, with its state in target/bare-machine
# (target/test-services and its env are left alone). It must make a private
# cluster on that port and name it in its env file; then tests that use
# PostgreSQL (one storage test, and an end-to-end upload and download through
# the server on PostgreSQL and the Garage node already running) pass against
# it; then `test-services.sh stop` stops the cluster. Starts fresh every time;
# about ten seconds once the workspace's tests are built.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
state="$root/target/bare-machine"
die() { echo "check-bare-machine: $*" >&2; exit 1; }

export MEDIAVAULT_TEST_SERVICES_DIR="$state"
scripts/test-services.sh stop
rm -rf "$state"

port=$(scripts/private-postgres.sh free-port)
url="postgres://postgres@127.0.0.1:$port/postgres"
scripts/private-postgres.sh answers "$url" && die "something answers at $url"
trap 'scripts/test-services.sh stop' EXIT

MEDIAVAULT_TEST_DATABASE_URL=$url scripts/test-services.sh
[ -e "$state/postgres/data/PG_VERSION" ] || die "no private cluster in $state/postgres"
grep -qxF "export MEDIAVAULT_TEST_DATABASE_URL=$url" "$state/env" ||
  die "$state/env does not name $url"

tests=(phone_number_ids_map_to_one_live_app downloads_whole_by_range_cached_and_head_on_postgres_and_garage)
# The same selection of packages as `make test`, so nothing is built again.
(
  . "$state/env"
  cargo=${CARGO:-cargo}
  if $cargo nextest --version >/dev/null 2>&1; then
    filter=$(printf ' | test(/::%s$/)' "${tests[@]}")
    $cargo nextest run --workspace -E "${filter# | }"
  else
    $cargo test --workspace --lib --tests -- "${tests[@]}"
  fi
)

scripts/test-services.sh stop
trap - EXIT
scripts/private-postgres.sh answers "$url" && die "the private cluster still answers after stop"
echo "check-bare-machine: a private PostgreSQL on 127.0.0.1:$port served the tests, and stopped" >&2
