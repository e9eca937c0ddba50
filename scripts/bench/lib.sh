# Helpers for scripts/bench.sh: processes started by pid and killed by pid,
# shellcheck disable=SC2015  # "ours PID && kill ... || true": the kill is best effort
# bounded waits on log lines, log timestamps, percentiles and JSON fields.
# Sourced, not run. Expects WORK (a temp dir) to be set before use.
# shellcheck shell=bash disable=SC2034  # LINE_MS is read by bench.sh

BENCH_PIDS=()   # every pid this script started itself
BENCH_LOGS=()   # batond logs: generations started by an upgrade are listed there by pid

# ---- time ----------------------------------------------------------------------

# now_us: microseconds since the epoch, without a fork (bash 5's EPOCHREALTIME).
# Use as: t=$(now_us) only where a fork does not matter; on the hot path
# write ${EPOCHREALTIME/./} inline.
now_us() { echo "${EPOCHREALTIME/./}"; }

declare -A BENCH_DAY_MS=()
# line_ms LINE: sets LINE_MS to the epoch milliseconds of a batond log line's
# timestamp ("2026-11-21T05:43:34.330512 info ..."; older batonds print
# milliseconds only). batond prints local time and the bench exports TZ=UTC,
# so the date part is read as UTC. No fork after the first line of a day.
# Truncated to the millisecond.
line_ms() {
  local ts=${1%% *}
  local d=${ts%T*} t=${ts#*T}
  [[ $d =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ && $t =~ ^[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}([0-9]{3})?$ ]] || {
    LINE_MS=""
    return 1
  }
  if [[ -z ${BENCH_DAY_MS[$d]:-} ]]; then BENCH_DAY_MS[$d]=$(($(date -u -d "$d" +%s) * 1000)); fi
  LINE_MS=$((BENCH_DAY_MS[$d] + 10#${t:0:2} * 3600000 + 10#${t:3:2} * 60000 + 10#${t:6:2} * 1000 + 10#${t:9:3}))
}

# sleep_until_us T: sleeps until EPOCHREALTIME reaches T (µs); returns at once if past.
sleep_until_us() {
  local left=$(($1 - ${EPOCHREALTIME/./}))
  ((left > 0)) || return 0
  sleep "$(printf '%d.%06d' $((left / 1000000)) $((left % 1000000)))"
}

# ---- statistics ------------------------------------------------------------------

# pct P: the P-th percentile (nearest rank) of the numbers on stdin; "n/a" if none.
pct() {
  sort -g | awk -v p="$1" '{ v[NR] = $1 }
    END { if (NR == 0) { print "n/a"; exit }
          i = int((p * NR + 99) / 100); if (i < 1) i = 1; if (i > NR) i = NR; print v[i] }'
}
# us_to_ms VALUE: "2.6" from 2600 (µs); passes "n/a" through.
us_to_ms() { [[ $1 == n/a ]] && echo n/a || awk -v v="$1" 'BEGIN { printf "%.1f", v / 1000 }'; }
# summary_ms FILE: "p50 / p99 / max" in ms of the µs values in FILE (one a line).
summary_ms() {
  local f=$1
  if [[ ! -s $f ]]; then echo "n/a"; return; fi
  echo "$(us_to_ms "$(pct 50 <"$f")") / $(us_to_ms "$(pct 99 <"$f")") / $(us_to_ms "$(pct 100 <"$f")")"
}
# calc EXPR: awk arithmetic, printed with the given format (default %.1f).
calc() { awk "BEGIN { printf \"${2:-%.1f}\", $1 }"; }

# ---- JSON ------------------------------------------------------------------------

# jqv FILE FILTER: one value from a baton-load report, "?" if it cannot be read.
jqv() { jq -r "$2" "$1" 2>/dev/null || echo "?"; }

# failures_text FILE: "refused=0 reset=0 ..." from a report's failures object.
failures_text() {
  jq -r '.failures | to_entries | map("\(.key)=\(.value)") | join(" ")' "$1" 2>/dev/null || echo "?"
}

# ---- processes -------------------------------------------------------------------

# alive PID: running and not a zombie. No fork: it is polled.
alive() {
  local st
  kill -0 "$1" 2>/dev/null || return 1
  read -r st 2>/dev/null <"/proc/$1/stat" || return 1
  st=${st##*) }
  [[ ${st%% *} != Z ]]
}

# wait_exit PID SECONDS: until PID has exited; returns 1 on timeout.
wait_exit() {
  local deadline=$((SECONDS + $2))
  while alive "$1"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.02
  done
}

# ours PID: the process carries this run's marker in its environment
# (BATON_BENCH_RUN, exported by bench.sh and inherited by every batond
# generation), so a pid reused by someone else's process is never signalled.
# While a child is between fork and exec its environment may read empty for a
# moment: kill_started looks twice.
ours() {
  local -a env
  local e
  mapfile -d '' -t env 2>/dev/null <"/proc/$1/environ" || return 1
  for e in "${env[@]}"; do [[ $e == "BATON_BENCH_RUN=$BATON_BENCH_RUN" ]] && return 0; done
  return 1
}

# log_pids LOG: every batond pid mentioned in a log.
log_pids() { grep -o 'batond pid=[0-9]*' "$1" 2>/dev/null | cut -d= -f2 | sort -un || true; }

# kill_started: SIGKILL, by pid, to every process this script started and to
# every batond generation one of its batonds started (found in their logs).
kill_started() {
  local pid log
  for pid in "${BENCH_PIDS[@]}"; do
    if alive "$pid" && ! ours "$pid"; then sleep 0.05; fi
    ours "$pid" && kill -KILL "$pid" 2>/dev/null || true
  done
  for log in "${BENCH_LOGS[@]}"; do
    for pid in $(log_pids "$log"); do ours "$pid" && kill -KILL "$pid" 2>/dev/null || true; done
  done
}

# stop_pid PID SECONDS [SIGNAL]: signal (default TERM), wait, then SIGKILL. Returns 1
# if it had to be killed.
stop_pid() {
  local pid=$1 seconds=$2 sig=${3:-TERM}
  alive "$pid" && ours "$pid" || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  wait_exit "$pid" "$seconds" && return 0
  ours "$pid" && kill -KILL "$pid" 2>/dev/null || true
  return 1
}

# stop_batond_chain LOG CURRENT_PID: graceful stop of the serving generation,
# then waits (bounded) for every generation in the log to be gone.
stop_batond_chain() {
  local log=$1 cur=$2 pid
  stop_pid "$cur" 15 TERM || echo "bench: batond pid $cur did not stop within 15 s; killed" >&2
  for pid in $(log_pids "$log"); do
    ours "$pid" || continue   # gone (and its pid maybe reused)
    if ! wait_exit "$pid" 10; then
      ours "$pid" && kill -KILL "$pid" 2>/dev/null || true
      echo "bench: batond pid $pid still running 10 s after the stop; killed" >&2
    fi
  done
}

# ---- logs ------------------------------------------------------------------------

# log_count FILE PATTERN
log_count() {
  local n
  n=$(grep -c -- "$2" "$1" 2>/dev/null) || true
  echo "${n:-0}"
}
# first_line FILE PATTERN: the first matching line, or nothing.
first_line() { grep -m1 -- "$2" "$1" 2>/dev/null || true; }

# wait_line FILE PATTERN SECONDS [PID]: until PATTERN is in FILE; returns 1 on
# timeout or when PID (if given) is gone first. Polls every 10 ms.
wait_line() {
  local f=$1 pat=$2 deadline=$(($(now_us) + $3 * 1000000)) pid=${4:-}
  until grep -q -- "$pat" "$f" 2>/dev/null; do
    ((${EPOCHREALTIME/./} < deadline)) || return 1
    if [[ -n $pid ]] && ! alive "$pid"; then
      grep -q -- "$pat" "$f" 2>/dev/null && return 0
      return 1
    fi
    sleep 0.01
  done
}

# ---- servers ---------------------------------------------------------------------

# start_batond LOG ARGS...: starts batond in the background, waits for its
# "serving" line; sets BATOND_PID and PORT (of the listener named echo).
# Returns 1 if it did not come up within 10 s.
start_batond() {
  local log=$1
  shift
  "$BATOND" "$@" >>"$log" 2>&1 &
  BATOND_PID=$!
  BENCH_PIDS+=("$BATOND_PID")
  [[ " ${BENCH_LOGS[*]} " == *" $log "* ]] || BENCH_LOGS+=("$log")
  PORT=""
  wait_line "$log" "pid=$BATOND_PID gen=.*serving: generation" 10 "$BATOND_PID" || return 1
  PORT=$(grep -m1 "pid=$BATOND_PID gen=.*listening name=echo addr=" "$log" | sed 's/.*addr=[^ ]*:\([0-9]*\).*/\1/')
  [[ -n $PORT ]]
}

# start_baseline OUT: starts baseline-echo on a free port; sets BASELINE_PID and PORT.
start_baseline() {
  local out=$1
  "$BASELINE" --listen 127.0.0.1:0 >"$out" 2>&1 &
  BASELINE_PID=$!
  BENCH_PIDS+=("$BASELINE_PID")
  PORT=""
  wait_line "$out" "listening addr=" 10 "$BASELINE_PID" || return 1
  PORT=$(grep -m1 'listening addr=' "$out" | sed 's/.*addr=[^ ]*:\([0-9]*\).*/\1/')
  [[ -n $PORT ]]
}

# rss_kib PID: VmRSS in KiB.
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# socket_count PID: sockets the process holds open.
socket_count() { find "/proc/$1/fd" -lname 'socket:*' 2>/dev/null | wc -l; }

# ---- load ------------------------------------------------------------------------

# start_load NAME ARGS...: baton-load in the background, output in
# $WORK/NAME.{out,err}, report $WORK/NAME.json; sets LOAD_PID.
start_load() {
  local name=$1
  shift
  "$LOADGEN" "$@" --report "$WORK/$name.json" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  LOAD_PID=$!
  BENCH_PIDS+=("$LOAD_PID")
}

# finish_load NAME PID SECONDS: waits for a baton-load run to end (SIGINT, then
# SIGKILL, past SECONDS); sets LOAD_RC. Returns 1 if the run did not produce a
# report with something verified, i.e. the tool did not work at all.
finish_load() {
  local name=$1 pid=$2 seconds=$3
  if ! wait_exit "$pid" "$seconds"; then
    echo "bench: baton-load ($name) still running after ${seconds}s; interrupting it" >&2
    ours "$pid" && kill -INT "$pid" 2>/dev/null || true
    wait_exit "$pid" 15 || { ours "$pid" && kill -KILL "$pid" 2>/dev/null; } || true
  fi
  LOAD_RC=0
  wait "$pid" 2>/dev/null || LOAD_RC=$?
  local verified
  verified=$(jq -r '(.persistent.messages // 0) + (.churn.succeeded // 0)' "$WORK/$name.json" 2>/dev/null || echo 0)
  if ((LOAD_RC > 1)) || [[ ! -s $WORK/$name.json ]] || ((verified == 0)); then
    echo "bench: baton-load ($name) did not run: exit $LOAD_RC, verified $verified" >&2
    sed 's/^/  /' "$WORK/$name.err" >&2 || true
    return 1
  fi
}

# run_load NAME SECONDS ARGS...: a foreground baton-load run bounded to SECONDS.
run_load() {
  local name=$1 seconds=$2
  shift 2
  start_load "$name" "$@"
  finish_load "$name" "$LOAD_PID" "$seconds"
}
