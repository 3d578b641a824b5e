#!/usr/bin/env bash
# Builds the release binaries, then compares metricstream's I/O models (and nginx and
# VictoriaMetrics, when installed) on this machine: `metricstream-bench compare`, whose
# options pass through. Examples:
#   scripts/compare.sh --quick                  # ~2-3 minutes, results in bench-results/
#   scripts/compare.sh --out /tmp/full-run      # the full plan
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
exec target/release/metricstream-bench compare "$@"
