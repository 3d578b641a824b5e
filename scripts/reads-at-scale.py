#!/usr/bin/env python3
"""Reads at scale: load N series into a running server, then measure a big read.

    scripts/reads-at-scale.py load    --target 127.0.0.1:8080 [--series 1000000]
    scripts/reads-at-scale.py render  --target 127.0.0.1:8080 --pid PID [--path /metrics] [--gzip] [--runs 3]
    scripts/reads-at-scale.py latency --target 127.0.0.1:8080 [--reader /metrics] [--seconds 20] [--rate 50]

`load` writes `m,host=h<i> v=1` for i in 0..N in bodies of 10,000 lines (also accepted by
VictoriaMetrics at /write; `--prefix` changes the measurement). `render` times one read to
its last byte, prints its size, and samples the server's VmRSS every 2 ms while it runs
(peak extra RSS = highest sample minus the sample before the request). `latency` sends one
small write (`lat,w=1 v=1`) every 1/rate seconds on one keep-alive connection, open loop:
each write's latency is measured from when it was *due*, so a stall shows up in every write
that was due during it; with `--reader PATH` another connection reads PATH in a loop the
whole time; with `--flood` a third connection posts 10,000-point bodies back to back (the
same 10,000 series over and over), to see whether the queue fills while a read holds up
the aggregator (its 503s are counted). Prints p50/p99/p999/max and how many writes were
not answered 204. With `--visible`, a fourth connection polls `/stats` and notes when
each acknowledged write is counted in `points_aggregated` (applied to the store, so
`/metrics` can show it); that delay is reported too, from when the write was due: the
aggregator waits for the store lock, a write's 204 does not.

Standard library only; every loop is bounded by a count or a deadline.
"""

import argparse
import http.client
import json
import sys
import threading
import time


def conn(target, timeout=60):
    host, port = target.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def load(args):
    c = conn(args.target)
    t0 = time.monotonic()
    sent = 0
    step = 10_000
    while sent < args.series:
        n = min(step, args.series - sent)
        body = "".join(
            f"{args.prefix},host=h{i} v=1\n" for i in range(sent, sent + n)
        ).encode()
        c.request("POST", "/write", body=body)
        r = c.getresponse()
        r.read()
        if r.status not in (200, 204):
            sys.exit(f"write answered {r.status}")
        sent += n
    dt = time.monotonic() - t0
    print(f"loaded {sent} series in {dt:.2f} s ({sent / dt / 1e6:.2f} M points/s)")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def render(args):
    for run in range(args.runs):
        base = rss_kb(args.pid)
        peak = [base]
        stop = threading.Event()

        def sample():
            deadline = time.monotonic() + 600
            while not stop.is_set() and time.monotonic() < deadline:
                peak[0] = max(peak[0], rss_kb(args.pid))
                time.sleep(0.002)

        t = threading.Thread(target=sample)
        t.start()
        c = conn(args.target, timeout=600)
        headers = {"Accept-Encoding": "gzip"} if args.gzip else {}
        t0 = time.monotonic()
        c.request("GET", args.path, headers=headers)
        r = c.getresponse()
        first = time.monotonic()
        body = r.read()
        t1 = time.monotonic()
        stop.set()
        t.join()
        c.close()
        enc = r.getheader("Content-Encoding") or "identity"
        after = rss_kb(args.pid)
        print(
            f"run {run}: {args.path} {r.status} {enc} {len(body) / 1e6:.2f} MB in "
            f"{(t1 - t0) * 1e3:.0f} ms (first byte {(first - t0) * 1e3:.0f} ms); "
            f"RSS before {base / 1024:.0f} MiB, peak +{(peak[0] - base) / 1024:.0f} MiB, "
            f"after +{(after - base) / 1024:.0f} MiB"
        )


def pct(sorted_v, p):
    if not sorted_v:
        return float("nan")
    i = min(len(sorted_v) - 1, int(p / 100 * len(sorted_v)))
    return sorted_v[i]


def latency(args):
    stop = threading.Event()
    reads = [0, 0.0]

    def reader():
        c = conn(args.target, timeout=600)
        deadline = time.monotonic() + args.seconds + 600
        headers = {"Accept-Encoding": "gzip"} if args.gzip else {}
        while not stop.is_set() and time.monotonic() < deadline:
            t0 = time.monotonic()
            c.request("GET", args.reader, headers=headers)
            r = c.getresponse()
            r.read()
            reads[0] += 1
            reads[1] += time.monotonic() - t0

    flood = [0, 0]

    def flooder():
        c = conn(args.target)
        body = "".join(f"flood,host=f{i} v=1\n" for i in range(10_000)).encode()
        deadline = time.monotonic() + args.seconds + 600
        while not stop.is_set() and time.monotonic() < deadline:
            c.request("POST", "/write", body=body)
            r = c.getresponse()
            r.read()
            flood[0 if r.status == 204 else 1] += 1

    fl = None
    if args.flood:
        fl = threading.Thread(target=flooder)
        fl.start()
    th = None
    if args.reader:
        th = threading.Thread(target=reader)
        th.start()
        time.sleep(0.5)  # let the first read start
    c = conn(args.target)
    interval = 1.0 / args.rate
    total = int(args.seconds * args.rate)
    lat = []
    vis = []
    bad = 0
    sc = conn(args.target)

    def aggregated():
        sc.request("GET", "/stats")
        r = sc.getresponse()
        return json.loads(r.read())["points_aggregated"]

    base = aggregated() if args.visible else 0
    acked = []  # due times of the writes answered 204, in order
    writes_done = threading.Event()

    def watcher():
        # Polls /stats on its own connection; the n-th acknowledged write is applied once
        # points_aggregated passes base + n (this client is the only writer).
        n = 0
        deadline = time.monotonic() + args.seconds + 120
        while time.monotonic() < deadline:
            done = aggregated() - base
            now = time.monotonic()
            while n < min(done, len(acked)):
                vis.append(now - acked[n])
                n += 1
            if writes_done.is_set() and n >= len(acked):
                return
            time.sleep(0.0005)

    wt = None
    if args.visible:
        wt = threading.Thread(target=watcher)
        wt.start()
    start = time.monotonic()
    for i in range(total):
        due = start + i * interval
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        c.request("POST", "/write", body=b"lat,w=1 v=1\n")
        r = c.getresponse()
        r.read()
        if r.status != 204:
            bad += 1
        lat.append(time.monotonic() - due)
        if r.status == 204:
            acked.append(due)
    writes_done.set()
    if wt:
        wt.join()
    stop.set()
    for t in (th, fl):
        if t:
            t.join()
    lat.sort()
    ms = lambda x: f"{x * 1e3:.2f}"
    print(
        f"writes {len(lat)} at {args.rate}/s, reader {args.reader or '-'}"
        f"{' (gzip)' if args.gzip else ''}: p50 {ms(pct(lat, 50))} ms, p99 {ms(pct(lat, 99))} ms, "
        f"p999 {ms(pct(lat, 99.9))} ms, max {ms(lat[-1])} ms, not 204: {bad}; "
        f"reads {reads[0]}, mean {ms(reads[1] / max(reads[0], 1))} ms"
        + (f"; flood bodies 204: {flood[0]}, refused: {flood[1]}" if args.flood else "")
    )
    if vis:
        vis.sort()
        print(
            f"  applied to the store: p50 {ms(pct(vis, 50))} ms, p99 {ms(pct(vis, 99))} ms, "
            f"p999 {ms(pct(vis, 99.9))} ms, max {ms(vis[-1])} ms"
        )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["load", "render", "latency"])
    p.add_argument("--target", default="127.0.0.1:8080")
    p.add_argument("--series", type=int, default=1_000_000)
    p.add_argument("--prefix", default="m")
    p.add_argument("--pid", type=int)
    p.add_argument("--path", default="/metrics")
    p.add_argument("--gzip", action="store_true")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--reader")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--rate", type=float, default=50)
    p.add_argument("--flood", action="store_true")
    p.add_argument("--visible", action="store_true")
    args = p.parse_args()
    {"load": load, "render": render, "latency": latency}[args.mode](args)


if __name__ == "__main__":
    main()
