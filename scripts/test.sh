#!/usr/bin/env bash
# make test: every test against a real Kafka broker. Starts the local broker
# unless KAFKA_BOOTSTRAP is set, and always stops what it started.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Say everything a fresh machine lacks before starting anything.
scripts/prereqs.sh test

started=""
if [[ -z "${KAFKA_BOOTSTRAP:-}" ]]; then
    # Assigned first: `set -e` stops here when the broker does not start (an
    # `eval "$(...)"` alone would go on without it).
    broker_env="$(scripts/kafka.sh up)"
    eval "$broker_env"
    export KAFKA_BOOTSTRAP KAFKA_SASL_BOOTSTRAP KAFKA_SASL_USERNAME KAFKA_SASL_PASSWORD KAFKA_SSL_BOOTSTRAP KAFKA_SSL_CA \
        KAFKA_MTLS_BOOTSTRAP KAFKA_CLIENT_CERT KAFKA_CLIENT_KEY KAFKA_SASL_REAUTH_BOOTSTRAP KAFKA_TOOLS_CLASSPATH
    started=1
fi
stop() { if [[ -n "$started" ]]; then scripts/kafka.sh down || true; fi; }
trap stop EXIT

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
