# Shared by the nc scripts: start batond on a free port, wait for its log
# lines (never a fixed sleep), and kill every process started, by pid, on exit.
# shellcheck shell=bash

BATOND=${BATOND:-"$(pwd)/build/daemon/batond"}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/baton-script-XXXXXX")
LOG="$WORK/batond.log"
STARTED_PIDS=()

cleanup() {
  local pid
  for pid in "${STARTED_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in $(grep -o 'pid=[0-9]*' "$LOG" 2>/dev/null | sort -u | cut -d= -f2); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  echo "--- batond log ---" >&2
  cat "$LOG" >&2 || true
  exit 1
}

log_count() {
  local n
  n=$(grep -c -- "$1" "$LOG" 2>/dev/null) || true
  echo "${n:-0}"
}

# wait_for_log PATTERN [SECONDS] [MIN_COUNT]: until PATTERN appears MIN_COUNT times.
wait_for_log() {
  local pattern=$1 seconds=${2:-10} count=${3:-1} deadline
  deadline=$((SECONDS + seconds))
  while (($(log_count "$pattern") < count)); do
    ((SECONDS < deadline)) || fail "no '$pattern' in the log within ${seconds}s"
    sleep 0.05
  done
}

# wait_gone PID [SECONDS]: until the process has exited.
wait_gone() {
  local pid=$1 seconds=${2:-10} deadline
  deadline=$((SECONDS + seconds))
  while kill -0 "$pid" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; do
    ((SECONDS < deadline)) || fail "pid $pid still running after ${seconds}s"
    sleep 0.05
  done
}

# start_batond ARGS...: runs batond in the background; sets BATOND_PID and PORT.
start_batond() {
  "$BATOND" --control "$WORK/control.sock" "$@" >>"$LOG" 2>&1 &
  BATOND_PID=$!
  STARTED_PIDS+=("$BATOND_PID")
  wait_for_log "pid=$BATOND_PID .*serving: generation"
  PORT=$(grep "pid=$BATOND_PID .*listening name=echo" "$LOG" | sed 's/.*addr=127.0.0.1:\([0-9]*\).*/\1/')
  [[ -n "$PORT" ]] || fail "no echo listener in the log"
  echo "batond pid $BATOND_PID listening on 127.0.0.1:$PORT"
}

# socket_count PID: sockets the process holds open.
socket_count() {
  local n=0 l
  for l in /proc/"$1"/fd/*; do [[ $(readlink "$l" 2>/dev/null) == socket:* ]] && n=$((n + 1)); done
  echo "$n"
}
