"""`shc evaluate` end to end: perplexity on validation shards and the MMLU / GSM8K / BBH runners
on tiny fixtures in their public formats, for a checkpoint of a short run. Two ranks give the same
results as one (perplexity within 1e-9, the benchmark records exactly); a missing benchmark
directory and a malformed file are exit 3 naming the path.

usage: evaluate_end_to_end.py SHC WORKDIR"""
import json
import os
import shutil
import subprocess
import sys

from e2e_common import MPI_ENV, prepare_gpl3

shc, work = sys.argv[1], os.path.join(sys.argv[2], "evaluate_end_to_end")
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
data = os.path.join(work, "data")
prepare_gpl3(shc, data)
run = os.path.join(work, "run")
subprocess.run([shc, "train", "--run.dir", run, "--model.preset", "tiny", "--model.n_layers", "1",
                "--train.seq_len", "32", "--train.global_batch", "4", "--train.max_steps", "3",
                "--train.threads", "1", "--data.train", os.path.join(data, "train-*.h5")],
               check=True, capture_output=True)

fixtures = os.path.join(work, "benchmarks")
os.makedirs(os.path.join(fixtures, "mmlu", "dev"))
os.makedirs(os.path.join(fixtures, "mmlu", "test"))
os.makedirs(os.path.join(fixtures, "gsm8k"))
os.makedirs(os.path.join(fixtures, "bbh"))
with open(os.path.join(fixtures, "mmlu", "dev", "astronomy_dev.csv"), "w") as f:
    f.write('What is the Sun?,A star,A planet,A moon,"A comet, mostly",A\n')
with open(os.path.join(fixtures, "mmlu", "test", "astronomy_test.csv"), "w") as f:
    for i in range(5):
        f.write(f'Question {i}: which letter?,one,two,three,four,{"ABCD"[i % 4]}\n')
with open(os.path.join(fixtures, "gsm8k", "test.jsonl"), "w") as f:
    for i in range(4):
        f.write(json.dumps({"question": f"What is {i} plus {i}?",
                            "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"}) + "\n")
with open(os.path.join(fixtures, "bbh", "boolean_expressions.json"), "w") as f:
    json.dump({"examples": [{"input": f"True and {b} is", "target": str(b)}
                            for b in (True, False, True, False, True)]}, f)


def evaluate(np, *extra, check=True, benchmark_dir=fixtures):
    command = ([] if np == 1 else ["mpirun", "-np", str(np), "--bind-to", "none"]) + [
        shc, "evaluate", "--checkpoint", run, "--data.val", os.path.join(data, "val-*.h5"),
        "--eval.seq_len", "32", "--eval.global_batch", "4", "--benchmark_dir", benchmark_dir,
        "--benchmarks", "mmlu,gsm8k,bbh", "--mmlu.shots", "1", "--gsm8k.shots", "1",
        "--bbh.shots", "1", "--max_new_tokens", "6"] + list(extra)
    result = subprocess.run(command, capture_output=True, text=True, env=MPI_ENV, timeout=300)
    if check and result.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


out1, out2 = os.path.join(work, "one.json"), os.path.join(work, "two.json")
evaluate(1, "--out", out1)
evaluate(2, "--out", out2)
one, two = json.load(open(out1)), json.load(open(out2))
v1, v2 = one["validation"], two["validation"]
assert v1["tokens"] == v2["tokens"] > 0 and v1["sequences"] == v2["sequences"], (v1, v2)
assert abs(v1["loss"] - v2["loss"]) <= 1e-9 * v1["loss"], (v1, v2)
assert v1["token_accuracy"] == v2["token_accuracy"], (v1, v2)
assert one["benchmarks"] == two["benchmarks"], (one["benchmarks"], two["benchmarks"])
assert one["benchmarks"]["mmlu"]["overall"]["n"] == 5
assert one["benchmarks"]["gsm8k"]["overall"]["n"] == 3  # the first example is the shot
assert one["benchmarks"]["bbh"]["overall"]["n"] == 4

missing = evaluate(2, check=False, benchmark_dir=os.path.join(work, "nowhere"))
assert missing.returncode == 3, (missing.returncode, missing.stderr[-2000:])
assert os.path.join(work, "nowhere", "mmlu") in missing.stderr, missing.stderr[-2000:]
bad = os.path.join(fixtures, "mmlu", "test", "astronomy_test.csv")
with open(bad, "a") as f:
    f.write("a row,with,too few,columns\n")
malformed = evaluate(1, check=False)
assert malformed.returncode == 3 and bad in malformed.stderr, malformed.stderr[-2000:]
print(f"evaluate: 2 ranks equal 1 (loss {v1['loss']:.6f}, {v1['tokens']} tokens); "
      f"mmlu {one['benchmarks']['mmlu']['overall']['accuracy']}, bad inputs exit 3")
