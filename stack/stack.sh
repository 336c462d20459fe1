#!/usr/bin/env bash
# Local dev stack: a real single-node Apache Kafka broker (KRaft, combined broker+controller)
# and a real Redis server, both on 127.0.0.1, state under $STACK_DIR (default <repo>/.stack).
#
#   stack/stack.sh install   fetch Kafka + Flink connector jars (maven), install redis-server (apt),
#                            unpack promtool from Debian's prometheus package (apt-get download),
#                            install h2load (apt nghttp2-client: the HTTP API's load generator)
#   stack/stack.sh up        install if needed, start both, block until both answer requests
#   stack/stack.sh down [kafka|redis]  stop both (or one) gracefully (SIGTERM, wait), idempotent
#   stack/stack.sh kill kafka|redis    SIGKILL one (a crash, for fault tests); `up` restarts it
#   stack/stack.sh status    show state, ports, pids, folders (exit 0 = both up, 3 = not)
#   stack/stack.sh reset     down, then delete the data folders (keeps jars and logs)
#   stack/stack.sh kafka-class <main.Class> [args...]   run a Kafka tool with the broker classpath
#   stack/stack.sh kafka-cluster up|down|kill N|status|reset   a separate 3-broker KRaft cluster on
#                            other ports (replication tests, see "Kafka cluster" in stack/README.md)
#   stack/stack.sh redis-cluster up|down|kill <port>|reset|status   a Redis Cluster of 3 masters +
#                            3 replicas on 127.0.0.1:7101-7106 (REDIS_CLUSTER_PORT), for cluster tests
#
# See stack/README.md for ports, folders and environment variables.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)

STACK_DIR=${STACK_DIR:-$REPO_DIR/.stack}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
REDIS_PORT=${REDIS_PORT:-6379}
STACK_TIMEOUT=${STACK_TIMEOUT:-90}            # seconds, per service, for up/down
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}
KAFKA_CLUSTER_PORT=${KAFKA_CLUSTER_PORT:-29092}                # node N: KAFKA_CLUSTER_PORT + N - 1
KAFKA_CLUSTER_CONTROLLER_PORT=${KAFKA_CLUSTER_CONTROLLER_PORT:-29192}  # node N: ... + N - 1
KAFKA_CLUSTER_HEAP_OPTS=${KAFKA_CLUSTER_HEAP_OPTS:--Xms128m -Xmx384m}
KAFKA_CLUSTER_STOP_TIMEOUT=${KAFKA_CLUSTER_STOP_TIMEOUT:-30}  # seconds from SIGTERM to SIGKILL in `kafka-cluster down`
JAVA=${JAVA:-java}
MVN=${MVN:-mvn}
MVN_ARGS=${MVN_ARGS:-}                         # extra maven args, e.g. -Dmaven.repo.local=...

# versions: keep in sync with stack/pom.xml
KAFKA_VERSION=4.2.0
FLINK_KAFKA_CONNECTOR_VERSION=5.0.0-2.2

HOST=127.0.0.1
KAFKA_NODE_ID=1

# ---------------------------------------------------------------------------------------------
# paths

mkdir -p "$STACK_DIR"
STACK_DIR=$(cd "$STACK_DIR" && pwd)

KAFKA_HOME=$STACK_DIR/kafka
KAFKA_LIBS=$KAFKA_HOME/libs
KAFKA_CONF=$KAFKA_HOME/config
KAFKA_DATA=$KAFKA_HOME/data
KAFKA_PIDFILE=$KAFKA_HOME/kafka.pid
REDIS_HOME=$STACK_DIR/redis
REDIS_DATA=$REDIS_HOME/data
REDIS_CONF=$REDIS_HOME/redis.conf
REDIS_PIDFILE=$REDIS_HOME/redis.pid
LOG_DIR=$STACK_DIR/logs
KAFKA_LOG=$LOG_DIR/kafka.log
REDIS_LOG=$LOG_DIR/redis.log
JARS_DIR=$STACK_DIR/jars
CONNECTOR_JAR=$JARS_DIR/flink-sql-connector-kafka-$FLINK_KAFKA_CONNECTOR_VERSION.jar
KAFKA_MAIN_JAR=$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar
FETCH_MARKER=$KAFKA_LIBS/.fetched   # holds the sha256 of the pom the jars were fetched with
TOOLS_DIR=$STACK_DIR/tools
REPORTER_SRC=$REPO_DIR/jvm/metrics-reporter
REPORTER_JAR=$JARS_DIR/host-bound-prometheus-reporter.jar  # flink.prometheus_port binds flink.bind_address
PROMTOOL=$TOOLS_DIR/promtool       # checks docker/alerts.yml (tests/static/test_docker.py)

KAFKA_CLUSTER_DIR=${KAFKA_CLUSTER_DIR:-$STACK_DIR/kafka-cluster}  # node<N>/{server.properties,data,kafka.pid,kafka.log}
KAFKA_CLUSTER_NODES=(1 2 3)

LOG_ROTATE_BYTES=$((64 * 1024 * 1024))

# Short-lived JVMs (tools): fast startup, small heap, quiet logging.
TOOL_JVM_OPTS=(-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true)

# ---------------------------------------------------------------------------------------------
# helpers

say()  { printf 'stack: %s\n' "$*"; }
warn() { printf 'stack: WARNING: %s\n' "$*" >&2; }
die()  { printf 'stack: ERROR: %s\n' "$*" >&2; exit 1; }

now_us() { local t=${EPOCHREALTIME//[!0-9]/}; printf '%s' "$((10#$t))"; }
# elapsed seconds since $1 (microseconds), one decimal
elapsed() { local d=$(( $(now_us) - $1 )); printf '%d.%d' $((d / 1000000)) $(((d / 100000) % 10)); }

# alive PID: the process exists and is not a zombie (an orphaned daemon is reparented to PID 1,
# which in containers may reap it late; a zombie has already exited)
alive() {
  local st
  kill -0 "$1" 2>/dev/null || return 1
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [[ ${st%% *} != Z ]]
}

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; }

# sigkill_and_wait PID WHAT: SIGKILL, as a crash would, and return once the process is gone
sigkill_and_wait() {
  local pid=$1 what=$2 t0
  t0=$(now_us)
  kill -KILL "$pid"
  while alive "$pid"; do sleep 0.05; done
  say "$what killed (SIGKILL, pid $pid, $(elapsed "$t0") s)"
}

# pid_of PIDFILE PATTERN -> prints pid if the pidfile names a live process whose cmdline matches
pid_of() {
  local pidfile=$1 pattern=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q -- "$pattern" || return 1
  printf '%s' "$pid"
}

kafka_pid() {
  local pid
  if pid=$(pid_of "$KAFKA_PIDFILE" kafka.Kafka); then printf '%s' "$pid"; return 0; fi
  # pid file lost: look for *our* broker (same config file path), nothing broader
  local f
  while IFS= read -r f; do
    if tr '\0' ' ' 2>/dev/null <"$f" | grep -q -- "kafka.Kafka $KAFKA_CONF/server.properties"; then
      pid=${f#/proc/}; pid=${pid%/cmdline}
      printf '%s' "$pid" >"$KAFKA_PIDFILE"
      printf '%s' "$pid"; return 0
    fi
  done < <(grep -lsaF -- "$KAFKA_CONF/server.properties" /proc/[0-9]*/cmdline 2>/dev/null || true)
  return 1
}
redis_pid() { pid_of "$REDIS_PIDFILE" redis-server; }

redis_ping() {
  if command -v redis-cli >/dev/null 2>&1; then
    [[ $(timeout 2 redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
  else
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$REDIS_PORT; printf 'PING\r\n' >&3; read -r l <&3; [[ \$l == +PONG* ]]" 2>/dev/null
  fi
}

rotate_log() {
  local f=$1
  if [[ -f $f ]] && (( $(stat -c %s "$f") > LOG_ROTATE_BYTES )); then mv -f "$f" "$f.1"; fi
}

# log_tail FILE [N]: last N lines of the current run (after the last '===== ' marker), long lines cut
log_tail() {
  local f=$1 n=${2:-25} start
  [[ -f $f ]] || return 0
  start=$(grep -n '^===== ' "$f" 2>/dev/null | tail -n1 | cut -d: -f1)
  echo "---- last lines of $f ----" >&2
  tail -n +"${start:-1}" "$f" | tail -n "$n" | cut -c1-300 >&2
  echo "----" >&2
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root or sudo to run: $*"; fi
}

APT_UPDATED=0
apt_update() {
  if [[ $APT_UPDATED -eq 0 ]]; then
    say "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
}

apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: $*"
  apt_update
  say "apt-get install -y $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 "$@" >/dev/null
}

# Serialise up/down/reset/install between concurrent callers (e.g. parallel test runs).
# The fd is closed (9>&-) for the daemons we spawn so they never hold the lock.
take_lock() {
  local file=${1:-$STACK_DIR/.lock}
  exec 9>"$file"
  flock -w $((STACK_TIMEOUT * 3)) 9 || die "timed out waiting for $file (another stack.sh running?)"
}

check_ports_config() {
  local p
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$REDIS_PORT"; do
    [[ $p =~ ^[0-9]+$ ]] && (( p > 0 && p < 65536 )) || die "invalid port: $p"
  done
  [[ $KAFKA_PORT != "$KAFKA_CONTROLLER_PORT" && $KAFKA_PORT != "$REDIS_PORT" && $KAFKA_CONTROLLER_PORT != "$REDIS_PORT" ]] \
    || die "KAFKA_PORT, KAFKA_CONTROLLER_PORT and REDIS_PORT must differ"
}

# ---------------------------------------------------------------------------------------------
# install

pom_sha() { sha256sum "$SCRIPT_DIR/pom.xml" | cut -d' ' -f1; }

jars_ok() {
  [[ -f $FETCH_MARKER && -f $KAFKA_MAIN_JAR && -f $CONNECTOR_JAR ]] && [[ $(<"$FETCH_MARKER") == "$(pom_sha)" ]]
}

install_java_maven() {
  if ! command -v "$JAVA" >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1; then
    apt_install openjdk-17-jdk-headless  # javac: build_reporter
  fi
  if ! command -v "$MVN" >/dev/null 2>&1; then
    apt_install maven
  fi
}

install_jars() {
  if jars_ok; then return 0; fi
  install_java_maven
  local t0; t0=$(now_us)
  say "fetching Kafka $KAFKA_VERSION + flink-sql-connector-kafka $FLINK_KAFKA_CONNECTOR_VERSION jars (maven)"
  # start from clean folders so a pom change never leaves stale jars on the classpath
  rm -rf "$KAFKA_LIBS" "$JARS_DIR"
  mkdir -p "$KAFKA_LIBS" "$JARS_DIR"
  mkdir -p "$LOG_DIR"
  # maven output (quiet: errors/warnings only) goes to logs/maven.log, shown on failure
  # shellcheck disable=SC2086
  if ! "$MVN" -B -q -Dstyle.color=never -f "$SCRIPT_DIR/pom.xml" -Dstack.dir="$STACK_DIR" $MVN_ARGS \
        generate-resources >"$LOG_DIR/maven.log" 2>&1 9>&-; then
    sed 's/\x1b\[[0-9;]*m//g' "$LOG_DIR/maven.log" | tail -n 30 >&2
    die "maven failed to fetch jars (log: $LOG_DIR/maven.log, pom: $SCRIPT_DIR/pom.xml)"
  fi
  [[ -f $KAFKA_MAIN_JAR ]] || die "maven ran but $KAFKA_MAIN_JAR is missing"
  [[ -f $CONNECTOR_JAR ]] || die "maven ran but $CONNECTOR_JAR is missing"
  pom_sha >"$FETCH_MARKER"
  say "jars ready: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) in ${KAFKA_LIBS#"$REPO_DIR"/}, connector in ${JARS_DIR#"$REPO_DIR"/} ($(elapsed "$t0") s)"
}

stop_packaged_redis() {
  # The Debian package may start its own redis-server service on 6379; we run our own instance.
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    if as_root systemctl is-enabled --quiet redis-server 2>/dev/null || as_root systemctl is-active --quiet redis-server 2>/dev/null; then
      say "disabling the packaged redis-server system service (stack runs its own instance)"
      as_root systemctl disable --now redis-server >/dev/null 2>&1 || true
    fi
  elif [[ -s /run/redis/redis-server.pid ]] && command -v service >/dev/null 2>&1; then
    say "stopping the packaged redis-server service (stack runs its own instance)"
    as_root service redis-server stop >/dev/null 2>&1 || true
  fi
}

install_redis() {
  if command -v redis-server >/dev/null 2>&1; then return 0; fi
  local t0; t0=$(now_us)
  apt_install redis-server
  command -v redis-server >/dev/null 2>&1 || die "redis-server still not on PATH after apt-get install"
  stop_packaged_redis
  say "redis-server installed: $(redis-server --version | head -n1) ($(elapsed "$t0") s)"
}

# h2load (nghttp2's C load generator; --h1 for HTTP/1.1, -r/--rate-period for a fixed rate) drives
# `make bench-api`: native, so it takes little of the CPU the API it measures needs.
install_h2load() {
  if command -v h2load >/dev/null 2>&1; then return 0; fi
  local t0; t0=$(now_us)
  apt_install nghttp2-client
  command -v h2load >/dev/null 2>&1 || die "h2load still not on PATH after apt-get install nghttp2-client"
  say "h2load installed: $(h2load --version | head -n1) ($(elapsed "$t0") s)"
}

# promtool validates the Prometheus alert rules of docker/. Debian ships it only inside the
# prometheus server package, whose install would start a server on :9090 (the port of the compose
# stack's Prometheus): the package is downloaded and only promtool is unpacked, under .stack/tools.
install_promtool() {
  if [[ -x $PROMTOOL ]]; then return 0; fi
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; put a promtool binary at $PROMTOOL"
  local t0 tmp; t0=$(now_us); tmp=$(mktemp -d)
  apt_update
  say "apt-get download prometheus (for promtool only)"
  mkdir -p "$LOG_DIR"
  if ! (cd "$tmp" && apt-get download prometheus >"$LOG_DIR/apt-download.log" 2>&1); then
    rm -rf "$tmp"; tail -n 5 "$LOG_DIR/apt-download.log" >&2; die "apt-get download prometheus failed"
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
  mkdir -p "$TOOLS_DIR"
  install -m 0755 "$tmp/root/usr/bin/promtool" "$PROMTOOL"
  rm -rf "$tmp"
  say "promtool ready: $("$PROMTOOL" --version 2>&1 | head -n1) at ${PROMTOOL#"$REPO_DIR"/} ($(elapsed "$t0") s)"
}

# The Prometheus reporter of the local MiniCluster: Flink's own listens on every interface (it has
# no host option), this one on flink.bind_address. Compiled against the venv's PyFlink jars.
build_reporter() {
  local pyflink sources
  sources=("$REPORTER_SRC"/src/org/apache/flink/metrics/prometheus/*.java)
  if [[ -f $REPORTER_JAR ]] && [[ -z $(find "${sources[@]}" "$REPORTER_SRC/resources" -newer "$REPORTER_JAR") ]]; then
    return 0
  fi
  if [[ ! -x $REPO_DIR/.venv/bin/python ]]; then
    say "not building ${REPORTER_JAR#"$REPO_DIR"/} yet: it compiles against the venv's PyFlink (make setup)"
    return 0
  fi
  command -v javac >/dev/null 2>&1 || install_java_maven
  pyflink=$("$REPO_DIR/.venv/bin/python" -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')
  local t0 classes; t0=$(now_us); classes=$(mktemp -d)
  javac -d "$classes" --release 11 -nowarn \
    -cp "$(printf '%s:' "$pyflink"/lib/flink-dist-*.jar "$pyflink"/plugins/metrics-prometheus/*.jar)" "${sources[@]}" \
    || { rm -rf "$classes"; die "javac failed on $REPORTER_SRC"; }
  cp -r "$REPORTER_SRC/resources/." "$classes/"
  mkdir -p "$JARS_DIR"
  jar cf "$REPORTER_JAR.tmp" -C "$classes" . && mv "$REPORTER_JAR.tmp" "$REPORTER_JAR"
  rm -rf "$classes"
  say "built ${REPORTER_JAR#"$REPO_DIR"/} ($(elapsed "$t0") s)"
}

cmd_install() {
  install_jars
  build_reporter
  install_redis
  install_promtool
  install_h2load
  command -v "$JAVA" >/dev/null 2>&1 || install_java_maven
}

# ---------------------------------------------------------------------------------------------
# kafka

kafka_java() {  # short-lived tool JVM with the broker classpath
  "$JAVA" "${TOOL_JVM_OPTS[@]}" -Dlog4j2.configurationFile="file:$KAFKA_CONF/tools-log4j2.properties" \
    -cp "$KAFKA_LIBS/*" "$@"
}

# kafka_shared_properties RF MIN_ISR: what every broker of this stack sets, single node or cluster
kafka_shared_properties() {
  cat <<EOF
# every internal topic with replication factor $1, min ISR $2
num.partitions=1
default.replication.factor=$1
min.insync.replicas=$2
offsets.topic.replication.factor=$1
transaction.state.log.replication.factor=$1
transaction.state.log.min.isr=$2
share.coordinator.state.topic.replication.factor=$1
share.coordinator.state.topic.min.isr=$2

# dev / test behaviour
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# replayed datasets carry 2017 event timestamps as record timestamps: never delete by time
log.retention.ms=-1
# log.message.timestamp.before.max.ms stays default (unbounded) so old timestamps are accepted;
# reject records more than 1 h in the future
log.message.timestamp.after.max.ms=3600000
# Flink's exactly-once Kafka sink uses transaction.timeout.ms up to 1 h
transaction.max.timeout.ms=3600000
EOF
}

write_kafka_config() {
  mkdir -p "$KAFKA_CONF" "$KAFKA_DATA" "$LOG_DIR"
  {
    cat <<EOF
# Generated by stack/stack.sh on every 'up' (edit the script, not this file).
# Single-node dev broker: KRaft combined broker+controller, PLAINTEXT on $HOST only.
process.roles=broker,controller
node.id=$KAFKA_NODE_ID
controller.quorum.voters=$KAFKA_NODE_ID@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA

EOF
    kafka_shared_properties 1 1
  } >"$KAFKA_CONF/server.properties"
  write_kafka_logging "$KAFKA_CONF"
}

# write_kafka_logging DIR: log4j2 configs of the broker (to stdout) and of the tools (quiet), client timeouts
write_kafka_logging() {
  local conf=$1
  # Broker logs go to stdout, which stack.sh appends to $KAFKA_LOG (one file, also catches JVM errors).
  cat >"$conf/log4j2.properties" <<'EOF'
status = warn
name = stack-kafka-broker
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.network.name = kafka.network.RequestChannel$
logger.network.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = INFO
logger.state.name = state.change.logger
logger.state.level = INFO
EOF

  cat >"$conf/tools-log4j2.properties" <<'EOF'
status = error
name = stack-kafka-tools
appender.err.type = Console
appender.err.name = ERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = ERR
EOF

  cat >"$conf/tools-client.properties" <<'EOF'
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
}

kafka_new_cluster_id() {
  local cluster_id
  cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$1" | tail -n1) \
    || die "kafka.tools.StorageTool random-uuid failed (see $1)"
  [[ -n $cluster_id ]] || die "empty cluster id from kafka.tools.StorageTool random-uuid"
  printf '%s' "$cluster_id"
}

# kafka_format CONFIG CLUSTER_ID LOG: format a node's log dirs (KRaft metadata) once
kafka_format() {
  local out
  if ! out=$(kafka_java kafka.tools.StorageTool format -t "$2" -c "$1" 2>&1); then
    printf '%s\n' "$out" >>"$3"
    die "kafka storage format of $1 failed: $out"
  fi
}

kafka_format_if_needed() {
  if [[ -f $KAFKA_DATA/meta.properties ]]; then return 0; fi
  local t0 cluster_id; t0=$(now_us)
  cluster_id=$(kafka_new_cluster_id "$KAFKA_LOG")
  kafka_format "$KAFKA_CONF/server.properties" "$cluster_id" "$KAFKA_LOG"
  printf '%s\n' "$cluster_id" >"$KAFKA_HOME/cluster.id"
  say "kafka storage formatted in ${KAFKA_DATA#"$REPO_DIR"/} (cluster id $cluster_id, $(elapsed "$t0") s)"
}

# kafka_launch DIR CONFIG PIDFILE LOG PORT HEAP_OPTS GC_OPTS: start a broker JVM in the background
kafka_launch() {
  local dir=$1 config=$2 pidfile=$3 log=$4 port=$5 heap=$6 gc=$7
  rotate_log "$log"
  printf '\n===== %s stack.sh: starting kafka %s on %s:%s =====\n' "$(date -Is)" "$KAFKA_VERSION" "$HOST" "$port" >>"$log"
  rm -f "$pidfile"
  # setsid+nohup: own session, survives this script; the inner bash records its pid, then
  # execs the JVM (so the pid file holds the JVM's pid).
  # shellcheck disable=SC2086
  (cd "$dir" && exec setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" \
    "$JAVA" $heap -server $gc -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 \
    -XX:ErrorFile="$LOG_DIR/kafka_hs_err_%p.log" \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="file:$(dirname "$config")/log4j2.properties" \
    -Dkafka.logs.dir="$(dirname "$log")" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$config" \
    >>"$log" 2>&1 </dev/null 9>&- &)
}

kafka_start() {
  check_port_free "$KAFKA_PORT" kafka
  check_port_free "$KAFKA_CONTROLLER_PORT" "kafka controller"
  kafka_launch "$KAFKA_HOME" "$KAFKA_CONF/server.properties" "$KAFKA_PIDFILE" "$KAFKA_LOG" "$KAFKA_PORT" \
    "$KAFKA_HEAP_OPTS" "-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35"
}

kafka_fail() {
  log_tail "$KAFKA_LOG" 30
  die "kafka: $* (log: $KAFKA_LOG)"
}

# Ready = process alive, port accepts connections, and the broker answers Metadata + ApiVersions
# (org.apache.kafka.tools.BrokerApiVersionsCommand lists brokers via a metadata request, then asks
# each one for its API versions; an unfenced broker 1 must show up).
kafka_wait_ready() {
  kafka_wait_brokers "$1" "$KAFKA_PORT" "$KAFKA_CONF" kafka_pid kafka_fail "$KAFKA_NODE_ID"
}

# kafka_wait_brokers T0 PORT CONFDIR PID_FN FAIL_FN ID...: wait until PORT is open and the metadata
# it serves lists every broker ID unfenced, each answering ApiVersions; PID_FN must keep succeeding.
kafka_wait_brokers() {
  local t0=$1 port=$2 conf=$3 pid_fn=$4 fail_fn=$5 deadline=$(( $1 + STACK_TIMEOUT * 1000000 )) out id ok
  shift 5
  while :; do
    $pid_fn >/dev/null || $fail_fn "process exited during startup"
    if port_open "$port"; then break; fi
    (( $(now_us) < deadline )) || $fail_fn "port $port not open after ${STACK_TIMEOUT}s"
    sleep 0.2
  done
  while :; do
    if out=$(timeout 30 "$JAVA" "${TOOL_JVM_OPTS[@]}" \
          -Dlog4j2.configurationFile="file:$conf/tools-log4j2.properties" -cp "$KAFKA_LIBS/*" \
          org.apache.kafka.tools.BrokerApiVersionsCommand --bootstrap-server "$HOST:$port" \
          --command-config "$conf/tools-client.properties" 2>&1) \
       && ! grep -q 'isFenced: true' <<<"$out" && grep -q 'Metadata(3)' <<<"$out"; then
      ok=1
      for id in "$@"; do grep -q "(id: $id " <<<"$out" || ok=0; done
      (( ok )) && return 0
    fi
    $pid_fn >/dev/null || $fail_fn "process exited during startup"
    (( $(now_us) < deadline )) || { printf '%s\n' "$out" | tail -n 5 >&2; $fail_fn "brokers $* not all answering API requests after ${STACK_TIMEOUT}s"; }
    sleep 0.5
  done
}

# ---------------------------------------------------------------------------------------------
# kafka cluster: 3 KRaft nodes (each broker + controller, a quorum of 3) on other ports than the
# single-node stack, for replication tests; every topic of it defaults to 3 replicas, min ISR 2.

cluster_node_dir() { printf '%s' "$KAFKA_CLUSTER_DIR/node$1"; }
cluster_port() { printf '%s' $(( KAFKA_CLUSTER_PORT + $1 - 1 )); }
cluster_controller_port() { printf '%s' $(( KAFKA_CLUSTER_CONTROLLER_PORT + $1 - 1 )); }
cluster_bootstrap() {
  local n out=()
  for n in "${KAFKA_CLUSTER_NODES[@]}"; do out+=("$HOST:$(cluster_port "$n")"); done
  (IFS=,; printf '%s' "${out[*]}")
}

cluster_node_pid() {
  local dir; dir=$(cluster_node_dir "$1")
  pid_of "$dir/kafka.pid" "kafka.Kafka $dir/server.properties"
}
cluster_any_pid() {  # for kafka_wait_brokers: fails once any node has exited
  local n
  for n in "${KAFKA_CLUSTER_NODES[@]}"; do cluster_node_pid "$n" >/dev/null || return 1; done
}
cluster_fail() {
  local n
  for n in "${KAFKA_CLUSTER_NODES[@]}"; do log_tail "$(cluster_node_dir "$n")/kafka.log" 10; done
  die "kafka cluster: $* (logs: $KAFKA_CLUSTER_DIR/node*/kafka.log)"
}

check_cluster_ports() {
  local n p used=" $KAFKA_PORT $KAFKA_CONTROLLER_PORT $REDIS_PORT "
  for n in "${KAFKA_CLUSTER_NODES[@]}"; do
    for p in "$(cluster_port "$n")" "$(cluster_controller_port "$n")"; do
      (( p > 0 && p < 65536 )) || die "invalid kafka cluster port: $p"
      [[ $used != *" $p "* ]] || die "kafka cluster port $p collides with another port of the stack (KAFKA_CLUSTER_PORT, KAFKA_CLUSTER_CONTROLLER_PORT)"
      used+="$p "
    done
  done
}

write_cluster_config() {
  local n=$1 dir voters=() m
  dir=$(cluster_node_dir "$n")
  for m in "${KAFKA_CLUSTER_NODES[@]}"; do voters+=("$m@$HOST:$(cluster_controller_port "$m")"); done
  mkdir -p "$dir/data"
  {
    cat <<EOF
# Generated by stack/stack.sh on every 'kafka-cluster up' (edit the script, not this file).
# Node $n of ${#KAFKA_CLUSTER_NODES[@]}: KRaft combined broker+controller, PLAINTEXT on $HOST only.
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$(IFS=,; printf '%s' "${voters[*]}")
listeners=PLAINTEXT://$HOST:$(cluster_port "$n"),CONTROLLER://$HOST:$(cluster_controller_port "$n")
advertised.listeners=PLAINTEXT://$HOST:$(cluster_port "$n")
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
# few internal partitions (default 50 each): 3 replicas of each start on every node
offsets.topic.num.partitions=4
transaction.state.log.num.partitions=4

EOF
    kafka_shared_properties 3 2
  } >"$dir/server.properties"
  write_kafka_logging "$dir"
}

cluster_up() {
  check_cluster_ports
  install_jars
  command -v "$JAVA" >/dev/null 2>&1 || install_java_maven
  mkdir -p "$KAFKA_CLUSTER_DIR" "$LOG_DIR"
  local t0 n dir cluster_id deadline down=() formats=(); t0=$(now_us)
  [[ -s $KAFKA_CLUSTER_DIR/cluster.id ]] || kafka_new_cluster_id "$LOG_DIR/kafka-cluster-format.log" >"$KAFKA_CLUSTER_DIR/cluster.id"
  cluster_id=$(<"$KAFKA_CLUSTER_DIR/cluster.id")
  for n in "${KAFKA_CLUSTER_NODES[@]}"; do
    cluster_node_pid "$n" >/dev/null && continue
    check_port_free "$(cluster_port "$n")" "kafka cluster node $n"
    check_port_free "$(cluster_controller_port "$n")" "kafka cluster node $n controller"
    down+=("$n")
  done
  # formats, then JVMs, side by side: one after the other, each waits for a busy machine in turn
  for n in "${down[@]}"; do
    dir=$(cluster_node_dir "$n")
    write_cluster_config "$n"
    if [[ ! -f $dir/data/meta.properties ]]; then
      kafka_format "$dir/server.properties" "$cluster_id" "$dir/kafka.log" &
      formats+=($!)
    fi
  done
  for n in "${formats[@]}"; do wait "$n" || die "kafka cluster: storage format failed (logs: $KAFKA_CLUSTER_DIR/node*/kafka.log)"; done
  for n in "${down[@]}"; do
    dir=$(cluster_node_dir "$n")
    kafka_launch "$dir" "$dir/server.properties" "$dir/kafka.pid" "$dir/kafka.log" "$(cluster_port "$n")" \
      "$KAFKA_CLUSTER_HEAP_OPTS" "-XX:+UseSerialGC"
  done
  deadline=$(( $(now_us) + 10000000 ))  # the pid files are written, and the JVMs exec'd, in the background
  for n in "${down[@]}"; do
    until cluster_node_pid "$n" >/dev/null; do
      (( $(now_us) < deadline )) || cluster_fail "node $n did not start"
      sleep 0.05
    done
  done
  kafka_wait_brokers "$t0" "$(cluster_port "${KAFKA_CLUSTER_NODES[0]}")" "$(cluster_node_dir "${KAFKA_CLUSTER_NODES[0]}")" \
    cluster_any_pid cluster_fail "${KAFKA_CLUSTER_NODES[@]}"
  say "kafka cluster up: bootstrap $(cluster_bootstrap) (${#down[@]} node(s) started, $(elapsed "$t0") s, state $KAFKA_CLUSTER_DIR)"
}

# All nodes at once: one by one, the last broker's controlled shutdown waits for a controller
# quorum that the others took with them. A node still running KAFKA_CLUSTER_STOP_TIMEOUT after
# SIGTERM is killed: the cluster holds test data only.
cluster_down() {
  local n pid pids=()
  for n in "${KAFKA_CLUSTER_NODES[@]}"; do
    if pid=$(cluster_node_pid "$n"); then
      STACK_TIMEOUT=$KAFKA_CLUSTER_STOP_TIMEOUT stop_pid "kafka cluster node $n" "$pid" "$(cluster_node_dir "$n")/kafka.log" &
      pids+=($!)
    else say "kafka cluster node $n not running"; fi
  done
  (( ${#pids[@]} == 0 )) || wait "${pids[@]}"
  for n in "${KAFKA_CLUSTER_NODES[@]}"; do rm -f "$(cluster_node_dir "$n")/kafka.pid"; done
}

# cluster_kill N: SIGKILL node N, as a crash would; waits until it is gone; `kafka-cluster up` restarts it
cluster_kill() {
  local n=${1:-} pid
  [[ " ${KAFKA_CLUSTER_NODES[*]} " == *" $n "* ]] || die "usage: stack.sh kafka-cluster kill ${KAFKA_CLUSTER_NODES[*]// /|}"
  pid=$(cluster_node_pid "$n") || die "kafka cluster node $n is not running"
  sigkill_and_wait "$pid" "kafka cluster node $n"
}

cluster_status() {
  local n pid rc=0
  echo "kafka cluster: bootstrap $(cluster_bootstrap)  state $KAFKA_CLUSTER_DIR"
  for n in "${KAFKA_CLUSTER_NODES[@]}"; do
    if pid=$(cluster_node_pid "$n") && port_open "$(cluster_port "$n")"; then
      echo "  node $n: up    $HOST:$(cluster_port "$n")  controller $HOST:$(cluster_controller_port "$n")  pid $pid"
    else
      echo "  node $n: down  $HOST:$(cluster_port "$n")  controller $HOST:$(cluster_controller_port "$n")"; rc=3
    fi
  done
  return $rc
}

cmd_kafka_cluster() {
  local sub=${1:-}
  [[ $# -gt 0 ]] && shift
  case $sub in
    up)     mkdir -p "$KAFKA_CLUSTER_DIR"; take_lock "$KAFKA_CLUSTER_DIR/.lock"; cluster_up ;;
    down)   mkdir -p "$KAFKA_CLUSTER_DIR"; take_lock "$KAFKA_CLUSTER_DIR/.lock"; cluster_down ;;
    kill)   cluster_kill "$@" ;;
    status) cluster_status ;;
    reset)  mkdir -p "$KAFKA_CLUSTER_DIR"; take_lock "$KAFKA_CLUSTER_DIR/.lock"; cluster_down
            rm -rf "$KAFKA_CLUSTER_DIR"/node* "$KAFKA_CLUSTER_DIR/cluster.id"
            say "deleted the kafka cluster's nodes (data, configs, logs) under $KAFKA_CLUSTER_DIR" ;;
    *) die "usage: stack.sh kafka-cluster up|down|kill N|status|reset" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# redis

write_redis_config() {
  mkdir -p "$REDIS_DATA" "$LOG_DIR"
  cat >"$REDIS_CONF" <<EOF
# Generated by stack/stack.sh on every 'up' (edit the script, not this file).
bind $HOST
protected-mode yes
port $REDIS_PORT
daemonize yes
supervised no
pidfile "$REDIS_PIDFILE"
logfile "$REDIS_LOG"
loglevel notice
dir "$REDIS_DATA"
# persistence: AOF (fsync every second) only. Redis's default RDB snapshots on top fork and
# write the whole dataset every minute under load: 10 s of a core at 300,000 profiles, taken
# from the job on a 2-core machine (bench-state), for no durability AOF does not give.
appendonly yes
appendfsync everysec
save ""
dbfilename dump.rdb
EOF
}

redis_start() {
  command -v redis-server >/dev/null 2>&1 || die "redis-server not on PATH (run: stack/stack.sh install)"
  check_port_free "$REDIS_PORT" redis
  write_redis_config
  rotate_log "$REDIS_LOG"
  printf '===== %s stack.sh: starting redis on %s:%s =====\n' "$(date -Is)" "$HOST" "$REDIS_PORT" >>"$REDIS_LOG"
  rm -f "$REDIS_PIDFILE"
  # daemonize yes: redis forks, calls setsid and writes its pid file itself
  (cd "$REDIS_HOME" && setsid nohup redis-server "$REDIS_CONF" >>"$REDIS_LOG" 2>&1 </dev/null 9>&-) \
    || { log_tail "$REDIS_LOG"; die "redis-server failed to start (log: $REDIS_LOG)"; }
}

redis_wait_ready() {
  local t0=$1 deadline=$(( $1 + STACK_TIMEOUT * 1000000 ))
  until redis_ping; do
    if (( $(now_us) > t0 + 2000000 )) && [[ -z $(redis_pid) ]]; then
      log_tail "$REDIS_LOG"; die "redis: process not running (log: $REDIS_LOG)"
    fi
    (( $(now_us) < deadline )) || { log_tail "$REDIS_LOG"; die "redis: no PONG on $HOST:$REDIS_PORT after ${STACK_TIMEOUT}s (log: $REDIS_LOG)"; }
    sleep 0.1
  done
}

# ---------------------------------------------------------------------------------------------
# commands

check_port_free() {
  if port_open "$1"; then
    die "$2: port $HOST:$1 is already in use by another process (not started by this stack); stop it or set another port (see stack/README.md)"
  fi
}

cmd_up() {
  check_ports_config
  local t_all; t_all=$(now_us)
  cmd_install
  mkdir -p "$LOG_DIR"

  local kpid rpid t_k="" t_r=""
  if kpid=$(kafka_pid); then
    port_open "$KAFKA_PORT" || die "kafka: pid $kpid is running but port $KAFKA_PORT is closed (still starting or wrong KAFKA_PORT?); see $KAFKA_LOG"
    say "kafka already running on $HOST:$KAFKA_PORT (pid $kpid)"
  else
    write_kafka_config
    kafka_format_if_needed
    t_k=$(now_us)
    kafka_start
  fi

  if rpid=$(redis_pid); then
    redis_ping || die "redis: pid $rpid is running but no PONG on $HOST:$REDIS_PORT; see $REDIS_LOG"
    say "redis already running on $HOST:$REDIS_PORT (pid $rpid)"
  else
    t_r=$(now_us)
    redis_start
  fi

  if [[ -n $t_r ]]; then
    redis_wait_ready "$t_r"
    say "redis up on $HOST:$REDIS_PORT (pid $(redis_pid), $(elapsed "$t_r") s)"
  fi
  if [[ -n $t_k ]]; then
    kafka_wait_ready "$t_k"
    say "kafka up on $HOST:$KAFKA_PORT (pid $(kafka_pid), $(elapsed "$t_k") s)"
  fi
  say "ready in $(elapsed "$t_all") s (kafka $HOST:$KAFKA_PORT, redis $HOST:$REDIS_PORT, state ${STACK_DIR})"
}

# stop_pid NAME PID LOG
stop_pid() {
  local name=$1 pid=$2 log=$3 t0 deadline
  t0=$(now_us); deadline=$(( t0 + STACK_TIMEOUT * 1000000 ))
  kill -TERM "$pid" 2>/dev/null || true
  while alive "$pid"; do
    if (( $(now_us) >= deadline )); then
      warn "$name (pid $pid) still running ${STACK_TIMEOUT}s after SIGTERM; sending SIGKILL (log: $log)"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.1
  done
  say "$name stopped (pid $pid, $(elapsed "$t0") s)"
}

# cmd_kill kafka|redis: SIGKILL, as a crash would (no shutdown, no flush); waits until it is gone
cmd_kill() {
  local pid only=${1:-}
  case $only in
    kafka) pid=$(kafka_pid) || die "kafka is not running" ;;
    redis) pid=$(redis_pid) || die "redis is not running" ;;
    *) die "usage: stack.sh kill kafka|redis" ;;
  esac
  sigkill_and_wait "$pid" "$only"
}

# cmd_down [kafka|redis]: both by default
cmd_down() {
  local pid only=${1:-}
  [[ -z $only || $only == kafka || $only == redis ]] || die "usage: stack.sh down [kafka|redis]"
  if [[ $only != redis ]]; then
    if pid=$(kafka_pid); then stop_pid kafka "$pid" "$KAFKA_LOG"; else say "kafka not running"; fi
    rm -f "$KAFKA_PIDFILE"
  fi
  if [[ $only != kafka ]]; then
    if pid=$(redis_pid); then stop_pid redis "$pid" "$REDIS_LOG"; else say "redis not running"; fi
    rm -f "$REDIS_PIDFILE"
  fi
}

cmd_reset() {
  cmd_down
  rm -rf "$KAFKA_DATA" "$REDIS_DATA" "$KAFKA_HOME/cluster.id"
  say "deleted data folders ${KAFKA_DATA#"$REPO_DIR"/} and ${REDIS_DATA#"$REPO_DIR"/} (jars and logs kept)"
}

cmd_status() {
  local pid state rc=0 cid=""
  [[ -f $KAFKA_HOME/cluster.id ]] && cid=" cluster-id $(<"$KAFKA_HOME/cluster.id")"
  echo "stack dir: $STACK_DIR"
  if pid=$(kafka_pid); then
    if port_open "$KAFKA_PORT"; then state=up; else state="starting (port closed)"; rc=3; fi
    echo "kafka: $state  bootstrap $HOST:$KAFKA_PORT  controller $HOST:$KAFKA_CONTROLLER_PORT  pid $pid"
  else
    echo "kafka: down  bootstrap $HOST:$KAFKA_PORT  controller $HOST:$KAFKA_CONTROLLER_PORT"; rc=3
  fi
  echo "       data $KAFKA_DATA$([[ -f $KAFKA_DATA/meta.properties ]] && echo " (formatted$cid)" || echo " (not formatted)")"
  echo "       log  $KAFKA_LOG"
  echo "       libs $KAFKA_LIBS ($(find "$KAFKA_LIBS" -maxdepth 1 -name '*.jar' 2>/dev/null | wc -l) jars)"
  if pid=$(redis_pid); then
    if redis_ping; then state=up; else state="not answering PING"; rc=3; fi
    echo "redis: $state  $HOST:$REDIS_PORT  pid $pid"
  else
    echo "redis: down  $HOST:$REDIS_PORT"; rc=3
  fi
  echo "       data $REDIS_DATA"
  echo "       log  $REDIS_LOG"
  echo "jars:  $CONNECTOR_JAR $([[ -f $CONNECTOR_JAR ]] && echo "(present)" || echo "(missing: run stack/stack.sh install)")"
  return $rc
}

# ---------------------------------------------------------------------------------------------
# redis cluster (3 masters + 3 replicas on loopback, for the cluster tests; apart from the above)

RCLUSTER_HOME=$STACK_DIR/redis-cluster
RCLUSTER_PORT=${REDIS_CLUSTER_PORT:-7101}      # first of six ports; the cluster bus takes port+10000
RCLUSTER_NODE_TIMEOUT=${REDIS_CLUSTER_NODE_TIMEOUT:-2000}  # ms: a master silent this long is failed over
rcluster_ports() { local i; for i in 0 1 2 3 4 5; do printf '%s ' $((RCLUSTER_PORT + i)); done; }
rcluster_pid() { pid_of "$RCLUSTER_HOME/$1/redis.pid" redis-server; }
rcluster_cli() { local port=$1; shift; timeout 5 redis-cli -h "$HOST" -p "$port" "$@" 2>/dev/null; }

rcluster_lock() {
  mkdir -p "$RCLUSTER_HOME"
  exec 8>"$RCLUSTER_HOME/.lock"
  flock -w $((STACK_TIMEOUT * 3)) 8 || die "timed out waiting for $RCLUSTER_HOME/.lock"
}

rcluster_start_node() {
  local port=$1 dir=$RCLUSTER_HOME/$1
  check_port_free "$port" "redis-cluster"
  check_port_free $((port + 10000)) "redis-cluster bus"
  mkdir -p "$dir"
  cat >"$dir/redis.conf" <<EOF
# Generated by stack/stack.sh redis-cluster up (edit the script, not this file).
bind $HOST
protected-mode yes
port $port
daemonize yes
pidfile "$dir/redis.pid"
logfile "$dir/redis.log"
dir "$dir"
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout $RCLUSTER_NODE_TIMEOUT
appendonly yes
appendfsync everysec
save ""
EOF
  rm -f "$dir/redis.pid"
  (cd "$dir" && setsid nohup redis-server "$dir/redis.conf" >>"$dir/redis.log" 2>&1 </dev/null 9>&- 8>&-) \
    || { log_tail "$dir/redis.log"; die "redis-cluster: node $port failed to start"; }
}

# every live node says cluster_state:ok, and the cluster has 3 masters not marked failed
rcluster_ok() {
  local port first=""
  for port in $(rcluster_ports); do
    [[ -n $(rcluster_pid "$port") ]] || continue
    first=${first:-$port}
    [[ $(rcluster_cli "$port" cluster info) == *cluster_state:ok* ]] || return 1
  done
  [[ -n $first ]] && (( $(rcluster_cli "$first" cluster nodes | grep -v fail | grep -c master) == 3 ))
}

cmd_rcluster_up() {
  command -v redis-server >/dev/null 2>&1 || die "redis-server not on PATH (run: stack/stack.sh install)"
  local port t0 fresh=1 nodes=(); t0=$(now_us)
  for port in $(rcluster_ports); do
    [[ -f $RCLUSTER_HOME/$port/nodes.conf ]] && fresh=0
    rcluster_pid "$port" >/dev/null || rcluster_start_node "$port"
    nodes+=("$HOST:$port")
  done
  for port in $(rcluster_ports); do
    until [[ $(rcluster_cli "$port" ping) == PONG ]]; do
      (( $(now_us) < t0 + STACK_TIMEOUT * 1000000 )) || { log_tail "$RCLUSTER_HOME/$port/redis.log"; die "redis-cluster: no PONG on $port"; }
      sleep 0.1
    done
  done
  if (( fresh )); then
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$RCLUSTER_HOME/create.log" 2>&1 \
      || { tail -20 "$RCLUSTER_HOME/create.log"; die "redis-cluster: redis-cli --cluster create failed"; }
  fi
  until rcluster_ok; do
    (( $(now_us) < t0 + STACK_TIMEOUT * 1000000 )) || die "redis-cluster: cluster_state not ok after ${STACK_TIMEOUT}s"
    sleep 0.1
  done
  say "redis-cluster up on ${nodes[*]} ($(elapsed "$t0") s, state $RCLUSTER_HOME)"
}

cmd_rcluster_down() {
  local port pid
  for port in $(rcluster_ports); do
    if pid=$(rcluster_pid "$port"); then stop_pid "redis-cluster $port" "$pid" "$RCLUSTER_HOME/$port/redis.log"; fi
    rm -f "$RCLUSTER_HOME/$port/redis.pid"
  done
}

# SIGKILL one node, as a crash would; `up` restarts it (it rejoins, as a replica if it was failed over)
cmd_rcluster_kill() {
  local port=${1:-} pid
  [[ " $(rcluster_ports)" == *" $port "* ]] || die "usage: stack.sh redis-cluster kill <port> (one of: $(rcluster_ports))"
  pid=$(rcluster_pid "$port") || die "redis-cluster: node $port is not running"
  sigkill_and_wait "$pid" "redis-cluster node $port"
}

cmd_rcluster_status() {
  local port pid rc=0
  for port in $(rcluster_ports); do
    if pid=$(rcluster_pid "$port"); then
      echo "redis-cluster $HOST:$port: up  pid $pid  $(rcluster_cli "$port" role | head -1)  $(rcluster_cli "$port" cluster info | grep -o 'cluster_state:[a-z]*')"
    else
      echo "redis-cluster $HOST:$port: down"; rc=3
    fi
  done
  echo "state $RCLUSTER_HOME"
  return $rc
}

cmd_rcluster() {
  local sub=${1:-}; [[ $# -gt 0 ]] && shift
  [[ $RCLUSTER_PORT =~ ^[0-9]+$ ]] && (( RCLUSTER_PORT > 0 && RCLUSTER_PORT + 10005 < 65536 )) \
    || die "invalid REDIS_CLUSTER_PORT: $RCLUSTER_PORT (its six ports + 10000, the bus, must be ports)"
  case $sub in
    up)     rcluster_lock; cmd_rcluster_up ;;
    down)   rcluster_lock; cmd_rcluster_down ;;
    kill)   cmd_rcluster_kill "$@" ;;
    reset)  rcluster_lock; cmd_rcluster_down; rm -rf "${RCLUSTER_HOME:?}"/[0-9]* "$RCLUSTER_HOME/create.log"; say "deleted the redis-cluster data under $RCLUSTER_HOME" ;;
    status) cmd_rcluster_status ;;
    *) die "usage: stack.sh redis-cluster up|down|kill <port>|reset|status" ;;
  esac
}

cmd_kafka_class() {
  [[ $# -ge 1 ]] || die "usage: stack.sh kafka-class <main.Class> [args...]"
  [[ -f $KAFKA_MAIN_JAR ]] || die "kafka jars missing (run: stack/stack.sh install)"
  [[ -f $KAFKA_CONF/tools-log4j2.properties ]] || write_kafka_config
  exec "$JAVA" "${TOOL_JVM_OPTS[@]}" -Dlog4j2.configurationFile="file:$KAFKA_CONF/tools-log4j2.properties" \
    -cp "$KAFKA_LIBS/*" "$@"
}

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    install)     take_lock; cmd_install ;;
    up|start)    take_lock; cmd_up ;;
    down|stop)   take_lock; cmd_down "$@" ;;
    kill)        take_lock; cmd_kill "$@" ;;
    reset)       take_lock; cmd_reset ;;
    status)      cmd_status ;;
    kafka-class) cmd_kafka_class "$@" ;;
    kafka-cluster) cmd_kafka_cluster "$@" ;;
    redis-cluster) cmd_rcluster "$@" ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
