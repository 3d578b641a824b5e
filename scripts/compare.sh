#!/usr/bin/env bash
# Builds the release binaries, then compares metricstream's I/O models (and nginx and
# VictoriaMetrics, when installed) on this machine: `metricstream-bench compare`, whose
# options pass through. Examples:
#   scripts/compare.sh --quick                  # ~2-3 minutes, results in bench-results/
#   scripts/compare.sh --out /tmp/full-run      # the full plan
set -euo pipefail
cd "$(dirname "$0")/.."
# Both crates of the workspace: the server and the load generator (bench/), which finds the
# server binary next to its own.
cargo build --release --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/release/metricstream-bench" compare "$@"
