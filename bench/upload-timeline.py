#!/usr/bin/env python3
"""Where one small upload's time goes, read from a loopback packet capture.

Reads a pcap of `tcpdump -i lo` taken while one client uploads (see
bench/upload-timeline.sh) and splits each upload, as the packets between
the processes show it, into the steps the server takes in turn:

  receive   the client's POST arrives -> the intent row goes to PostgreSQL
  intent    PostgreSQL answers the intent (committed without a WAL flush)
  to_put    -> the blob's PUT goes to the store
  put       the store answers the PUT
  to_ready  -> the ready-marking goes to PostgreSQL
  ready     PostgreSQL answers it (a durable commit: a WAL flush)
  respond   -> the server answers the client

and times the raw PUTs the harness sends the store from other ports.
Packets only: nothing runs inside the processes, so nothing is slowed.
Standard library only.

usage: upload-timeline.py CAPTURE [STORE_PORT] [PG_PORT]
(the server's port is the one most POSTs went to, the store's aside)
"""
import collections
import statistics
import struct
import sys

STEPS = ["receive", "intent", "to_put", "put", "to_ready", "ready", "respond", "total"]


def segments(path):
    """(time, source port, destination port, payload start) of every TCP
    segment that carries data, from an Ethernet-framed IPv4 capture."""
    with open(path, "rb") as f:
        header = f.read(24)
        magic = struct.unpack("<I", header[:4])[0]
        endian, nano = {0xA1B2C3D4: ("<", False), 0xA1B23C4D: ("<", True),
                        0xD4C3B2A1: (">", False), 0x4D3CB2A1: (">", True)}[magic]
        while True:
            record = f.read(16)
            if len(record) < 16:
                return
            sec, frac, caught, _ = struct.unpack(endian + "IIII", record)
            frame = f.read(caught)
            if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
                continue  # not IPv4 TCP
            ip_len = (frame[14] & 0x0F) * 4
            total = struct.unpack(">H", frame[16:18])[0]
            tcp = 14 + ip_len
            sport, dport = struct.unpack(">HH", frame[tcp:tcp + 4])
            data_at = tcp + (frame[tcp + 12] >> 4) * 4
            if total - (data_at - 14) <= 0:
                continue  # no payload: an ACK
            yield sec + frac / (1e9 if nano else 1e6), sport, dport, frame[data_at:data_at + 16]


def first_after(times, t):
    later = [u for u in times if u > t]
    return min(later) if later else None


def main(path, store=39100, pg=5432):
    captured = list(segments(path))
    posts = collections.Counter(d for _, _, d, data in captured if data.startswith(b"POST ") and d != store)
    if not posts:
        sys.exit(f"no POST in {path}")
    server = posts.most_common(1)[0][0]
    uploads, current, raw_started, raw = [], None, {}, []
    for ts, sport, dport, data in captured:
        if dport == server and data.startswith(b"POST "):
            current = {"req": ts, "pg_out": [], "pg_in": [], "put": None, "put_port": None, "putr": None}
            uploads.append(current)
        elif current is not None and dport == pg and not data.startswith(b"S\0\0\0\4"):
            # A statement (a lone Sync is sqlx testing a connection it got back).
            current["pg_out"].append(ts)
        elif current is not None and sport == pg:
            current["pg_in"].append(ts)
        elif dport == store and data.startswith(b"PUT "):
            # The server's PUT follows its intent; any other is the harness's.
            if current is not None and current["put"] is None and current["pg_in"] and sport not in raw_started:
                current["put"], current["put_port"] = ts, sport
            else:
                raw_started[sport] = ts
        elif sport == store and data.startswith(b"HTTP/1.1"):
            if current is not None and dport == current["put_port"] and current["putr"] is None:
                current["putr"] = ts
            elif dport in raw_started:
                raw.append(ts - raw_started.pop(dport))
        elif sport == server and data.startswith(b"HTTP/1.1") and current is not None:
            current["resp"] = ts
            current = None

    steps = {name: [] for name in STEPS}
    for u in uploads:
        if u.get("resp") is None or u["putr"] is None:
            continue
        # The last statement before the PUT (a token lookup may come first).
        intent = max((t for t in u["pg_out"] if t < u["put"]), default=None)
        ready = next((t for t in u["pg_out"] if t > u["putr"]), None)
        if intent is None or ready is None:
            continue
        intent_done, ready_done = first_after(u["pg_in"], intent), first_after(u["pg_in"], ready)
        if intent_done is None or ready_done is None or intent_done > u["put"]:
            continue
        marks = [u["req"], intent, intent_done, u["put"], u["putr"], ready, ready_done, u["resp"]]
        for name, a, b in zip(STEPS, marks, marks[1:]):
            steps[name].append((b - a) * 1000)
        steps["total"].append((u["resp"] - u["req"]) * 1000)

    print(f"server on port {server}: uploads timed: {len(steps['total'])} of {len(uploads)}; raw PUTs timed: {len(raw)}")
    print(f"{'step':>9}  {'p50 ms':>7}  {'mean ms':>7}")
    for name in STEPS:
        if steps[name]:
            print(f"{name:>9}  {statistics.median(steps[name]):7.3f}  {statistics.mean(steps[name]):7.3f}")
    if raw:
        print(f"{'raw PUT':>9}  {statistics.median(raw) * 1000:7.3f}  {statistics.mean(raw) * 1000:7.3f}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
