"""`shc analyze-routing` end to end (SPEC §8, issue 10 item 3). One scenario per call:

    analyze_routing_end_to_end.py SHC WORKDIR SCENARIO

- kinds: a fresh checkpoint (`shc train` at lr 0) of every residual kind: analysis.json parses and
  holds exactly the statistics of its kind (absent, not zero, what the kind lacks; the plain
  residual has none and no plots); fresh shc has spectral norms ~1 and alpha entropy ~ln K, fresh
  mhc row and column sums ~1; the CSV has one row per layer x sublayer; every plot is a valid PNG;
  an export gives the same analysis as its checkpoint; usage and data errors exit 2 and 3, a
  missing gnuplot exits 1 naming the package.
- run: `--run` over a run's checkpoints: one record per checkpoint by step, plots over steps.
- np2: the same analysis under `mpirun -np 2` equals one process's.

Data: the GPL-3 text every Debian system ships, byte tokenizer; a tiny model, one thread."""
import json
import math
import os
import shutil
import struct
import subprocess
import sys

from e2e_common import MPI_ENV, prepare_gpl3

shc, work, scenario = sys.argv[1], sys.argv[2], sys.argv[3]
work = os.path.join(work, scenario)
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
data = os.path.join(work, "data")
prepare_gpl3(shc, data)
VAL = os.path.join(data, "val-*.h5")
MODEL = ["--model.preset", "tiny", "--model.n_layers", "2"]
LAYERS = 2


def run(command, expect=0, np=1, env=None):
    launcher = [] if np == 1 else ["mpirun", "-np", str(np), "--bind-to", "none"]
    result = subprocess.run(launcher + command, capture_output=True, text=True, timeout=300,
                            env=dict(MPI_ENV, **(env or {})))
    if result.returncode != expect:
        sys.exit(f"{' '.join(command)} exited {result.returncode}, expected {expect}:\n"
                 f"{result.stderr[-4000:]}")
    return result


def train(run_dir, *args):
    run([shc, "train", "--run.dir", run_dir, *MODEL, "--train.seq_len", "32",
         "--train.threads", "1", "--train.global_batch", "4", "--train.warmup_steps", "1",
         "--train.eval_every", "0", "--data.train", os.path.join(data, "train-*.h5"), *args])


def analyze(source_flag, source, out, *args, np=1, expect=0, env=None):
    return run([shc, "analyze-routing", source_flag, source, "--data.val", VAL, "--out", out,
                "--seq_len", "32", "--batches", "3", "--batch_size", "4", "--threads", "1",
                *args], expect=expect, np=np, env=env)


def check_png(path):
    """A PNG signature, then the IHDR chunk first with a plausible size."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    length, kind, width, height = struct.unpack(">I4sII", head[8:24])
    assert kind == b"IHDR" and length == 13, f"{path}: no IHDR chunk first"
    assert (width, height) == (960, 640), f"{path}: {width}x{height}"


def load_report(out):
    """analysis.json (parsed: it must be valid JSON), checking the CSV and plots beside it."""
    with open(os.path.join(out, "analysis.json")) as f:
        analysis = json.load(f)
    assert analysis["format"] == "shc-routing-analysis", analysis["format"]
    for name in analysis["plots"]:
        check_png(os.path.join(out, name))
    with open(os.path.join(out, "layers.csv")) as f:
        rows = [line.rstrip("\n").split(",") for line in f]
    header, rows = rows[0], rows[1:]
    assert len(rows) == 2 * LAYERS * len(analysis["checkpoints"]), (len(rows), header)
    keys = ["step"] + list(analysis["checkpoints"][0]["sublayers"][0])
    assert header == keys, (header, keys)
    return analysis


def statistics(name):
    return {f"{name}_mean", f"{name}_min", f"{name}_max"}


POSITION = {"layer", "sublayer", "depth"}
ROUTED = POSITION | {"composite_gain_max"} | set().union(
    *(statistics(s) for s in ["spectral_norm", "pre", "post", "composite_row_gain",
                              "composite_col_gain"]))
SHC = ROUTED | statistics("alpha_entropy") | {"selection_frequency_0", "selection_frequency_1"}
KINDS = {
    "residual": (["--model.residual", "residual"], POSITION, []),
    "hc": (["--model.residual", "hc"], ROUTED,
           ["spectral_norm_vs_depth.png", "composite_gain_vs_depth.png"]),
    "mhc": (["--model.residual", "mhc"],
            ROUTED | statistics("row_sum") | statistics("col_sum") | statistics("entry"),
            ["spectral_norm_vs_depth.png", "composite_gain_vs_depth.png"]),
    "shc": (["--model.residual", "shc"], SHC,
            ["spectral_norm_vs_depth.png", "composite_gain_vs_depth.png",
             "alpha_entropy_vs_depth.png"]),
    "shc_adaptive_rank": (["--model.residual", "shc", "--model.adaptive_rank", "true"],
                          SHC | {f"n_eff_fraction_{m}" for m in range(1, 5)} | {"n_eff_mean"},
                          ["spectral_norm_vs_depth.png", "composite_gain_vs_depth.png",
                           "alpha_entropy_vs_depth.png", "n_eff_vs_depth.png"]),
}


def scenario_kinds():
    for kind, (flags, keys, plots) in KINDS.items():
        run_dir, out = os.path.join(work, kind), os.path.join(work, kind + "_analysis")
        train(run_dir, *flags, "--train.max_steps", "1", "--train.lr", "0")  # still fresh
        analyze("--checkpoint", run_dir, out)
        analysis = load_report(out)
        assert analysis["model"]["config"]["residual"] == flags[1], analysis["model"]
        assert analysis["plots"] == plots, (kind, analysis["plots"])
        (checkpoint,) = analysis["checkpoints"]
        assert checkpoint["step"] == 1 and checkpoint["tokens"] == 3 * 4 * 32, checkpoint
        for record in checkpoint["sublayers"]:
            assert set(record) == keys, (kind, set(record) ^ keys)
        layers = checkpoint["sublayers"]
        if kind.startswith("shc"):
            # Fresh: alpha uniform over the K = top_k = 2 bases, H_res = a convex mix of
            # near-identity orthogonal matrices.
            for r in layers:
                assert 1 - 1e-3 <= r["spectral_norm_min"] <= r["spectral_norm_max"] <= 1 + 1e-6, r
                assert abs(r["alpha_entropy_mean"] - math.log(2)) < 1e-4, r
                assert r["selection_frequency_0"] == r["selection_frequency_1"] == 1.0, r
        if kind == "mhc":
            for r in layers:
                for s in ["row_sum", "col_sum", "spectral_norm"]:
                    assert abs(r[f"{s}_min"] - 1) < 1e-4 and abs(r[f"{s}_max"] - 1) < 1e-4, (s, r)
                assert r["entry_min"] >= 0, r
                assert abs(r["composite_gain_max"] - 1) < 1e-3, r
        if kind == "residual":
            assert checkpoint["summary"] == {}, checkpoint["summary"]
        if kind == "shc_adaptive_rank":
            for r in layers:
                assert abs(sum(r[f"n_eff_fraction_{m}"] for m in range(1, 5)) - 1) < 1e-12, r
            # An export holds the same model: the same analysis.
            export = os.path.join(work, "model.safetensors")
            run([shc, "export", "--checkpoint", run_dir, "--out", export])
            analyze("--checkpoint", export, out)
            exported = load_report(out)
            assert exported["checkpoints"][0]["sublayers"] == layers
            assert exported["checkpoints"][0]["source"] == export

    shc_run = os.path.join(work, "shc")
    errors = os.path.join(work, "errors")
    analyze("--checkpoint", shc_run, errors, "--run", shc_run, expect=2)  # both given
    analyze("--run", os.path.join(work, "no_such_run"), errors, expect=3)
    run([shc, "analyze-routing", "--checkpoint", shc_run, "--data.val",
         os.path.join(data, "missing-*.h5"), "--out", errors], expect=3)
    assert not os.path.exists(os.path.join(errors, "analysis.json"))
    # Without gnuplot: exit 1 naming the package; the CSV is there, analysis.json (written last,
    # the mark of a complete report) is not.
    no_gnuplot = os.path.join(work, "bin_without_gnuplot")  # MPI's helpers (orted) stay found
    mpi_bin = os.path.dirname(os.path.realpath(shutil.which("mpirun")))
    os.makedirs(no_gnuplot)
    for name in os.listdir(mpi_bin):
        if not name.startswith("gnuplot"):
            os.symlink(os.path.join(mpi_bin, name), os.path.join(no_gnuplot, name))
    failed = analyze("--checkpoint", shc_run, errors, expect=1, env={"PATH": no_gnuplot})
    assert "apt-get install gnuplot-nox" in failed.stderr, failed.stderr
    assert os.path.exists(os.path.join(errors, "layers.csv"))
    assert not os.path.exists(os.path.join(errors, "analysis.json"))


def scenario_run():
    run_dir, out = os.path.join(work, "run"), os.path.join(work, "analysis")
    train(run_dir, "--train.max_steps", "4", "--train.lr", "3e-3", "--checkpoint.every", "2")
    analyze("--run", run_dir, out)
    analysis = load_report(out)
    assert [c["step"] for c in analysis["checkpoints"]] == [2, 4], analysis["checkpoints"]
    for c in analysis["checkpoints"]:
        assert c["source"].endswith(f"step_{c['step']}"), c["source"]
        assert c["summary"]["spectral_norm_max"] <= 1 + 1e-6, c["summary"]
        final = c["sublayers"][-1]
        assert c["summary"]["final_composite_row_gain_max"] == final["composite_row_gain_max"]
    for name in ["spectral_norm_vs_step.png", "composite_gain_vs_step.png",
                 "alpha_entropy_vs_step.png"]:
        assert name in analysis["plots"], analysis["plots"]


def close(a, b, path="analysis"):
    """Equal structure; numbers within a relative 1e-5 (fp32 model outputs of batches of 4 rows
    on one rank and 2 rows on each of two may round differently); integers exactly."""
    if isinstance(a, dict):
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (path, a, b)
    else:
        assert a == b, (path, a, b)


def scenario_np2():
    run_dir = os.path.join(work, "run")
    train(run_dir, "--model.adaptive_rank", "true", "--train.max_steps", "2", "--train.lr", "3e-3")
    one, two = os.path.join(work, "np1"), os.path.join(work, "np2")
    analyze("--checkpoint", run_dir, one)
    analyze("--checkpoint", run_dir, two, np=2)
    a, b = load_report(one), load_report(two)
    assert (a["world_size"], b["world_size"]) == (1, 2)
    a.pop("world_size")
    b.pop("world_size")
    close(a, b)


{"kinds": scenario_kinds, "run": scenario_run, "np2": scenario_np2}[scenario]()
print(f"analyze-routing {scenario}: OK")
