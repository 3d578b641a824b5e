#!/usr/bin/env bash
# Server CPU per request under a standard load generator, as used in docs/benchmarks.md.
#   scripts/cpu-per-request.sh wrk PID URL [SECONDS] [CONNECTIONS]   # keep-alive (wrk -t1)
#   scripts/cpu-per-request.sh ab  PID URL [REQUESTS] [CONNECTIONS]  # churn (ab, one connection per request)
# PID is the server process (for nginx: its worker). CPU is utime+stime from /proc/PID/stat
# (all threads) over the run, divided by the requests completed. The client is pinned to
# core 1 when the machine has two or more cores; pin the server to core 0 yourself
# (taskset -c 0 ...) so the two do not share a core.
set -euo pipefail
tool=$1; pid=$2; url=$3
tck=$(getconf CLK_TCK)
pin=""
if [ "$(nproc)" -ge 2 ]; then pin="taskset -c 1"; fi
cpu() { awk '{print $14+$15}' "/proc/$pid/stat"; }
a=$(cpu)
case $tool in
  wrk)
    out=$($pin wrk -t1 -c"${5:-64}" -d"${4:-10}"s --latency "$url")
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    extra="rps=$(echo "$out" | awk '/Requests\/sec/{print $2}') p50=$(echo "$out" | awk '/ 50%/{print $2}') p99=$(echo "$out" | awk '/ 99%/{print $2}')"
    ;;
  ab)
    reqs=${4:-30000}
    out=$($pin ab -q -c"${5:-64}" -n"$reqs" "$url" 2>&1)
    extra="conn/s=$(echo "$out" | awk '/Requests per second/{print $4}') failed=$(echo "$out" | awk '/Failed requests/{print $3}')"
    ;;
  *) echo "usage: $0 wrk|ab PID URL [N] [CONNECTIONS]" >&2; exit 2 ;;
esac
b=$(cpu)
echo "requests=$reqs $extra cpu_us_per_request=$(awk -v d=$((b-a)) -v t="$tck" -v n="$reqs" 'BEGIN{printf "%.2f", d/t*1e6/n}')"
