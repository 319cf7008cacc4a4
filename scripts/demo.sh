#!/usr/bin/env bash
# The main job, end to end on this machine (CPU): builds SHC if needed, then
#  1. the routing micro-benchmark at the SPEC's size (T = 4096 tokens, d = 1024), SHC vs mHC
#     Sinkhorn-10/20 vs HC at n = 2, 4, 8, 16 -> runs/demo/routing_bench.json
#  2. a throughput profile (forward, forward+backward, KV-cached generation) of the tiny model
#     for each residual kind -> runs/demo/profile_<kind>.json
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup.sh"
shc="$root/build/bin/shc"
out="$root/runs/demo"
mkdir -p "$out"

"$shc" profile --routing-bench --out "$out/routing_bench.json"
for kind in residual hc mhc shc; do
  "$shc" profile --model.preset tiny --model.residual "$kind" --out "$out/profile_$kind.json"
done
echo "demo: reports in $out"
