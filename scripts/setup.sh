#!/usr/bin/env bash
# Installs what is missing (Debian packages, by name, only if missing) and
# builds baton in Release into build/. Sourced by run.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PACKAGES=(
  cmake g++ make pkg-config
  libuv1-dev libspdlog-dev libcli11-dev nlohmann-json3-dev libtomlplusplus-dev libhttp-parser-dev
  libgtest-dev
  netcat-openbsd procps
  python3 python3-matplotlib gunicorn uwsgi-core uwsgi-plugin-python3 lighttpd wrk prometheus
  clang libclang-rt-14-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != *"install ok installed"* ]]; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
