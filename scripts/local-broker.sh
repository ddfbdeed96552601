# shellcheck shell=bash
# Sourced by scripts/test.sh, bench.sh and drill.sh (not run): starts the local
# broker unless KAFKA_BOOTSTRAP is set, exports what `scripts/kafka.sh up`
# prints, and stops that broker when the sourcing script exits. Sets
# LOCAL_BROKER=1 when it started one.
LOCAL_BROKER=""
if [[ -z "${KAFKA_BOOTSTRAP:-}" ]]; then
    # Assigned first: `set -e` stops here when the broker does not start (an
    # `eval "$(...)"` alone would go on without it).
    broker_env="$(scripts/kafka.sh up)"
    eval "$broker_env"
    export KAFKA_BOOTSTRAP KAFKA_SASL_BOOTSTRAP KAFKA_SASL_USERNAME KAFKA_SASL_PASSWORD KAFKA_SSL_BOOTSTRAP KAFKA_SSL_CA \
        KAFKA_MTLS_BOOTSTRAP KAFKA_CLIENT_CERT KAFKA_CLIENT_KEY KAFKA_SASL_REAUTH_BOOTSTRAP KAFKA_TOOLS_CLASSPATH
    LOCAL_BROKER=1
fi
stop_local_broker() { if [[ -n "$LOCAL_BROKER" ]]; then scripts/kafka.sh down || true; fi; }
trap stop_local_broker EXIT
