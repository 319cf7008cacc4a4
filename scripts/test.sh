#!/usr/bin/env bash
# The whole test suite: installs/builds what is missing (both build lanes: the CPU lane runs the
# tests, the CUDA/NCCL lane must compile and link), then runs every CTest test of the CPU lane.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup.sh" --cuda
cd "$root/build"
ctest --output-on-failure --timeout 900 -j 2
