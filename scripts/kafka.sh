#!/usr/bin/env bash
# Fetch and run a single-node Apache Kafka broker in KRaft mode (broker and
# controller in one JVM) that listens on 127.0.0.1 only.
#
# Usage: scripts/kafka.sh fetch|start|stop|status
#
#   fetch   Copy the Kafka runtime jars from Maven Central into $KAFKA_HOME/libs.
#   start   Fetch if needed, format the data dir once, start the broker in the
#           background and wait until it serves requests.
#   stop    Stop the broker of $KAFKA_DATA (SIGTERM, then SIGKILL after 30 s).
#   status  Print whether the broker of $KAFKA_DATA runs and where. Exits 3 when
#           it does not run (the LSB convention for "program is not running").
#
# Environment:
#   KAFKA_VERSION    Kafka release to fetch and run (default: kafka.version in scripts/kafka/pom.xml).
#   KAFKA_HOME       Directory of the jars, in $KAFKA_HOME/libs (default: <repo>/.kafka/dist-<version>).
#   KAFKA_DATA       Config, KRaft log dir, log files and broker.env (default: <repo>/.kafka/run).
#   KAFKA_PORT       Broker port on 127.0.0.1 (default: 9092), or "auto" for a free port.
#   KAFKA_HEAP_OPTS  JVM heap options of the broker (default: -Xmx512m).
#   KAFKA_START_TIMEOUT  Seconds that start waits for the broker to respond (default: 60).
#
# Secure listeners, off unless their port is set; the plaintext listener stays:
#   KAFKA_SSL_PORT       Also listen with TLS on this port of 127.0.0.1, or "auto".
#   KAFKA_SASL_SSL_PORT  Also listen with TLS and SASL (SCRAM-SHA-256, SCRAM-SHA-512
#                        and PLAIN) on this port of 127.0.0.1, or "auto".
#   KAFKA_SSL_KEYSTORE   PEM file with the broker's unencrypted PKCS#8 private key and
#                        its certificate chain; needed by both secure listeners.
#   KAFKA_SSL_CLIENT_CA  PEM file of the CA that signs client certificates. When set,
#                        the TLS listener accepts only clients that present one.
#   KAFKA_SCRAM_USERS    Users of the SASL listener, "NAME=PASSWORD" separated by spaces.
#                        The SCRAM users are stored when the data dir is formatted,
#                        on its first start, so later changes reach only PLAIN.
#
# After start, $KAFKA_DATA/broker.env contains KAFKA_BOOTSTRAP=127.0.0.1:PORT,
# NURTURE_BROKER=kafka://127.0.0.1:PORT, KAFKA_PID and KAFKA_LOG, one KEY=VALUE per
# line without quotes, so that `set -a; . broker.env` points nurture at the broker.
# With secure listeners it also has KAFKA_SSL_BOOTSTRAP and KAFKA_SASL_SSL_BOOTSTRAP.
#
# Needs bash 4 or newer and Linux, because it reads /proc to tell whether a
# pid is still the broker. flock (util-linux) serializes concurrent calls when
# it is installed.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
POM_FILE=$SCRIPT_DIR/kafka/pom.xml
readonly SCRIPT_DIR REPO_ROOT POM_FILE

readonly MIN_JAVA_VERSION=17
readonly JAVA_PACKAGE=openjdk-17-jre-headless
readonly MAVEN_PACKAGE=maven
readonly STOP_TIMEOUT_SECONDS=30
readonly LOCK_TIMEOUT_SECONDS=120
readonly FETCH_LOCK_TIMEOUT_SECONDS=900
# Ports that KAFKA_PORT=auto and the controller listener pick from. They lie
# below Linux's default ephemeral range (32768-60999), so outgoing
# connections do not take them.
readonly AUTO_PORT_MIN=20000
readonly AUTO_PORT_MAX=32767

# --- messages ---------------------------------------------------------------

info() {
  printf '%s\n' "$*"
}

warn() {
  printf 'kafka.sh: %s\n' "$*" >&2
}

die() {
  printf 'kafka.sh: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

# --- settings ---------------------------------------------------------------

pom_kafka_version() {
  sed -n 's:.*<kafka\.version>\(.*\)</kafka\.version>.*:\1:p' "$POM_FILE" | head -n 1
}

# Print the directory given as an absolute path. An existing directory gets
# its normalized form from pwd, so the same data dir always gives the same
# path, which is_our_broker compares with the broker's command line.
absolute_dir() {
  if [[ -d $1 ]]; then
    (cd "$1" && pwd)
  elif [[ $1 == /* ]]; then
    printf '%s\n' "$1"
  else
    printf '%s/%s\n' "$PWD" "$1"
  fi
}

load_settings() {
  KAFKA_VERSION=${KAFKA_VERSION:-$(pom_kafka_version)}
  if [[ ! $KAFKA_VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+([.-][A-Za-z0-9.-]+)?$ ]]; then
    die "invalid KAFKA_VERSION '$KAFKA_VERSION': expected a Kafka release such as 4.1.1."
  fi

  KAFKA_HOME=${KAFKA_HOME:-$REPO_ROOT/.kafka/dist-$KAFKA_VERSION}
  KAFKA_DATA=${KAFKA_DATA:-$REPO_ROOT/.kafka/run}
  KAFKA_PORT=${KAFKA_PORT:-9092}
  KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx512m}
  START_TIMEOUT_SECONDS=${KAFKA_START_TIMEOUT:-60}

  if [[ $KAFKA_PORT != auto ]] && ! is_valid_port "$KAFKA_PORT"; then
    die "invalid KAFKA_PORT '$KAFKA_PORT': expected a port number from 1 to 65535, or 'auto'."
  fi

  if [[ ! $START_TIMEOUT_SECONDS =~ ^[0-9]+$ ]] || (( 10#$START_TIMEOUT_SECONDS < 1 )); then
    die "invalid KAFKA_START_TIMEOUT '$START_TIMEOUT_SECONDS': expected a whole number of seconds, 1 or more."
  fi

  LIBS_DIR=$KAFKA_HOME/libs
  KAFKA_JAR=$LIBS_DIR/kafka_2.13-$KAFKA_VERSION.jar
  load_secure_settings
}

# Check the settings of the secure listeners, which are off unless a port is set.
load_secure_settings() {
  local name entry
  KAFKA_SSL_PORT=${KAFKA_SSL_PORT:-}
  KAFKA_SASL_SSL_PORT=${KAFKA_SASL_SSL_PORT:-}
  KAFKA_SSL_KEYSTORE=${KAFKA_SSL_KEYSTORE:-}
  KAFKA_SSL_CLIENT_CA=${KAFKA_SSL_CLIENT_CA:-}
  KAFKA_SCRAM_USERS=${KAFKA_SCRAM_USERS:-}

  for name in KAFKA_SSL_PORT KAFKA_SASL_SSL_PORT; do
    if [[ -n ${!name} && ${!name} != auto ]] && ! is_valid_port "${!name}"; then
      die "invalid $name '${!name}': expected a port number from 1 to 65535, or 'auto'."
    fi
  done
  if [[ -z $KAFKA_SSL_PORT$KAFKA_SASL_SSL_PORT ]]; then
    return 0
  fi

  if [[ -z $KAFKA_SSL_KEYSTORE ]]; then
    die "KAFKA_SSL_PORT or KAFKA_SASL_SSL_PORT is set, but KAFKA_SSL_KEYSTORE is not: name the PEM file with the broker's private key and certificate chain."
  fi
  for name in KAFKA_SSL_KEYSTORE KAFKA_SSL_CLIENT_CA; do
    [[ -n ${!name} ]] || continue
    if [[ ! -f ${!name} || ! -r ${!name} ]]; then
      die "$name names ${!name}, which is not a readable file."
    fi
    # The broker runs with another working directory than the caller.
    printf -v "$name" '%s/%s' "$(absolute_dir "$(dirname "${!name}")")" "$(basename "${!name}")"
  done
  if [[ -n $KAFKA_SASL_SSL_PORT && -z $KAFKA_SCRAM_USERS ]]; then
    die "KAFKA_SASL_SSL_PORT is set, but KAFKA_SCRAM_USERS is not: give the users as NAME=PASSWORD separated by spaces."
  fi
  for entry in $KAFKA_SCRAM_USERS; do
    # The storage tool's --add-scram and the JAAS line take the values unquoted.
    if [[ ! $entry =~ ^[A-Za-z0-9._-]+=[A-Za-z0-9._~+/-]+$ ]]; then
      die "invalid entry in KAFKA_SCRAM_USERS: expected NAME=PASSWORD, each of letters, digits and . _ - (the password also ~ + /)."
    fi
  done
}

# Set the paths inside KAFKA_DATA, which start, stop and status use.
load_data_paths() {
  KAFKA_DATA=$(absolute_dir "$KAFKA_DATA")
  SERVER_PROPERTIES=$KAFKA_DATA/server.properties
  LOG4J_CONFIG=$KAFKA_DATA/log4j2.xml
  METADATA_DIR=$KAFKA_DATA/kraft-logs
  LOGS_DIR=$KAFKA_DATA/logs
  SERVER_LOG=$LOGS_DIR/server.log
  CONSOLE_LOG=$LOGS_DIR/kafka.out
  BROKER_ENV=$KAFKA_DATA/broker.env
  CLUSTER_ENV=$KAFKA_DATA/cluster.env
}

is_valid_port() {
  [[ $1 =~ ^[0-9]{1,5}$ ]] && (( 10#$1 >= 1 && 10#$1 <= 65535 ))
}

# Print the value of KEY in a KEY=VALUE file, or nothing.
read_env_value() {
  local key=$1 file=$2
  [[ -f $file ]] || return 0
  sed -n "s/^$key=//p" "$file" | tail -n 1
}

# --- required tools ---------------------------------------------------------

java_major_version() {
  local version
  version=$(java -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n 1)
  # Java 8 and older report versions such as "1.8.0_392", and Java 9 and
  # newer report versions such as "17.0.15".
  version=${version#1.}
  printf '%s\n' "${version%%[!0-9]*}"
}

# Exit with an install hint unless java (17 or newer) and, when the argument
# is "maven", mvn are on PATH.
require_tools() {
  local need_maven=${1:-} missing=() packages=()

  if ! command -v java >/dev/null 2>&1; then
    missing+=("java (Java $MIN_JAVA_VERSION or newer)")
    packages+=("$JAVA_PACKAGE")
  fi
  if [[ $need_maven == maven ]] && ! command -v mvn >/dev/null 2>&1; then
    missing+=("mvn (Apache Maven, which fetches the Kafka jars from Maven Central)")
    packages+=("$MAVEN_PACKAGE")
  fi
  if (( ${#missing[@]} > 0 )); then
    local joined pronoun=it
    joined=$(printf '%s, ' "${missing[@]}")
    (( ${#missing[@]} == 1 )) || pronoun=them
    die "not found on PATH: ${joined%, }. Install $pronoun and retry, on Debian or Ubuntu with: apt-get install ${packages[*]}"
  fi

  require_java_version
}

require_java_version() {
  local java_path major
  java_path=$(command -v java)
  major=$(java_major_version)

  if [[ -z $major ]]; then
    die "could not read the Java version from 'java -version' ($java_path). Kafka $KAFKA_VERSION needs Java $MIN_JAVA_VERSION or newer, on Debian or Ubuntu: apt-get install $JAVA_PACKAGE"
  fi
  if (( major < MIN_JAVA_VERSION )); then
    die "java on PATH ($java_path) is Java $major, but Kafka $KAFKA_VERSION needs Java $MIN_JAVA_VERSION or newer. Install it, on Debian or Ubuntu with 'apt-get install $JAVA_PACKAGE', and put its bin directory first on PATH."
  fi
}

# --- fetch ------------------------------------------------------------------

# Run Maven in batch mode, printing only warnings and errors. Maven 3.8 prints
# ANSI reset codes even in batch mode, so sed strips them.
run_maven() {
  mvn -B -q -Dstyle.color=never "$@" </dev/null 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g'
}

libs_are_fetched() {
  [[ -f $KAFKA_JAR ]]
}

# Copy the runtime jars into a staging directory and rename it to libs, so an
# interrupted fetch never leaves a libs directory that looks complete.
fetch_libs() {
  local staging_dir=$KAFKA_HOME/libs.partial
  local started=$SECONDS

  info "Fetching Kafka $KAFKA_VERSION jars with Maven into $LIBS_DIR ..."
  rm -rf "$staging_dir"

  if ! run_maven -f "$POM_FILE" -Dkafka.version="$KAFKA_VERSION" \
      dependency:copy-dependencies -DoutputDirectory="$staging_dir"; then
    rm -rf "$staging_dir"
    die "Maven failed to fetch Kafka $KAFKA_VERSION (its output is above). Check that the version exists on Maven Central and that this machine reaches Maven Central, then retry."
  fi
  if [[ ! -f $staging_dir/kafka_2.13-$KAFKA_VERSION.jar ]]; then
    rm -rf "$staging_dir"
    die "Maven finished, but kafka_2.13-$KAFKA_VERSION.jar is missing from its output. Check the dependencies in $POM_FILE."
  fi

  rm -rf "$LIBS_DIR"
  mv "$staging_dir" "$LIBS_DIR"
  info "Fetched $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars in $(( SECONDS - started )) s."
}

# Fetch unless the jars are there. A lock on KAFKA_HOME makes concurrent
# calls (such as parallel scripts/with-kafka.sh runs on a fresh checkout) run
# Maven once, because the others wait for the lock and then find the jars.
fetch_libs_if_missing() {
  if libs_are_fetched; then
    return 0
  fi

  mkdir -p "$KAFKA_HOME"
  if command -v flock >/dev/null 2>&1; then
    exec 8>"$KAFKA_HOME/fetch.lock"
    if ! flock -w "$FETCH_LOCK_TIMEOUT_SECONDS" 8; then
      die "another fetch into $KAFKA_HOME still runs after $FETCH_LOCK_TIMEOUT_SECONDS s. Wait for it, or stop it."
    fi
  fi
  if ! libs_are_fetched; then
    fetch_libs
  fi
  exec 8>&-
}

# --- ports ------------------------------------------------------------------

# Succeed if something accepts TCP connections on 127.0.0.1:PORT.
port_is_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Succeed if a Kafka broker on 127.0.0.1:PORT responds to an ApiVersions
# request. The broker accepts TCP connections before it serves requests, so an
# open port alone does not mean that it is ready.
broker_responds() {
  local port=$1 response_bytes
  response_bytes=$(
    exec 2>/dev/null
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 0
    # Request size 10, then the header: api_key 18 (ApiVersions),
    # api_version 0, correlation_id 1, client_id of length 0.
    printf '\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x01\x00\x00' >&3
    timeout 5 head -c 4 <&3 | wc -c || true
  )
  [[ ${response_bytes// /} == 4 ]]
}

# Print a port from AUTO_PORT_MIN..AUTO_PORT_MAX on which nothing listens,
# other than the ports given as arguments.
pick_free_port() {
  local port excluded_port
  for _ in $(seq 1 200); do
    port=$(( AUTO_PORT_MIN + RANDOM % (AUTO_PORT_MAX - AUTO_PORT_MIN + 1) ))
    for excluded_port in "$@"; do
      [[ $port == "$excluded_port" ]] && continue 2
    done
    if ! port_is_in_use "$port"; then
      printf '%s\n' "$port"
      return 0
    fi
  done
  die "found no free port on 127.0.0.1 between $AUTO_PORT_MIN and $AUTO_PORT_MAX after 200 attempts. Set KAFKA_PORT to a free port."
}

resolve_broker_port() {
  if [[ $KAFKA_PORT == auto ]]; then
    pick_free_port
    return 0
  fi
  if port_is_in_use "$KAFKA_PORT"; then
    die "port $KAFKA_PORT on 127.0.0.1 is already in use by another process. Stop that process, or set KAFKA_PORT to another port or to 'auto'."
  fi
  printf '%s\n' "$KAFKA_PORT"
}

# Print the controller port. Formatting with --standalone records the
# controller's endpoint in the KRaft log, so later starts reuse the port stored
# in cluster.env. If another process listens on it, a new port is picked.
# Kafka 4.1.1 started and served clients after such a change in a manual test,
# since the controller is the only voter.
resolve_controller_port() {
  local broker_port=$1 port
  port=$(read_env_value CONTROLLER_PORT "$CLUSTER_ENV")

  if [[ -n $port && $port != "$broker_port" ]] && ! port_is_in_use "$port"; then
    printf '%s\n' "$port"
    return 0
  fi
  if [[ -n $port ]]; then
    warn "the controller port $port stored in $CLUSTER_ENV is in use by another process, so the controller listens on a new port."
  fi
  pick_free_port "$broker_port"
}

# Print the port of a secure listener: nothing when SETTING is empty, a free
# port other than the remaining arguments when it is "auto", else SETTING.
resolve_secure_port() {
  local name=$1 setting=$2
  shift 2
  if [[ -z $setting ]]; then
    return 0
  fi
  if [[ $setting == auto ]]; then
    pick_free_port "$@"
    return 0
  fi
  if port_is_in_use "$setting"; then
    die "port $setting of $name on 127.0.0.1 is already in use by another process. Set $name to another port or to 'auto'."
  fi
  printf '%s\n' "$setting"
}

# --- config files -----------------------------------------------------------


# Print the server.properties lines of the secure listeners, or nothing.
secure_listener_properties() {
  local entry plain_users=""
  if [[ -z $SSL_PORT$SASL_SSL_PORT ]]; then
    return 0
  fi
  printf '\n# Secure listeners (KAFKA_SSL_PORT, KAFKA_SASL_SSL_PORT).\n'
  printf 'ssl.keystore.type=PEM\nssl.keystore.location=%s\n' "$KAFKA_SSL_KEYSTORE"
  if [[ -n $KAFKA_SSL_CLIENT_CA ]]; then
    printf 'ssl.truststore.type=PEM\nssl.truststore.location=%s\n' "$KAFKA_SSL_CLIENT_CA"
    printf 'listener.name.ssl.ssl.client.auth=required\n'
  fi
  if [[ -n $SASL_SSL_PORT ]]; then
    for entry in $KAFKA_SCRAM_USERS; do
      plain_users+=" user_${entry%%=*}=\"${entry#*=}\""
    done
    printf 'sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN\n'
    printf 'listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n'
    printf 'listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n'
    printf 'listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required%s;\n' "$plain_users"
  fi
}

write_server_properties() {
  local broker_port=$1 controller_port=$2
  local listeners="PLAINTEXT://127.0.0.1:$broker_port,CONTROLLER://127.0.0.1:$controller_port"
  local protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  if [[ -n $SSL_PORT ]]; then
    listeners+=",SSL://127.0.0.1:$SSL_PORT"
    protocols+=",SSL:SSL"
  fi
  if [[ -n $SASL_SSL_PORT ]]; then
    listeners+=",SASL_SSL://127.0.0.1:$SASL_SSL_PORT"
    protocols+=",SASL_SSL:SASL_SSL"
  fi
  if [[ -n $SASL_SSL_PORT ]]; then
    # The file then holds the passwords of KAFKA_SCRAM_USERS.
    : >"$SERVER_PROPERTIES"
    chmod 600 "$SERVER_PROPERTIES"
  fi
  cat >"$SERVER_PROPERTIES" <<EOF
# scripts/kafka.sh rewrites this file on every start, so edits are lost.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=$listeners
advertised.listeners=$listeners
listener.security.protocol.map=$protocols
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$METADATA_DIR

# Topics must be created explicitly, as in production.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1

# A single broker can hold only one replica of the internal topics.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# Compacted changelog topics need the log cleaner.
log.cleaner.enable=true
EOF
  secure_listener_properties >>"$SERVER_PROPERTIES"
}

write_log4j_config() {
  cat >"$LOG4J_CONFIG" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- scripts/kafka.sh rewrites this file on every start, so edits are lost. -->
<Configuration status="warn">
  <Appenders>
    <RollingFile name="server" fileName="$SERVER_LOG" filePattern="$SERVER_LOG.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="20 MB"/>
      <DefaultRolloverStrategy max="5"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="warn"/>
    <Root level="info">
      <AppenderRef ref="server"/>
    </Root>
  </Loggers>
</Configuration>
EOF
}

# --- KRaft storage ----------------------------------------------------------

# Set SCRAM_ARGUMENTS to the storage tool's --add-scram arguments for
# KAFKA_SCRAM_USERS, empty without a SASL listener. (Bash before 4.4 calls an
# empty array unbound under set -u, hence the ${...+...} where it is used.)
scram_arguments() {
  local entry mechanism
  SCRAM_ARGUMENTS=()
  [[ -n $SASL_SSL_PORT ]] || return 0
  for entry in $KAFKA_SCRAM_USERS; do
    for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
      SCRAM_ARGUMENTS+=(--add-scram "$mechanism=[name=${entry%%=*},password=${entry#*=}]")
    done
  done
}

storage_tool() {
  java -Dlog4j2.configurationFile="$LOG4J_CONFIG" -cp "$LIBS_DIR/*" kafka.tools.StorageTool "$@" </dev/null
}

# Format the KRaft log directory as a new single-voter cluster, unless an
# earlier start did.
format_storage_once() {
  local controller_port=$1 cluster_id output

  if [[ -f $METADATA_DIR/meta.properties ]]; then
    return 0
  fi

  cluster_id=$(storage_tool random-uuid)
  scram_arguments
  if ! output=$(storage_tool format --config "$SERVER_PROPERTIES" --cluster-id "$cluster_id" --standalone \
      ${SCRAM_ARGUMENTS[@]+"${SCRAM_ARGUMENTS[@]}"} 2>&1); then
    printf '%s\n' "$output" >&2
    die "formatting the KRaft log directory $METADATA_DIR failed (the storage tool's output is above). Delete $KAFKA_DATA and retry."
  fi
  printf 'CLUSTER_ID=%s\nCONTROLLER_PORT=%s\n' "$cluster_id" "$controller_port" >"$CLUSTER_ENV"
  info "Formatted $METADATA_DIR for cluster $cluster_id."
}

# --- broker process ---------------------------------------------------------

# Succeed if PID is a live broker started with this data dir's
# server.properties. The check reads /proc, so it also rejects a pid that was
# reused by another process, and a zombie (whose cmdline is empty).
is_our_broker() {
  local pid=$1
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' '\n' </proc/"$pid"/cmdline 2>/dev/null | grep -qxF "$SERVER_PROPERTIES"
}

# Succeed if PID is a live process other than a zombie. Right after launch,
# the process may not have replaced itself with java yet, so is_our_broker
# would fail.
process_is_alive() {
  local pid=$1 state
  kill -0 "$pid" 2>/dev/null || return 1
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' /proc/"$pid"/status 2>/dev/null || true)
  [[ $state != Z ]]
}

# Print the pid of the running broker of KAFKA_DATA, or fail.
running_broker_pid() {
  local pid
  pid=$(read_env_value KAFKA_PID "$BROKER_ENV")
  is_our_broker "$pid" || return 1
  printf '%s\n' "$pid"
}

# Start the broker in the background and print its pid. Its file descriptors
# 0 to 2 are redirected and 8 and 9 (the locks) are closed, so it holds
# neither the caller's terminal or pipes nor a lock.
launch_broker() {
  local heap_opts
  read -r -a heap_opts <<<"$KAFKA_HEAP_OPTS"

  nohup java "${heap_opts[@]}" \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$LOG4J_CONFIG" \
    -cp "$LIBS_DIR/*" \
    kafka.Kafka "$SERVER_PROPERTIES" \
    </dev/null >>"$CONSOLE_LOG" 2>&1 8>&- 9>&- &
  printf '%s\n' "$!"
}

write_broker_env() {
  local broker_port=$1 pid=$2
  {
    printf 'KAFKA_BOOTSTRAP=127.0.0.1:%s\nNURTURE_BROKER=kafka://127.0.0.1:%s\nKAFKA_PID=%s\nKAFKA_LOG=%s\n' \
      "$broker_port" "$broker_port" "$pid" "$SERVER_LOG"
    [[ -z $SSL_PORT ]] || printf 'KAFKA_SSL_BOOTSTRAP=127.0.0.1:%s\n' "$SSL_PORT"
    [[ -z $SASL_SSL_PORT ]] || printf 'KAFKA_SASL_SSL_BOOTSTRAP=127.0.0.1:%s\n' "$SASL_SSL_PORT"
  } >"$BROKER_ENV"
}

file_size() {
  if [[ -f $1 ]]; then
    wc -c <"$1" | tr -d ' '
  else
    printf '0\n'
  fi
}

# Remember where the log files end, so a failed start shows only its own lines.
mark_log_positions() {
  SERVER_LOG_START=$(file_size "$SERVER_LOG")
  CONSOLE_LOG_START=$(file_size "$CONSOLE_LOG")
}

# Print the last lines that FILE got since byte START, cut to 400 characters.
show_new_log_lines() {
  local file=$1 start=$2 lines
  if (( $(file_size "$file") < start )); then
    start=0 # the log file was rolled over
  fi
  lines=$(tail -c "+$(( start + 1 ))" "$file" 2>/dev/null | tail -n 25 | cut -c 1-400)
  [[ -n $lines ]] || return 0
  warn "last lines of $file:"
  printf '%s\n' "$lines" >&2
}

show_log_tail() {
  show_new_log_lines "$SERVER_LOG" "${SERVER_LOG_START:-0}"
  show_new_log_lines "$CONSOLE_LOG" "${CONSOLE_LOG_START:-0}"
}

# Wait until the broker responds on PORT. On failure, stop it, show the end
# of its log and exit.
wait_until_ready() {
  local pid=$1 port=$2
  local deadline=$(( SECONDS + 10#$START_TIMEOUT_SECONDS ))

  while (( SECONDS < deadline )); do
    if ! process_is_alive "$pid"; then
      show_log_tail
      rm -f "$BROKER_ENV"
      die "the Kafka broker (pid $pid) exited during startup. Its log is above and in $SERVER_LOG."
    fi
    if broker_responds "$port"; then
      return 0
    fi
    sleep 0.5
  done

  show_log_tail
  terminate_broker "$pid"
  rm -f "$BROKER_ENV"
  die "timed out after $START_TIMEOUT_SECONDS s waiting for the Kafka broker to respond on 127.0.0.1:$port, so it was stopped. Its log is above and in $SERVER_LOG. Raise KAFKA_START_TIMEOUT if the machine is slow."
}

# Send SIGTERM to PID, wait up to STOP_TIMEOUT_SECONDS, then send SIGKILL.
terminate_broker() {
  local pid=$1
  local deadline=$(( SECONDS + STOP_TIMEOUT_SECONDS ))

  kill -TERM "$pid" 2>/dev/null || return 0
  while process_is_alive "$pid"; do
    if (( SECONDS >= deadline )); then
      warn "the broker (pid $pid) did not stop within $STOP_TIMEOUT_SECONDS s after SIGTERM, so it gets SIGKILL."
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      return 0
    fi
    sleep 0.5
  done
}

print_location() {
  local verb=$1
  info "Kafka $KAFKA_VERSION broker $verb on $(read_env_value KAFKA_BOOTSTRAP "$BROKER_ENV") (pid $(read_env_value KAFKA_PID "$BROKER_ENV"))."
  info "Log file: $SERVER_LOG"
  info "Settings for clients: $BROKER_ENV"
}

# Serialize start and stop on one data dir, so two concurrent starts run one
# broker. The second start waits and then finds the broker running. Without
# flock (util-linux), concurrent calls are not serialized.
lock_data_dir() {
  command -v flock >/dev/null 2>&1 || return 0
  exec 9>"$KAFKA_DATA/kafka.lock"
  if ! flock -w "$LOCK_TIMEOUT_SECONDS" 9; then
    die "another scripts/kafka.sh start or stop on $KAFKA_DATA still runs after $LOCK_TIMEOUT_SECONDS s. Wait for it, or stop it."
  fi
}

# --- subcommands ------------------------------------------------------------

cmd_fetch() {
  if libs_are_fetched; then
    info "Kafka $KAFKA_VERSION jars are already in $LIBS_DIR."
    return 0
  fi
  require_tools maven
  fetch_libs_if_missing
}

cmd_start() {
  local broker_port controller_port pid running_port
  local started=$SECONDS

  # Maven is needed only when the jars are not fetched yet.
  if libs_are_fetched; then
    require_tools
  else
    require_tools maven
  fi
  mkdir -p "$KAFKA_DATA"
  load_data_paths
  lock_data_dir

  if running_broker_pid >/dev/null; then
    running_port=$(read_env_value KAFKA_BOOTSTRAP "$BROKER_ENV")
    running_port=${running_port##*:}
    print_location "is already running"
    if [[ $KAFKA_PORT != auto && $KAFKA_PORT != "$running_port" ]]; then
      warn "KAFKA_PORT=$KAFKA_PORT differs from the running broker's port $running_port. Run 'scripts/kafka.sh stop' first to change it."
    fi
    return 0
  fi

  fetch_libs_if_missing
  mkdir -p "$LOGS_DIR"
  broker_port=$(resolve_broker_port)
  controller_port=$(resolve_controller_port "$broker_port")
  SSL_PORT=$(resolve_secure_port KAFKA_SSL_PORT "$KAFKA_SSL_PORT" "$broker_port" "$controller_port")
  SASL_SSL_PORT=$(resolve_secure_port KAFKA_SASL_SSL_PORT "$KAFKA_SASL_SSL_PORT" \
    "$broker_port" "$controller_port" "$SSL_PORT")
  write_server_properties "$broker_port" "$controller_port"
  write_log4j_config
  format_storage_once "$controller_port"

  mark_log_positions
  pid=$(launch_broker)
  write_broker_env "$broker_port" "$pid"
  wait_until_ready "$pid" "$broker_port"
  print_location "is listening"
  info "Started in $(( SECONDS - started )) s."
}

cmd_stop() {
  local pid

  load_data_paths
  if [[ ! -d $KAFKA_DATA ]]; then
    info "No Kafka broker is running for $KAFKA_DATA (the directory does not exist), so there is nothing to stop."
    return 0
  fi
  lock_data_dir

  if ! pid=$(running_broker_pid); then
    rm -f "$BROKER_ENV"
    info "No Kafka broker is running for $KAFKA_DATA, so there is nothing to stop."
    return 0
  fi

  info "Stopping the Kafka broker (pid $pid) of $KAFKA_DATA ..."
  terminate_broker "$pid"
  if is_our_broker "$pid"; then
    die "the Kafka broker (pid $pid) is still running after SIGKILL. Check it with 'ps -p $pid'."
  fi
  rm -f "$BROKER_ENV"
  info "Stopped."
}

cmd_status() {
  load_data_paths
  if running_broker_pid >/dev/null; then
    print_location "is running"
    return 0
  fi
  info "No Kafka broker is running for $KAFKA_DATA."
  return 3
}

main() {
  local command=${1:-}

  case $command in
    fetch | start | stop | status) ;;
    -h | --help | help)
      usage
      return 0
      ;;
    "")
      die "missing subcommand. Usage: scripts/kafka.sh fetch|start|stop|status (--help describes them)."
      ;;
    *)
      die "unknown subcommand '$command'. Usage: scripts/kafka.sh fetch|start|stop|status (--help describes them)."
      ;;
  esac

  load_settings
  "cmd_$command"
}

main "$@"
