#!/usr/bin/env bash
# The long form of the chaos test (tests/integration/chaos_test.cpp): random
# upgrades of a real batond under byte-verifying load, each one disturbed at
# random (SIGSTOP of the new generation at fork, after exec, around READY, at
# COMMIT, during the connection hand-off and after it serves, each held past
# every timeout; SIGKILL before READY; upgrade storms; an upgrade of the new
# generation while the old one still has it on probation; drain-mode flips by
# SIGHUP), for MINUTES minutes (default 10).
#
#   ./scripts/chaos.sh [--record] [MINUTES]     BATON_CHAOS_SEED=N replays a run's choices
#
# Builds if needed, prints the test's summary and its "chaos-summary: {json}"
# line, and exits non-zero on any client error, wrong serving pid, leftover
# generation or zombie. The whole run is bounded: MINUTES plus five minutes for
# the last round and the checks, after which every process the test started
# (its own process group) is killed. --record keeps the summary of a passing
# run in docs/chaos.json, which ./scripts/bench.py shows in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
record=0
if [[ ${1:-} == --record ]]; then record=1; shift; fi
minutes=${1:-10}
[[ $minutes =~ ^[0-9]+$ && $minutes -ge 1 && $minutes -le 240 ]] || {
  echo "usage: $0 [--record] [MINUTES 1..240]" >&2
  exit 2
}

./scripts/setup.sh >/dev/null
cmake --build build --target chaos_test >/dev/null
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

out=$(mktemp "${TMPDIR:-/tmp}/baton-chaos-XXXXXX")
test_pid=""
# The test kills and reaps every process it starts, even when an assertion
# fails. Only if it is itself killed (the time bound below, Ctrl-C) can
# anything be left: its session, created by setsid, holds all of it.
kill_test() {
  [[ -n $test_pid ]] || return 0
  if kill -0 "$test_pid" 2>/dev/null; then
    if [[ $(ps -o pgid= -p "$test_pid" | tr -d ' ') == "$test_pid" ]]; then
      kill -KILL -- "-$test_pid" 2>/dev/null || true
    else
      kill -KILL "$test_pid" 2>/dev/null || true
    fi
  fi
}
trap 'kill_test; rm -f "$out"' EXIT
trap 'exit 130' INT TERM

seconds=$((minutes * 60))
# Rounds last at least half a second (the probation): this cap never ends a run early.
BATON_CHAOS_SECONDS=$seconds BATON_CHAOS_ROUNDS=$((seconds * 4)) \
  setsid ./build/tests/integration/chaos_test >"$out" 2>&1 &
test_pid=$!
deadline=$((SECONDS + seconds + 300))
status=0
while kill -0 "$test_pid" 2>/dev/null; do
  if ((SECONDS >= deadline)); then
    echo "chaos: still running $((seconds + 300)) s after the start; killing it" >&2
    kill_test
    break
  fi
  sleep 1
done
wait "$test_pid" || status=$?
test_pid=""

grep -E '^\[ chaos \]|^chaos-summary:' "$out" || true
if ((status == 0 && record)); then
  summary=$(sed -n 's/^chaos-summary: //p' "$out")
  python3 - "$summary" "$minutes" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" >docs/chaos.json <<'PY'
import json, sys, datetime
s = json.loads(sys.argv[1])
s.update({"minutes": int(sys.argv[2]), "git": sys.argv[3],
          "date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
          "command": "./scripts/chaos.sh --record " + sys.argv[2]})
print(json.dumps(s, indent=2, sort_keys=True))
PY
  echo "chaos: recorded in docs/chaos.json"
fi
if ((status != 0)); then
  # The failure messages carry the seed, the round and the daemon's log around it.
  grep -E '^\[ round \]' "$out" | tail -5 >&2 || true
  awk '/Failure$/ {f = 1} f' "$out" | head -600 >&2
  kept="${out}.log"
  cp "$out" "$kept"
  echo "chaos: FAILED (exit $status); the whole output is in $kept" >&2
fi
exit "$status"
