#!/usr/bin/env bash
# make bench: the benchmark driver (bench/main.rs, scenarios S0..S8), release
# build, against a local broker (started here unless KAFKA_BOOTSTRAP is set).
# Arguments go to the driver: scripts/bench.sh --scenario S0,S2 --scale 0.2
# (make bench BENCH_ARGS="--scenario S0"). Prints a table; JSON in .bench/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/local-broker.sh
mkdir -p .bench
cargo run --locked --release --example bench -- "$@" 2>&1 | tee .bench/bench.log
