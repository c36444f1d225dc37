#!/usr/bin/env bash
# Where one small upload's time goes on Postgres + Garage: captures the
# loopback traffic (tcpdump, headers only) while `mediavault-bench http`
# uploads 16 KiB files from one client, mediavault's and the raw PUTs, then
# splits each upload into the server's steps (bench/upload-timeline.py).
# Needs tcpdump and root (or CAP_NET_RAW). BIN=… measures another build of
# the server; COUNT=… uploads on each side (default 2000).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
command -v tcpdump > /dev/null || { echo "upload-timeline: tcpdump is not installed" >&2; exit 1; }

cargo build --release -p mediavault -p mediavault-bench --manifest-path "$root/Cargo.toml" >&2
BIN=${BIN:-$root/target/release/mediavault}
"$root/scripts/test-services.sh" >&2
. "${MEDIAVAULT_TEST_SERVICES_DIR:-$root/target/test-services}/env"
store_port=${MEDIAVAULT_TEST_S3_ENDPOINT##*:}
# The PostgreSQL the tests use: 5432, or the private cluster
# scripts/test-services.sh made on another port when none answered there.
pg_port=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlsplit(sys.argv[1]).port or 5432)' "$MEDIAVAULT_TEST_DATABASE_URL")

work=$(mktemp -d)
trap 'kill $capture 2>/dev/null || true; rm -rf "$work"' EXIT
# Headers are enough: each step is told by the first bytes of a segment.
tcpdump -i lo -s 160 -w "$work/capture.pcap" tcp > /dev/null 2> "$work/tcpdump.log" &
capture=$!
for _ in $(seq 1 50); do grep -q listening "$work/tcpdump.log" && break; sleep 0.1; done

"$root/target/release/mediavault-bench" http --backend postgres-s3 --only small --concurrency 1 \
  --small-count "${COUNT:-2000}" --server "$BIN" --results "$work/results" \
  | grep -E '1 clients|load average'
kill -INT $capture
wait $capture || true
python3 "$root/bench/upload-timeline.py" "$work/capture.pcap" "$store_port" "$pg_port"
