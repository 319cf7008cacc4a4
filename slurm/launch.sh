#!/usr/bin/env bash
# Runs `shc train` inside a SLURM job; the sbatch templates beside it (train_single_node.sbatch,
# train_multi_node.sbatch) exec it, so this script is the job's batch shell. It builds the launch
# line for the chosen launcher, forwards the batch shell's signals to the launcher, and requeues
# the job when shc exits 75 (checkpointed after a signal), so the requeued job resumes.
#
# Settings (environment variables, all optional):
#   SHC_LAUNCHER      srun-pmix (default), srun-pmi2 or mpirun
#   SHC_BIN           default build-cuda/bin/shc when the job has GPUs, else build/bin/shc
#   SHC_CONFIG        default configs/demo_tiny.ini
#   SHC_RUN_DIR       default runs/slurm-<job id>: a requeued job keeps its id and resumes there
#   SHC_MAX_RESTARTS  relaunches inside this allocation after an exit 75 that no signal to the
#                     batch shell explains (default 2); see "Exit 75" below
#   SHC_DRY_RUN=1     print the launch line ("launch: ...") and exit 0 without running anything
# Arguments are passed on to `shc train` (`--section.key value` overrides).
#
# Exit 75, by what the batch shell received (sbatch --signal=B:USR1@120 sends it USR1):
#   USR1 (the time-limit warning): requeue; this allocation has no time left.
#   TERM only (scancel, preemption, the time limit itself): exit 75 without requeue; SLURM is
#     ending the job on purpose (with PreemptMode=REQUEUE it requeues it itself).
#   nothing (e.g. `scancel --signal=USR1 JOB`, which reaches the steps only): relaunch here, at
#     most SHC_MAX_RESTARTS times, then requeue.
# Any other exit code is the job's exit code.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
job=${SLURM_JOB_ID:?"launch.sh runs inside a SLURM job (sbatch); for a dry run elsewhere, set the SLURM_* variables"}
ntasks=${SLURM_NTASKS:?"no SLURM_NTASKS: request --ntasks-per-node in the sbatch script"}
per_node=${SLURM_NTASKS_PER_NODE:-$((ntasks / ${SLURM_NNODES:?}))}
gpus=${SLURM_GPUS_ON_NODE:-0}

# One rank per GPU. Every rank sees all GPUs of its node and shc takes cuda:(local rank), so no
# per-task GPU binding: restricting each task to its own GPU has been reported to break NCCL's
# and OpenMPI's intra-node GPU paths (NVIDIA/nccl#1066, open-mpi/ompi#11949).
if [ "$gpus" -gt 0 ] && [ "$gpus" -ne "$per_node" ]; then
  echo "launch.sh: $per_node tasks per node but $gpus GPUs per node; shc runs one rank per GPU:" \
    "set --ntasks-per-node to the GPUs per node" >&2
  exit 2
fi
if [ "$gpus" -gt 0 ]; then default_bin=$root/build-cuda/bin/shc; else default_bin=$root/build/bin/shc; fi
run_dir=${SHC_RUN_DIR:-$root/runs/slurm-$job}
shc=("${SHC_BIN:-$default_bin}" train --config "${SHC_CONFIG:-$root/configs/demo_tiny.ini}"
  --run.dir "$run_dir" "$@")

launcher_name=${SHC_LAUNCHER:-srun-pmix}
case "$launcher_name" in
  srun-pmix | srun-pmi2)
    # Exit 75 is a planned non-zero exit of every rank: a cluster's KillOnBadExit=1 must not cut
    # the last ranks short. A failing rank still ends the step, through MPI_Abort.
    launcher=(srun "--mpi=${launcher_name#srun-}" --kill-on-bad-exit=0)
    # SLURM 22.05 and 23.02 do not hand the job's --cpus-per-task on to srun (23.11 does again).
    [ -z "${SLURM_CPUS_PER_TASK:-}" ] || launcher+=("--cpus-per-task=$SLURM_CPUS_PER_TASK")
    ;;
  mpirun)
    hosts=$(scontrol show hostnames "${SLURM_JOB_NODELIST:?}" | sed "s/\$/:$per_node/" | paste -sd, -)
    # By default OpenMPI binds each rank to one core (2 ranks or fewer) or one socket; shc's
    # intra-op threads should use all CPUs of the rank's share of the node.
    launcher=(mpirun -np "$ntasks" --host "$hosts" --bind-to none)
    ;;
  *)
    echo "launch.sh: SHC_LAUNCHER=$launcher_name; expected srun-pmix, srun-pmi2 or mpirun" >&2
    exit 2
    ;;
esac
line=("${launcher[@]}" "${shc[@]}")

if [ "${SHC_DRY_RUN:-0}" = 1 ]; then
  # One line a shell can run as is; words are quoted only where needed (%q escapes even commas).
  printf 'launch:'
  for word in "${line[@]}"; do
    if [[ $word =~ ^[][A-Za-z0-9_./:=,@%+-]+$ ]]; then printf ' %s' "$word"; else printf ' %q' "$word"; fi
  done
  printf '\n'
  exit 0
fi

got_usr1=0
got_term=0
signals=0
launcher_pid=
# shc checkpoints and exits 75 on USR1 and on TERM alike, so the launcher always gets USR1: srun
# forwards USR1 to its tasks but answers TERM by sending them SIGKILL (src/srun/signals.c), and
# OpenMPI's mpirun forwards USR1 to every rank but answers TERM with TERM and, about a second
# later, KILL (mpirun(1); measured with OpenMPI 4.1.4), too soon for a checkpoint.
on_signal() {
  if [ "$1" = USR1 ]; then got_usr1=1; else got_term=1; fi
  signals=$((signals + 1))
  [ -z "$launcher_pid" ] || kill -USR1 "$launcher_pid" 2>/dev/null || true
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM

echo "launch.sh: job $job, restart count ${SLURM_RESTART_COUNT:-0}, run directory $run_dir" >&2
restarts=0
max_restarts=${SHC_MAX_RESTARTS:-2}
while :; do
  # The launcher runs in the background: bash runs a trap only between commands, but a trapped
  # signal does end `wait` (status > 128) while the launcher still runs; then wait again.
  "${line[@]}" &
  launcher_pid=$!
  while :; do
    seen=$signals
    rc=0
    wait "$launcher_pid" || rc=$?
    if [ "$rc" -le 128 ] || [ "$signals" = "$seen" ]; then break; fi
  done
  launcher_pid=
  [ "$rc" -eq 75 ] || exit "$rc"
  [ "$got_usr1" = 0 ] || break
  if [ "$got_term" = 1 ]; then
    echo "launch.sh: shc saved a checkpoint after SIGTERM; not requeued (SLURM is ending the job)." \
      "Submitting the same job again resumes from $run_dir/latest" >&2
    exit 75
  fi
  [ "$restarts" -lt "$max_restarts" ] || break
  restarts=$((restarts + 1))
  echo "launch.sh: shc exited 75 without a signal to the batch shell; relaunching in this" \
    "allocation ($restarts of $max_restarts)" >&2
done
echo "launch.sh: shc saved a checkpoint (exit 75); requeueing job $job to resume from" \
  "$run_dir/latest" >&2
scontrol requeue "$job" || echo "launch.sh: scontrol requeue $job failed; submitting the same" \
  "job again resumes from $run_dir/latest" >&2
exit 75
