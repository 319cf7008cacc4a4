#!/usr/bin/env bash
# The SLURM scripts (slurm/) without SLURM, a GPU or shc: syntax, the exact launch line of each
# template in each launch mode (dry run), and, with fake srun / mpirun / scontrol / shc first on
# PATH, exit codes passed through, requeue on exit 75, the relaunch limit and signal forwarding.
# The SLURM variables sbatch would set are derived from each template's #SBATCH lines.
# Usage: slurm_test.sh SOURCE_DIR
set -euo pipefail
src=$(cd "$1" && pwd)
slurm=$src/slurm
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

check() {  # name expected actual
  if [ "$2" == "$3" ]; then
    echo "ok   $1"
  else
    printf 'FAIL %s\n  expected: %s\n  actual:   %s\n' "$1" "$2" "$3"
    failures=$((failures + 1))
  fi
}

for script in "$slurm"/launch.sh "$slurm"/*.sbatch; do
  rc=0
  bash -n "$script" || rc=$?
  check "bash -n $(basename "$script")" 0 "$rc"
done
for template in "$slurm"/*.sbatch; do
  for directive in --signal=B:USR1@120 --requeue --open-mode=append; do
    check "$(basename "$template") has #SBATCH $directive" 1 \
      "$(grep -cx -- "#SBATCH $directive" "$template" || true)"
  done
done

# --- fakes -------------------------------------------------------------------------------------
export FAKE_DIR=$tmp/fake
mkdir -p "$tmp/bin" "$FAKE_DIR"
# srun and mpirun: record the command line, run the one "task", forward USR1/TERM to it (noting
# what arrived), return its exit code.
cat >"$tmp/bin/srun" <<'EOF'
#!/usr/bin/env bash
name=$(basename "$0")
printf '%s\n' "$name" "$@" >"$FAKE_DIR/launcher.argv"
while [[ $1 == -* ]]; do
  case $1 in -np | --host | --bind-to) shift 2 ;; *) shift ;; esac
done
trap 'echo "$name USR1" >>"$FAKE_DIR/signals"; kill -USR1 $task' USR1
trap 'echo "$name TERM" >>"$FAKE_DIR/signals"; kill -TERM $task' TERM
"$@" &
task=$!
while kill -0 "$task" 2>/dev/null; do wait "$task"; done
wait "$task"
EOF
cp "$tmp/bin/srun" "$tmp/bin/mpirun"
cat >"$tmp/bin/scontrol" <<'EOF'
#!/usr/bin/env bash
case $1 in
  show) [ "$3" = "node[01-02]" ] && printf 'node01\nnode02\n' || echo "$3" ;;
  requeue) echo "requeue $2" >>"$FAKE_DIR/scontrol.log" ;;
  *) exit 1 ;;
esac
EOF
# shc: exits with FAKE_SHC, or with FAKE_SHC=wait waits for USR1 or TERM, "saves a checkpoint"
# for FAKE_SAVE_S seconds and exits 75.
cat >"$tmp/shc" <<'EOF'
#!/usr/bin/env bash
echo run >>"$FAKE_DIR/shc.runs"
[ "$FAKE_SHC" = wait ] || exit "$FAKE_SHC"
trap 'echo "shc USR1" >>"$FAKE_DIR/signals"; sleep "${FAKE_SAVE_S:-0}"; exit 75' USR1
trap 'echo "shc TERM" >>"$FAKE_DIR/signals"; sleep "${FAKE_SAVE_S:-0}"; exit 75' TERM
touch "$FAKE_DIR/ready"
while :; do sleep 0.05; done
EOF
chmod +x "$tmp/bin"/* "$tmp/shc"
export PATH=$tmp/bin:$PATH

# What sbatch would set for a template: nodes, tasks, GPUs and CPUs from its #SBATCH lines.
directive() { sed -n "s/^#SBATCH --$2=//p" "$1"; }
job_env() {  # template: one VAR=value a line
  local nodes per_node
  nodes=$(directive "$1" nodes)
  per_node=$(directive "$1" ntasks-per-node)
  printf '%s\n' SLURM_JOB_ID=4242 "SLURM_SUBMIT_DIR=$src" "SLURM_NNODES=$nodes" \
    "SLURM_NTASKS=$((nodes * per_node))" "SLURM_NTASKS_PER_NODE=$per_node" \
    "SLURM_GPUS_ON_NODE=$(directive "$1" gpus-per-node)" \
    "SLURM_CPUS_PER_TASK=$(directive "$1" cpus-per-task)" \
    "SLURM_JOB_NODELIST=$([ "$nodes" = 1 ] && echo node01 || echo "node[01-02]")"
}
single=$slurm/train_single_node.sbatch
multi=$slurm/train_multi_node.sbatch
mapfile -t multi_env < <(job_env "$multi")
check "single-node template: 1 node, 4 tasks, 4 GPUs" "1 4 4" \
  "$(directive "$single" nodes) $(directive "$single" ntasks-per-node) $(directive "$single" gpus-per-node)"
check "multi-node template: 2 nodes, 4 tasks, 4 GPUs per node" "2 4 4" \
  "$(directive "$multi" nodes) $(directive "$multi" ntasks-per-node) $(directive "$multi" gpus-per-node)"

# --- dry runs ----------------------------------------------------------------------------------
dry() {  # template launcher [VAR=value...] -- shc args
  local template=$1 launcher=$2 job extra=()
  shift 2
  while [ "$1" != -- ]; do extra+=("$1"); shift; done
  shift
  mapfile -t job < <(job_env "$template")
  env "${job[@]}" SHC_LAUNCHER="$launcher" SHC_DRY_RUN=1 "${extra[@]}" bash "$template" "$@" 2>&1
}
q=$(printf %q "$src")
train="train --config $q/configs/demo_tiny.ini --run.dir $q/runs/slurm-4242"
args=(--data.train 'my data/train-*.h5' --train.max_steps 100)
quoted_args='--data.train my\ data/train-\*.h5 --train.max_steps 100'
gpu_train="$q/build-cuda/bin/shc $train $quoted_args"
check "dry run: single node, srun-pmix" \
  "launch: srun --mpi=pmix --kill-on-bad-exit=0 --cpus-per-task=8 $gpu_train" \
  "$(dry "$single" srun-pmix -- "${args[@]}")"
check "dry run: single node, srun-pmi2" \
  "launch: srun --mpi=pmi2 --kill-on-bad-exit=0 --cpus-per-task=8 $gpu_train" \
  "$(dry "$single" srun-pmi2 -- "${args[@]}")"
check "dry run: single node, mpirun" \
  "launch: mpirun -np 4 --host node01:4 --bind-to none $gpu_train" \
  "$(dry "$single" mpirun -- "${args[@]}")"
check "dry run: multi node, srun-pmix" \
  "launch: srun --mpi=pmix --kill-on-bad-exit=0 --cpus-per-task=8 $gpu_train" \
  "$(dry "$multi" srun-pmix -- "${args[@]}")"
check "dry run: multi node, srun-pmi2" \
  "launch: srun --mpi=pmi2 --kill-on-bad-exit=0 --cpus-per-task=8 $gpu_train" \
  "$(dry "$multi" srun-pmi2 -- "${args[@]}")"
check "dry run: multi node, mpirun" \
  "launch: mpirun -np 8 --host node01:4,node02:4 --bind-to none $gpu_train" \
  "$(dry "$multi" mpirun -- "${args[@]}")"
check "dry run: srun-pmix is the default launcher" \
  "$(dry "$multi" srun-pmix --)" "$(dry "$multi" "" --)"
check "dry run: no GPUs -> CPU build, no --cpus-per-task without SLURM_CPUS_PER_TASK" \
  "launch: srun --mpi=pmix --kill-on-bad-exit=0 $q/build/bin/shc $train" \
  "$(dry "$multi" srun-pmix SLURM_GPUS_ON_NODE= SLURM_CPUS_PER_TASK= --)"
check "dry run: SHC_BIN, SHC_CONFIG, SHC_RUN_DIR" \
  "launch: srun --mpi=pmix --kill-on-bad-exit=0 --cpus-per-task=8 /opt/shc train --config a.ini --run.dir /scratch/r" \
  "$(dry "$multi" srun-pmix SHC_BIN=/opt/shc SHC_CONFIG=a.ini SHC_RUN_DIR=/scratch/r --)"

rc=0
out=$(dry "$multi" srun-pmix SLURM_GPUS_ON_NODE=8 --) || rc=$?
check "GPUs per node != tasks per node: exit 2" 2 "$rc"
check "GPUs per node != tasks per node: message" \
  "launch.sh: 4 tasks per node but 8 GPUs per node; shc runs one rank per GPU: set --ntasks-per-node to the GPUs per node" \
  "$out"
rc=0
dry "$multi" srun-pmix3 -- >/dev/null || rc=$?
check "unknown SHC_LAUNCHER: exit 2" 2 "$rc"

# --- runs with the fakes -----------------------------------------------------------------------
start_job() {  # launcher fake-shc max-restarts: runs the multi-node template in the background
  rm -rf "$FAKE_DIR" && mkdir -p "$FAKE_DIR"
  env "${multi_env[@]}" SHC_LAUNCHER="$1" FAKE_SHC="$2" SHC_MAX_RESTARTS="$3" SHC_BIN="$tmp/shc" \
    SHC_RUN_DIR="$tmp/run" bash "$multi" "${args[@]}" 2>"$FAKE_DIR/stderr" &
  job_pid=$!
}
finish_job() {  # -> job_rc, runs (shc starts), requeues (scontrol lines), signals
  job_rc=0
  wait "$job_pid" || job_rc=$?
  runs=$(wc -l <"$FAKE_DIR/shc.runs")
  requeues=$(cat "$FAKE_DIR/scontrol.log" 2>/dev/null || true)
  signals=$(paste -sd, "$FAKE_DIR/signals" 2>/dev/null || true)
}
wait_ready() {
  for _ in $(seq 200); do
    [ -e "$FAKE_DIR/ready" ] && return
    sleep 0.025
  done
  echo "FAIL the fake shc never started" && exit 1
}

for launcher in srun-pmix srun-pmi2 mpirun; do
  for code in 0 3 4 5; do
    start_job "$launcher" "$code" 2
    finish_job
    check "$launcher: shc exit $code -> job exit $code, one run, no requeue" "$code 1 " \
      "$job_rc $runs $requeues"
  done
  start_job "$launcher" 75 0
  finish_job
  check "$launcher: shc exit 75, SHC_MAX_RESTARTS=0 -> exit 75, requeue" "75 1 requeue 4242" \
    "$job_rc $runs $requeues"
  dry_line=$(env "${multi_env[@]}" SHC_LAUNCHER="$launcher" SHC_DRY_RUN=1 SHC_BIN="$tmp/shc" \
    SHC_RUN_DIR="$tmp/run" bash "$multi" "${args[@]}")
  dry_words=()
  eval "dry_words=(${dry_line#launch: })"
  check "$launcher: the dry-run line, read by a shell, is the launched command" \
    "$(printf '%s\n' "${dry_words[@]}")" "$(cat "$FAKE_DIR/launcher.argv")"
  start_job "$launcher" 75 2
  finish_job
  check "$launcher: shc exit 75 every time, SHC_MAX_RESTARTS=2 -> 3 runs, then requeue" \
    "75 3 requeue 4242" "$job_rc $runs $requeues"

  # sbatch --signal=B:USR1@120: USR1 reaches the batch shell only.
  start_job "$launcher" wait 2
  wait_ready
  kill -USR1 "$job_pid"
  finish_job
  check "$launcher: USR1 to the batch shell -> launcher gets USR1 -> exit 75, requeue, no relaunch" \
    "75 1 requeue 4242 ${launcher%%-*} USR1,shc USR1" "$job_rc $runs $requeues $signals"

  # scancel / preemption / the time limit: TERM to the batch shell.
  start_job "$launcher" wait 2
  wait_ready
  kill -TERM "$job_pid"
  finish_job
  check "$launcher: TERM to the batch shell -> launcher gets USR1 -> exit 75, no requeue" \
    "75 1  ${launcher%%-*} USR1,shc USR1" "$job_rc $runs $requeues $signals"

  # The time limit arrives while the checkpoint of the USR1 warning is being written.
  FAKE_SAVE_S=0.3 start_job "$launcher" wait 2
  wait_ready
  kill -USR1 "$job_pid"
  sleep 0.1
  kill -TERM "$job_pid"
  finish_job
  check "$launcher: USR1, then TERM during the save -> exit 75, requeue" \
    "75 1 requeue 4242 ${launcher%%-*} USR1,shc USR1,${launcher%%-*} USR1" \
    "$job_rc $runs $requeues ${signals%,shc USR1}"
done

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
