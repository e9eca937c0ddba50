#!/usr/bin/env bash
# Set up, build, and run every test: the GoogleTest suites through ctest, then
# the nc scripts a person can read and run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ctest --test-dir build --output-on-failure -j"$(nproc)" --timeout 300
./scripts/nc-smoke.sh
./scripts/nc-upgrade-demo.sh
./scripts/bench.sh --smoke
echo "test.sh: all tests passed"
