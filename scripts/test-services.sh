#!/usr/bin/env bash
# Makes sure the services the tests talk to are up, and writes their
# coordinates to target/test-services/env for `make test` to source:
#   - PostgreSQL at MEDIAVAULT_TEST_DATABASE_URL (by default
#     postgres://postgres@127.0.0.1:5432/postgres) when one answers there;
#     otherwise a private cluster (scripts/private-postgres.sh) under
#     target/test-services/postgres, on the URL's port when that is a free
#     loopback one, else on a free port from 25432 up. It is left running for
#     the next run, which starts it again if it was stopped. Each test makes
#     its own database on whichever server the env file names.
#   - Garage, a real S3-compatible store, is built once with `cargo install`
#     (cached in ~/.cargo/bin) and started here as a single node on loopback.
#   - SoftHSM2, a real PKCS#11 token, is installed from Debian's packages if
#     absent; a token of its own is initialised under target/test-services
#     (its own SOFTHSM2_CONF) for the key-provider tests, and a module that
#     wraps it and fails like a device on a test's word (pkcs11-faults.c).
# Fails loudly when a service cannot be had: no test is skipped for it.
#
# `test-services.sh stop` stops the private PostgreSQL and the Garage node
# this script started, keeping their data. MEDIAVAULT_TEST_SERVICES_DIR moves
# the state (and the env file) elsewhere than target/test-services.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state=${MEDIAVAULT_TEST_SERVICES_DIR:-$root/target/test-services}
mkdir -p "$state"
state=$(cd "$state" && pwd)
private_postgres="$root/scripts/private-postgres.sh"

GARAGE_VERSION=2.5.0
S3_PORT=${MEDIAVAULT_TEST_S3_PORT:-39100}
RPC_PORT=$((S3_PORT + 1))
ACCESS_KEY=GK0123456789abcdef01234567
SECRET_KEY=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
BUCKET=mediavault-test
PG_URL=${MEDIAVAULT_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}

die() { echo "test-services: $*" >&2; exit 1; }

# The Garage node started here, if it still runs: its pid, started on this
# state's configuration.
own_garage() {
  local pid
  pid=$(cat "$state/garage/pid" 2>/dev/null) || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$state/garage/garage.toml" || return 1
  echo "$pid"
}

if [ "${1:-}" = stop ]; then
  "$private_postgres" stop "$state/postgres"
  if pid=$(own_garage); then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    echo "test-services: garage stopped" >&2
  fi
  exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [stop]"

# PostgreSQL: the configured server when it answers, else a private cluster.
if ! "$private_postgres" answers "$PG_URL"; then
  pg_dir="$state/postgres"
  if [ ! -e "$pg_dir/data/PG_VERSION" ]; then
    # The URL's own port when it is a free loopback one.
    hostport=${PG_URL#*://}
    hostport=${hostport#*@}
    hostport=${hostport%%[/?]*}
    port=
    case "$hostport" in
      127.0.0.1:* | localhost:*) port=${hostport##*:} ;;
      127.0.0.1 | localhost) port=5432 ;;
    esac
    [[ $port =~ ^[0-9]+$ ]] || port=
    port=$("$private_postgres" free-port "$port")
    echo "test-services: no PostgreSQL answers at $PG_URL; making a private cluster in $pg_dir" >&2
  fi
  PG_URL=$("$private_postgres" start "$pg_dir" "${port:-}")
  echo "test-services: private PostgreSQL at $PG_URL (log: $pg_dir/postgres.log)" >&2
fi

# Garage: build once, reuse the binary.
garage_bin=$(command -v garage || true)
[ -n "$garage_bin" ] || garage_bin="$HOME/.cargo/bin/garage"
if [ ! -x "$garage_bin" ] || ! "$garage_bin" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
  echo "test-services: installing garage $GARAGE_VERSION (once; takes a while)" >&2
  cargo install garage --locked --version "$GARAGE_VERSION" >&2
  garage_bin="$HOME/.cargo/bin/garage"
fi

s3_up() { curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$S3_PORT/" ; }

if ! s3_up; then
  gdir="$state/garage"
  rm -rf "$gdir"
  mkdir -p "$gdir/meta" "$gdir/data"
  cat > "$gdir/garage.toml" <<TOML
metadata_dir = "$gdir/meta"
data_dir = "$gdir/data"
db_engine = "sqlite"
replication_factor = 1
# Blobs arrive encrypted: compressing them only burns CPU.
compression_level = "none"
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(printf '%064d' 0)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"
TOML
  GARAGE_DEFAULT_ACCESS_KEY=$ACCESS_KEY GARAGE_DEFAULT_SECRET_KEY=$SECRET_KEY GARAGE_DEFAULT_BUCKET=$BUCKET \
    nohup "$garage_bin" -c "$gdir/garage.toml" server --single-node --default-bucket \
    >"$gdir/garage.log" 2>&1 </dev/null &
  echo $! > "$gdir/pid"
  for _ in $(seq 1 100); do
    s3_up && break
    kill -0 "$(cat "$gdir/pid")" 2>/dev/null || { cat "$gdir/garage.log" >&2; die "garage exited at start"; }
    sleep 0.2
  done
  s3_up || { cat "$gdir/garage.log" >&2; die "garage did not answer on 127.0.0.1:$S3_PORT"; }
  echo "test-services: garage started on 127.0.0.1:$S3_PORT (log: $gdir/garage.log)" >&2
fi

# SoftHSM2: the PKCS#11 module and its command-line tool, from Debian.
PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so
PKCS11_TOKEN=mediavault-test
PKCS11_PIN=1234
if [ ! -e "$PKCS11_MODULE" ] || ! command -v softhsm2-util >/dev/null; then
  echo "test-services: installing softhsm2" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2; } >&2 \
    || die "cannot install softhsm2 (apt-get install -y softhsm2)"
fi
hsm="$state/softhsm"
mkdir -p "$hsm/tokens"
cat > "$hsm/softhsm2.conf" <<CONF
directories.tokendir = $hsm/tokens
objectstore.backend = file
log.level = ERROR
CONF
if ! SOFTHSM2_CONF="$hsm/softhsm2.conf" softhsm2-util --show-slots 2>/dev/null \
    | grep -q "Label: *$PKCS11_TOKEN *$"; then
  SOFTHSM2_CONF="$hsm/softhsm2.conf" softhsm2-util --init-token --free --label "$PKCS11_TOKEN" \
    --pin "$PKCS11_PIN" --so-pin 87654321 >/dev/null || die "cannot initialise a SoftHSM2 token in $hsm"
  echo "test-services: SoftHSM2 token $PKCS11_TOKEN initialised in $hsm" >&2
fi

# The same token behind a module that fails like a device when a test says
# so (scripts/pkcs11-faults.c), built against p11-kit's PKCS#11 header.
PKCS11_HEADER=/usr/include/p11-kit-1/p11-kit/pkcs11.h
if [ ! -e "$PKCS11_HEADER" ]; then
  echo "test-services: installing libp11-kit-dev (the PKCS#11 header)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libp11-kit-dev; } >&2 \
    || die "cannot install libp11-kit-dev (apt-get install -y libp11-kit-dev)"
fi
faulty_module="$hsm/libpkcs11-faults.so"
if [ ! "$faulty_module" -nt "$root/scripts/pkcs11-faults.c" ]; then
  gcc -shared -fPIC -O2 -Wall -Werror -I/usr/include/p11-kit-1 -o "$faulty_module" \
    "$root/scripts/pkcs11-faults.c" -ldl -lpthread || die "cannot build $faulty_module"
fi
mkdir -p "$hsm/faults"

cat > "$state/env" <<ENV
export MEDIAVAULT_TEST_DATABASE_URL=$PG_URL
export MEDIAVAULT_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export MEDIAVAULT_TEST_S3_BUCKET=$BUCKET
export MEDIAVAULT_TEST_S3_ACCESS_KEY_ID=$ACCESS_KEY
export MEDIAVAULT_TEST_S3_SECRET_ACCESS_KEY=$SECRET_KEY
export SOFTHSM2_CONF=$hsm/softhsm2.conf
export MEDIAVAULT_TEST_PKCS11_MODULE=$PKCS11_MODULE
export MEDIAVAULT_TEST_PKCS11_TOKEN=$PKCS11_TOKEN
export MEDIAVAULT_TEST_PKCS11_PIN=$PKCS11_PIN
export MEDIAVAULT_TEST_PKCS11_FAULTY_MODULE=$faulty_module
export MEDIAVAULT_TEST_PKCS11_FAULTS=$hsm/faults
ENV
