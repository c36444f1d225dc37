#!/usr/bin/env bash
# Peak RSS of `mediavault serve` (release build) while it receives one
# 100 MiB upload, against the blob store named by $1: "files" (the embedded
# default) or "s3" (Garage, via scripts/test-services.sh). Prints idle RSS,
# peak RSS (VmHWM) and their difference, in MiB. BIN=… measures another
# build of the server; STALL=SECONDS (s3 only) stops Garage that long
# during the upload, the worst case for what the server holds; UPLOADS=N
# sends N uploads of the file at once; SETTLE=SECONDS reads the RSS again
# after the server has sat idle that long, to show what it keeps.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
backend=${1:-files}
size=${SIZE:-104857600}

# BIN picks the binary (to compare builds); by default the release build.
if [ -z "${BIN:-}" ]; then
  cargo build --release --bin mediavault --manifest-path "$root/Cargo.toml" >&2
  BIN="$root/target/release/mediavault"
fi
bin=$BIN
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT

. "$root/bench/server-env.sh" "$bin" "$work" "$backend"

head -c "$size" /dev/urandom > "$work/file"
printf '\x89PNG\r\n\x1a\n' | dd of="$work/file" conv=notrunc status=none

"$bin" serve --listen 127.0.0.1:0 > "$work/out" 2> "$work/log" &
pid=$!
for _ in $(seq 1 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.1; done
base=$(sed 's/listening on //' "$work/out")
sleep 1
rss() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$pid/status"; }
idle=$(rss VmRSS)
start=$(date +%s.%N)
uploads=()
for i in $(seq 1 "${UPLOADS:-1}"); do
  curl -sS --fail -H "token: $token" -F file_type=image/png -F "file=@$work/file" "$base/partner/app/$app/media" > "$work/reply.$i" &
  uploads+=($!)
done
if [ -n "${STALL:-}" ]; then
  # The store at its slowest: Garage stopped for STALL seconds shortly after
  # the upload starts, so parts wait in the server for as long as it lets them.
  garage=$(cat "${MEDIAVAULT_TEST_SERVICES_DIR:-$root/target/test-services}/garage/pid")
  trap 'kill -CONT $garage 2>/dev/null || true; kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
  sleep 0.2
  kill -STOP "$garage"
  sleep "$STALL"
  kill -CONT "$garage"
fi
failed=0
for upload in "${uploads[@]}"; do wait "$upload" || failed=$((failed + 1)); done
uploaded=$(sed -n 's/.*"mediaId":"\([^"]*\)".*/\1/p' "$work"/reply.*)
if [ "$failed" -gt 0 ]; then
  echo "$failed of ${#uploads[@]} uploads failed; the server's log ends:" >&2
  tail -n 20 "$work/log" >&2
  delete_media $uploaded
  exit 1
fi
end=$(date +%s.%N)
peak=$(rss VmHWM)
echo "backend=$backend size=$size uploads=${#uploads[@]} reply=$(cat "$work/reply.1")"
awk -v i="$idle" -v p="$peak" -v s="$size" -v n="${#uploads[@]}" -v t0="$start" -v t1="$end" 'BEGIN {
  printf "idle RSS %.1f MiB, peak RSS %.1f MiB, peak above idle %.1f MiB, upload %.2f s (%.0f MiB/s)\n",
    i/1024, p/1024, (p-i)/1024, t1-t0, n*s/1048576/(t1-t0) }'
if [ -n "${SETTLE:-}" ]; then
  after=$(rss VmRSS)
  sleep "$SETTLE"
  settled=$(rss VmRSS)
  awk -v i="$idle" -v a="$after" -v d="$settled" -v t="$SETTLE" 'BEGIN {
    printf "RSS just after %.1f MiB (%.1f above idle), after %s s idle %.1f MiB (%.1f above idle)\n",
      a/1024, (a-i)/1024, t, d/1024, (d-i)/1024 }'
fi
# What was uploaded, after the RSS readings: deletes allocate too.
delete_media $uploaded
