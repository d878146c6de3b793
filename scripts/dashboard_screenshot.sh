#!/usr/bin/env bash
# Take a screenshot of the worker dashboard with data in it, for docs/dashboard.png.
#
# Usage: scripts/dashboard_screenshot.sh [OUT]   (default: docs/dashboard.png)
#
# Runs itself under scripts/with-kafka.sh, so it has a throwaway broker on
# 127.0.0.1. Trains a model on the bundled clickstream before 2024-05-15 and
# starts a worker with a random API token. Replays the events from that date at
# one day of history per second, then waits SETTLE_SECONDS more, so that the
# charts show the replay and the quiet after it. Then headless Chromium loads the dashboard
# from 127.0.0.1 only and saves a screenshot of WINDOW_SIZE. Last, it stops the worker;
# with-kafka.sh stops the broker.
#
# Environment:
#   SCREENSHOT_LEAD  the lead whose timeline the page shows (default: user_0420)
#   SETTLE_SECONDS   wait after the replay before the screenshot (default: 20)
#   WINDOW_SIZE      browser window and screenshot size in pixels (default: 1280,1000)
#   VENV             virtual environment with the package (default: .venv)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
readonly HISTORY=$REPO_ROOT/data/ecom-clickstream/ecom.csv.gz
readonly SPLIT_DATE=2024-05-15
readonly LEAD=${SCREENSHOT_LEAD:-user_0420}
readonly SETTLE_SECONDS=${SETTLE_SECONDS:-20}
readonly WINDOW_SIZE=${WINDOW_SIZE:-1280,1000}
readonly VENV_DIR=${VENV:-$REPO_ROOT/.venv}
readonly NURTURE=$VENV_DIR/bin/nurture
readonly PYTHON=$VENV_DIR/bin/python
readonly WORKER_READY_SECONDS=120
# Chromium loads only the worker on 127.0.0.1: no first-run pages, no update, sync,
# telemetry or crash-report traffic, and every host name fails to resolve.
readonly CHROMIUM_FLAGS=(
  --headless=new --no-sandbox --disable-gpu --no-first-run --no-default-browser-check
  --disable-background-networking --disable-component-update --disable-sync
  --disable-default-apps --disable-extensions --disable-domain-reliability --disable-breakpad
  --metrics-recording-only --no-pings --no-proxy-server
  --disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication
  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
  --hide-scrollbars --virtual-time-budget=15000
)

WORK_DIR=""
WORKER_PID=""

step() {
  printf '\n==> %s\n' "$*"
}

die() {
  printf 'dashboard_screenshot.sh: error: %s\n' "$*" >&2
  exit 1
}

# Stops the worker and deletes the work dir. Runs as the EXIT trap.
# shellcheck disable=SC2317
cleanup() {
  local status=$?
  if [[ -n $WORKER_PID ]] && kill -0 "$WORKER_PID" 2>/dev/null; then
    step "Stopping the worker (pid $WORKER_PID)"
    kill -TERM "$WORKER_PID" 2>/dev/null || true
    wait "$WORKER_PID" 2>/dev/null || true
  fi
  if [[ -n $WORK_DIR ]]; then
    rm -rf "$WORK_DIR"
  fi
  exit "$status"
}

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls the worker's readiness URL until it returns 200, or fails after WORKER_READY_SECONDS.
wait_for_ready() {
  local url=http://127.0.0.1:$NURTURE_WORKER_WEB_PORT/nurture/health/ready
  local waited=0
  until "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$url" 2>/dev/null; do
    if ! kill -0 "$WORKER_PID" 2>/dev/null; then
      tail -n 20 "$WORK_DIR/worker.log" >&2
      die "the worker exited during start; the end of its log is above"
    fi
    if (( waited >= WORKER_READY_SECONDS )); then
      tail -n 20 "$WORK_DIR/worker.log" >&2
      die "the worker was not ready after ${WORKER_READY_SECONDS} s"
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

take_screenshot() {
  local out=$1
  local token=$2
  local url="http://127.0.0.1:$NURTURE_WORKER_WEB_PORT/nurture/dashboard/#token=$token&lead=$LEAD"
  mkdir -p "$(dirname "$out")"
  # The URL contains the token, so it is not printed, and Chromium's log goes to a file.
  chromium "${CHROMIUM_FLAGS[@]}" --window-size="$WINDOW_SIZE" --user-data-dir="$WORK_DIR/chromium" --screenshot="$out" "$url" \
    >"$WORK_DIR/chromium.log" 2>&1 || { tail -n 20 "$WORK_DIR/chromium.log" >&2; die "chromium failed"; }
  if [[ ! -s $out ]]; then
    tail -n 20 "$WORK_DIR/chromium.log" >&2
    die "chromium wrote no screenshot to $out; the end of its log is above"
  fi
}

main() {
  local out=${1:-$REPO_ROOT/docs/dashboard.png}
  [[ $out == /* ]] || out=$PWD/$out
  [[ -x $NURTURE ]] || die "$NURTURE not found; run 'make venv' first"
  command -v chromium >/dev/null || die "chromium is not on PATH; 'make chromium' installs it"

  if [[ -z ${SCREENSHOT_BROKER_STARTED:-} ]]; then
    SCREENSHOT_BROKER_STARTED=yes exec bash "$REPO_ROOT/scripts/with-kafka.sh" bash "${BASH_SOURCE[0]}" "$out"
  fi

  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/nurture-screenshot.XXXXXX")
  local token
  token=$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(24))')
  export NURTURE_API_TOKEN=$token
  export NURTURE_WORKER_APP_ID=nurture-screenshot
  export NURTURE_WORKER_DATA_DIR=$WORK_DIR/worker
  export NURTURE_WORKER_MODEL_DIR=$WORK_DIR/model
  export NURTURE_PRIVACY_KEY_FILE=$WORK_DIR/keys
  export NURTURE_PRIVACY_EXPORT_DIR=$WORK_DIR/exports
  export NURTURE_PRIVACY_AUDIT_LOG=$WORK_DIR/audit.log
  NURTURE_WORKER_WEB_PORT=$(free_port)
  export NURTURE_WORKER_WEB_PORT

  step "Creating topics and the key ring"
  "$NURTURE" topics create
  "$NURTURE" privacy keygen "$NURTURE_PRIVACY_KEY_FILE"

  step "Training the scoring model on events before $SPLIT_DATE"
  "$NURTURE" train --history "$HISTORY" --until "$SPLIT_DATE"

  step "Starting a worker on 127.0.0.1:$NURTURE_WORKER_WEB_PORT (log: $WORK_DIR/worker.log)"
  "$NURTURE" worker -l info --web-port "$NURTURE_WORKER_WEB_PORT" >"$WORK_DIR/worker.log" 2>&1 </dev/null &
  WORKER_PID=$!
  wait_for_ready

  step "Replaying the clickstream from $SPLIT_DATE, one day of history per second"
  "$NURTURE" replay "$HISTORY" --since "$SPLIT_DATE" --speed 86400

  step "Waiting $SETTLE_SECONDS s for the worker to catch up"
  sleep "$SETTLE_SECONDS"

  step "Saving the screenshot to $out"
  take_screenshot "$out" "$token"
}

main "$@"
