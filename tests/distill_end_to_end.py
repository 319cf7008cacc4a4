"""`shc distill` end to end on the GPL-3 text: a short-trained tiny SHC teacher is distilled into
an SSM student; the student's KL to the teacher falls over a short run; `mpirun -np 2` gives the
same per-step losses as one process (1e-5), with DDP and with the student sharded (FSDP); a stopped and resumed distillation equals an
uninterrupted one exactly; the student's checkpoint records its family, exports, and is read by
inspect, generate and evaluate.

usage: distill_end_to_end.py SHC WORKDIR"""
import json
import os
import shutil
import subprocess
import sys

from e2e_common import MPI_ENV, prepare_gpl3

shc, work = sys.argv[1], os.path.join(sys.argv[2], "distill_end_to_end")
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
data = os.path.join(work, "data")
prepare_gpl3(shc, data)
common = ["--train.seq_len", "32", "--train.threads", "1", "--train.global_batch", "8",
          "--train.micro_batch", "2", "--train.warmup_steps", "2", "--train.lr", "3e-3",
          "--data.train", os.path.join(data, "train-*.h5"),
          "--data.val", os.path.join(data, "val-*.h5"), "--train.eval_batches", "2"]
teacher = os.path.join(work, "teacher")
subprocess.run([shc, "train", "--run.dir", teacher, "--model.preset", "tiny", "--model.n_layers",
                "2", "--train.max_steps", "30"] + common, check=True, capture_output=True)


def distill(run, *extra, np=1):
    command = ([] if np == 1 else ["mpirun", "-np", str(np), "--bind-to", "none"]) + [
        shc, "distill", "--run.dir", run, "--distill.teacher", teacher] + common + list(extra)
    result = subprocess.run(command, capture_output=True, text=True, env=MPI_ENV, timeout=300)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def records(run):
    return [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]


# The KL to the teacher falls: validation before the first step and after 40 steps.
long = os.path.join(work, "long")
distill(long, "--train.max_steps", "40", "--train.eval_every", "40")
val = [r for r in records(long) if "val_kl" in r]
assert [r["step"] for r in val] == [0, 40], val
assert val[-1]["val_kl"] < 0.5 * val[0]["val_kl"], val
steps = [r for r in records(long) if "kl" in r]
assert len(steps) == 40 and all("ce" in r for r in steps), steps[:2]

# Two ranks equal one; a stop and a rerun equal an uninterrupted run.
short = ["--train.max_steps", "6", "--train.eval_every", "0"]
one, two, fsdp = (os.path.join(work, name) for name in ("one", "two", "fsdp"))
distill(one, *short)
distill(two, *short, np=2)
distill(fsdp, *short, "--parallel.strategy", "fsdp", np=2)  # the student sharded, unit by unit
l1 = [r["loss"] for r in records(one) if "loss" in r]
for other in (two, fsdp):
    l2 = [r["loss"] for r in records(other) if "loss" in r]
    assert len(l1) == len(l2) == 6, (l1, l2)
    for a, b in zip(l1, l2):
        assert abs(a - b) <= 1e-5 * abs(a), (other, l1, l2)
split = os.path.join(work, "split")
distill(split, *short, "--train.stop_after_steps", "3")
resumed = distill(split, *short)
assert "resuming from" in resumed.stderr and "at step 3" in resumed.stderr, resumed.stderr[-2000:]
strip = lambda rs: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rs]
assert strip(records(split)) == strip(records(one)), (records(split), records(one))

# The hidden-state term: a learned projection trained with the student (2 ranks sharded equal 1),
# reported as hidden_mse; generation from that checkpoint ignores the projection.
hidden_one, hidden_fsdp = os.path.join(work, "hidden_one"), os.path.join(work, "hidden_fsdp")
with_hidden = short + ["--distill.alpha_hidden", "0.1"]
distill(hidden_one, *with_hidden)
distill(hidden_fsdp, *with_hidden, "--parallel.strategy", "fsdp", np=2)
h1 = [r for r in records(hidden_one) if "loss" in r]
h2 = [r for r in records(hidden_fsdp) if "loss" in r]
assert all(r["hidden_mse"] > 0 for r in h1), h1
for a, b in zip(h1, h2):
    assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(a["loss"]), (h1, h2)
assert h1[-1]["hidden_mse"] < h1[0]["hidden_mse"], h1
hidden_manifest = json.load(open(os.path.join(hidden_one, "checkpoints", "step_6",
                                              "manifest.json")))["manifest"]
assert "model/hidden_projection.weight" in hidden_manifest["tensors"]
subprocess.run([shc, "generate", "--checkpoint", hidden_one, "--prompt", "GNU", "--temperature",
                "0", "--max_new_tokens", "4"], check=True, capture_output=True)

# The student's checkpoint is an ssm_student; it inspects and exports.
manifest = json.load(open(os.path.join(one, "checkpoints", "step_6", "manifest.json")))
assert manifest["manifest"]["run"]["model"]["family"] == "ssm_student", manifest
inspect = subprocess.run([shc, "inspect", one], capture_output=True, text=True, check=True)
assert "model ssm_student" in inspect.stdout and "checksums verified" in inspect.stdout
out = os.path.join(work, "student.safetensors")
subprocess.run([shc, "export", "--checkpoint", one, "--out", out], check=True,
               capture_output=True)
assert json.load(open(os.path.join(work, "student.json")))["model_family"] == "ssm_student"
# generate and evaluate load it by its family, from the checkpoint and from the export.
for path in (long, out):
    text = subprocess.run([shc, "generate", "--checkpoint", path, "--prompt", "The GNU",
                           "--temperature", "0", "--max_new_tokens", "16"],
                          capture_output=True, text=True, check=True)
    assert "mamba" in text.stderr and "tokens/s" in text.stderr, text.stderr[-2000:]


def validation_loss(path):
    result = subprocess.run([shc, "evaluate", "--checkpoint", path, "--data.val",
                             os.path.join(data, "val-*.h5"), "--eval.seq_len", "32"],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


student = validation_loss(long)
teacher_loss = validation_loss(teacher)["validation"]["loss"]
assert student["model_family"] == "ssm_student", student
# Uniform over 257 bytes would be ln 257 = 5.55: the student has learnt most of the teacher's fit.
assert student["validation"]["loss"] < teacher_loss + 0.5, (student, teacher_loss)
print(f"distill: val KL {val[0]['val_kl']:.3f} -> {val[-1]['val_kl']:.3f} in 40 steps; "
      f"2 ranks (ddp, fsdp) = 1; resume exact; validation loss student "
      f"{student['validation']['loss']:.3f} vs teacher {teacher_loss:.3f}")
