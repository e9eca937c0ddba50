#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/) with clang, ASan and UBSan into
# build-fuzz/, then, per target:
#   1. replays every input in tests/fuzz/regressions/<target>/ (inputs that
#      once crashed it; see the README there): any failure fails the script;
#   2. fuzzes it for SECONDS (default 10) from a scratch copy of its seed
#      corpus, tests/fuzz/corpus/<target>/, in build-fuzz/corpus/<target>/, so
#      a run never adds files to the repository (with tests/fuzz/<target>.dict
#      as its dictionary, if there is one).
# A crash, sanitizer report, leak, timeout (5 s per input) or out-of-memory
# (2 GB) fails the script; the reproducer is written to
# build-fuzz/artifacts/<target>-crash-<sha1> (or -leak-, -timeout-, -oom-) and
# its path is printed. Full logs: build-fuzz/logs/<target>.{replay,fuzz}.log.
#
#   ./scripts/fuzz.sh          # 10 s per target
#   ./scripts/fuzz.sh 300      # a longer hunt
#   build-fuzz/tests/fuzz/fuzz_listen_address CRASH_FILE    # reproduce one input
#
# Needs clang++ and libFuzzer (Debian: clang libclang-rt-14-dev).
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-10}
if ! [[ $secs =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [SECONDS]   (seconds of fuzzing per target, default 10)" >&2
  exit 2
fi

TARGETS=(fuzz_handoff_frame fuzz_handoff_channel fuzz_control_request fuzz_listen_address fuzz_config_file
         fuzz_metrics_request)
BUILD=build-fuzz
BIN=$BUILD/tests/fuzz

if ! command -v clang++ >/dev/null; then
  echo "fuzz.sh: clang++ not found; install the Debian packages clang libclang-rt-14-dev" >&2
  exit 1
fi

start=$(date +%s)
echo "fuzz.sh: building ${#TARGETS[@]} fuzz targets in $BUILD/ (clang, ASan, UBSan, libFuzzer)"
cmake -S . -B "$BUILD" -DCMAKE_CXX_COMPILER=clang++ -DBATON_FUZZ=ON -DBUILD_TESTING=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target "${TARGETS[@]}"
built=$(date +%s)
echo "fuzz.sh: build took $((built - start)) s"

# UB in the libraries aborts too (they may be compiled recoverable); leaks are reported.
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export ASAN_OPTIONS="detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"

mkdir -p "$BUILD/artifacts" "$BUILD/logs"
failures=()

# Non-hidden regular files of a directory, one per line.
inputs_in() {
  [[ -d $1 ]] || return 0
  find "$1" -maxdepth 1 -type f ! -name '.*' | sort
}

# 1. The fixed inputs: every regression, each on its own so every failing one is named.
declare -A regressed=()
for t in "${TARGETS[@]}"; do
  n=0
  log=$BUILD/logs/$t.replay.log
  : >"$log"
  while IFS= read -r input; do
    [[ -n $input ]] || continue
    n=$((n + 1))
    one=$BUILD/logs/$t.replay-one.log
    status=0
    "$BIN/$t" -timeout=5 -rss_limit_mb=2048 "$input" >"$one" 2>&1 || status=$?
    cat "$one" >>"$log"
    if ((status != 0)); then
      regressed[$t]=1
      failures+=("$t: regression input fails again: $input")
      echo "fuzz.sh: $t: REGRESSION: $input fails again (exit $status):" >&2
      grep -E 'invariant broken|ERROR: |SUMMARY: |runtime error' "$one" | head -4 >&2 || true
    fi
    rm -f "$one"
  done < <(inputs_in "tests/fuzz/regressions/$t")
  echo "fuzz.sh: $t: replayed $n regression input(s)${regressed[$t]:+, some FAIL}"
done

# 2. Fuzzing, one target after the other.
for t in "${TARGETS[@]}"; do
  if [[ -n ${regressed[$t]:-} ]]; then
    echo "fuzz.sh: $t: not fuzzed, a regression input fails (see above)"
    continue
  fi
  corpus=$BUILD/corpus/$t
  rm -rf "$corpus"
  mkdir -p "$corpus"
  cp tests/fuzz/corpus/"$t"/* "$corpus"/
  while IFS= read -r input; do [[ -n $input ]] && cp "$input" "$corpus/"; done < <(inputs_in "tests/fuzz/regressions/$t")
  dict=()
  [[ -f tests/fuzz/$t.dict ]] && dict=(-dict="tests/fuzz/$t.dict")
  log=$BUILD/logs/$t.fuzz.log
  status=0
  "$BIN/$t" -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
    -artifact_prefix="$BUILD/artifacts/$t-" "$corpus" >"$log" 2>&1 || status=$?
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  runs=$(sed -nE 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\1 execs in \2 s/p' "$log" | tail -1)
  cov=$(sed -nE 's/.*(cov: [0-9]+ ft: [0-9]+ corp: [0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$done_line")
  if ((status == 0)); then
    echo "fuzz.sh: $t: ok: ${runs:-?}, ${cov:-?}"
  else
    artifact=$(sed -nE 's/.*Test unit written to (.*)$/\1/p' "$log" | tail -1)
    new_finding=1
    failures+=("$t: ${artifact:-no reproducer written, see $log}")
    execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 || true)
    echo "fuzz.sh: $t: FAILED (exit $status) after ${execs#\#} execs; report:" >&2
    # The finding, then the first stack frames in baton's own code.
    grep -E 'invariant broken|ERROR: |SUMMARY: |runtime error' "$log" | head -6 >&2 || true
    grep -E '^    #[0-9]+ ' "$log" | grep -F " $PWD/" | grep -vF " $PWD/$BUILD/" | head -8 >&2 || true
    echo "fuzz.sh: $t: reproducer: ${artifact:-none} (full log: $log)" >&2
    [[ -n $artifact ]] && echo "fuzz.sh: $t: reproduce: $BIN/$t $artifact" >&2
  fi
done

echo "fuzz.sh: done in $(($(date +%s) - start)) s (build $((built - start)) s, $secs s per target)"
if ((${#failures[@]})); then
  echo "fuzz.sh: ${#failures[@]} failure(s):" >&2
  printf '  %s\n' "${failures[@]}" >&2
  if [[ -n ${new_finding:-} ]]; then
    echo "fuzz.sh: keep each new reproducer: copy it into tests/fuzz/regressions/<target>/ (see the README there)" >&2
  fi
  exit 1
fi
echo "fuzz.sh: all fuzz targets passed"
