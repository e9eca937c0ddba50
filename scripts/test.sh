#!/usr/bin/env bash
# Set up, build, and run every test: the GoogleTest suites through ctest, the
# nc scripts a person can read and run, a short benchmark, the whole suite
# again under AddressSanitizer + UndefinedBehaviorSanitizer, and a short fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 300
./scripts/nc-smoke.sh
./scripts/nc-upgrade-demo.sh
./scripts/bench.py --smoke

# cmake --install puts the binaries, the units and the docs where they belong.
prefix=$(mktemp -d "${TMPDIR:-/tmp}/baton-install-XXXXXX")
cmake --install build --prefix "$prefix" >/dev/null
# The library too (its use by an outside project is tests/integration/examples_test.cpp).
for f in bin/batond bin/batonctl lib/systemd/system/baton.service lib/systemd/system/baton.socket \
         share/doc/baton/operations.md share/doc/baton/batond.toml share/doc/baton/embedding.md \
         include/baton/upgrader.h lib/libbaton_handoff.so.0.1 lib/cmake/baton/batonConfig.cmake lib/pkgconfig/baton.pc; do
  [[ -e "$prefix/$f" ]] || { echo "test.sh: cmake --install did not install $f" >&2; exit 1; }
done
# The installed batond finds the installed library (RUNPATH $ORIGIN/../lib), not build/'s.
"$prefix/bin/batond" --check-config "$prefix/share/doc/baton/batond.toml"
# Read whole first: with pipefail, `ldd | grep -q` fails when grep's early exit
# makes ldd die of SIGPIPE (a CI run failed so, with the right line in it).
libs=$(ldd "$prefix/bin/batond")
grep -q "libbaton_handoff.so.0.1 => $prefix/bin/../lib/" <<<"$libs" \
  || { echo "test.sh: the installed batond does not load the installed library:" >&2; echo "$libs" >&2; exit 1; }
rm -rf "$prefix"
echo "test.sh: install ok"

# Sanitizers: every process writes its reports to one folder (a daemon killed
# by a test would otherwise take its report with it); any report fails the run.
echo "test.sh: the suite again under ASan + UBSan"
# -O0 and line tables only (-g1): the instrumented build compiles in about half
# the time of -O1 -g (measured: 21 s against 45 s for daemon_metrics.cpp), the
# reports keep file:line, and nothing here is CPU-bound enough to need more.
cmake -S . -B build-asan -DBATON_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS=-O0 -DCMAKE_CXX_FLAGS_DEBUG=-g1 >/dev/null
cmake --build build-asan -j"$(nproc)"
reports=$(mktemp -d "${TMPDIR:-/tmp}/baton-sanitizer-XXXXXX")
# The random chaos run and the endurance run are shortened here: the Release
# pass runs them at full length, and this pass is about memory errors, which
# show within the first rounds (it keeps scripts/test.sh under 25 minutes).
# ASan's quarantine keeps freed memory, so RSS follows allocation churn
# (9 generations grew 1.5-2.3 MB): the endurance test's RSS margin is wider
# here, and LeakSanitizer checks for leaks.
ASAN_OPTIONS="detect_leaks=1:log_path=$reports/asan" UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/ubsan" \
  BATON_CHAOS_SECONDS=15 BATON_ENDURANCE_UPGRADES=12 BATON_ENDURANCE_RSS_MARGIN_KIB=8192 \
  ctest --test-dir build-asan --output-on-failure -j"$(nproc)" --timeout 600
# A report is an error the sanitizers found. LeakSanitizer's own notes (such as
# "Unable to get registers from thread N" when it cannot stop a process that is
# exiting) are shown but do not fail the run.
if compgen -G "$reports/*" >/dev/null; then
  if grep -l -E "ERROR: (AddressSanitizer|LeakSanitizer: detected)|runtime error:|SUMMARY: (Address|UndefinedBehavior|Leak)Sanitizer" \
      "$reports"/* >/dev/null; then
    echo "test.sh: sanitizer reports:" >&2
    cat "$reports"/* >&2
    exit 1
  fi
  echo "test.sh: sanitizer notes (not errors):"
  cat "$reports"/*
fi
rm -rf "$reports"

./scripts/fuzz.sh 5
echo "test.sh: all tests passed"
