#!/usr/bin/env bash
# make run: local Kafka (unless KAFKA_BOOTSTRAP is set), topics ensure, hookrelay run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
config="${1:-hookrelay.example.toml}"
if [[ -z "${KAFKA_BOOTSTRAP:-}" ]]; then
    # Assigned first: `set -e` stops here when the broker does not start (an
    # `eval "$(...)"` alone would go on without it).
    broker_env="$(scripts/kafka.sh up)"
    eval "$broker_env"
fi
export HOOKRELAY_KAFKA__BROKERS="$KAFKA_BOOTSTRAP"
# Local runs deliver to receivers on this machine.
export HOOKRELAY_DELIVERY__ALLOW_PRIVATE_NETWORKS="${HOOKRELAY_DELIVERY__ALLOW_PRIVATE_NETWORKS:-true}"
bin=target/debug/hookrelay
"$bin" --config "$config" topics ensure
echo "hookrelay: running; try: $bin --config $config send --url http://127.0.0.1:8080/hook --payload '{\"a\":1}'" >&2
exec "$bin" --config "$config" run
