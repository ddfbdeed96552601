#!/usr/bin/env bash
# make bench: the benchmark driver (bench/main.rs, scenarios S0..S12, each
# repeated 3 times), release build, against a local broker (started here unless
# KAFKA_BOOTSTRAP is set). Arguments go to the driver:
# scripts/bench.sh --scenario S0,S2 --quick (make bench BENCH_ARGS="--quick").
# Prints a table of medians and spreads and the targets; JSON in .bench/; a full
# run (every scenario, not --quick) also writes docs/src/results/bench.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/local-broker.sh
mkdir -p .bench
cargo run --locked --release --example bench -- "$@" 2>&1 | tee .bench/bench.log
