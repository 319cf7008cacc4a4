#!/usr/bin/env bash
# A run directory that is not one directory on every rank (not on a shared filesystem) must stop
# `shc train` at start with exit 3 and say so, before anything is saved there. On one machine,
# rank 1 gets its own empty directory at the run directory's path from a private mount namespace
# (unshare -m + tmpfs); where this process may not do that, the test is skipped (exit 77).
#   usage: shared_run_dir_test.sh SHC WORKDIR
set -euo pipefail
shc=$1
work=$2/shared_run_dir
if ! unshare -m true 2>/dev/null; then
  echo "SKIP: cannot create a mount namespace here (needs CAP_SYS_ADMIN)"
  exit 77
fi
rm -rf "$work"
mkdir -p "$work/run"
"$shc" prepare --input /usr/share/common-licenses/GPL-3 --output "$work/data" --tokenizer byte \
  --shard_tokens 20000 --val_fraction 0 >/dev/null 2>&1
args=(train --run.dir "$work/run" --data.train "$work/data/train-*.h5" --model.preset tiny
  --model.n_layers 1 --train.seq_len 32 --train.global_batch 2 --train.max_steps 2
  --train.threads 1)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set +e
# Rank 0 sees the real directory; rank 1 an empty tmpfs mounted over the same path.
output=$(timeout 120 mpirun --bind-to none -np 1 "$shc" "${args[@]}" : \
  -np 1 unshare -m sh -c 'mount -t tmpfs none "$0" && exec "$@"' "$work/run" "$shc" "${args[@]}" 2>&1)
code=$?
set -e
echo "$output" | tail -5
if [ "$code" -ne 3 ]; then
  echo "FAIL: exit code $code, expected 3"
  exit 1
fi
if ! grep -q "the run directory '$work/run' is not the same directory on every rank" <<<"$output"; then
  echo "FAIL: the message does not say that the run directory differs between ranks"
  exit 1
fi
if [ -e "$work/run/checkpoints" ] || [ -e "$work/run/metrics.jsonl" ]; then
  echo "FAIL: something was saved into the run directory"
  exit 1
fi
echo "OK: a run directory that differs between ranks stops the job with exit 3"
