#!/usr/bin/env bash
# RSS of `mediavault serve` while CLIENTS clients (50) each read one 20 MiB
# file at 1 byte a second for SECONDS_RUN (150), blobs in Garage (started by
# scripts/test-services.sh; BACKEND=files: a local directory). Each client has a 64 KiB receive buffer, so what
# it has not read stays on the server's side. Prints idle RSS (after the
# upload and one full download), then RSS every 10 s, then the highest RSS
# sampled (each second) while the clients read, above idle, in MiB. BIN picks the binary
# (default: a release build); SEND_TIMEOUT sets server.send_timeout (default
# the server's own, 60s: the clients are cut after it, and RSS falls back).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
clients=${CLIENTS:-50}
seconds=${SECONDS_RUN:-150}
size=${SIZE:-20971520}

if [ -z "${BIN:-}" ]; then
  cargo build --release --bin mediavault --manifest-path "$root/Cargo.toml" >&2
  BIN="$root/target/release/mediavault"
fi
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT

. "$root/bench/server-env.sh" "$BIN" "$work" "${BACKEND:-s3}"
[ -n "${SEND_TIMEOUT:-}" ] && export MEDIAVAULT__SERVER__SEND_TIMEOUT=$SEND_TIMEOUT

head -c "$size" /dev/urandom > "$work/file"
printf '\x89PNG\r\n\x1a\n' | dd of="$work/file" conv=notrunc status=none

"$BIN" serve --listen 127.0.0.1:0 > "$work/out" 2> "$work/log" &
pid=$!
for _ in $(seq 1 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.1; done
base=$(sed 's/listening on //' "$work/out")
media=$(curl -sS --fail -H "token: $token" -F file_type=image/png -F "file=@$work/file" \
  "$base/partner/app/$app/media" | sed 's/.*"mediaId":"\([^"]*\)".*/\1/')
# One full download first, so that idle RSS includes what any download sets up.
curl -sS --fail -H "token: $token" -o /dev/null "$base/partner/app/$app/media/$media"
sleep 2
rss() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$pid/status"; }
idle=$(rss VmRSS)
echo "clients=$clients size=$size seconds=$seconds idle RSS $((idle / 1024)) MiB"

python3 - "$base" "$app" "$token" "$media" "$clients" "$seconds" "$pid" "$idle" <<'PY'
import socket, sys, time
base, app, token, media, clients, seconds, pid, idle = sys.argv[1:]
host, port = base.removeprefix("http://").split(":")
def rss(key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
socks = []
for _ in range(int(clients)):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.connect((host, int(port)))
    s.sendall(f"GET /partner/app/{app}/media/{media} HTTP/1.1\r\nHost: {host}\r\ntoken: {token}\r\n\r\n".encode())
    s.setblocking(False)
    socks.append(s)
start, highest = time.time(), 0
next_report = start + 10
while time.time() - start < int(seconds):
    for s in socks:
        try:
            if s.recv(1) == b"":
                socks.remove(s)
        except BlockingIOError:
            pass
        except OSError:
            socks.remove(s)
    highest = max(highest, rss("VmRSS"))
    if time.time() >= next_report:
        print(f"t={time.time() - start:4.0f}s RSS {rss('VmRSS') / 1024:6.1f} MiB, connections open {len(socks)}", flush=True)
        next_report += 10
    time.sleep(1)
print(f"highest RSS {highest / 1024:.1f} MiB, above idle {(highest - int(idle)) / 1024:.1f} MiB")
PY
delete_media "$media"
