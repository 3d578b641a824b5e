#!/usr/bin/env bash
# Forwarding benchmark of docs/benchmarks.md, "Forwarding vs vmagent": N points written over
# 64 connections in 1000-line bodies to a forwarder's /write, forwarded with remote_write to
# VictoriaMetrics, counted there with its own vm_rows_inserted_total{type="promremotewrite"}.
#   scripts/forward-vs-vmagent.sh [ROUNDS] [POINTS] [OUT_DIR] [FORWARDERS]
# FORWARDERS: "metricstream vmagent" (default, alternating which goes first each round),
# or one of them. Each run starts a fresh VictoriaMetrics and a fresh forwarder, each on its
# own temporary directory and loopback port, and stops both by PID (also on exit or error).
# One JSON report per run in OUT_DIR, one summary line per run on stdout.
# Build first: cargo build --release --workspace --bins
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
points=${2:-10000000}
out=${3:-/tmp/forward-bench}
forwarders=${4:-metricstream vmagent}
bin=${CARGO_TARGET_DIR:-target}/release
vm_port=${VM_PORT:-18428}
fwd_port=${FWD_PORT:-18430}
mkdir -p "$out"
work=$(mktemp -d /tmp/forward-bench.XXXXXX)
pids=()

stop() {
  local pid
  for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    # At most 30 s for a graceful stop, then kill -9.
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
cleanup() {
  if [ ${#pids[@]} -gt 0 ]; then stop "${pids[@]}"; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Waits (at most 20 s) until http://127.0.0.1:PORT/PATH answers.
ready() {
  for _ in $(seq 200); do
    curl -fs -o /dev/null "http://127.0.0.1:$1$2" && return 0
    sleep 0.1
  done
  echo "nothing answers on 127.0.0.1:$1$2" >&2
  return 1
}

run() { # run NAME ROUND
  local name=$1 round=$2 vm fwd
  rm -rf "$work"/*
  victoria-metrics -storageDataPath="$work/vm" -httpListenAddr="127.0.0.1:$vm_port" \
    >"$out/vm-$name-$round.log" 2>&1 &
  vm=$!; pids=("$vm")
  ready "$vm_port" /health
  case $name in
    metricstream)
      "$bin/metricstream" --listen "127.0.0.1:$fwd_port" --data-dir "$work/ms" \
        --remote-write-url "http://127.0.0.1:$vm_port/api/v1/write" \
        >"$out/$name-$round.log" 2>&1 &
      fwd=$!; pids+=("$fwd"); ready "$fwd_port" /ping ;;
    vmagent)
      vmagent -httpListenAddr="127.0.0.1:$fwd_port" \
        -remoteWrite.url="http://127.0.0.1:$vm_port/api/v1/write" \
        -remoteWrite.tmpDataPath="$work/vmagent" \
        >"$out/$name-$round.log" 2>&1 &
      fwd=$!; pids+=("$fwd"); ready "$fwd_port" /health ;;
    *) echo "unknown forwarder $name" >&2; return 2 ;;
  esac
  local threads=()
  if [ "$name" = metricstream ]; then threads=(--threads forward); fi
  "$bin/metricstream-bench" forward --target "127.0.0.1:$fwd_port" \
    --receiver "127.0.0.1:$vm_port" --points "$points" -c 64 -b 1000 \
    --pid "$fwd" "${threads[@]}" --receiver-pid "$vm" --json \
    >"$out/$name-$round.json" 2>"$out/$name-$round.txt" || true
  stop "$fwd" "$vm"; pids=()
  jq -r --arg n "$name" --arg r "$round" '"round \($r) \($n): ingest \(.ingest_samples_per_sec) samples/s, e2e \(.e2e_samples_per_sec) samples/s (\(.e2e_secs) s), non-2xx \(.non_2xx), forwarder \(.cpu_total.forwarder_us_per_sample) us/sample (forward threads \(.cpu_total.prefixed_threads_us_per_sample)), receiver \(.cpu_total.receiver_us_per_sample) us/sample, complete \(.complete)"' \
    "$out/$name-$round.json"
}

for round in $(seq "$rounds"); do
  order=($forwarders)
  if [ $((round % 2)) -eq 0 ] && [ ${#order[@]} -eq 2 ]; then order=("${order[1]}" "${order[0]}"); fi
  for name in "${order[@]}"; do run "$name" "$round"; done
done
