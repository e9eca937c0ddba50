#!/usr/bin/env bash
# Start batond, send a line with nc, check the echo, stop it with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

start_batond --listen echo=tcp://127.0.0.1:0

reply=$(echo "hello baton" | nc -N -w 5 127.0.0.1 "$PORT")
[[ "$reply" == "hello baton" ]] || fail "expected 'hello baton', got '$reply'"
echo "echoed: $reply"

kill -TERM "$BATOND_PID"
wait "$BATOND_PID" || fail "batond exited with status $?"
grep -q "exiting with status 0" "$LOG" || fail "no clean exit in the log"
echo "nc-smoke: ok"
