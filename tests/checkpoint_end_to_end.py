"""`shc train` checkpoints end to end (SPEC §7, issue 8): exact resume, resharding, crash during
a write, corruption, retention, async saves, preemption, reruns, export. One scenario per call:

    checkpoint_end_to_end.py SHC WORKDIR SCENARIO

so CTest runs the scenarios as separate tests. Every run uses a tiny model on the GPL-3 text (a
real English text every Debian system ships), one thread per process."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from e2e_common import MPI_ENV, prepare_gpl3

shc, work, scenario = sys.argv[1], sys.argv[2], sys.argv[3]
work = os.path.join(work, scenario)
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
data = os.path.join(work, "data")
prepare_gpl3(shc, data)
COMMON = ["--model.preset", "tiny", "--model.n_layers", "2", "--train.seq_len", "32",
          "--train.threads", "1", "--train.global_batch", "8", "--train.micro_batch", "2",
          "--train.warmup_steps", "2", "--train.lr", "3e-3",
          "--train.log_every", "1",
          "--data.train", os.path.join(data, "train-*.h5"),
          "--data.val", os.path.join(data, "val-*.h5"), "--train.eval_batches", "2"]


def train(run, *args, np=1, check=True, env=None, preexec_fn=None):
    """Runs shc train (under mpirun when np > 1); returns the CompletedProcess."""
    launcher = [] if np == 1 else ["mpirun", "-np", str(np), "--bind-to", "none",
                                   "--oversubscribe"]
    command = launcher + [shc, "train", "--run.dir", run] + COMMON + list(args)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env=dict(MPI_ENV, **(env or {})), preexec_fn=preexec_fn)
    if check and result.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


def records(run):
    return [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]


def losses(run):
    steps = [r for r in records(run) if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, len(steps) + 1)), \
        f"{run}: steps not 1..N exactly once: {[r['step'] for r in steps]}"
    return [r["loss"] for r in steps]


def manifest(checkpoint):
    return json.load(open(os.path.join(checkpoint, "manifest.json")))["manifest"]


def latest(run):
    return open(os.path.join(run, "latest")).read().strip()


def step_dirs(run):
    return sorted(d for d in os.listdir(os.path.join(run, "checkpoints")) if d.startswith("step_"))


def last_step(metrics):
    """The step of the last complete record of a metrics.jsonl being written, -1 if none yet."""
    try:
        lines = open(metrics).read().split("\n")[:-1]  # complete lines only
        return json.loads(lines[-1])["step"] if lines else -1
    except FileNotFoundError:
        return -1


def flip_byte(path):
    """Inverts one byte in the middle of a file (inside the tensor data of a shard)."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def comparable(run):
    """Every record of metrics.jsonl but the wall-clock throughput."""
    losses(run)  # every step exactly once
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records(run)]


def interrupted_equals_uninterrupted(np, *args):
    """Train 6 steps in one go, and 3 + 3 with a stop and a rerun of the same command: the same
    losses, bit for bit (CPU, same world size and strategy)."""
    name = "_".join([str(np)] + [a.strip("-").replace("parallel.", "") for a in args])
    whole, split = os.path.join(work, name + "_whole"), os.path.join(work, name + "_split")
    train(whole, "--train.max_steps", "6", *args, np=np)
    first = train(split, "--train.max_steps", "6", "--train.stop_after_steps", "3", *args, np=np)
    assert "train.stop_after_steps reached: saved step 3" in first.stderr, first.stderr[-3000:]
    assert latest(split) == "checkpoints/step_3", latest(split)
    second = train(split, "--train.max_steps", "6", *args, np=np)
    assert re.search(r"resuming from \S+step_3 at step 3", second.stderr), second.stderr[-3000:]
    a, b = comparable(whole), comparable(split)
    assert a == b, f"{name}: resumed records differ\n{a}\n{b}"
    print(f"{name}: 3 + 3 steps equal 6 steps exactly: {losses(split)}")


if scenario == "exact_resume":
    for precision in ("fp32", "bf16"):
        p = ["--train.precision", precision]
        interrupted_equals_uninterrupted(1, *p)
        interrupted_equals_uninterrupted(2, *p)
        interrupted_equals_uninterrupted(2, "--parallel.strategy", "fsdp", *p)
        interrupted_equals_uninterrupted(4, "--parallel.strategy", "hybrid",
                                         "--parallel.shard_group_size", "2", *p)
    # With validation (every 2 steps, so also at the resumed step's neighbours) and async saves.
    interrupted_equals_uninterrupted(2, "--train.eval_every", "2", "--checkpoint.async", "true")

elif scenario == "reshard":
    # The reference: one process, 6 steps. Resharded continuations change the reduction order
    # only, so their losses stay within 1e-5 (relative) of it, and no sequence is repeated or
    # skipped: the loader position is 8 sequences per step throughout.
    reference = os.path.join(work, "reference")
    train(reference, "--train.max_steps", "6")
    expected = losses(reference)
    for name, before, after in [
            ("2_to_1", (2, []), (1, [])),
            ("1_to_2", (1, []), (2, [])),
            ("ddp_to_fsdp", (2, []), (2, ["--parallel.strategy", "fsdp"])),
            ("fsdp_to_hybrid", (2, ["--parallel.strategy", "fsdp"]),
             (4, ["--parallel.strategy", "hybrid", "--parallel.shard_group_size", "2"]))]:
        run = os.path.join(work, name)
        train(run, "--train.max_steps", "6", "--train.stop_after_steps", "3", *before[1],
              np=before[0])
        assert manifest(os.path.join(run, "checkpoints", "step_3"))["run"]["data"][
            "consumed_sequences"] == 24
        train(run, "--train.max_steps", "6", "--checkpoint.every", "1", "--checkpoint.keep_last",
              "10", *after[1], np=after[0])
        for step in range(3, 7):  # 8 sequences per step before and after the resume
            assert manifest(os.path.join(run, "checkpoints", f"step_{step}"))["run"]["data"][
                "consumed_sequences"] == 8 * step, (name, step)
        got = losses(run)
        for a, b in zip(expected, got):
            assert abs(a - b) <= 1e-5 * abs(a), f"{name}: {got} vs {expected}"
        print(f"{name}: resumed within 1e-5 of one process: {got}")

elif scenario == "crash_during_write":
    # SIGKILL after 5 tensors of the step-4 save: latest still names step 3, which loads.
    run = os.path.join(work, "run")
    train(run, "--train.max_steps", "8", "--train.stop_after_steps", "3")
    killed = train(run, "--train.max_steps", "8", "--checkpoint.every", "1", check=False,
                   env={"SHC_FAULT_KILL_AFTER_TENSORS": "5"})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    assert latest(run) == "checkpoints/step_3", latest(run)
    assert step_dirs(run) == ["step_3"], step_dirs(run)
    inspect = subprocess.run([shc, "inspect", run], capture_output=True, text=True)
    assert inspect.returncode == 0 and "checksums verified" in inspect.stdout, inspect
    # Two ranks, one killed mid-write: the job ends, latest is still complete.
    killed2 = train(run, "--train.max_steps", "8", "--checkpoint.every", "1", np=2, check=False,
                    env={"SHC_FAULT_KILL_AFTER_TENSORS": "7"})
    assert killed2.returncode != 0
    assert latest(run) == "checkpoints/step_3", latest(run)
    # What a kill during the update of `latest` would leave: removed by the next save.
    open(os.path.join(run, "latest.tmp.12345"), "w").write("checkpoints/step_")
    resumed = train(run, "--train.max_steps", "8")
    assert "resuming from" in resumed.stderr and "at step 3" in resumed.stderr
    assert not os.path.exists(os.path.join(run, "latest.tmp.12345"))
    assert not any(d.startswith(".tmp-") for d in os.listdir(os.path.join(run, "checkpoints")))
    assert len(losses(run)) == 8
    print("a kill during a checkpoint write leaves latest complete; the rerun resumes from it")

elif scenario == "corruption":
    run = os.path.join(work, "run")
    train(run, "--train.max_steps", "4", "--checkpoint.every", "2")
    flip_byte(os.path.join(run, "checkpoints", "step_4", "rank00000.safetensors"))
    inspect = subprocess.run([shc, "inspect", os.path.join(run, "checkpoints", "step_4")],
                             capture_output=True, text=True)
    assert inspect.returncode == 3, inspect
    assert re.search(r"checksum mismatch in '.*step_4/rank00000.safetensors' tensor '\S+'",
                     inspect.stderr), inspect.stderr
    strict = train(run, "--train.max_steps", "6", "--checkpoint.strict", "true", check=False)
    assert strict.returncode == 3 and "checksum mismatch" in strict.stderr, strict.stderr[-2000:]
    fallback = train(run, "--train.max_steps", "6", "--checkpoint.every", "2")
    assert re.search(r"checksum mismatch in '.*step_4/rank00000.safetensors' tensor '\S+'.*"
                     r"falling back", fallback.stderr), fallback.stderr[-3000:]
    assert re.search(r"resuming from \S+step_2 at step 2", fallback.stderr), fallback.stderr
    assert len(losses(run)) == 6
    # step_4 was saved again over the corrupt one, atomically: it verifies now.
    assert subprocess.run([shc, "inspect", os.path.join(run, "checkpoints", "step_4")],
                          capture_output=True).returncode == 0
    # A corrupt manifest is corruption like any other.
    with open(os.path.join(run, "checkpoints", "step_6", "manifest.json"), "r+") as f:
        text = f.read().replace('"step": 6', '"step": 7')
        f.seek(0)
        f.write(text)
    again = train(run, "--train.max_steps", "6")
    assert re.search(r"checksum mismatch in manifest '.*step_6/manifest.json'.*falling back",
                     again.stderr), again.stderr[-3000:]
    # Another model config: exit 3 naming the field.
    other = train(run, "--train.max_steps", "8", "--model.ffn_dim", "512", check=False)
    assert other.returncode == 3, other.stderr[-2000:]
    assert "ffn_dim: 384 in the checkpoint, 512 now" in other.stderr, other.stderr[-2000:]
    # Under fsdp each rank reads only its own pieces: a byte flipped in rank 1's file is found by
    # rank 1 alone, both ranks fall back together, and rank 0's console says why.
    sharded = os.path.join(work, "sharded")
    fsdp = ["--parallel.strategy", "fsdp"]
    train(sharded, "--train.max_steps", "4", "--checkpoint.every", "2", *fsdp, np=2)
    flip_byte(os.path.join(sharded, "checkpoints", "step_4", "rank00001.safetensors"))
    both = train(sharded, "--train.max_steps", "6", *fsdp, np=2)
    assert re.search(r"\[rank 0\] error: checksum mismatch in '.*step_4/rank00001.safetensors'"
                     r".*falling back", both.stderr), both.stderr[-3000:]
    assert re.search(r"resuming from \S+step_2 at step 2", both.stderr), both.stderr[-3000:]
    missing = train(run, "--checkpoint.resume", os.path.join(work, "nowhere"), check=False)
    assert missing.returncode == 3 and "nowhere" in missing.stderr, missing.stderr[-2000:]
    print("corruption is detected, named, and falls back (or exits 3 when strict)")

elif scenario == "retention_async_rerun":
    # keep_last 2 + keep_every 3 over 7 steps saved every step: 3, 6 (kept forever) and 6, 7.
    sync, asynchronous = os.path.join(work, "sync"), os.path.join(work, "async")
    train(sync, "--train.max_steps", "7", "--checkpoint.every", "1",
          "--checkpoint.keep_every", "3")
    assert step_dirs(sync) == ["step_3", "step_6", "step_7"], step_dirs(sync)
    train(asynchronous, "--train.max_steps", "7", "--checkpoint.every", "1",
          "--checkpoint.keep_every", "3", "--checkpoint.async", "true")
    assert step_dirs(asynchronous) == step_dirs(sync)
    for step in ("step_3", "step_6", "step_7"):
        a = manifest(os.path.join(sync, "checkpoints", step))
        b = manifest(os.path.join(asynchronous, "checkpoints", step))
        assert a["tensors"] == b["tensors"] and a["ranks"] == b["ranks"], step
    assert losses(sync) == losses(asynchronous)
    # A rerun of a finished run neither trains nor duplicates metrics.
    before = open(os.path.join(sync, "metrics.jsonl")).read()
    rerun = train(sync, "--train.max_steps", "7", "--checkpoint.every", "1")
    assert "nothing to train" in rerun.stderr, rerun.stderr[-2000:]
    assert open(os.path.join(sync, "metrics.jsonl")).read() == before
    # A larger max_steps extends it.
    extended = train(sync, "--train.max_steps", "9")
    assert "schedule now ends at step 9" in extended.stderr, extended.stderr[-2000:]
    assert len(losses(sync)) == 9
    # A time trigger: with every_minutes tiny, every step is saved.
    timed = os.path.join(work, "timed")
    train(timed, "--train.max_steps", "3", "--checkpoint.every_minutes", "1e-6",
          "--checkpoint.keep_last", "5")
    assert step_dirs(timed) == ["step_1", "step_2", "step_3"], step_dirs(timed)
    # --checkpoint.resume none starts over and keeps the earlier run's files, renamed.
    over = train(sync, "--train.max_steps", "2", "--checkpoint.resume", "none")
    assert "checkpoints was moved to" in over.stderr, over.stderr[-2000:]
    assert step_dirs(sync) == ["step_2"] and len(losses(sync)) == 2
    assert os.path.isdir(os.path.join(sync, "checkpoints.1", "step_9"))
    assert os.path.exists(os.path.join(sync, "metrics.jsonl.1"))
    # A directory with metrics but no checkpoint starts fresh and keeps the old file aside.
    fresh = os.path.join(work, "fresh")
    os.makedirs(fresh)
    open(os.path.join(fresh, "metrics.jsonl"), "w").write('{"step": 1, "loss": 9}\n')
    out = train(fresh, "--train.max_steps", "2")
    assert "moved to" in out.stderr
    assert open(os.path.join(fresh, "metrics.jsonl.1")).read() == '{"step": 1, "loss": 9}\n'
    assert len(losses(fresh)) == 2
    print("retention, async == sync content, reruns and extensions behave")

elif scenario == "preemption":
    # SIGUSR1 to mpirun (which forwards it to both ranks): both save and exit 75; the rerun of
    # the same command resumes and the metrics hold every step once.
    run = os.path.join(work, "run")
    command = ["mpirun", "-np", "2", "--bind-to", "none", shc, "train", "--run.dir", run] + \
        COMMON + ["--train.max_steps", "40"]
    process = subprocess.Popen(command, env=MPI_ENV, stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(run, "metrics.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and last_step(metrics) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGUSR1)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, (process.returncode, stderr[-3000:])
    saved = re.search(r"signal 10 received: saved step (\d+)", stderr)
    assert saved, stderr[-3000:]
    step = int(saved.group(1))
    assert step < 40, "the signal came too late to test preemption"
    assert latest(run) == f"checkpoints/step_{step}"
    for rank in (0, 1):  # every rank took the decision, not only the one mpirun heard from
        log = open(os.path.join(run, "logs", f"rank{rank}.log")).read()
        assert "exiting with 75" in log, f"rank {rank}: {log[-2000:]}"
    resumed = subprocess.run(command, env=MPI_ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {step}" in resumed.stderr
    assert len(losses(run)) == 40
    # SIGTERM twice: the second arrives during the save and changes nothing.
    single = os.path.join(work, "single")
    process = subprocess.Popen([shc, "train", "--run.dir", single] + COMMON +
                               ["--train.max_steps", "400"], stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(single, "metrics.jsonl")
    while not os.path.exists(metrics) or sum(1 for _ in open(metrics)) < 3:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, (process.returncode, stderr[-3000:])
    inspect = subprocess.run([shc, "inspect", single], capture_output=True, text=True)
    assert inspect.returncode == 0, inspect.stderr
    print(f"preempted at step {step}: exit 75, and the rerun resumed")

elif scenario == "disk_full":
    # The file size limit (RLIMIT_FSIZE) of the running job drops below a shard file's size after
    # MPI is up (MPI's own shared-memory files need more): the next save fails with EFBIG, the
    # job exits 3, and latest still names the previous checkpoint.
    import resource
    run = os.path.join(work, "run")
    train(run, "--train.max_steps", "400", "--train.stop_after_steps", "2")
    size = os.path.getsize(os.path.join(run, "checkpoints", "step_2", "rank00000.safetensors"))
    for mode in ("sync", "async"):
        # The async save fails on its background thread; the job exits 3 at a step boundary.
        # (The test watches metrics.jsonl for the resumed run's steps: start it empty.)
        os.remove(os.path.join(run, "metrics.jsonl"))
        process = subprocess.Popen([shc, "train", "--run.dir", run] + COMMON +
                                   ["--train.max_steps", "400", "--checkpoint.every", "40",
                                    "--checkpoint.async", str(mode == "async").lower()],
                                   stderr=subprocess.PIPE, text=True)
        metrics = os.path.join(run, "metrics.jsonl")
        while process.poll() is None and last_step(metrics) < 4:
            time.sleep(0.01)
        resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (size // 2, size // 2))
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 3, (mode, process.returncode, stderr[-2000:])
        assert "File too large" in stderr and "is unchanged" in stderr, stderr[-2000:]
        assert latest(run) == "checkpoints/step_2"
        assert step_dirs(run) == ["step_2"]
    print("a full disk during a save leaves latest at the previous checkpoint and exits 3")

elif scenario == "export":
    run = os.path.join(work, "run")
    train(run, "--train.max_steps", "2", "--parallel.strategy", "fsdp", np=2)
    out = os.path.join(work, "model.safetensors")
    subprocess.run([shc, "export", "--checkpoint", run, "--out", out], check=True,
                   capture_output=True)
    from safetensors import safe_open
    from safetensors.numpy import load_file
    tensors = load_file(out)
    assert tensors["tok_embeddings.weight"].shape == (257, 128), tensors.keys()
    assert all(t.dtype.name == "float32" for t in tensors.values())
    assert any(name.startswith("blocks.1.") for name in tensors)
    with safe_open(out, framework="numpy") as f:
        meta = f.metadata()
    config = json.loads(meta["model_config"])
    assert meta["format"] == "shc-export" and meta["model_family"] == "shc_transformer"
    assert config["n_layers"] == 2 and config["hidden_dim"] == 128, config
    beside = json.load(open(os.path.join(work, "model.json")))
    assert beside["model_config"] == config and beside["tokenizer"] == meta["tokenizer"]
    listing = subprocess.run([shc, "inspect", out], capture_output=True, text=True, check=True)
    assert "tok_embeddings.weight F32 [257, 128]" in listing.stdout, listing.stdout
    shard = subprocess.run([shc, "inspect", os.path.join(data, "train-00000.h5")],
                           capture_output=True, text=True, check=True)
    assert "vocab_size 257" in shard.stdout, shard.stdout
    # Generation from the export and from the checkpoint: greedy is deterministic and the same
    # from both; the text streams to stdout, the log to stderr.
    def generate(path, *extra):
        return subprocess.run([shc, "generate", "--checkpoint", path, "--prompt", "The GNU",
                               "--max_new_tokens", "12", *extra], capture_output=True, text=True,
                              check=True)
    greedy = generate(out, "--temperature", "0")
    assert greedy.stdout == generate(run, "--temperature", "0").stdout, greedy
    assert len(greedy.stdout.strip("\n")) > 0 and "tokens/s" in greedy.stderr, greedy
    sampled = generate(out, "--temperature", "1", "--top_k", "5", "--seed", "3").stdout
    assert sampled == generate(out, "--temperature", "1", "--top_k", "5", "--seed", "3").stdout
    print(f"export of an fsdp checkpoint read by Python safetensors: {len(tensors)} tensors; "
          f"greedy continuation {greedy.stdout.strip()!r}")

else:
    sys.exit(f"unknown scenario {scenario}")
