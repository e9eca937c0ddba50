#!/usr/bin/env bash
# Set up, build, and run batond in the foreground on a loopback default.
# Extra arguments go to batond (e.g. --listen echo=tcp://127.0.0.1:7001).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

args=("$@")
if ((${#args[@]} == 0)); then args=(--listen echo=tcp://127.0.0.1:7000); fi
cat <<MSG

batond starting (Ctrl-C stops it gracefully; a second Ctrl-C closes everything).
Talk to it from another terminal:
    echo hello | nc -N 127.0.0.1 7000        # one line, echoed back
    nc 127.0.0.1 7000                        # interactive: every line comes back
Upgrade it in place without dropping connections:
    kill -USR2 \$(pgrep -n batond)

MSG
exec ./build/daemon/batond "${args[@]}"
