#!/usr/bin/env bash
# make test: every test against a real Kafka broker. Starts the local broker
# unless KAFKA_BOOTSTRAP is set, and always stops what it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Say everything a fresh machine lacks before starting anything.
scripts/prereqs.sh test

source scripts/local-broker.sh

scripts/test-deps.sh
status=0
if [[ -x scripts/check-deploy.sh ]]; then
    echo "== deploy checks (manifests, alert rules, compose, dashboard)"
    scripts/check-deploy.sh || status=$?
fi
echo "== cargo test (KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP)"
# End-to-end tests mostly wait on brokers and receivers, so more threads than cores.
cargo test --locked --all-targets -- --test-threads "${TEST_THREADS:-6}" || status=$?
exit "$status"
