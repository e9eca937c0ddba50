#!/usr/bin/env bash
# The long form of the chaos test: random upgrades under byte-verifying load,
# disturbed (SIGSTOP of the new generation before READY, in its probation,
# during the connection hand-off and after it serves; SIGKILL before READY;
# upgrade storms; drain-mode flips), for MINUTES minutes (default 10).
#   ./scripts/chaos.sh [--record] [MINUTES]     BATON_CHAOS_SEED=N replays a run
# Prints the test's "chaos-summary: {json}" line; exits non-zero on any
# client error or leftover generation. --record keeps the summary of a passing
# run in docs/chaos.json, which ./scripts/bench.sh shows in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
record=0
if [[ ${1:-} == --record ]]; then record=1; shift; fi
minutes=${1:-10}
[[ $minutes =~ ^[0-9]+$ && $minutes -ge 1 && $minutes -le 240 ]] || { echo "usage: $0 [MINUTES 1..240]" >&2; exit 2; }
./scripts/setup.sh >/dev/null
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
out=$(mktemp "${TMPDIR:-/tmp}/baton-chaos-XXXXXX")
trap 'rm -f "$out"' EXIT
status=0
# Bounded: the run itself plus five minutes for the last round and the checks.
BATON_CHAOS_SECONDS=$((minutes * 60)) timeout $((minutes * 60 + 300)) \
  ./build/tests/integration/upgrade_chaos_test >"$out" 2>&1 || status=$?
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
  tail -50 "$out" >&2
  echo "chaos: FAILED (exit $status)" >&2
fi
exit "$status"
