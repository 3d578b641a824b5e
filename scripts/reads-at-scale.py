#!/usr/bin/env python3
"""Reads at scale: load N series into a running server, then measure a big read.

    scripts/reads-at-scale.py load    --target 127.0.0.1:8080 [--series 1000000]
    scripts/reads-at-scale.py render  --target 127.0.0.1:8080 --pid PID [--path scrape] [--gzip] [--runs 3]
    scripts/reads-at-scale.py latency --target 127.0.0.1:8080 [--reader scrape] [--seconds 20] [--rate 50]
    scripts/reads-at-scale.py rss     --pid PID [--baseline KB --series N] [--settle 10]
    scripts/reads-at-scale.py table   --record FILE

`--kind` says what listens at `--target`: `metricstream` (default), `victoria`
(VictoriaMetrics single node) or `influx` (InfluxDB 1.x, database `--db`, created by
`load`). Writes go to each one's line-protocol endpoint (`/write`, `/write?db=DB`). The
path `scrape` (the default for `render`) is each one's closest read to a Prometheus scrape
of every series: metricstream `/metrics`; VictoriaMetrics `/federate?match[]={__name__!=""}`
(the text exposition with the last sample of every series, which is what a scrape returns;
`/api/v1/export` is a dump of every stored sample as JSON lines, not a scrape);
InfluxDB `/query?q=SELECT last(v) FROM m GROUP BY *` (one JSON series per tag set with its
last value; InfluxDB has no exposition of its own data).

`load` writes `m,host=h<i> v=1` for i in 0..N in bodies of 10,000 lines (also accepted by
VictoriaMetrics at /write; `--prefix` changes the measurement). `render` times one read to
its last byte, prints its size, and samples the server's VmRSS every 2 ms while it runs
(peak extra RSS = highest sample minus the sample before the request). `latency` sends one
small write (`lat,w=1 v=1`) every 1/rate seconds on one keep-alive connection, open loop:
each write's latency is measured from when it was *due*, so a stall shows up in every write
that was due during it; with `--reader PATH` another connection reads PATH in a loop the
whole time (`--readers N`: N connections, each in a loop, as an HA pair of Prometheus
servers scraping one target would); with `--flood` a third connection posts 10,000-point bodies back to back (the
same 10,000 series over and over), to see whether the queue fills while a read holds up
the aggregator (its 503s are counted). Prints p50/p99/p999/max and how many writes were
not answered 204; writes still unsent `--late-limit` seconds after the last was due are
given up, counted, and their latency taken as a lower bound (due until given up). With `--visible`, a fourth connection polls `/stats` and notes when
each acknowledged write is counted in `points_aggregated` (applied to the store, so
`/metrics` can show it); that delay is reported too, from when the write was due: the
aggregator waits for the store lock, a write's 204 does not.

`render` also counts the series in each answer (decompressed), so a server that cut the
answer short shows. `rss` prints VmRSS of PID; with `--baseline KB` (an earlier `rss`,
taken before the load) and `--series N`, the growth and the RSS per series; with
`--settle S`, it first waits (at most `--max-wait` s) until RSS moved less than 1 MiB over
the last S seconds (VictoriaMetrics flushes in-memory parts seconds after a load). With
`--record FILE --label NAME`, `load`, `render`, `latency` and `rss` also append one JSON
line to FILE; `table` prints those as one markdown table, a column per label.

Standard library only; every loop is bounded by a count or a deadline.
"""

import argparse
import gzip
import http.client
import json
import sys
import threading
import time
import urllib.parse

KINDS = ("metricstream", "victoria", "influx")


def conn(target, timeout=60):
    host, port = target.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def write_path(args):
    if args.kind == "influx":
        return "/write?" + urllib.parse.urlencode({"db": args.db})
    return "/write"


def resolve(args, path):
    """`scrape` -> the kind's read of every series (see the module doc); others as given."""
    if path != "scrape":
        return path
    if args.kind == "victoria":
        return "/federate?" + urllib.parse.urlencode({"match[]": '{__name__!=""}'})
    if args.kind == "influx":
        q = f"SELECT last(v) FROM {args.prefix} GROUP BY *"
        return "/query?" + urllib.parse.urlencode({"db": args.db, "q": q})
    return "/metrics"


def record(args, what, **fields):
    if args.record:
        with open(args.record, "a") as f:
            f.write(json.dumps({"label": args.label, "what": what, **fields}) + "\n")


def count_series(args, body):
    """Series in one scrape answer: samples of the loaded family (`<prefix>_v`, or for
    InfluxDB the JSON series of the loaded measurement)."""
    if args.kind == "influx":
        try:
            results = json.loads(body).get("results", [])
        except ValueError:
            return -1
        return sum(len(r.get("series", [])) for r in results)
    family = f"{args.prefix}_v{{".encode()
    return sum(1 for line in body.split(b"\n") if line.startswith(family))


def load(args):
    c = conn(args.target)
    if args.kind == "influx":
        q = urllib.parse.urlencode({"q": f"CREATE DATABASE {args.db}"})
        c.request("POST", "/query?" + q)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            sys.exit(f"CREATE DATABASE answered {r.status}")
    path = write_path(args)
    t0 = time.monotonic()
    sent = 0
    step = 10_000
    while sent < args.series:
        n = min(step, args.series - sent)
        body = "".join(
            f"{args.prefix},host=h{i} v=1\n" for i in range(sent, sent + n)
        ).encode()
        c.request("POST", path, body=body)
        r = c.getresponse()
        answer = r.read()
        if r.status not in (200, 204):
            sys.exit(f"write answered {r.status}: {answer[:200]!r}")
        sent += n
    dt = time.monotonic() - t0
    print(f"loaded {sent} series in {dt:.2f} s ({sent / dt / 1e6:.2f} M points/s)")
    record(args, "load", series=sent, secs=dt)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def render(args):
    path = resolve(args, args.path)
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
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        first = time.monotonic()
        body = r.read()
        t1 = time.monotonic()
        stop.set()
        t.join()
        c.close()
        enc = r.getheader("Content-Encoding") or "identity"
        after = rss_kb(args.pid)
        plain = gzip.decompress(body) if enc == "gzip" else body
        series = count_series(args, plain)
        print(
            f"run {run}: {args.path} {r.status} {enc} {len(body) / 1e6:.2f} MB in "
            f"{(t1 - t0) * 1e3:.0f} ms (first byte {(first - t0) * 1e3:.0f} ms); "
            f"RSS before {base / 1024:.0f} MiB, peak +{(peak[0] - base) / 1024:.0f} MiB, "
            f"after {(after - base) / 1024:+.0f} MiB; {series} series"
        )
        record(
            args, "render", path=args.path, run=run, status=r.status, encoding=enc,
            gzip_asked=args.gzip, bytes=len(body), plain_bytes=len(plain), secs=t1 - t0,
            peak_kb=peak[0] - base, series=series,
        )


def pct(sorted_v, p):
    if not sorted_v:
        return float("nan")
    i = min(len(sorted_v) - 1, int(p / 100 * len(sorted_v)))
    return sorted_v[i]


def latency(args):
    if args.visible and args.kind != "metricstream":
        sys.exit("--visible reads metricstream's /stats")
    reader_path = resolve(args, args.reader) if args.reader else None
    wpath = write_path(args)
    stop = threading.Event()
    reads = [0, 0.0, 0]  # reads, their total time, answers other than 200
    counted = threading.Lock()

    def reader():
        c = conn(args.target, timeout=600)
        deadline = time.monotonic() + args.seconds + 600
        headers = {"Accept-Encoding": "gzip"} if args.gzip else {}
        while not stop.is_set() and time.monotonic() < deadline:
            t0 = time.monotonic()
            c.request("GET", reader_path, headers=headers)
            r = c.getresponse()
            r.read()
            with counted:
                reads[0] += 1
                reads[1] += time.monotonic() - t0
                reads[2] += r.status != 200

    flood = [0, 0]

    def flooder():
        c = conn(args.target)
        body = "".join(f"flood,host=f{i} v=1\n" for i in range(10_000)).encode()
        deadline = time.monotonic() + args.seconds + 600
        while not stop.is_set() and time.monotonic() < deadline:
            c.request("POST", wpath, body=body)
            r = c.getresponse()
            r.read()
            flood[0 if r.status == 204 else 1] += 1

    fl = None
    if args.flood:
        fl = threading.Thread(target=flooder)
        fl.start()
    ths = []
    if args.reader:
        ths = [threading.Thread(target=reader) for _ in range(args.readers)]
        for th in ths:
            th.start()
        time.sleep(0.5)  # let the first reads start
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
    # One connection sends the writes one after the other: if each waits long (a write
    # stuck behind reads), sending all of them would take many times --seconds. Past
    # --late-limit seconds after the last one was due, the rest are not sent; their
    # latency counts from when each was due to then (a lower bound).
    give_up = start + args.seconds + args.late_limit
    unsent = 0
    for i in range(total):
        due = start + i * interval
        now = time.monotonic()
        if now > give_up:
            unsent = total - i
            lat.extend(now - (start + j * interval) for j in range(i, total))
            break
        if now < due:
            time.sleep(due - now)
        c.request("POST", wpath, body=b"lat,w=1 v=1\n")
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
    for t in ths + [fl]:
        if t:
            t.join()
    lat.sort()
    ms = lambda x: f"{x * 1e3:.2f}"
    print(
        f"writes {len(lat)} at {args.rate}/s, reader {args.reader or '-'}"
        f"{f' x{args.readers}' if args.reader and args.readers > 1 else ''}"
        f"{' (gzip)' if args.gzip else ''}: p50 {ms(pct(lat, 50))} ms, p99 {ms(pct(lat, 99))} ms, "
        f"p999 {ms(pct(lat, 99.9))} ms, max {ms(lat[-1])} ms, not 204: {bad}, "
        f"not sent (given up): {unsent}; "
        f"reads {reads[0]} ({reads[2]} not 200), mean {ms(reads[1] / max(reads[0], 1))} ms"
        + (f"; flood bodies 204: {flood[0]}, refused: {flood[1]}" if args.flood else "")
    )
    if vis:
        vis.sort()
        print(
            f"  applied to the store: p50 {ms(pct(vis, 50))} ms, p99 {ms(pct(vis, 99))} ms, "
            f"p999 {ms(pct(vis, 99.9))} ms, max {ms(vis[-1])} ms"
        )
    record(
        args, "latency", reader=args.reader, readers=args.readers if args.reader else 0,
        gzip=args.gzip, writes=len(lat),
        p50=pct(lat, 50), p99=pct(lat, 99), max=lat[-1], not_204=bad, unsent=unsent,
        reads=reads[0],
        read_mean=reads[1] / max(reads[0], 1), reads_not_200=reads[2],
    )


def rss(args):
    now = rss_kb(args.pid)
    if args.settle:
        # Stable: the last `settle` one-second samples lie within 1 MiB of each other.
        samples = [now]
        deadline = time.monotonic() + args.max_wait
        need = int(args.settle) + 1
        while time.monotonic() < deadline:
            window = samples[-need:]
            if len(window) == need and max(window) - min(window) < 1024:
                break
            time.sleep(1)
            samples.append(rss_kb(args.pid))
        now = samples[-1]
        print(f"RSS settled after {len(samples) - 1} s" if len(samples) > need
              else f"RSS stable over {args.settle:.0f} s")
    if args.baseline is None:
        print(f"RSS {now} kB ({now / 1024:.0f} MiB)")
        record(args, "rss", rss_kb=now)
        return
    grown = now - args.baseline
    per = grown * 1024 / args.series if args.series else 0
    print(
        f"RSS {now / 1024:.0f} MiB, baseline {args.baseline / 1024:.0f} MiB: "
        f"+{grown / 1024:.0f} MiB for {args.series} series, {per:.0f} B per series"
    )
    record(args, "rss", rss_kb=now, baseline_kb=args.baseline, series=args.series,
           per_series=per)


def table(args):
    """The records of `--record` as one markdown table: a column per label, in order of
    first appearance; the first render of each kind (the telling one for peak RSS) and the
    fastest of its runs."""
    rows = []
    with open(args.record) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    cells = {}

    def put(key, label, text):
        cells.setdefault(key, {})[label] = text

    ms = lambda x: f"{x * 1e3:,.0f}" if x >= 0.1 else f"{x * 1e3:.2f}"
    lat_base = {}
    for r in rows:
        label, what = r["label"], r["what"]
        if what == "load":
            put("load", label, f"{r['secs']:.2f} s")
        elif what == "rss" and "per_series" in r:
            put("rss", label,
                f"+{(r['rss_kb'] - r['baseline_kb']) / 1024:,.0f} MiB, **{r['per_series']:,.0f} B**")
        elif what == "render":
            key = "render gzip" if r["gzip_asked"] else "render plain"
            enc = "" if r["encoding"] == "identity" or not r["gzip_asked"] else " gzip"
            if r["gzip_asked"] and r["encoding"] != "gzip":
                enc = " (no gzip)"
            prev = cells.get(key, {}).get(label)
            runs = (prev[1] if prev else []) + [r["secs"]]
            first = prev[0] if prev else r
            cells.setdefault(key, {})[label] = (first, runs, enc)
        elif what == "latency":
            key = "latency " + ("alone" if not r["reader"] else
                                "reads" if r.get("readers", 1) == 1 else "reads2")
            if not r["reader"]:
                lat_base[label] = r["p99"]
            put(key, label,
                f"{ms(r['p50'])} / {ms(r['p99'])} / {ms(r['max'])} ms"
                + (f", {r['not_204']} not 204" if r["not_204"] else "")
                + (f", **{r['unsent']} of {r['writes']} not sent**" if r.get("unsent") else "")
                + (f" (reads: {r['reads']}, mean {r['read_mean']:.2f} s"
                   + (f", {r['reads_not_200']} not 200" if r.get("reads_not_200") else "")
                   + ")" if r["reader"] else ""))
            if r["reader"] and label in lat_base and lat_base[label] > 0:
                key = "ratio" if r.get("readers", 1) == 1 else "ratio2"
                x = r["p99"] / lat_base[label]
                put(key, label, f"{x:,.0f}×" if x >= 10 else f"{x:.1f}×")
    for key in ("render plain", "render gzip"):
        for label, (first, runs, enc) in list(cells.get(key, {}).items()):
            cells[key][label] = (
                f"{first['bytes'] / 1e6:.2f} MB{enc}, {min(runs):.2f}–{max(runs):.2f} s, "
                f"peak +{first['peak_kb'] / 1024:,.0f} MiB, {first['series']:,} series"
            )
    names = [
        ("load", "load (one connection, 10,000-line bodies), until answered"),
        ("rss", "RSS growth, per series (settled)"),
        ("render plain", "scrape, plain: size, time, peak extra RSS (first run), series"),
        ("render gzip", "scrape, `Accept-Encoding: gzip`: same"),
        ("latency alone", "1-point write p50 / p99 / max, nothing else running"),
        ("latency reads", "1-point write p50 / p99 / max, gzip scrapes in a loop"),
        ("ratio", "write p99 during scrapes / alone"),
        ("latency reads2", "1-point write p50 / p99 / max, two gzip scrapers in a loop each"),
        ("ratio2", "write p99 during two scrapers / alone"),
    ]
    print("| | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for key, name in names:
        if key in cells:
            print(f"| {name} | " + " | ".join(cells[key].get(l, "—") for l in labels) + " |")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["load", "render", "latency", "rss", "table"])
    p.add_argument("--target", default="127.0.0.1:8080")
    p.add_argument("--kind", choices=KINDS, default="metricstream")
    p.add_argument("--db", default="reads")
    p.add_argument("--series", type=int, default=1_000_000)
    p.add_argument("--prefix", default="m")
    p.add_argument("--pid", type=int)
    p.add_argument("--path", default="scrape")
    p.add_argument("--gzip", action="store_true")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--reader")
    p.add_argument("--readers", type=int, default=1)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--late-limit", type=float, default=30)
    p.add_argument("--rate", type=float, default=50)
    p.add_argument("--flood", action="store_true")
    p.add_argument("--visible", action="store_true")
    p.add_argument("--baseline", type=int, help="kB, from an earlier `rss`")
    p.add_argument("--settle", type=float, default=0)
    p.add_argument("--max-wait", type=float, default=60)
    p.add_argument("--record", help="append one JSON line per result to this file")
    p.add_argument("--label", default="")
    args = p.parse_args()
    modes = {"load": load, "render": render, "latency": latency, "rss": rss, "table": table}
    modes[args.mode](args)


if __name__ == "__main__":
    main()
