#!/usr/bin/env bash
# Installs the build tree into a scratch prefix, then configures, builds and runs a downstream
# project that uses find_package(SHC), <shc/shc.h> and <shc/checkpoints/safetensors.h>.
set -euo pipefail
build=$1 downstream=$2 torch_dir=$3
work="$build/install-test"
rm -rf "$work"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$downstream" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DTorch_DIR="$torch_dir" >"$work/configure.log" 2>&1 ||
  { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build"
cd "$work" && "$work/build/downstream"  # it writes a file into the current directory
