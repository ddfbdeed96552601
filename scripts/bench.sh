#!/usr/bin/env bash
# make bench: the drills in tests/e2e/bench.rs, release build, against a local
# broker (started here unless KAFKA_BOOTSTRAP is set). Prints one BENCH line each.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=""
if [[ -z "${KAFKA_BOOTSTRAP:-}" ]]; then
    eval "$(scripts/kafka.sh up)"
    export KAFKA_BOOTSTRAP
    started=1
fi
trap '[[ -n "$started" ]] && scripts/kafka.sh down' EXIT
cargo test --locked --release --test e2e -- --ignored --nocapture --test-threads 1 bench:: 2>&1 \
    | tee target/bench.log | grep -oE "BENCH.*|test result.*|panicked.*"
