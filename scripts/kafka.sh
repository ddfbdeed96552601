#!/usr/bin/env bash
# Run a throwaway single-node Apache Kafka 4.x broker (KRaft, combined
# broker+controller) on 127.0.0.1 for hookrelay's tests. No Docker needed:
# the broker jars come from Maven Central (scripts/kafka/pom.xml) and run on
# the local `java` (17+).
#
#   scripts/kafka.sh up       start (or reuse) the broker, wait until it serves clients
#   scripts/kafka.sh down     stop it (SIGTERM, then SIGKILL after 30 s)
#   scripts/kafka.sh restart  stop it and start it again on the same data (drills)
#   scripts/kafka.sh status   exit 0 and print the bootstrap servers when it runs
#   scripts/kafka.sh logs     print broker.log (`logs -f` follows it)
#
# On success `up`/`status` print, on stdout only (diagnostics go to stderr):
#   KAFKA_BOOTSTRAP=127.0.0.1:9092        PLAINTEXT
#   KAFKA_SASL_BOOTSTRAP=127.0.0.1:9094   SASL_PLAINTEXT (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)
#   KAFKA_SASL_USERNAME=hookrelay
#   KAFKA_SASL_PASSWORD=hookrelay-secret
#   KAFKA_SSL_BOOTSTRAP=127.0.0.1:9095    SSL (server certificate only, no client auth)
#   KAFKA_SSL_CA=<run dir>/ca.crt         the throwaway CA that signed the broker certificate
#   KAFKA_MTLS_BOOTSTRAP=127.0.0.1:9096   SSL with ssl.client.auth=required (mutual TLS)
#   KAFKA_CLIENT_CERT=<run dir>/client.crt  a client certificate signed by the same CA
#   KAFKA_CLIENT_KEY=<run dir>/client.key   its key (unencrypted PEM)
#   KAFKA_SASL_REAUTH_BOOTSTRAP=127.0.0.1:9097  SASL_PLAINTEXT (SCRAM) with connections.max.reauth.ms=2000,
#                                         so a deleted user is refused within seconds (exit-code tests)
#   KAFKA_TOOLS_CLASSPATH=<jars dir>/*    the broker's jars, for its admin tools (kafka.admin.ConfigCommand)
# so `scripts/kafka.sh up >> "$GITHUB_ENV"` or `eval "$(scripts/kafka.sh up)"` work.
#
# Environment:
#   HOOKRELAY_CACHE        cache root (default <repo>/.cache); jars go to $HOOKRELAY_CACHE/kafka/libs-<version>
#   KAFKA_RUN_DIR          runtime dir, wiped on every fresh `up` (default $HOOKRELAY_CACHE/kafka/run)
#   KAFKA_PORT             PLAINTEXT port       (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port (default 9093)
#   KAFKA_SASL_PORT        SASL_PLAINTEXT port  (default 9094)
#   KAFKA_SSL_PORT         SSL port             (default 9095)
#   KAFKA_MTLS_PORT        mutual-TLS SSL port  (default 9096)
#   KAFKA_SASL_REAUTH_PORT SASL_PLAINTEXT port with short re-authentication (default 9097)
#   KAFKA_VERSION          override the Kafka version pinned in scripts/kafka/pom.xml
#   KAFKA_START_TIMEOUT    seconds `up` waits for the broker (default 120)
#   KAFKA_RESTART_PAUSE    seconds `restart` leaves the broker down before starting it (default 0; drills)
#   KAFKA_HEAP_OPTS        JVM heap (default "-Xms512m -Xmx1g")
#   KAFKA_JMX_PORT         serve JMX on 127.0.0.1:<port>, no auth (default off; scripts/broker-requests.sh reads it)
#   JAVA_HOME / MAVEN_OPTS honoured as usual; the Maven repo is the default ~/.m2
#
# TLS: a fresh `up` makes (with openssl) a throwaway CA (ca.key, ca.crt) and a
# broker key and certificate signed by it (SAN IP:127.0.0.1, DNS:localhost,
# broker.pem = key + chain) in the run dir; the SSL listener reads broker.pem
# as a PEM keystore. The same CA signs a client certificate (client.key,
# client.crt) that the mutual-TLS listener requires. Test-only keys: never reuse them.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
KAFKA_ASSETS="$SCRIPT_DIR/kafka"
POM="$KAFKA_ASSETS/pom.xml"
PROBE="$KAFKA_ASSETS/probe.py"
LOG4J_CONFIG="$KAFKA_ASSETS/log4j2.properties"

CACHE_ROOT="${HOOKRELAY_CACHE:-$REPO_DIR/.cache}"
KAFKA_CACHE="$CACHE_ROOT/kafka"
RUN_DIR="${KAFKA_RUN_DIR:-$KAFKA_CACHE/run}"
HOST=127.0.0.1
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
SASL_PORT="${KAFKA_SASL_PORT:-9094}"
SSL_PORT="${KAFKA_SSL_PORT:-9095}"
MTLS_PORT="${KAFKA_MTLS_PORT:-9096}"
SASL_REAUTH_PORT="${KAFKA_SASL_REAUTH_PORT:-9097}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"
STOP_TIMEOUT=30
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms512m -Xmx1g}"
if [[ -n "${KAFKA_JMX_PORT:-}" ]]; then
  HEAP_OPTS+=" -Dcom.sun.management.jmxremote.port=$KAFKA_JMX_PORT -Dcom.sun.management.jmxremote.rmi.port=$KAFKA_JMX_PORT"
  HEAP_OPTS+=" -Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false"
  HEAP_OPTS+=" -Djava.rmi.server.hostname=127.0.0.1"
fi
SASL_USER=hookrelay
SASL_PASSWORD=hookrelay-secret

PID_FILE="$RUN_DIR/kafka.pid"
BROKER_LOG="$RUN_DIR/broker.log"
BROKER_OUT="$RUN_DIR/broker.out"
RUN_MARKER="$RUN_DIR/.hookrelay-kafka-run"
TLS_CA_CERT="$RUN_DIR/ca.crt"
TLS_CA_KEY="$RUN_DIR/ca.key"
TLS_BROKER_CERT="$RUN_DIR/broker.crt"
TLS_BROKER_KEY="$RUN_DIR/broker.key"
TLS_BROKER_PEM="$RUN_DIR/broker.pem"
TLS_CLIENT_CERT="$RUN_DIR/client.crt"
TLS_CLIENT_KEY="$RUN_DIR/client.key"
TLS_DAYS=3650

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi
PYTHON="$(command -v python3 || true)"

pinned_version() {
  sed -n 's:.*<kafka\.version>\(.*\)</kafka\.version>.*:\1:p' "$POM" | head -n1
}
KAFKA_VERSION="${KAFKA_VERSION:-$(pinned_version)}"
[[ -n "$KAFKA_VERSION" ]] || die "cannot read <kafka.version> from $POM"
LIBS_DIR="$KAFKA_CACHE/libs-$KAFKA_VERSION"
LIBS_MARKER="$LIBS_DIR/.complete"

print_env() {
  echo "KAFKA_BOOTSTRAP=$HOST:$PORT"
  echo "KAFKA_SASL_BOOTSTRAP=$HOST:$SASL_PORT"
  echo "KAFKA_SASL_USERNAME=$SASL_USER"
  echo "KAFKA_SASL_PASSWORD=$SASL_PASSWORD"
  # A broker started by an older kafka.sh has no SSL listener: say so rather than print a dead address.
  if grep -q "^listeners=.*,SSL://$HOST:$SSL_PORT" "$RUN_DIR/server.properties" 2>/dev/null && [[ -s "$TLS_CA_CERT" ]]; then
    echo "KAFKA_SSL_BOOTSTRAP=$HOST:$SSL_PORT"
    echo "KAFKA_SSL_CA=$TLS_CA_CERT"
  else
    log "this broker has no SSL listener on $HOST:$SSL_PORT (started by an older kafka.sh?); '$0 down' then 'up' adds it"
  fi
  if grep -q "^listeners=.*,MTLS://$HOST:$MTLS_PORT" "$RUN_DIR/server.properties" 2>/dev/null && [[ -s "$TLS_CLIENT_CERT" ]]; then
    echo "KAFKA_MTLS_BOOTSTRAP=$HOST:$MTLS_PORT"
    echo "KAFKA_CLIENT_CERT=$TLS_CLIENT_CERT"
    echo "KAFKA_CLIENT_KEY=$TLS_CLIENT_KEY"
  else
    log "this broker has no mutual-TLS listener on $HOST:$MTLS_PORT (started by an older kafka.sh?); '$0 down' then 'up' adds it"
  fi
  if grep -q "^listeners=.*,SASL_REAUTH://$HOST:$SASL_REAUTH_PORT" "$RUN_DIR/server.properties" 2>/dev/null; then
    echo "KAFKA_SASL_REAUTH_BOOTSTRAP=$HOST:$SASL_REAUTH_PORT"
  fi
  echo "KAFKA_TOOLS_CLASSPATH=$LIBS_DIR/*"
}

# --- locking: serialise up/down of the same run dir -------------------------
take_lock() {
  mkdir -p "$KAFKA_CACHE"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$KAFKA_CACHE/.lock-$(printf '%s' "$RUN_DIR" | cksum | cut -d' ' -f1)"
    flock 9
  fi
}

# --- process helpers ----------------------------------------------------------
# Prints the pid of the broker this script started for $RUN_DIR, if it still runs.
broker_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  [[ -n "$pid" ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against pid reuse: the process must be our kafka.Kafka on our config.
  if [[ -r "/proc/$pid/cmdline" ]]; then
    local cmd
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    [[ "$cmd" == *kafka.Kafka*"$RUN_DIR/server.properties"* ]] || return 1
  fi
  echo "$pid"
}

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

describe_port_owner() {
  if command -v ss >/dev/null 2>&1; then
    ss -ltnpH "sport = :$1" 2>/dev/null | sed 's/^/    /' >&2 || true
  fi
}

# 0 when the broker on $PORT answers Kafka requests and lists itself in metadata.
broker_ready() {
  if [[ -n "$PYTHON" ]]; then
    "$PYTHON" "$PROBE" "$HOST" "$PORT" --timeout 2 >/dev/null 2>&1
  else
    timeout 30 "$JAVA" -cp "$LIBS_DIR/*" org.apache.kafka.tools.BrokerApiVersionsCommand \
      --bootstrap-server "$HOST:$PORT" >/dev/null 2>&1
  fi
}

dump_logs() {
  if [[ -s "$BROKER_LOG" ]]; then
    log "last 50 lines of $BROKER_LOG:"
    tail -n 50 "$BROKER_LOG" >&2
  else
    log "$BROKER_LOG is empty or missing"
  fi
  if [[ -s "$BROKER_OUT" ]]; then
    log "last 50 lines of $BROKER_OUT (JVM stdout/stderr):"
    tail -n 50 "$BROKER_OUT" >&2
  fi
}

# --- jars ---------------------------------------------------------------------
ensure_libs() {
  local pom_hash
  pom_hash="$(sha256sum "$POM" | cut -d' ' -f1)"
  if [[ -f "$LIBS_MARKER" && "$(cat "$LIBS_MARKER")" == "$pom_hash" ]]; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn (Maven) is needed to fetch the Kafka jars"
  log "resolving Kafka $KAFKA_VERSION jars from Maven Central into $LIBS_DIR ..."
  local tmp="$LIBS_DIR.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  local mvn_log="$KAFKA_CACHE/mvn-$KAFKA_VERSION.log"
  if ! mvn -B -Dstyle.color=never -f "$POM" \
      -Dkafka.version="$KAFKA_VERSION" \
      dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >"$mvn_log" 2>&1; then
    grep -E '\[(ERROR|WARNING)\]' "$mvn_log" | tail -n 40 >&2 || tail -n 40 "$mvn_log" >&2
    rm -rf "$tmp"
    die "mvn dependency:copy-dependencies failed for Kafka $KAFKA_VERSION (full log: $mvn_log)"
  fi
  compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || { rm -rf "$tmp"; die "no kafka_2.13 jar was resolved"; }
  echo "$pom_hash" >"$tmp/.complete"
  rm -rf "$LIBS_DIR"
  mv "$tmp" "$LIBS_DIR"
  log "cached $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars in $LIBS_DIR"
}

check_java() {
  command -v "$JAVA" >/dev/null 2>&1 || die "java (17+) not found; install a JDK or set JAVA_HOME"
  local v
  v="$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')"
  [[ "${v%%.*}" =~ ^[0-9]+$ ]] || return 0
  (( ${v%%.*} >= 17 )) || die "Kafka 4.x brokers need Java 17+, found $v"
}

# --- runtime dir ----------------------------------------------------------------
fresh_run_dir() {
  if [[ -e "$RUN_DIR" ]]; then
    # Only wipe a directory this script created (or an empty one).
    if [[ -f "$RUN_MARKER" || -z "$(ls -A "$RUN_DIR")" ]]; then
      rm -rf "$RUN_DIR"
    else
      die "$RUN_DIR exists and was not created by kafka.sh; refusing to wipe it"
    fi
  fi
  mkdir -p "$RUN_DIR/data"
  : >"$RUN_MARKER"
}

# --- TLS material ---------------------------------------------------------------
# A throwaway CA and a broker certificate it signs, made once per run dir.
ensure_tls() {
  if [[ -s "$TLS_CA_CERT" && -s "$TLS_BROKER_PEM" && -s "$TLS_CLIENT_CERT" ]]; then return 0; fi
  command -v openssl >/dev/null 2>&1 || die "openssl is needed to make the test broker's TLS certificate"
  local tmp="$RUN_DIR/tls.tmp.$$" out="$RUN_DIR/tls.out"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  printf '%s\n' \
    'basicConstraints=critical,CA:FALSE' \
    'keyUsage=critical,digitalSignature' \
    'extendedKeyUsage=serverAuth' \
    "subjectAltName=IP:$HOST,DNS:localhost" >"$tmp/broker.ext"
  printf '%s\n' \
    'basicConstraints=critical,CA:FALSE' \
    'keyUsage=critical,digitalSignature' \
    'extendedKeyUsage=clientAuth' >"$tmp/client.ext"
  if ! (
    set -e
    umask 077
    cd "$tmp"
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -keyout ca.key -out ca.crt -days "$TLS_DAYS" -sha256 \
      -subj "/O=hookrelay tests/CN=hookrelay throwaway test CA" \
      -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign'
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -keyout broker.key -out broker.csr -subj "/O=hookrelay tests/CN=localhost"
    openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
      -days "$TLS_DAYS" -sha256 -extfile broker.ext -out broker.crt
    openssl verify -CAfile ca.crt broker.crt
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
      -keyout client.key -out client.csr -subj "/O=hookrelay tests/CN=hookrelay-client"
    openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
      -days "$TLS_DAYS" -sha256 -extfile client.ext -out client.crt
    openssl verify -CAfile ca.crt client.crt
    # The PEM keystore: an unencrypted PKCS#8 key, then the chain (leaf first).
    cat broker.key broker.crt ca.crt >broker.pem
    chmod 644 ca.crt broker.crt client.crt
  ) >"$out" 2>&1; then
    cat "$out" >&2
    rm -rf "$tmp"
    die "openssl could not make the TLS certificates"
  fi
  mv "$tmp/ca.key" "$TLS_CA_KEY"
  mv "$tmp/broker.key" "$TLS_BROKER_KEY"
  mv "$tmp/broker.crt" "$TLS_BROKER_CERT"
  mv "$tmp/broker.pem" "$TLS_BROKER_PEM"
  mv "$tmp/client.key" "$TLS_CLIENT_KEY"
  mv "$tmp/client.crt" "$TLS_CLIENT_CERT"
  mv "$tmp/ca.crt" "$TLS_CA_CERT" # last: its presence marks the set complete
  rm -rf "$tmp" "$out"
}

write_server_properties() {
  local jaas_plain="org.apache.kafka.common.security.plain.PlainLoginModule required username=\"$SASL_USER\" password=\"$SASL_PASSWORD\" user_$SASL_USER=\"$SASL_PASSWORD\";"
  cat >"$RUN_DIR/server.properties" <<EOF
# Generated by scripts/kafka.sh - single-node test broker, do not use in production.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$CONTROLLER_PORT
controller.listener.names=CONTROLLER

listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT,SASL_PLAINTEXT://$HOST:$SASL_PORT,SSL://$HOST:$SSL_PORT,MTLS://$HOST:$MTLS_PORT,SASL_REAUTH://$HOST:$SASL_REAUTH_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT,SASL_PLAINTEXT://$HOST:$SASL_PORT,SSL://$HOST:$SSL_PORT,MTLS://$HOST:$MTLS_PORT,SASL_REAUTH://$HOST:$SASL_REAUTH_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,MTLS:SSL,SASL_REAUTH:SASL_PLAINTEXT
inter.broker.listener.name=PLAINTEXT

sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=$jaas_plain
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;

# SSL: server certificate from a PEM keystore (key + chain in one file), no client certificates.
listener.name.ssl.ssl.keystore.type=PEM
listener.name.ssl.ssl.keystore.location=$TLS_BROKER_PEM
listener.name.ssl.ssl.client.auth=none

# MTLS: the same server certificate, and a client certificate signed by the test CA is required.
listener.name.mtls.ssl.keystore.type=PEM
listener.name.mtls.ssl.keystore.location=$TLS_BROKER_PEM
listener.name.mtls.ssl.truststore.type=PEM
listener.name.mtls.ssl.truststore.location=$TLS_CA_CERT
listener.name.mtls.ssl.client.auth=required

# SASL_REAUTH: SCRAM only, sessions re-authenticated every 2 s, so a user
# deleted mid-run is refused within seconds (mid-run exit-code tests; a
# listener of its own, so the other SASL tests see no re-authentication).
listener.name.sasl_reauth.sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_reauth.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_reauth.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_reauth.connections.max.reauth.ms=2000

log.dirs=$RUN_DIR/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true

offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=4
group.initial.rebalance.delay.ms=0
EOF
}

write_client_properties() {
  local m
  for m in PLAIN SCRAM-SHA-256 SCRAM-SHA-512; do
    local module=org.apache.kafka.common.security.scram.ScramLoginModule
    [[ "$m" == PLAIN ]] && module=org.apache.kafka.common.security.plain.PlainLoginModule
    cat >"$RUN_DIR/client-$(tr 'A-Z' 'a-z' <<<"$m").properties" <<EOF
# Client config for the SASL_PLAINTEXT listener ($HOST:$SASL_PORT), mechanism $m.
security.protocol=SASL_PLAINTEXT
sasl.mechanism=$m
sasl.jaas.config=$module required username="$SASL_USER" password="$SASL_PASSWORD";
EOF
  done
  cat >"$RUN_DIR/client-ssl.properties" <<EOF
# Client config for the SSL listener ($HOST:$SSL_PORT), server certificate checked against the test CA.
security.protocol=SSL
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_CA_CERT
EOF
}

new_cluster_id() {
  if [[ -n "$PYTHON" ]]; then
    "$PYTHON" "$PROBE" --random-uuid
  else
    "$JAVA" -cp "$LIBS_DIR/*" kafka.tools.StorageTool random-uuid
  fi
}

format_storage() {
  local cluster_id
  cluster_id="$(new_cluster_id)"
  echo "$cluster_id" >"$RUN_DIR/cluster.id"
  if ! "$JAVA" -Dlog4j2.configurationFile="$LOG4J_CONFIG" -Dkafka.logs.dir="$RUN_DIR" \
      -cp "$LIBS_DIR/*" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$RUN_DIR/server.properties" --standalone \
      --add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$SASL_PASSWORD]" \
      --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]" \
      >"$RUN_DIR/format.out" 2>&1; then
    cat "$RUN_DIR/format.out" >&2
    die "kafka-storage format failed"
  fi
}

# --- commands -----------------------------------------------------------------
wait_ready() { # $1 = pid; returns 0 when ready, 1 on death/timeout
  local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
  while (( SECONDS < deadline )); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "broker process $pid exited during startup"
      return 1
    fi
    if broker_ready; then return 0; fi
    sleep 0.5
  done
  log "broker did not become ready within ${START_TIMEOUT}s"
  return 1
}

stop_pid() { # $1 = pid
  local pid="$1" deadline=$((SECONDS + STOP_TIMEOUT))
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    log "broker $pid still alive after ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  fi
}

cmd_up() {
  take_lock
  local pid
  if pid="$(broker_pid)"; then
    if broker_ready || wait_ready "$pid"; then
      log "broker already running (pid $pid, run dir $RUN_DIR)"
      print_env
      return 0
    fi
    dump_logs
    die "broker pid $pid is running but does not answer on $HOST:$PORT; run '$0 down' first"
  fi
  rm -f "$PID_FILE"

  local p
  for p in "$PORT" "$CONTROLLER_PORT" "$SASL_PORT" "$SSL_PORT" "$MTLS_PORT" "$SASL_REAUTH_PORT"; do
    if port_in_use "$p"; then
      log "port $HOST:$p is already in use by a process not started by this script:"
      describe_port_owner "$p"
      die "free the port or choose others with KAFKA_PORT / KAFKA_CONTROLLER_PORT / KAFKA_SASL_PORT / KAFKA_SSL_PORT / KAFKA_MTLS_PORT / KAFKA_SASL_REAUTH_PORT"
    fi
  done

  check_java
  local t0=$SECONDS
  ensure_libs
  fresh_run_dir
  ensure_tls
  write_server_properties
  write_client_properties
  format_storage

  start_broker "$t0"
}

# Starts the broker on the prepared run dir and waits until it serves clients.
start_broker() { # $1 = SECONDS at the start of the command
  local t0="$1" pid
  log "starting Kafka $KAFKA_VERSION (run dir $RUN_DIR)"
  # shellcheck disable=SC2086 # HEAP_OPTS is a list of JVM flags
  nohup "$JAVA" $HEAP_OPTS \
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J_CONFIG" -Dkafka.logs.dir="$RUN_DIR" \
    -cp "$LIBS_DIR/*" kafka.Kafka "$RUN_DIR/server.properties" \
    >"$BROKER_OUT" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"

  if ! wait_ready "$pid"; then
    dump_logs
    if kill -0 "$pid" 2>/dev/null; then stop_pid "$pid"; fi
    rm -f "$PID_FILE"
    die "Kafka failed to start"
  fi
  log "Kafka $KAFKA_VERSION ready in $((SECONDS - t0))s (pid $pid, logs: $BROKER_LOG)"
  print_env
}

# Stops the broker and starts it again on the same log dir: data, topics,
# committed offsets and SCRAM users survive (for broker-restart drills).
cmd_restart() {
  take_lock
  local pid t0=$SECONDS
  [[ -f "$RUN_DIR/server.properties" ]] || die "no run dir at $RUN_DIR: use '$0 up' first"
  if pid="$(broker_pid)"; then
    log "stopping broker (pid $pid) for a restart"
    stop_pid "$pid"
  fi
  rm -f "$PID_FILE"
  if [[ "${KAFKA_RESTART_PAUSE:-0}" != 0 ]]; then
    log "broker down for ${KAFKA_RESTART_PAUSE}s"
    sleep "$KAFKA_RESTART_PAUSE"
  fi
  start_broker "$t0"
}

cmd_down() {
  take_lock
  local pid
  if pid="$(broker_pid)"; then
    log "stopping broker (pid $pid)"
    stop_pid "$pid"
    log "stopped"
  else
    log "no broker running for $RUN_DIR"
  fi
  rm -f "$PID_FILE"
}

cmd_status() {
  local pid
  if ! pid="$(broker_pid)"; then
    log "not running"
    return 1
  fi
  if ! broker_ready; then
    log "process $pid is running but the broker does not answer on $HOST:$PORT"
    return 1
  fi
  log "running (pid $pid, Kafka $KAFKA_VERSION, run dir $RUN_DIR)"
  print_env
}

cmd_logs() {
  [[ -f "$BROKER_LOG" ]] || die "no log at $BROKER_LOG"
  if [[ "${1:-}" == "-f" ]]; then
    exec tail -n 100 -F "$BROKER_LOG"
  fi
  cat "$BROKER_LOG"
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  restart) cmd_restart ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
