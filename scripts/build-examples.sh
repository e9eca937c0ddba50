#!/usr/bin/env bash
# build-examples.sh BUILD_DIR OUT_DIR: installs what BUILD_DIR built into
# OUT_DIR/prefix, then builds every example against that prefix alone, never
# the source tree: each with its CMake project (find_package(baton)), and
# minimal-echo once more with nothing but pkg-config (baton.pc). A ctest
# fixture runs it before tests/integration/examples_test.cpp.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$1
out=$2
rm -rf "$out"
mkdir -p "$out"
cmake --install "$build" --prefix "$out/prefix" >/dev/null
for example in minimal-echo hello-http; do
  cmake -S "$root/examples/$example" -B "$out/$example" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$out/prefix" >/dev/null
  cmake --build "$out/$example" >/dev/null
done
export PKG_CONFIG_PATH="$out/prefix/lib/pkgconfig"
# shellcheck disable=SC2046 # pkg-config's output is a list of flags
g++ -std=c++20 -O2 -o "$out/minimal-echo-pkgconfig" "$root/examples/minimal-echo/main.cpp" \
  $(pkg-config --cflags --libs baton) -Wl,-rpath,"$(pkg-config --variable=libdir baton)"
echo "build-examples: minimal-echo, hello-http and minimal-echo-pkgconfig built against $out/prefix"
