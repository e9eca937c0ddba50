#!/usr/bin/env bash
# A long-lived nc session keeps echoing across an upgrade (SIGUSR2); a new nc
# connection is served by the new pid; the old pid exits once the session closes.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

start_batond --listen echo=tcp://127.0.0.1:0
OLD=$BATOND_PID

# Session 1: nc reads from a fifo we write lines into, and writes to a file.
mkfifo "$WORK/in1"
nc -N 127.0.0.1 "$PORT" <"$WORK/in1" >"$WORK/out1" &
STARTED_PIDS+=($!)
exec 3>"$WORK/in1"
echo "before upgrade" >&3
wait_for_out() { # FILE TEXT
  local deadline=$((SECONDS + 10))
  until grep -qx -- "$2" "$1"; do
    ((SECONDS < deadline)) || fail "'$2' never came back in $1"
    sleep 0.05
  done
}
wait_for_out "$WORK/out1" "before upgrade"
echo "session 1 echoed 'before upgrade' (served by pid $OLD)"

kill -USR2 "$OLD"
wait_for_log "pid=$OLD .*upgrade: pid [0-9]* is serving"
NEW=$(grep "pid=$OLD .*upgrade: pid [0-9]* is serving" "$LOG" | sed 's/.*upgrade: pid \([0-9]*\) is serving.*/\1/')
STARTED_PIDS+=("$NEW")
echo "upgraded: pid $OLD handed over to pid $NEW"

echo "after upgrade" >&3
wait_for_out "$WORK/out1" "after upgrade"
echo "session 1 still echoes after the upgrade (old pid $OLD drains it)"

# Session 2 can only be accepted by the new pid: the old one closed its listeners.
base=$(socket_count "$NEW")
mkfifo "$WORK/in2"
nc -N 127.0.0.1 "$PORT" <"$WORK/in2" >"$WORK/out2" 3>&- &  # must not hold session 1 open
STARTED_PIDS+=($!)
exec 4>"$WORK/in2"
echo "new session" >&4
wait_for_out "$WORK/out2" "new session"
(($(socket_count "$NEW") == base + 1)) || fail "new connection not held by pid $NEW"
echo "session 2 echoed by the new pid $NEW"

kill -0 "$OLD" 2>/dev/null || fail "old pid exited while its session was open"
exec 3>&-   # close session 1: nc sends FIN, the old generation has nothing left
wait_gone "$OLD"
echo "old pid $OLD exited after its last session closed"
exec 4>&-

kill -TERM "$NEW"
wait_gone "$NEW"
grep -q "pid=$NEW .*exiting with status 0" "$LOG" || fail "new pid did not exit cleanly"
echo "nc-upgrade-demo: ok"
