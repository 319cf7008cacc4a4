"""`shc prepare` + `shc train` end to end on a real English text (the GPL-3 licence every Debian
system ships): the validation loss must fall, metrics.jsonl must hold one record per optimizer step
with the documented fields, and a diverging run (absurd learning rate) must stop with exit 4."""
import json
import os
import shutil
import subprocess
import sys

shc, work = sys.argv[1], sys.argv[2]
text = "/usr/share/common-licenses/GPL-3"
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
data = os.path.join(work, "data")
subprocess.run([shc, "prepare", "--input", text, "--output", data, "--tokenizer", "byte",
                "--shard_tokens", "20000", "--val_fraction", "0.1"], check=True)

# One thread per process: CTest runs two tests at once on two cores.
common = ["--model.preset", "tiny", "--model.n_layers", "2", "--train.seq_len", "64",
          "--train.threads", "1",
          "--train.global_batch", "8", "--train.micro_batch", "4",
          "--data.train", os.path.join(data, "train-*.h5"),
          "--data.val", os.path.join(data, "val-*.h5"), "--train.eval_batches", "4"]
run = os.path.join(work, "run")
subprocess.run([shc, "train", "--run.dir", run, "--train.max_steps", "40",
                "--train.warmup_steps", "5", "--train.lr", "3e-3", "--train.eval_every", "20"]
               + common, check=True)
records = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
steps = [r for r in records if "loss" in r]
vals = [r for r in records if "val_loss" in r]
assert [r["step"] for r in steps] == list(range(1, 41)), steps
for r in steps:
    for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
        assert isinstance(r[key], float) or isinstance(r[key], int), (key, r)
assert [v["step"] for v in vals] == [0, 20, 40], vals
first, last = vals[0]["val_loss"], vals[-1]["val_loss"]
print(f"val_loss {first:.3f} -> {last:.3f}")
assert last < first - 1.0, "validation loss did not fall clearly"
assert os.path.exists(os.path.join(run, "logs", "rank0.log"))

# Two ranks (mpirun, DDP) on the same global batches: the logged losses equal the 1-process run.
mpi_env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
short = ["--train.max_steps", "6", "--train.warmup_steps", "2", "--train.lr", "3e-3",
         "--train.eval_every", "0"]
one = os.path.join(work, "one")
two = os.path.join(work, "two")
subprocess.run([shc, "train", "--run.dir", one] + short + common, check=True)
subprocess.run(["mpirun", "-np", "2", "--bind-to", "none", shc, "train", "--run.dir", two]
               + short + common, check=True, env=mpi_env)
def losses(run_dir):
    return [json.loads(l)["loss"] for l in open(os.path.join(run_dir, "metrics.jsonl"))
            if '"loss"' in l]
l1, l2 = losses(one), losses(two)
assert len(l1) == len(l2) == 6, (l1, l2)
for a, b in zip(l1, l2):
    assert abs(a - b) <= 1e-5 * abs(a), (l1, l2)
assert os.path.exists(os.path.join(two, "logs", "rank1.log"))
print("mpirun -np 2 losses equal the 1-process losses:", l2)
# Adaptive rank draws Gumbel noise keyed by global sequence index: two ranks with two
# micro-batches of 2 rows each still equal one process with two micro-batches of 4.
adaptive = common + ["--model.residual", "shc", "--model.adaptive_rank", "true"]
micro_of_two = adaptive[:]
micro_of_two[micro_of_two.index("--train.micro_batch") + 1] = "2"
one_ar = os.path.join(work, "one_adaptive")
two_ar = os.path.join(work, "two_adaptive")
subprocess.run([shc, "train", "--run.dir", one_ar] + short + adaptive, check=True)
subprocess.run(["mpirun", "-np", "2", "--bind-to", "none", shc, "train", "--run.dir", two_ar]
               + short + micro_of_two, check=True, env=mpi_env)
l1_ar, l2_ar = losses(one_ar), losses(two_ar)
assert len(l1_ar) == len(l2_ar) == 6, (l1_ar, l2_ar)
for a, b in zip(l1_ar, l2_ar):
    assert abs(a - b) <= 1e-5 * abs(a), (l1_ar, l2_ar)
print("adaptive rank: mpirun -np 2 losses equal the 1-process losses:", l2_ar)
# The same with the parameters, gradients and optimizer state sharded over the two ranks.
fsdp = os.path.join(work, "fsdp")
subprocess.run(["mpirun", "-np", "2", "--bind-to", "none", shc, "train", "--run.dir", fsdp,
                "--parallel.strategy", "fsdp"] + short + common, check=True, env=mpi_env)
l3 = losses(fsdp)
for a, b in zip(l1, l3):
    assert abs(a - b) <= 1e-5 * abs(a), (l1, l3)
print("mpirun -np 2 fsdp losses equal the 1-process losses:", l3)
# Adaptive rank under sharding: the backward recomputation replays the keyed noise (it used to
# deadlock on the generator's lock); fsdp and hybrid (one rank per shard group, two replicas)
# equal one process.
for strategy in (["--parallel.strategy", "fsdp"],
                 ["--parallel.strategy", "hybrid", "--parallel.shard_group_size", "1"]):
    sharded_ar = os.path.join(work, strategy[1] + "_adaptive")
    subprocess.run(["mpirun", "-np", "2", "--bind-to", "none", shc, "train", "--run.dir",
                    sharded_ar] + strategy + short + micro_of_two, check=True, env=mpi_env,
                   timeout=300)
    l4 = losses(sharded_ar)
    for a, b in zip(l1_ar, l4):
        assert abs(a - b) <= 1e-5 * abs(a), (strategy, l1_ar, l4)
    print(f"adaptive rank: mpirun -np 2 {strategy[1]} losses equal the 1-process losses:", l4)

diverge = subprocess.run([shc, "train", "--run.dir", os.path.join(work, "diverge"),
                          "--train.max_steps", "20", "--train.warmup_steps", "0",
                          "--train.lr", "1e30", "--train.grad_clip", "0",
                          "--train.max_bad_steps", "2"] + common,
                         capture_output=True, text=True)
assert diverge.returncode == 4, (diverge.returncode, diverge.stderr[-2000:])
assert "training diverged: 2 consecutive steps" in diverge.stderr, diverge.stderr[-2000:]
print("train end-to-end OK")
