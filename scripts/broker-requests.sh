#!/usr/bin/env bash
# Prints the local broker's request counts by type since it started (one line
# each, summed over API versions), read over JMX with Kafka's own JmxTool.
# The broker must have been started with KAFKA_JMX_PORT (scripts/kafka.sh);
# KAFKA_TOOLS_CLASSPATH is what `scripts/kafka.sh up` prints. Take it before
# and after a run and subtract, e.g.:
#   scripts/broker-requests.sh >before; make bench BENCH_ARGS="--scenario 'S3 cap' --repeat 1"
#   scripts/broker-requests.sh >after; join before after | awk '{print $1, $3 - $2}'
set -euo pipefail
port="${KAFKA_JMX_PORT:?start the broker with KAFKA_JMX_PORT set and export it here}"
classpath="${KAFKA_TOOLS_CLASSPATH:?export what scripts/kafka.sh up prints}"
java -cp "${classpath// /:}" org.apache.kafka.tools.JmxTool \
    --object-name 'kafka.network:type=RequestMetrics,name=RequestsPerSec,*' --attributes Count \
    --jmx-url "service:jmx:rmi:///jndi/rmi://127.0.0.1:$port/jmxrmi" --one-time true --report-format properties 2>/dev/null |
    sed -n 's/.*request=\([A-Za-z]*\),version=[0-9]*:Count=\(.*\)/\1 \2/p' |
    awk '{n[$1] += $2} END {for (k in n) print k, n[k]}' | sort
