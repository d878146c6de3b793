#!/usr/bin/env bash
# Run a command against a throwaway single-node Kafka broker.
#
# Usage: scripts/with-kafka.sh CMD [ARGS...]
#
# Starts a broker with its own temporary data dir on a free port of
# 127.0.0.1 (scripts/kafka.sh start with KAFKA_PORT=auto), runs CMD with
#   KAFKA_BOOTSTRAP=127.0.0.1:PORT
#   NURTURE_BROKER=kafka://127.0.0.1:PORT
# in its environment, then stops the broker and deletes the data dir, also
# when CMD fails or the script gets SIGINT or SIGTERM. Exits with the exit
# code of CMD. Messages of this script and of the broker's start and stop go
# to stderr, so the output of CMD stays alone on stdout.
#
# KAFKA_VERSION, KAFKA_HOME, KAFKA_HEAP_OPTS and KAFKA_START_TIMEOUT pass
# through to scripts/kafka.sh. KAFKA_DATA and KAFKA_PORT are set here.
#
# NOTE: bash runs the SIGTERM and SIGINT traps only after CMD exits, because
# CMD runs in the foreground (so it keeps stdin and gets Ctrl-C from the
# terminal). A SIGTERM sent to this script alone, and not to CMD, therefore
# takes effect when CMD exits.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KAFKA_SH=$SCRIPT_DIR/kafka.sh
readonly SCRIPT_DIR KAFKA_SH

DATA_DIR=""

die() {
  printf 'with-kafka.sh: error: %s\n' "$*" >&2
  exit 1
}

# Stop the broker and delete its data dir. Runs on every exit, as the EXIT
# trap, which shellcheck does not see as a call.
# shellcheck disable=SC2317
cleanup() {
  local status=$?
  if [[ -n $DATA_DIR && -d $DATA_DIR ]]; then
    # kafka.sh start writes broker.env right after it launches the broker and
    # deletes it only once the broker is stopped, so without broker.env no
    # broker of DATA_DIR runs.
    if [[ -f $DATA_DIR/broker.env ]]; then
      KAFKA_DATA=$DATA_DIR "$KAFKA_SH" stop >&2 ||
        printf 'with-kafka.sh: stopping the broker of %s failed (see above).\n' "$DATA_DIR" >&2
    fi
    rm -rf "$DATA_DIR"
  fi
  exit "$status"
}

start_broker() {
  DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/nurture-kafka.XXXXXX")
  KAFKA_DATA=$DATA_DIR KAFKA_PORT=auto "$KAFKA_SH" start </dev/null >&2

  KAFKA_BOOTSTRAP=$(sed -n 's/^KAFKA_BOOTSTRAP=//p' "$DATA_DIR/broker.env")
  if [[ -z $KAFKA_BOOTSTRAP ]]; then
    die "scripts/kafka.sh start succeeded, but $DATA_DIR/broker.env contains no KAFKA_BOOTSTRAP."
  fi
  export KAFKA_BOOTSTRAP
  export NURTURE_BROKER=kafka://$KAFKA_BOOTSTRAP
}

main() {
  if (( $# == 0 )); then
    die "missing command. Usage: scripts/with-kafka.sh CMD [ARGS...]"
  fi

  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  start_broker
  printf 'with-kafka.sh: running %s with KAFKA_BOOTSTRAP=%s\n' "$1" "$KAFKA_BOOTSTRAP" >&2

  local status=0
  "$@" || status=$?
  exit "$status"
}

main "$@"
