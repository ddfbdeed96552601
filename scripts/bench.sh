#!/usr/bin/env bash
# make bench: the benchmark driver (bench/main.rs, scenarios S0..S8), release
# build, against a local broker (started here unless KAFKA_BOOTSTRAP is set).
# Arguments go to the driver: scripts/bench.sh --scenario S0,S2 --scale 0.2
# (make bench BENCH_ARGS="--scenario S0"). Prints a table; JSON in .bench/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=""
if [[ -z "${KAFKA_BOOTSTRAP:-}" ]]; then
    eval "$(scripts/kafka.sh up)"
    export KAFKA_BOOTSTRAP
    started=1
fi
trap '[[ -n "$started" ]] && scripts/kafka.sh down' EXIT
mkdir -p .bench
cargo run --locked --release --example bench -- "$@" 2>&1 | tee .bench/bench.log
