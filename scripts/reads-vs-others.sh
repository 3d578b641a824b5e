#!/usr/bin/env bash
# Reads at 1 M series, side by side (docs/benchmarks.md, issue 13): metricstream (memory
# only, then with the write log), VictoriaMetrics single node and InfluxDB 1.x, each started
# fresh on a loopback port in its own temporary directory, loaded with the same series
# (`m,host=h<i> v=1`, 10,000-line bodies on one connection), then measured with
# scripts/reads-at-scale.py: RSS per series once RSS is stable, the scrape of every series
# (plain and gzip: time, size, peak extra RSS), and 1-point write latency (open loop, from
# when each write was due) alone, while gzip scrapes run in a loop on one connection, and
# on two (writes still unsent 30 s after the last was due are given up and counted). Each
# server is stopped by PID (also on exit or error) before the next starts. Prints a
# markdown table.
#   scripts/reads-vs-others.sh [SERIES] [OUT_DIR] [SERVERS]
# SERVERS: any of "ms-memory ms-log victoria influx" (default: all four, in that order).
# Build first: cargo build --release (uses $CARGO_TARGET_DIR/release/metricstream).
# About 8-9 minutes for 1 M series on 2 cores, most of it InfluxDB's load and scrapes.
set -euo pipefail
cd "$(dirname "$0")/.."
series=${1:-1000000}
out=${2:-/tmp/reads-vs-others}
servers=${3:-ms-memory ms-log victoria influx}
bin=${CARGO_TARGET_DIR:-target}/release/metricstream
port=${PORT:-18960}
runs=${RUNS:-2}            # scrapes of each kind per server (InfluxDB: 1, each takes ~40 s)
alone=${ALONE_SECONDS:-10} # latency without reads
busy=${BUSY_SECONDS:-15}   # latency with gzip scrapes in a loop
S=scripts/reads-at-scale.py
T=127.0.0.1:$port
mkdir -p "$out"
rec="$out/results.jsonl"
: >"$rec"
work=$(mktemp -d /tmp/reads-vs-others.XXXXXX)
pid=""

stop() { # stop PID: SIGTERM, at most 30 s, then SIGKILL
  kill "$1" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  if [ -n "$pid" ]; then stop "$pid"; fi
  rm -rf "$work"
}
trap cleanup EXIT

ready() { # ready PATH STATUS: at most 30 s until http://$T/PATH answers STATUS
  for _ in $(seq 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$T$1")" = "$2" ] && return 0
    sleep 0.1
  done
  echo "nothing answers $2 on $T$1" >&2
  return 1
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

run() { # run NAME
  local name=$1 kind label dir="$work/$1" n=$runs
  mkdir -p "$dir"
  case $name in
    ms-memory)
      kind=metricstream; label="metricstream --memory-only"
      "$bin" --listen "$T" --memory-only --max-series 3000000 >"$out/$name.log" 2>&1 &
      pid=$!; ready /ping 204 ;;
    ms-log)
      kind=metricstream; label="metricstream, write log"
      "$bin" --listen "$T" --data-dir "$dir/data" --max-series 3000000 >"$out/$name.log" 2>&1 &
      pid=$!; ready /ping 204 ;;
    victoria)
      # /federate refuses more than -search.maxFederateSeries series (1,000,000 by
      # default: exactly the load, and the latency writes add one more).
      kind=victoria; label="VictoriaMetrics"
      victoria-metrics -storageDataPath="$dir/data" -httpListenAddr="$T" -loggerLevel=ERROR \
        -search.maxFederateSeries=3000000 >"$out/$name.log" 2>&1 &
      pid=$!; ready /health 200 ;;
    influx)
      # The defaults refuse the load: max-series-per-database and max-values-per-tag
      # (host has 1 M values) are lifted; the index is the default in-memory one.
      kind=influx; label="InfluxDB"; n=1
      cat >"$dir/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$((port + 1))"
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
  max-series-per-database = 0
  max-values-per-tag = 0
[monitor]
  store-enabled = false
[http]
  bind-address = "$T"
  log-enabled = false
[logging]
  level = "warn"
EOF
      # INFLUXDB_* variables would override the file: the file is the whole configuration.
      env $(env | awk -F= '/^INFLUXDB_/ {print "-u " $1}') \
        influxd run -config "$dir/influxdb.conf" >"$out/$name.log" 2>&1 &
      pid=$!; ready /ping 204 ;;
    *) echo "unknown server $name" >&2; return 2 ;;
  esac
  local a=(--kind "$kind" --target "$T" --record "$rec" --label "$label")
  echo "== $label (PID $pid), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  sleep 2 # the baseline after start-up's own allocations
  local base; base=$(rss_kb "$pid")
  python3 $S load "${a[@]}" --series "$series"
  if [ "$kind" = victoria ]; then curl -fs -o /dev/null "http://$T/internal/force_flush"; fi
  python3 $S rss "${a[@]}" --pid "$pid" --baseline "$base" --series "$series" --settle 10 --max-wait 90
  python3 $S render "${a[@]}" --pid "$pid" --gzip --runs "$n"
  python3 $S render "${a[@]}" --pid "$pid" --runs "$n"
  python3 $S latency "${a[@]}" --seconds "$alone"
  python3 $S latency "${a[@]}" --seconds "$busy" --reader scrape --gzip
  # Two scrapers, as an HA pair of Prometheus servers scraping one target would.
  python3 $S latency "${a[@]}" --seconds "$busy" --reader scrape --gzip --readers 2
  stop "$pid"; pid=""
  rm -rf "$dir"
}

started=$(date +%s)
echo "metricstream $(git rev-parse --short HEAD), VictoriaMetrics $(dpkg-query -W -f '${Version}' victoria-metrics 2>/dev/null || echo "?")," \
  "$(influxd version 2>&1 | head -1); $series series; $(nproc) CPUs"
for name in $servers; do run "$name"; done
echo "== $(( $(date +%s) - started )) s, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
python3 $S table --record "$rec" | tee "$out/table.md"
