#!/usr/bin/env bash
# make drill: the fault drills in tests/e2e/drill.rs (ignored in make test), release
# build, against a local broker: started here (and stopped at the end) unless
# KAFKA_BOOTSTRAP is set. Prints one DRILL ledger line per drill; lost must be 0.
#
# The broker-down drill stops and restarts the broker, so it runs only against a
# broker this script started (scripts/kafka.sh honours KAFKA_PORT,
# KAFKA_CONTROLLER_PORT, ... and KAFKA_RUN_DIR: set them to run a second broker
# beside a shared one); with KAFKA_BOOTSTRAP set it says "not run".
#
# The ledgers then become the handbook's docs/src/results/drill.md (scripts/results.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/local-broker.sh
if [[ -n "$LOCAL_BROKER" ]]; then
    export DRILL_OWN_BROKER=1
fi
mkdir -p target
status=0
cargo test --locked --release --test e2e -- --ignored --nocapture --test-threads 1 drill:: 2>&1 \
    | tee target/drill.log | grep -oE "DRILL.*|^       [a-z].*|test result.*|panicked.*" || status=$?
python3 scripts/results.py drill target/drill.log docs/src/results/drill.md || true
exit "$status"
