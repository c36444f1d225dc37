#!/usr/bin/env bash
# Peak RSS of `mediavault serve` (release build) while it receives one
# 100 MiB upload, against the blob store named by $1: "files" (the embedded
# default) or "s3" (Garage, via scripts/test-services.sh). Prints idle RSS,
# peak RSS (VmHWM) and their difference, in MiB.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
backend=${1:-files}
size=${SIZE:-104857600}

cargo build --release --bin mediavault --manifest-path "$root/Cargo.toml" >&2
bin="$root/target/release/mediavault"
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
curl -sS --fail -H "token: $token" -F file_type=image/png -F "file=@$work/file" "$base/partner/app/$app/media" > "$work/reply"
end=$(date +%s.%N)
peak=$(rss VmHWM)
echo "backend=$backend size=$size reply=$(cat "$work/reply")"
awk -v i="$idle" -v p="$peak" -v s="$size" -v t0="$start" -v t1="$end" 'BEGIN {
  printf "idle RSS %.1f MiB, peak RSS %.1f MiB, peak above idle %.1f MiB, upload %.2f s (%.0f MiB/s)\n",
    i/1024, p/1024, (p-i)/1024, t1-t0, s/1048576/(t1-t0) }'
