#!/usr/bin/env bash
# The main job, end to end on this machine's CPU: builds SHC if needed, turns the King James
# Bible (Debian's bible-kjv, public domain, 4.4 MB) into byte-level HDF5 shards, and trains the
# tiny SHC model on it for a few minutes (configs/demo_tiny.ini) with data parallelism over two
# MPI ranks (mpirun -np 2, one core each). Validation loss is logged before the first step and
# every 100 steps, a checkpoint every 200 (rerunning the train command resumes); everything lands
# in runs/demo/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup.sh"
shc="$root/build/bin/shc"
out="$root/runs/demo"
mkdir -p "$out"

[ -s "$out/kjv.txt" ] || bible -f Gen1:1-Rev22:21 >"$out/kjv.txt"
"$shc" prepare --input "$out/kjv.txt" --output "$out/data" --tokenizer byte \
  --shard_tokens 1048576 --val_fraction 0.01 --overwrite

rm -rf "$out/train"
# OpenMPI refuses to run as root unless told that this is intended.
[ "$(id -u)" -ne 0 ] || export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun -np 2 "$shc" train --config "$root/configs/demo_tiny.ini" --run.dir "$out/train" \
  --data.train "$out/data/train-*.h5" --data.val "$out/data/val-*.h5"
grep val_loss "$out/train/metrics.jsonl" | sed -n '1p;$p' |
  sed 's/^/demo: /'
