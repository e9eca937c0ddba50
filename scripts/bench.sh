#!/usr/bin/env bash
# scripts/bench.sh [--smoke]: measures what "fast" means in DESIGN.md ("What fast
# means here") on this machine, with the binaries already built in build/:
#   1. upgrades under load, by SIGUSR2 and by `batonctl upgrade` (when both exist), with
#      drain = wait and, when batond has `--drain handoff`, again with that (1b);
#   2. the naive restart (SIGTERM, a new batond on the same port) under the same load;
#   3. echo throughput of batond against baseline-echo, alternating runs;
#   4. resident memory per idle connection, batond and baseline-echo;
#   7. supervisor mode (batond --exec gunicorn) against gunicorn's own USR2 upgrade and
#      the naive restart, under wrk (scripts/bench/supervisor.py).
# Full mode (3 to 4 minutes on 2 cores) writes docs/benchmarks.md; --smoke runs the
# same steps with tiny sizes (about 20 s) and prints the report without writing it.
# Either mode exits non-zero only when a step could not run at all (a tool missing or
# crashed, nothing verified), never because a target was missed. Loopback only; every
# process it starts is killed by pid on exit. BENCH_KEEP=DIR keeps logs and reports.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export LC_ALL=C TZ=UTC   # "." in EPOCHREALTIME; batond's log timestamps in UTC

MODE=full
case "${1:-}" in
  "") ;;
  --smoke) MODE=smoke ;;
  -h | --help)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: $0 [--smoke]" >&2
    exit 2
    ;;
esac
(($# <= 1)) || { echo "usage: $0 [--smoke]" >&2; exit 2; }
COMMAND="./scripts/bench.sh${1:+ $1}"

BATOND=${BATOND:-$ROOT/build/daemon/batond}
LOADGEN=${LOADGEN:-$ROOT/build/tests/load/baton-load}
BASELINE=${BASELINE:-$ROOT/build/tests/load/baseline-echo}
BATONCTL=${BATONCTL:-$ROOT/build/cli/batonctl}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/baton-bench-XXXXXX")
export BATON_BENCH_RUN=$WORK   # marks every process of this run (see ours in lib.sh)
# shellcheck source=scripts/bench/lib.sh
. "$ROOT/scripts/bench/lib.sh"

cleanup() {
  kill_started
  # BENCH_KEEP=DIR keeps the logs and reports (for a closer look), outside the repository.
  if [[ -n ${BENCH_KEEP:-} ]]; then mkdir -p "$BENCH_KEEP" && cp -r "$WORK"/. "$BENCH_KEEP"/ 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- sizes -------------------------------------------------------------------------
if [[ $MODE == full ]]; then
  UP_K=30 UP_SPACING_MS=1200 UP_LEAD_MS=2000 UP_TAIL_S=5 DRAIN_S=2
  NAIVE_R=6 NAIVE_SPACING_MS=4000 NAIVE_LEAD_S=2 NAIVE_TAIL_S=5
  LOAD_CONNS=16 LOAD_PIPELINE=8 LOAD_SIZE=512 LOAD_RATE=1000 LOAD_CHURN=100
  TP_ROUNDS=5 TP_SECONDS=4 TP_CONNS=4
  MEM_N=10000 MEM_SETTLE_S=1
else
  UP_K=3 UP_SPACING_MS=500 UP_LEAD_MS=500 UP_TAIL_S=1.2 DRAIN_S=0.5
  NAIVE_R=2 NAIVE_SPACING_MS=1500 NAIVE_LEAD_S=1 NAIVE_TAIL_S=1
  LOAD_CONNS=4 LOAD_PIPELINE=4 LOAD_SIZE=512 LOAD_RATE=500 LOAD_CHURN=50
  TP_ROUNDS=1 TP_SECONDS=1 TP_CONNS=4
  MEM_N=500 MEM_SETTLE_S=0.3
fi

REPORT=$WORK/benchmarks.md
BROKEN=()     # steps that could not run
NOTES=()      # things worth a line in the report
progress() { echo "bench [$((SECONDS - ${BENCH_START:-0}))s]: $*" >&2; }
md() { printf '%s\n' "$@" >>"$REPORT"; }
broken() { # WHAT [LOG]
  BROKEN+=("$1")
  progress "STEP COULD NOT RUN: $1"
  md "" "**This step could not run: $1.**"
  if [[ -n ${2:-} && -s $2 ]]; then
    md "" "Last lines of $(basename "$2"):" "" '```' "$(tail -15 "$2")" '```'
    tail -15 "$2" | sed 's/^/  /' >&2
  fi
}

# ---- preconditions -----------------------------------------------------------------
for tool in "$BATOND" "$LOADGEN" "$BASELINE"; do
  [[ -x $tool ]] || { echo "bench: $tool is missing; build first (cmake --build build -j2)" >&2; exit 1; }
done
for tool in jq awk find timeout; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is needed" >&2; exit 1; }
done
# The control socket and batonctl are detected now, not when the script was written.
BATOND_HELP=$("$BATOND" --help 2>&1 || true)
HAVE_CONTROL=0
[[ $BATOND_HELP == *--control* ]] && HAVE_CONTROL=1
HAVE_BATONCTL=0
((HAVE_CONTROL)) && [[ -x $BATONCTL ]] && HAVE_BATONCTL=1
HAVE_DRAIN=0   # --drain wait|handoff
[[ $BATOND_HELP == *--drain\ * || $BATOND_HELP == *--drain$'\n'* ]] && [[ $BATOND_HELP == *handoff* ]] && HAVE_DRAIN=1
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[[ $NOFILE == unlimited ]] && NOFILE=1048576
if ((MEM_N + 200 > NOFILE)); then
  NOTES+=("open-file limit $NOFILE: memory step uses $((NOFILE - 200)) idle connections instead of $MEM_N")
  MEM_N=$((NOFILE - 200))
fi
BENCH_START=$SECONDS

# ---- machine -----------------------------------------------------------------------
machine_section() {
  local model mem_kib load git_rev dirty built
  model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
  mem_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  git_rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  dirty=$(git status --porcelain 2>/dev/null | wc -l || echo 0)
  built=$(date -u -r "$BATOND" '+%Y-%m-%d %H:%M:%S UTC')
  md "# baton benchmarks" ""
  md "Generated by \`$COMMAND\` ($MODE mode), started $(date -u '+%Y-%m-%d %H:%M:%S UTC')." \
    "Do not edit by hand: run the script again. Method and caveats are in each section." ""
  md "## Machine" "" "| | |" "| --- | --- |"
  md "| CPUs (nproc) | $(nproc) |" "| CPU model | ${model:-unknown} |" "| kernel | $(uname -r) |"
  md "| memory | $(calc "$mem_kib / 1048576") GiB |"
  md "| load average (1/5/15 min) at start | $load |"
  md "| source | git $git_rev$( ((dirty > 0)) && echo " plus $dirty uncommitted path(s)"); batond built $built |"
  md "| build | $(grep -m1 '^CMAKE_BUILD_TYPE:' "$ROOT/build/CMakeCache.txt" 2>/dev/null | cut -d= -f2 || echo unknown) (build/CMakeCache.txt) |"
  md "| open-file limit | $NOFILE |"
  md "| control socket / batonctl | $( ((HAVE_CONTROL)) && echo "batond has --control" || echo "batond has no --control yet"); $( ((HAVE_BATONCTL)) && echo "batonctl found" || echo "batonctl not used") |"
  md "| drain modes | $( ((HAVE_DRAIN)) && echo "batond has --drain wait/handoff: both measured" || echo "batond has no --drain option yet: wait only") |"
  md "" "The machine is shared with other work while this runs, and baton-load runs on the" \
    "same cores as the server it measures: every figure below is noisy, one run's worth."
}

# ---- 1. upgrades under load -----------------------------------------------------------
up_load_args() { # PORT
  UP_P_ARGS=(--target "tcp://127.0.0.1:$1" --connections "$LOAD_CONNS" --pipeline "$LOAD_PIPELINE"
    --message-size "$LOAD_SIZE" --rate "$LOAD_RATE" --timeout-ms 5000 --quiet)
  UP_C_ARGS=(--target "tcp://127.0.0.1:$1" --connections 0 --churn-rate "$LOAD_CHURN"
    --message-size "$LOAD_SIZE" --timeout-ms 5000 --quiet)
}

# drain_totals LOG CAUSE: the "drain: done (CAUSE...): A closed by their clients, B half-closed at
# the deadline, C closed forcibly[, D handed over]" lines, summed.
drain_totals() {
  grep -F -- "drain: done ($2" "$1" 2>/dev/null |
    awk 'function num(re) { return match($0, re) ? substr($0, RSTART, RLENGTH) + 0 : 0 }
      { a += num("[0-9]+ closed by their clients"); b += num("[0-9]+ half-closed at the deadline")
        c += num("[0-9]+ closed forcibly"); d += num("[0-9]+ handed over"); n++ }
      END { printf "%d generation(s): %d connection(s) closed by their clients, %d half-closed at the deadline, %d closed forcibly, %d handed over to the next generation", n, a, b, c, d }'
}

# handoff_totals LOG: the "handoff: done" lines of every old generation, summed.
handoff_totals() {
  grep -- 'handoff: done in' "$1" 2>/dev/null |
    sed -n 's/.*handoff: done in \([0-9.]*\) ms: \([0-9]*\) connection(s) handed over, \([0-9]*\) kept.*/\1 \2 \3/p' |
    sort -g | awk '{ t[NR] = $1; a += $2; b += $3 }
      END { if (NR == 0) { printf "no such line in the log"; exit }
            printf "%d generation(s) handed over %d connection(s) and kept %d to drain; hand-off took p50 %.1f ms, max %.1f ms", NR, a, b, t[int((NR + 1) / 2)], t[NR] }'
}

# problem_lines LOG: warn/error/critical lines, their messages counted.
problem_lines() {
  grep -E '^[^ ]+ (warn|warning|error|critical) ' "$1" 2>/dev/null |
    sed -E 's/^[^ ]+ ([a-z]+) batond pid=[0-9]+ gen=[0-9]+ /\1: /; s/[0-9]+/N/g' | sort | uniq -c | sort -rn | head -8 || true
}

# client_rows NAME LABEL: markdown table rows from a baton-load report.
client_table() { # PERSISTENT_NAME CHURN_NAME
  local p=$WORK/$1.json c=$WORK/$2.json
  md "| load | connections | verified | latency p50 / p99 / max (ms) | failures | refused | reset | timeout | early_eof | mismatch | stall | other |"
  md "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  md "$(jq -r '"| churn (new short connections) | \(.churn.attempted) attempted, \(.churn.skipped) skipped | \(.churn.succeeded) connections echoed | \(.latency_us.churn | "\(.p50 / 10 | round / 100) / \(.p99 / 10 | round / 100) / \(.max / 10 | round / 100)") (connect to echo) | \(.failures.total) | \(.failures.refused) | \(.failures.reset) | \(.failures.timeout) | \(.failures.early_eof) | \(.failures.mismatch) | \(.failures.stall) | \(.failures.other) |"' "$c" 2>/dev/null || echo "| churn | report missing |")"
  md "$(jq -r '"| persistent (pipelined) | \(.persistent.connections) + \(.persistent.reconnects) reconnects | \(.persistent.messages) messages, \(.persistent.bytes_verified) bytes | \(.latency_us.persistent | "\(.p50 / 10 | round / 100) / \(.p99 / 10 | round / 100) / \(.max / 10 | round / 100)") (per message) | \(.failures.total) | \(.failures.refused) | \(.failures.reset) | \(.failures.timeout) | \(.failures.early_eof) | \(.failures.mismatch) | \(.failures.stall) | \(.failures.other) |"' "$p" 2>/dev/null || echo "| persistent | report missing |")"
  local name
  for name in "$2" "$1"; do
    local texts
    texts=$(jq -r '.errno_texts | to_entries | map("\(.key) ×\(.value)") | join("; ")' "$WORK/$name.json" 2>/dev/null || true)
    [[ -n $texts ]] && md "" "errno texts ($name): $texts"
  done
  return 0
}

# step_upgrade DRAIN_MODE SECTION VAR_PREFIX: upgrades under load with --drain DRAIN_MODE
# (not passed when batond has no --drain option: then it can only wait).
step_upgrade() {
  local dm=$1 sec=$2 pfx=$3
  local tag=up-$dm
  local log=$WORK/upgrade-$dm.log ctl=$WORK/ctl-$dm.sock
  : >"$log"
  local args=(--listen echo=tcp://127.0.0.1:0 --drain-timeout "$DRAIN_S" --pid-file "$WORK/upgrade-$dm.pid"
    --max-connections 20000)
  ((HAVE_CONTROL)) && args+=(--control "$ctl")
  ((HAVE_DRAIN)) && args+=(--drain "$dm")
  md "" "## $sec. Upgrade under load, drain = $dm" ""
  local k e0
  : >"$WORK/exec.us"
  for ((k = 0; k < 10; k++)); do
    e0=${EPOCHREALTIME/./}
    "$BATOND" --version >/dev/null 2>&1 || true
    echo $((${EPOCHREALTIME/./} - e0)) >>"$WORK/exec.us"
  done
  start_batond "$log" "${args[@]}" || { broken "upgrade ($dm): batond did not start" "$log"; return 1; }
  local cur=$BATOND_PID port=$PORT
  local dur
  dur=$(calc "$UP_LEAD_MS / 1000 + $UP_K * $UP_SPACING_MS / 1000 + $UP_TAIL_S")
  up_load_args "$port"
  start_load $tag-persistent "${UP_P_ARGS[@]}" --duration "$dur"
  local lp=$LOAD_PID
  start_load $tag-churn "${UP_C_ARGS[@]}" --duration "$dur"
  local lc=$LOAD_PID
  if ! wait_line "$WORK/$tag-persistent.out" "baton-load: started" 30 "$lp" ||
    ! wait_line "$WORK/$tag-churn.out" "baton-load: started" 30 "$lc"; then
    broken "upgrade ($dm): baton-load did not start" "$WORK/$tag-persistent.err"
    return 1
  fi
  progress "$sec. $UP_K upgrades under load, every $UP_SPACING_MS ms ($dur s of load)"
  local f_accept=$WORK/$tag.accept f_stopped=$WORK/$tag.stopped f_ready=$WORK/$tag.ready f_ctl=$WORK/$tag.ctl
  local f_linger=$WORK/$tag.linger f_fail=$WORK/$tag.failures f_hello=$WORK/$tag.hello f_newstart=$WORK/$tag.newstart
  : >"$WORK/$tag.each"; : >"$f_accept"; : >"$f_accept.SIGUSR2"; : >"$f_accept.batonctl"; : >"$f_stopped"; : >"$f_ready"; : >"$f_ctl"; : >"$f_linger"; : >"$f_linger.busy"; : >"$f_linger.idle"; : >"$f_fail"; : >"$f_hello"; : >"$f_newstart"
  local start_us i via old new t0 t1 rc line ok deadline fails_before
  local done_sig=0 done_ctl=0 failed=0 requested=0
  local olds=() t0s=()
  local fail_pat
  start_us=$(now_us)
  for ((i = 1; i <= UP_K; i++)); do
    sleep_until_us $((start_us + UP_LEAD_MS * 1000 + (i - 1) * UP_SPACING_MS * 1000))
    if ! alive "$cur"; then
      echo "serving batond pid $cur is gone before upgrade $i" >>"$f_fail"
      break
    fi
    via=SIGUSR2
    ((HAVE_BATONCTL && i % 2 == 0)) && via=batonctl
    old=$cur rc=0 ok=0
    fail_pat="pid=$old gen=[0-9]* .*upgrade.*\(failed\|refused\)"
    fails_before=$(log_count "$log" "$fail_pat")
    requested=$((requested + 1))
    if [[ $via == SIGUSR2 ]]; then
      t0=${EPOCHREALTIME/./}
      kill -USR2 "$old"
    else
      t0=${EPOCHREALTIME/./}
      timeout 30 "$BATONCTL" --control "$ctl" upgrade >>"$WORK/$tag-batonctl.out" 2>&1 || rc=$?
      t1=${EPOCHREALTIME/./}
    fi
    deadline=$((t0 + 20000000))
    while :; do
      # COMMIT: the new generation accepts from here on (its probation follows).
      if grep -q "pid=$old gen=[0-9]* upgrade: committed; successor=[0-9]*" "$log"; then ok=1; break; fi
      (($(log_count "$log" "$fail_pat") > fails_before)) && break
      ((${EPOCHREALTIME/./} < deadline)) || break
      sleep 0.01
    done
    if ((!ok)); then
      failed=$((failed + 1))
      line=$(grep -- "$fail_pat" "$log" | tail -1 || true)
      [[ $via == batonctl ]] && line="${line:-no outcome within 20 s} (batonctl exit $rc: $(tail -1 "$WORK/$tag-batonctl.out" 2>/dev/null))"
      echo "upgrade $i ($via, pid $old): ${line:-no outcome within 20 s}" >>"$f_fail"
      continue
    fi
    line=$(first_line "$log" "pid=$old gen=[0-9]* upgrade: committed; successor=[0-9]*")
    new=$(sed 's/.*upgrade: committed; successor=\([0-9]*\) .*/\1/' <<<"$line")
    calc "$(sed 's/.*READY \([0-9.]*\) ms.*/\1/' <<<"$line") * 1000" %d >>"$f_ready"
    echo >>"$f_ready"
    if wait_line "$log" "pid=$new gen=[0-9]* serving: generation" 5; then
      line=$(first_line "$log" "pid=$new gen=[0-9]* serving: generation")
      line_ms "$line"
      echo $((LINE_MS * 1000 - t0)) >>"$f_accept"
      echo $((LINE_MS * 1000 - t0)) >>"$f_accept.$via"
      echo "$((LINE_MS * 1000 - t0)) $old $new $via $i" >>"$WORK/$tag.each"
      [[ $line =~ ready\ ([0-9.]+)\ ms\ after\ start ]] && echo "$(calc "${BASH_REMATCH[1]} * 1000" %d)" >>"$f_newstart"
    fi
    line=$(first_line "$log" "pid=$old gen=[0-9]* upgrade: spawning -> awaiting-ready after")
    [[ $line =~ after\ ([0-9.]+)\ ms ]] && echo "$(calc "${BASH_REMATCH[1]} * 1000" %d)" >>"$f_hello"
    if wait_line "$log" "pid=$old gen=[0-9]* stopped accepting" 5; then
      line_ms "$(first_line "$log" "pid=$old gen=[0-9]* stopped accepting")"
      echo $((LINE_MS * 1000 - t0)) >>"$f_stopped"
    fi
    if [[ $via == batonctl ]]; then
      echo $((t1 - t0)) >>"$f_ctl"
      done_ctl=$((done_ctl + 1))
      ((rc == 0)) || echo "upgrade $i: batonctl exited $rc although pid $new serves" >>"$f_fail"
    else
      done_sig=$((done_sig + 1))
    fi
    olds+=("$old")
    t0s+=("$t0")
    cur=$new
  done
  local lp_ok=1 lc_ok=1
  finish_load $tag-persistent "$lp" "$(calc "$dur + 30" %d)" || lp_ok=0
  finish_load $tag-churn "$lc" "$(calc "$dur + 30" %d)" || lc_ok=0
  # Lingering: from the request to the old generation's "exiting" line.
  local n=${#olds[@]} j status_bad=0 still=0
  for ((j = 0; j < n; j++)); do
    old=${olds[j]}
    wait_exit "$old" 15 || still=$((still + 1))
    line=$(first_line "$log" "pid=$old gen=[0-9]* exiting with status")
    if [[ -n $line ]]; then
      line_ms "$line"
      echo $((LINE_MS * 1000 - t0s[j])) >>"$f_linger"
      if [[ $(first_line "$log" "pid=$old gen=[0-9]* drain: started") =~ \ ([0-9]+)\ connection\(s\)\ open ]] &&
        ((BASH_REMATCH[1] > 0)); then
        echo $((LINE_MS * 1000 - t0s[j])) >>"$f_linger.busy"
      else
        echo $((LINE_MS * 1000 - t0s[j])) >>"$f_linger.idle"
      fi
      [[ $line == *"exiting with status 0"* ]] || status_bad=$((status_bad + 1))
    else
      status_bad=$((status_bad + 1))
    fi
  done
  local final_gen
  final_gen=$(grep -o "pid=$cur gen=[0-9]*" "$log" | head -1 | cut -d= -f3 || true)
  stop_batond_chain "$log" "$cur"

  md "batond (\`--drain-timeout $DRAIN_S\`$( ((HAVE_DRAIN)) && echo ", \`--drain $dm\`" || echo ", which has no --drain option yet: it waits")) under two baton-load runs at once:" \
    "persistent: $LOAD_CONNS connections, pipeline $LOAD_PIPELINE, $LOAD_SIZE-byte messages, at most $LOAD_RATE messages/s per connection;" \
    "churn: $LOAD_CHURN new short connections per second (connect, one $LOAD_SIZE-byte echo, close)." \
    "$UP_K upgrades were requested every $UP_SPACING_MS ms, $( ((HAVE_BATONCTL)) && echo "alternately by SIGUSR2 and by \`batonctl --control PATH upgrade\`" || echo "all by SIGUSR2 (batonctl or batond --control not available when this ran: the batonctl half was skipped)"); each waited for the previous one to be serving." ""
  md "| | |" "| --- | --- |"
  md "| upgrades requested | $requested |"
  md "| upgrades done | $((done_sig + done_ctl)) ($done_sig by SIGUSR2, $done_ctl by batonctl) |"
  md "| upgrades failed or rolled back | $failed |"
  md "| generations at the end | ${final_gen:-?} |"
  md "| old generations that exited with status 0 | $((n - status_bad)) of $n$( ((still > 0)) && echo " ($still still running 15 s after the load: killed)") |"
  md "| their drains | $(drain_totals "$log" "handed over to pid") |"
  md "" "Latency, measured from outside: the script's clock (\`EPOCHREALTIME\`) when it sends the signal or starts" \
    "batonctl, to the timestamp of batond's own log line (same host clock, truncated to the millisecond, so" \
    "these can read up to 1 ms low). p99 of $n samples is close to the max." ""
  md "| from the request to | p50 / p99 / max (ms) | samples |" "| --- | --- | --- |"
  md "| new generation accepting (its \`serving\` line), SIGUSR2 | $(summary_ms "$f_accept.SIGUSR2") | $(wc -l <"$f_accept.SIGUSR2") |"
  ((HAVE_BATONCTL)) && md "| new generation accepting, \`batonctl upgrade\` (includes starting batonctl) | $(summary_ms "$f_accept.batonctl") | $(wc -l <"$f_accept.batonctl") |"
  md "| old generation no longer accepting (\`stopped accepting\`) | $(summary_ms "$f_stopped") | $(wc -l <"$f_stopped") |"
  md "| batond's own figure (\`READY X ms after the request\`) | $(summary_ms "$f_ready") | $(wc -l <"$f_ready") |"
  md "| of which: the old process receiving HELLO (spawn, exec and start-up of the new binary; batond's figure) | $(summary_ms "$f_hello") | $(wc -l <"$f_hello") |"
  md "| the new process: its start to accepting (its \`ready X ms after start\`) | $(summary_ms "$f_newstart") | $(wc -l <"$f_newstart") |"
  ((HAVE_BATONCTL)) && md "| \`batonctl upgrade\` returning (its whole run) | $(summary_ms "$f_ctl") | $(wc -l <"$f_ctl") |"
  md "| old generation exiting (lingering; bounded by \`--drain-timeout $DRAIN_S\`), all | $(summary_ms "$f_linger") | $(wc -l <"$f_linger") |"
  md "| … those with connections open when they handed over | $(summary_ms "$f_linger.busy") | $(wc -l <"$f_linger.busy") |"
  md "| … those with none | $(summary_ms "$f_linger.idle") | $(wc -l <"$f_linger.idle") |"
  md "" "For scale: the shell starting \`batond --version\` and seeing it exit (fork, exec, dynamic linking, exit)" \
    "takes $(summary_ms "$WORK/exec.us") ms (p50 / p99 / max of 10 runs, just before this step, without load)."
  local slow_us slow_old slow_new slow_via slow_i
  if read -r slow_us slow_old slow_new slow_via slow_i < <(sort -n "$WORK/$tag.each" | tail -1); then
    md "" "The slowest upgrade (number $slow_i, by $slow_via): $(us_to_ms "$slow_us") ms from the request to the new" \
      "generation accepting. batond's log lines for it, old pid $slow_old and new pid $slow_new:" "" '```'
    md "$(grep -E "pid=($slow_old|$slow_new) gen=" "$log" |
      awk -v o="pid=$slow_old gen=" -v w="pid=$slow_new gen=" '!on && index($0, o) && /upgrade \(/ { on = 1 }
        on { print; n++ } on && index($0, o) && /stopped accepting/ { a = 1 }
        on && index($0, w) && /serving: generation/ { b = 1 } (a && b) || n >= 30 { exit }')" '```'
  fi
  md "" "What the clients saw (from baton-load's JSON reports):" ""
  client_table $tag-persistent $tag-churn
  if [[ $dm == wait ]]; then
    md "" "With drain = wait, a persistent client stays on the generation that accepted it; that generation" \
      "half-closes it at \`--drain-timeout\` and the client, which always has messages in flight, counts an" \
      "early EOF (\`early_eof\`, then reconnects to the new generation). Those closes are the drain deadline at" \
      "work, not lost connections of the hand-off; compare them with the drain line above. A longer" \
      "deadline pins old generations for longer instead; connection hand-off (drain = handoff) is meant to remove both."
  else
    md "" "With drain = handoff the old generation passes its open connections to the new one; a persistent" \
      "failure above is a connection the hand-off did not carry over intact. batond's own account, summed" \
      "over the old generations (\`handoff: done in X ms: N connection(s) handed over, M kept here to drain\`):" \
      "$(handoff_totals "$log")."
  fi
  if [[ -s $f_fail ]]; then
    md "" "Problems:" ""
    while IFS= read -r line; do md "- $line"; done <"$f_fail"
  fi
  local problems
  problems=$(problem_lines "$log")
  [[ -n $problems ]] && md "" "batond warnings and errors in this step (count, message with digits as N):" "" '```' "$problems" '```'
  local churn_fails persist_fails
  churn_fails=$(jqv "$WORK/$tag-churn.json" .failures.total)
  persist_fails=$(jqv "$WORK/$tag-persistent.json" .failures.total)
  declare -g "${pfx}_CHURN_FAILS=$churn_fails" "${pfx}_PERSIST_FAILS=$persist_fails" \
    "${pfx}_ACCEPT_P50=$(us_to_ms "$(pct 50 <"$f_accept.SIGUSR2")")" \
    "${pfx}_ACCEPT_MAX=$(us_to_ms "$(pct 100 <"$f_accept.SIGUSR2")")" \
    "${pfx}_CTL_ACCEPT_P50=$(us_to_ms "$(pct 50 <"$f_accept.batonctl")")" \
    "${pfx}_FAILED=$failed" "${pfx}_DONE=$((done_sig + done_ctl))" \
    "${pfx}_LINGER_P50=$(us_to_ms "$(pct 50 <"$f_linger")")" "${pfx}_LINGER_MAX=$(us_to_ms "$(pct 100 <"$f_linger")")"

  progress "$sec. upgrades done $((done_sig + done_ctl))/$requested, SIGUSR2->accepting p50/p99/max $(summary_ms "$f_accept.SIGUSR2") ms, batonctl->accepting $(summary_ms "$f_accept.batonctl") ms, lingering $(summary_ms "$f_linger") ms, churn failures $churn_fails ($(failures_text "$WORK/$tag-churn.json")), persistent failures $persist_fails ($(failures_text "$WORK/$tag-persistent.json"))"
  ((lp_ok && lc_ok)) || { broken "upgrade ($dm): baton-load verified nothing or crashed"; return 1; }
  ((done_sig + done_ctl > 0)) || { broken "upgrade ($dm): no upgrade completed"; return 1; }
  return 0
}

# ---- 2. naive restart ----------------------------------------------------------------
# naive_by_variant NAME: per restart variant, failures summed over the timeline
# seconds that follow each restart (restart i owns [lead + (i-1)*spacing, lead + i*spacing)).
naive_by_variant() {
  jq -r --argjson lead "$NAIVE_LEAD_S" --argjson sp "$(calc "$NAIVE_SPACING_MS / 1000" %.3f)" --argjson r "$NAIVE_R" '
    [.timeline[] | (((.t - 1 - $lead) / $sp) | floor + 1) as $i
      | {v: (if $i < 1 then "before" elif $i > $r then "after" elif $i % 2 == 1 then "at once" else "after exit" end),
         f: .failures}]
    | group_by(.v)[] | .[0].v as $v | (map(.f) | reduce .[] as $x ({}; reduce ($x | keys[]) as $k (.; .[$k] += $x[$k]))) as $s
    | "\($v)\t\($s.total)\t\($s.refused) refused, \($s.reset) reset, \($s.timeout) timeout, \($s.early_eof) early_eof, \($s.mismatch) mismatch, \($s.stall) stall, \($s.other) other"' \
    "$WORK/$1.json" 2>/dev/null || true
}

step_naive() {
  local log=$WORK/naive.log
  : >"$log"
  local args=(--drain-timeout "$DRAIN_S" --max-connections 20000)
  md "" "## 2. The naive way: SIGTERM, then a new batond on the same port" ""
  start_batond "$log" --listen echo=tcp://127.0.0.1:0 "${args[@]}" || { broken "naive: batond did not start" "$log"; return 1; }
  local cur=$BATOND_PID port=$PORT dur
  dur=$(calc "$NAIVE_LEAD_S + $NAIVE_R * $NAIVE_SPACING_MS / 1000 + $NAIVE_TAIL_S")
  up_load_args "$port"
  start_load naive-persistent "${UP_P_ARGS[@]}" --duration "$dur"
  local lp=$LOAD_PID
  start_load naive-churn "${UP_C_ARGS[@]}" --duration "$dur"
  local lc=$LOAD_PID
  if ! wait_line "$WORK/naive-persistent.out" "baton-load: started" 30 "$lp" ||
    ! wait_line "$WORK/naive-churn.out" "baton-load: started" 30 "$lc"; then
    broken "naive: baton-load did not start" "$WORK/naive-persistent.err"
    return 1
  fi
  progress "2. $NAIVE_R naive restarts under the same load ($dur s)"
  local f_once=$WORK/naive.gap.once f_wait=$WORK/naive.gap.wait f start_us i old t0 p tries new
  local restarted=0 retries=0
  : >"$f_once"
  : >"$f_wait"
  start_us=$(now_us)
  for ((i = 1; i <= NAIVE_R; i++)); do
    sleep_until_us $((start_us + NAIVE_LEAD_S * 1000000 + (i - 1) * NAIVE_SPACING_MS * 1000))
    alive "$cur" || { md "" "Restart $i: the serving batond (pid $cur) is gone."; break; }
    old=$cur new=""
    t0=${EPOCHREALTIME/./}
    kill -TERM "$old"
    if ((i % 2 == 0)); then
      # As `systemctl restart` does: wait for the old process to be gone, then start.
      f=$f_wait
      wait_exit "$old" 30 || true
    else
      # As a restart script that does not wait would: start the new one at once.
      f=$f_once
    fi
    # Retry while the port is still taken.
    for ((tries = 1; tries <= 100; tries++)); do
      "$BATOND" --listen "echo=tcp://127.0.0.1:$port" "${args[@]}" >>"$log" 2>&1 &
      p=$!
      BENCH_PIDS+=("$p")
      if wait_line "$log" "pid=$p gen=[0-9]* serving: generation" 10 "$p"; then
        new=$p
        break
      fi
      wait "$p" 2>/dev/null || true
      sleep 0.02
    done
    [[ -n $new ]] || { md "" "Restart $i: no new batond could bind 127.0.0.1:$port in 100 tries."; break; }
    retries=$((retries + tries - 1))
    line_ms "$(first_line "$log" "pid=$new gen=[0-9]* serving: generation")"
    echo $((LINE_MS * 1000 - t0)) >>"$f"
    restarted=$((restarted + 1))
    cur=$new
  done
  local lp_ok=1 lc_ok=1
  finish_load naive-persistent "$lp" "$(calc "$dur + 30" %d)" || lp_ok=0
  finish_load naive-churn "$lc" "$(calc "$dur + 30" %d)" || lc_ok=0
  stop_batond_chain "$log" "$cur"
  md "Same load and \`--drain-timeout $DRAIN_S\` as above; $NAIVE_R restarts, $NAIVE_SPACING_MS ms apart, alternating two" \
    "ways: *at once* (\`kill -TERM\` the serving batond, which stops accepting and drains, and start a new" \
    "batond on the same port immediately) and *after exit* (\`kill -TERM\`, wait for the old process to be" \
    "gone, then start the new one, as \`systemctl restart\` does). A start that fails to bind is retried." ""
  md "| | |" "| --- | --- |"
  md "| restarts done | $restarted of $NAIVE_R ($retries failed bind attempt(s) before a new one served) |"
  md "| SIGTERM → new batond accepting, *at once*, p50 / p99 / max (ms) | $(summary_ms "$f_once") |"
  md "| SIGTERM → new batond accepting, *after exit*, p50 / p99 / max (ms) | $(summary_ms "$f_wait") |"
  md "| the stopped generations' drains | $(drain_totals "$log" "SIGTERM: graceful stop") |"
  md "" "What the clients saw:" ""
  client_table naive-persistent naive-churn
  md "" "The same failures split by the restart that preceded them (from the per-second timeline, so a" \
    "failure detected late, e.g. a timeout, may land on the next restart):" ""
  md "| load | restart way | failures | by reason |" "| --- | --- | --- | --- |"
  local v tot reasons name want
  for name in naive-churn naive-persistent; do
    for want in "at once" "after exit" "before" "after"; do
      while IFS=$'\t' read -r v tot reasons; do
        [[ $v == "$want" ]] || continue
        [[ ($v == before || $v == after) && $tot == 0 ]] && continue
        md "| ${name#naive-} | $v | $tot | $reasons |"
      done < <(naive_by_variant "$name")
    done
  done
  NAIVE_CHURN_FAILS=$(jqv "$WORK/naive-churn.json" .failures.total)
  NAIVE_PERSIST_FAILS=$(jqv "$WORK/naive-persistent.json" .failures.total)
  progress "2. naive restarts $restarted, churn failures $NAIVE_CHURN_FAILS ($(failures_text "$WORK/naive-churn.json")), persistent failures $NAIVE_PERSIST_FAILS"
  ((lp_ok && lc_ok)) || { broken "naive: baton-load verified nothing or crashed"; return 1; }
  return 0
}

# ---- 3. throughput ------------------------------------------------------------------
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

step_throughput() {
  md "" "## 3. Echo throughput: batond against baseline-echo" ""
  local blog=$WORK/tp-batond.log
  : >"$blog"
  start_batond "$blog" --listen echo=tcp://127.0.0.1:0 || { broken "throughput: batond did not start" "$blog"; return 1; }
  local bpid=$BATOND_PID bport=$PORT
  start_baseline "$WORK/tp-baseline.out" || { broken "throughput: baseline-echo did not start" "$WORK/tp-baseline.out"; return 1; }
  local epid=$BASELINE_PID eport=$PORT
  local hz r size s order name port pid c0 c1 mps mbps cpu fails pipeline ok=1
  hz=$(getconf CLK_TCK)
  progress "3. throughput: $TP_ROUNDS round(s) x 2 sizes x 2 servers x $TP_SECONDS s"
  for ((r = 1; r <= TP_ROUNDS; r++)); do
    for size in 64 16384; do
      pipeline=32
      ((size > 64)) && pipeline=4
      order="batond baseline"
      ((r % 2 == 0)) && order="baseline batond"
      for s in $order; do
        if [[ $s == batond ]]; then port=$bport pid=$bpid; else port=$eport pid=$epid; fi
        name=tp-$s-$size-$r
        c0=$(cpu_ticks "$pid")
        if ! run_load "$name" $((TP_SECONDS + 30)) --target "tcp://127.0.0.1:$port" --connections "$TP_CONNS" \
          --pipeline "$pipeline" --message-size "$size" --duration "$TP_SECONDS" --quiet; then
          ok=0
          continue
        fi
        c1=$(cpu_ticks "$pid")
        read -r mps mbps cpu fails < <(jq -r --argjson ticks $((c1 - c0)) --argjson hz "$hz" \
          '(.duration_s + .drain_s) as $t | "\(.persistent.messages / $t) \(.persistent.bytes_verified / $t / 1e6) \($ticks / $hz / $t * 100) \(.failures.total)"' \
          "$WORK/$name.json")
        echo "$mps $mbps $cpu $fails" >>"$WORK/tp-$s-$size.txt"
        progress "   round $r, $size B, $s: $(calc "$mps" %.0f) messages/s, $(calc "$mbps") MB/s, server CPU $(calc "$cpu" %.0f)%, failures $fails"
      done
    done
  done
  stop_pid "$bpid" 10 TERM || true
  stop_pid "$epid" 10 TERM || true
  md "baton-load with $TP_CONNS persistent connections, uncapped, $TP_SECONDS s per run; 64-byte messages with" \
    "pipeline 32, 16 KiB messages with pipeline 4. Each round runs both servers back to back (the order" \
    "alternates between rounds); the table gives the median of $TP_ROUNDS round(s) and every run in brackets." \
    "Rates count only echoes verified byte for byte, over the run including its final drain. Server CPU is" \
    "the server's user+system time over the run's wall time (100% = one core; both servers are single-threaded)." ""
  md "| message | server | messages/s: median [each round] | MB/s verified (median) | server CPU (median) | messages per server CPU-second (median) | failures |"
  md "| --- | --- | --- | --- | --- | --- | --- |"
  local runs f med_m med_b med_c med_e fsum
  for size in 64 16384; do
    for s in batond baseline; do
      f=$WORK/tp-$s-$size.txt
      [[ -s $f ]] || { md "| $size B | $s | no run | | | | |"; continue; }
      runs=$(awk '{ printf "%s%.0f", (NR > 1 ? ", " : ""), $1 }' "$f")
      med_m=$(cut -d' ' -f1 "$f" | pct 50)
      med_b=$(cut -d' ' -f2 "$f" | pct 50)
      med_c=$(cut -d' ' -f3 "$f" | pct 50)
      med_e=$(awk '$3 > 0 { print $1 / ($3 / 100) }' "$f" | pct 50)
      fsum=$(awk '{ s += $4 } END { print s + 0 }' "$f")
      md "| $size B | $([[ $s == batond ]] && echo batond || echo baseline-echo) | $(calc "$med_m" %.0f) [$runs] | $(calc "$med_b") | $(calc "$med_c" %.0f)% | $(calc "$med_e" %.0f) | $fsum |"
    done
  done
  md "" "batond / baseline-echo. Each round's two runs are back to back, so the ratio within a round is" \
    "the least disturbed by the other work on the machine; the headline is the median of those." ""
  md "| message | messages/s ratio: median of rounds [each round] | ratio of the medians above | messages per server CPU-second ratio: median of rounds |"
  md "| --- | --- | --- | --- |"
  local fb fe per_round r_med r_eff r_of_med
  for size in 64 16384; do
    fb=$WORK/tp-batond-$size.txt fe=$WORK/tp-baseline-$size.txt
    if [[ ! -s $fb || ! -s $fe ]]; then md "| $size B | n/a | n/a | n/a |"; continue; fi
    per_round=$(paste -d' ' "$fb" "$fe" | awk '$5 > 0 { printf "%s%.2f", (NR > 1 ? ", " : ""), $1 / $5 }')
    r_med=$(paste -d' ' "$fb" "$fe" | awk '$5 > 0 { print $1 / $5 }' | pct 50)
    r_eff=$(paste -d' ' "$fb" "$fe" | awk '$3 > 0 && $7 > 0 && $5 > 0 { print ($1 / $3) / ($5 / $7) }' | pct 50)
    r_of_med=$(calc "$(cut -d' ' -f1 "$fb" | pct 50) / $(cut -d' ' -f1 "$fe" | pct 50)" %.2f)
    [[ $r_med != n/a ]] && r_med=$(calc "$r_med" %.2f)
    [[ $r_eff != n/a ]] && r_eff=$(calc "$r_eff" %.2f)
    md "| $size B | **${r_med}×** [$per_round] | ${r_of_med}× | ${r_eff}× |"
    if ((size == 64)); then TP_RATIO_64=$r_med TP_EFF_64=$r_eff; else TP_RATIO_16K=$r_med TP_EFF_16K=$r_eff; fi
  done
  md "" "When the server's CPU is well under 100%, the single-threaded client (on the other core) is what" \
    "limits the rate, and the messages/s ratio says more about the client than the server; messages per" \
    "server CPU-second compares the servers' own cost per echo."
  progress "3. batond/baseline messages/s: 64 B ${TP_RATIO_64:-n/a}x, 16 KiB ${TP_RATIO_16K:-n/a}x; per server CPU-second: ${TP_EFF_64:-n/a}x, ${TP_EFF_16K:-n/a}x"
  ((ok)) || { broken "throughput: a baton-load run verified nothing or crashed"; return 1; }
  return 0
}

# ---- 4. memory ------------------------------------------------------------------------
step_memory() {
  md "" "## 4. Memory per idle connection" ""
  progress "4. memory: $MEM_N idle connections, batond then baseline-echo"
  md "Resident set (VmRSS) of the server freshly started and idle, then holding $MEM_N idle connections" \
    "(baton-load --connections $MEM_N --rate 0.001 --pipeline 1 --message-size 64: every connection echoes" \
    "one or two messages at the start, then stays idle). Measured $MEM_SETTLE_S s after the server holds them all." \
    "Per connection = (RSS with − RSS idle) / connections held. Kernel socket buffers are not in RSS." ""
  md "| server | RSS idle (KiB) | RSS with connections (KiB) | connections held | KiB per connection | RSS after they closed (KiB) | client failures |"
  md "| --- | --- | --- | --- | --- | --- | --- |"
  local s pid idle with after held socks0 deadline per name ok=1
  for s in batond baseline; do
    if [[ $s == batond ]]; then
      : >"$WORK/mem-batond.log"
      start_batond "$WORK/mem-batond.log" --listen echo=tcp://127.0.0.1:0 --max-connections $((MEM_N + 1000)) ||
        { broken "memory: batond did not start" "$WORK/mem-batond.log"; ok=0; continue; }
      pid=$BATOND_PID
    else
      start_baseline "$WORK/mem-baseline.out" || { broken "memory: baseline-echo did not start" "$WORK/mem-baseline.out"; ok=0; continue; }
      pid=$BASELINE_PID
    fi
    sleep 0.3
    idle=$(rss_kib "$pid")
    socks0=$(socket_count "$pid")
    name=mem-$s
    start_load "$name" --target "tcp://127.0.0.1:$PORT" --connections "$MEM_N" --rate 0.001 --pipeline 1 \
      --message-size 64 --duration 300 --timeout-ms 30000 --quiet
    local lpid=$LOAD_PID
    if ! wait_line "$WORK/$name.out" "baton-load: started" 120 "$lpid"; then
      broken "memory ($s): baton-load did not open its connections" "$WORK/$name.err"
      ok=0
      finish_load "$name" "$lpid" 1 || true
      stop_pid "$pid" 10 TERM || true
      continue
    fi
    deadline=$((SECONDS + 20))
    while (($(socket_count "$pid") < socks0 + MEM_N && SECONDS < deadline)); do sleep 0.1; done
    sleep "$MEM_SETTLE_S"
    with=$(rss_kib "$pid")
    held=$(($(socket_count "$pid") - socks0))
    ours "$lpid" && kill -INT "$lpid" 2>/dev/null || true
    finish_load "$name" "$lpid" 60 || ok=0
    sleep 0.5
    after=$(rss_kib "$pid")
    per=n/a
    ((held > 0)) && per=$(calc "($with - $idle) / $held" %.2f)
    md "| $s | $idle | $with | $held | **$per** | $after | $(jqv "$WORK/$name.json" .failures.total) ($(jqv "$WORK/$name.json" .persistent.messages) messages verified) |"
    progress "4. $s: idle $idle KiB, with $held connections $with KiB: $per KiB per connection"
    [[ $s == batond ]] && MEM_PER_CONN=$per
    stop_pid "$pid" 10 TERM || true
  done
  ((ok)) || return 1
  return 0
}

# ---- 5. interpretation --------------------------------------------------------------------
# verdict VALUE OP TARGET: "within" / "outside" (n/a when the value is missing).
verdict() {
  [[ $1 =~ ^[0-9.]+$ ]] || { echo "not measured"; return; }
  if awk -v v="$1" -v t="$3" "BEGIN { exit !(v $2 t) }"; then echo "within the target"; else echo "**outside the target**"; fi
}

interpretation_section() {
  md "" "## 5. Against the targets in DESIGN.md (\"What fast means here\")" ""
  md "This run's figures only; a noisy shared machine can move them either way." ""
  md "| target | this run | |" "| --- | --- | --- |"
  local pfx dm
  for pfx in UP HO; do
    dm="wait"
    [[ $pfx == HO ]] && dm="handoff"
    local done_v=${pfx}_DONE failed_v=${pfx}_FAILED churn_v=${pfx}_CHURN_FAILS persist_v=${pfx}_PERSIST_FAILS
    [[ -n ${!done_v:-} ]] || continue
    md "| zero failed or reset connections across upgrades under load (drain = $dm) | ${!done_v} upgrades done, ${!failed_v} failed; new connections: ${!churn_v} failures; persistent connections: ${!persist_v} failures$([[ $dm == wait ]] && echo " (drain-deadline closes, see 1)") | new connections: $([[ ${!churn_v} == 0 && ${!failed_v} == 0 ]] && echo "within the target" || echo "**outside the target**"); persistent: $([[ ${!persist_v} == 0 ]] && echo "within" || echo "**outside**")$([[ $dm == wait ]] && echo " (drain = wait with a ${DRAIN_S} s deadline)") |"
  done
  md "| naive restart for contrast | new connections: ${NAIVE_CHURN_FAILS:-?} failures, persistent: ${NAIVE_PERSIST_FAILS:-?} | |"
  md "| SIGUSR2 → new generation accepting: ≤ 5 ms median | drain = wait: ${UP_ACCEPT_P50:-n/a} ms (max ${UP_ACCEPT_MAX:-n/a})$([[ -n ${HO_ACCEPT_P50:-} ]] && echo "; drain = handoff: $HO_ACCEPT_P50 ms (max ${HO_ACCEPT_MAX:-n/a})") (\`batonctl upgrade\` → accepting: ${UP_CTL_ACCEPT_P50:-n/a} ms$([[ -n ${HO_CTL_ACCEPT_P50:-} ]] && echo " / $HO_CTL_ACCEPT_P50 ms")) | wait: $(verdict "${UP_ACCEPT_P50:-}" "<=" 5)$([[ -n ${HO_ACCEPT_P50:-} ]] && echo "; handoff: $(verdict "$HO_ACCEPT_P50" "<=" 5)") |"
  [[ -n ${HO_LINGER_P50:-} ]] && md "| old generation gone in milliseconds with drain = handoff (DESIGN.md, no number given) | p50 ${HO_LINGER_P50} ms, max ${HO_LINGER_MAX} ms from the request to the old one's exit (drain = wait: p50 ${UP_LINGER_P50:-n/a}, max ${UP_LINGER_MAX:-n/a} ms) | |"
  md "| echo throughput ≥ 0.9× baseline at 64 B | ${TP_RATIO_64:-n/a}× messages/s (${TP_EFF_64:-n/a}× per server CPU-second) | $(verdict "${TP_RATIO_64:-}" ">=" 0.9) (per CPU-second: $(verdict "${TP_EFF_64:-}" ">=" 0.9)) |"
  md "| echo throughput ≥ 0.95× baseline at 16 KiB | ${TP_RATIO_16K:-n/a}× messages/s (${TP_EFF_16K:-n/a}× per server CPU-second) | $(verdict "${TP_RATIO_16K:-}" ">=" 0.95) (per CPU-second: $(verdict "${TP_EFF_16K:-}" ">=" 0.95)) |"
  md "| ≤ 2 KiB of user-space memory per idle connection | ${MEM_PER_CONN:-n/a} KiB | $(verdict "${MEM_PER_CONN:-}" "<=" 2) |"
}

# The chaos run is too long for this script: scripts/chaos.sh --record keeps
# its summary in docs/chaos.json, shown here as it was measured.
chaos_section() {
  local f=$ROOT/docs/chaos.json
  md "" "## 6. Chaos: disturbed upgrades under load" ""
  if [[ ! -f $f ]]; then
    md "No recorded run: \`./scripts/chaos.sh --record 10\` makes one."
    return
  fi
  python3 - "$f" >>"$REPORT" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"`{s['command']}` on git {s['git']}, {s['date']}, seed {s['seed']}: {s['minutes']} minutes of")
print("upgrades under two byte-verifying baton-load runs (TCP: 16 persistent connections, pipeline 2,")
print("512-byte messages at 40/s each, 10 new connections/s; Unix: 4 persistent, 2048-byte messages,")
print("4 new/s), each upgrade disturbed at random: the new generation stopped (SIGSTOP, held 2.5 s:")
print("longer than any timeout) at fork, after exec, around READY, at COMMIT, during the connection")
print("hand-off or after it serves; killed before READY; storms of SIGUSR2; an upgrade of the new")
print("generation while the old one still has it on probation (chain); drain mode flipped by reload.")
print()
print("| | |")
print("| --- | --- |")
print(f"| upgrades requested | {s['upgrades']} ({s['disturbed']} disturbed) |")
print(f"| new generation serving (passed probation) | {s['succeeded']} |")
print(f"| rolled back, old generation serving on | {s['rolled_back']} |")
print(f"| disturbances | {', '.join(f'{k} {v}' for k, v in sorted(s['disturbances'].items()))} |")
if s.get('moments'):
    print(f"| where they landed | {', '.join(f'{k} {v}' for k, v in sorted(s['moments'].items()))} |")
print(f"| echoed messages verified | {s['messages']}" + (f" ({s['bytes_verified']} bytes)" if 'bytes_verified' in s else "") + " |")
print(f"| **client errors** (refused, reset, wrong or missing byte, stall > 15 s) | **{s['client_errors']}** |")
print()
print("At the end one generation serves, the pid file names it, it answers `batonctl`, every")
print("older generation has exited and none is a zombie (the test fails otherwise).")
PY
}

# Supervisor mode against gunicorn's own upgrade and the naive restart, under wrk.
step_supervisor() {
  local restarts=10 spacing=1
  [[ $MODE == smoke ]] && restarts=1 spacing=0.3
  if ! command -v wrk >/dev/null || [[ ! -x /usr/bin/gunicorn ]] || ((!HAVE_BATONCTL)); then
    md "" "## 7. Supervisor mode" "" "Skipped: needs wrk, gunicorn and batonctl."
    return
  fi
  progress "7. supervisor mode: $restarts restart(s) each way under wrk"
  if ! python3 "$ROOT/scripts/bench/supervisor.py" --batond "$BATOND" --batonctl "$BATONCTL" \
      --restarts "$restarts" --spacing "$spacing" >"$WORK/supervisor.md" 2>"$WORK/supervisor.log"; then
    broken "7. supervisor mode" "$WORK/supervisor.log"
    return 1
  fi
  md "" "$(cat "$WORK/supervisor.md")"
}

# ---- run -----------------------------------------------------------------------------------
: >"$REPORT"
machine_section
progress "$MODE mode; work dir $WORK"
step_upgrade wait 1 UP || true
kill_started
if ((HAVE_DRAIN)); then
  step_upgrade handoff 1b HO || true
  kill_started
else
  md "" "## 1b. Upgrade under load, drain = handoff" "" "Skipped: this batond has no \`--drain handoff\` option yet."
  progress "1b. skipped: batond has no --drain handoff option yet"
fi
step_naive || true
kill_started
step_throughput || true
kill_started
step_memory || true
kill_started
interpretation_section
chaos_section
step_supervisor || true
kill_started
md "" "## Run" ""
md "Took $((SECONDS - BENCH_START)) s; load average (1/5/15 min) at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
for note in "${NOTES[@]}"; do md "" "Note: $note"; done
if ((${#BROKEN[@]} > 0)); then
  md "" "Steps that could not run:"
  for b in "${BROKEN[@]}"; do md "- $b"; done
fi

if [[ $MODE == full ]]; then
  cp "$REPORT" "$ROOT/docs/benchmarks.md"
  cat "$REPORT"
  echo
  echo "bench: wrote docs/benchmarks.md"
else
  cat "$REPORT"
  echo
  echo "bench: smoke mode: the report above was not written to docs/"
fi
if ((${#BROKEN[@]} > 0)); then
  echo "bench: ${#BROKEN[@]} step(s) could not run: ${BROKEN[*]}" >&2
  exit 1
fi
