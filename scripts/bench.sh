#!/usr/bin/env bash
# make bench: the benchmark driver (bench/main.rs, scenarios S0..S8), release
# build, against a local broker (started here unless KAFKA_BOOTSTRAP is set).
# Arguments go to the driver: scripts/bench.sh --scenario S0,S2 --scale 0.2
# (make bench BENCH_ARGS="--scenario S0"). Prints a table; JSON in .bench/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=""
if [[ -z "${KAFKA_BOOTSTRAP:-}" ]]; then
    # Assigned first: `set -e` stops here when the broker does not start (an
    # `eval "$(...)"` alone would go on without it).
    broker_env="$(scripts/kafka.sh up)"
    eval "$broker_env"
    export KAFKA_BOOTSTRAP
    started=1
fi
trap '[[ -n "$started" ]] && scripts/kafka.sh down' EXIT
mkdir -p .bench
cargo run --locked --release --example bench -- "$@" 2>&1 | tee .bench/bench.log
