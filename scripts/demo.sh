#!/usr/bin/env bash
# The Nurture demo, end to end on a local broker:
#   start a broker, create the topics, train on the clickstream before the
#   split date, start a worker, replay the events from the split date on,
#   print a report read back from the topics and one lead's journeys, then stop
#   what it started.
#
# Environment:
#   DEMO_SPLIT_DATE  train before this date, replay from it (default: 2024-05-15)
#   DEMO_SPEED       seconds of history replayed per second; 0 replays as fast as
#                    possible (default: 86400, one day per second)
#   DEMO_LEAD        the lead whose journeys are shown at the end (default: user_0420)
#   KAFKA_PORT       broker port, or "auto" for a free one (default: auto)
#   VENV             virtual environment with the package (default: .venv)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
readonly SPLIT_DATE=${DEMO_SPLIT_DATE:-2024-05-15}
readonly SPEED=${DEMO_SPEED:-86400}
readonly LEAD=${DEMO_LEAD:-user_0420}
readonly HISTORY=$REPO_ROOT/data/ecom-clickstream/ecom.csv.gz
readonly DEMO_DIR=$REPO_ROOT/var/demo
readonly NURTURE=${VENV:-$REPO_ROOT/.venv}/bin/nurture
readonly WORKER_READY_SECONDS=120

WORKER_PID=""
BROKER_STARTED=""

step() {
  printf '\n==> %s\n' "$*"
}

die() {
  printf 'demo.sh: error: %s\n' "$*" >&2
  exit 1
}

# Stops the worker and the broker; runs as the EXIT trap.
# shellcheck disable=SC2317
cleanup() {
  local status=$?
  if [[ -n $WORKER_PID ]] && kill -0 "$WORKER_PID" 2>/dev/null; then
    step "Stopping the worker (pid $WORKER_PID)"
    kill -TERM "$WORKER_PID" 2>/dev/null || true
    wait "$WORKER_PID" 2>/dev/null || true
  fi
  if [[ -n $BROKER_STARTED ]]; then
    step "Stopping the broker"
    KAFKA_DATA=$DEMO_DIR/kafka bash "$REPO_ROOT/scripts/kafka.sh" stop || true
  fi
  exit "$status"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_broker() {
  step "Starting a Kafka broker"
  if [[ -d $DEMO_DIR/kafka ]]; then
    KAFKA_DATA=$DEMO_DIR/kafka bash "$REPO_ROOT/scripts/kafka.sh" stop >/dev/null
  fi
  rm -rf "$DEMO_DIR"
  mkdir -p "$DEMO_DIR"
  BROKER_STARTED=yes
  KAFKA_DATA=$DEMO_DIR/kafka KAFKA_PORT=${KAFKA_PORT:-auto} bash "$REPO_ROOT/scripts/kafka.sh" start </dev/null
  local bootstrap
  bootstrap=$(sed -n 's/^KAFKA_BOOTSTRAP=//p' "$DEMO_DIR/kafka/broker.env")
  export NURTURE_BROKER=kafka://$bootstrap
}

start_worker() {
  step "Starting a worker (log: $DEMO_DIR/worker.log)"
  "$NURTURE" worker -l info --web-port "$NURTURE_WORKER_WEB_PORT" >"$DEMO_DIR/worker.log" 2>&1 </dev/null &
  WORKER_PID=$!
  local waited=0
  until grep -q '\[\^Worker\]: Ready' "$DEMO_DIR/worker.log"; do
    if ! kill -0 "$WORKER_PID" 2>/dev/null; then
      tail -n 20 "$DEMO_DIR/worker.log" >&2
      die "the worker exited during start; its log is above"
    fi
    if (( waited >= WORKER_READY_SECONDS )); then
      tail -n 20 "$DEMO_DIR/worker.log" >&2
      die "the worker was not ready after ${WORKER_READY_SECONDS} s"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  printf 'Worker ready after about %d s.\n' "$waited"
}

# Produces records the worker must dead-letter: broken JSON, a wrong field type, no key.
send_malformed_events() {
  "${NURTURE%/nurture}/python" - <<'PY'
import os

from kafka import KafkaProducer

producer = KafkaProducer(bootstrap_servers=os.environ["NURTURE_BROKER"].removeprefix("kafka://"))
producer.send("events.click", key=b"demo-lead", value=b'{"event_id": "broken')
producer.send("events.form", key=b"demo-lead", value=b'{"event_id": "f1", "lead_id": "demo-lead", '
              b'"event_time": "yesterday", "produced_at": 0, "form": "signup"}')
producer.send("events.open", key=None, value=b"{}")
producer.flush()
producer.close()
print("sent 3 malformed records")
PY
}

main() {
  [[ -x $NURTURE ]] || die "$NURTURE not found; run 'make venv' first (make demo does)"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  export NURTURE_WORKER_APP_ID=nurture-demo
  export NURTURE_WORKER_DATA_DIR=$DEMO_DIR/worker
  export NURTURE_WORKER_MODEL_DIR=$DEMO_DIR/model
  export NURTURE_PRIVACY_KEY_FILE=$DEMO_DIR/keys
  export NURTURE_PRIVACY_EXPORT_DIR=$DEMO_DIR/exports
  export NURTURE_PRIVACY_AUDIT_LOG=$DEMO_DIR/audit.log
  NURTURE_WORKER_WEB_PORT=$(free_port)
  export NURTURE_WORKER_WEB_PORT

  start_broker

  step "Creating the key ring that seals personal data"
  [[ -f $NURTURE_PRIVACY_KEY_FILE ]] || "$NURTURE" privacy keygen "$NURTURE_PRIVACY_KEY_FILE"

  step "Creating topics"
  "$NURTURE" topics create

  step "Training the scoring model on events before $SPLIT_DATE"
  "$NURTURE" train --history "$HISTORY" --until "$SPLIT_DATE"

  start_worker

  step "Replaying the clickstream from $SPLIT_DATE, $SPEED seconds of history per second"
  "$NURTURE" replay "$HISTORY" --since "$SPLIT_DATE" --speed "$SPEED"

  step "Sending three malformed events, to show the dead-letter topic"
  send_malformed_events

  step "Report read back from Kafka"
  "$NURTURE" report --wait-idle 300

  step "Where lead $LEAD is in its journeys"
  "$NURTURE" journeys show "$LEAD"

  step "Consent ledger: the chain check and lead $LEAD's entries"
  "$NURTURE" consent verify
  "$NURTURE" consent history "$LEAD"
}

main "$@"
