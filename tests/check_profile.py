"""Runs `shc profile` on the tiny model and checks the report: the measured machine peak, the
training step split into data/forward/backward/communication/optimizer that adds up to the step,
the in-block split (routing, attention, FFN) of forward and backward within each pass, tokens/s
and MFU, and memory per residual kind (the hyper-connection kinds carry more activations than the
plain residual)."""
import json
import subprocess
import sys

shc, out = sys.argv[1], sys.argv[2]
subprocess.run([shc, "profile", "--model.preset", "tiny", "--profile.batch", "2",
                "--profile.seq_len", "32", "--profile.repeats", "2", "--profile.generate_tokens",
                "0", "--profile.gemm_size", "256", "--profile.copy_mb", "8", "--out", out],
               check=True)
with open(out) as f:
    r = json.load(f)
assert r["forward_backward_tokens_per_s"] > 0 and r["forward_tokens_per_s"] > 0, r
assert r["machine"]["gemm_fp32_gflop_per_s"] > 0 and r["machine"]["copy_bandwidth_gb_per_s"] > 0
f = r["flops_per_token"]
n, L, T, d = f["matmul_parameters"], 4, 32, 128
assert f["train"] == 6 * n + 12 * L * T * d and f["forward"] == 2 * n + 4 * L * T * d, f
step = r["training_step"]
s = step["seconds"]
parts = s["data"] + s["forward"] + s["backward"] + s["communication"] + s["optimizer"]
assert all(s[k] >= 0 for k in s), s
assert s["forward"] > 0 and s["backward"] > 0 and s["optimizer"] > 0, s
assert abs(parts - s["total"]) <= 0.05 * s["total"], s  # only the lap bookkeeping is left out
for p in ("forward", "backward"):
    b = step["blocks"][p]
    assert b["routing"] > 0 and b["attention"] > 0 and b["ffn"] > 0, b
    inside = b["routing"] + b["attention"] + b["ffn"]
    assert inside <= s[p] * 1.001, (p, b, s)
    assert abs(inside + b["outside_blocks"] - s[p]) <= 1e-6 + 1e-3 * s[p], (p, b, s)
assert step["tokens_per_s"] > 0 and 0 < step["mfu"] < 1, step
assert abs(step["mfu"] - f["train"] * step["tokens_per_s_per_rank"] /
           (r["machine"]["gemm_fp32_gflop_per_s"] * 1e9)) <= 1e-9, step
mem = {m["kind"]: m for m in r["memory"]}
assert set(mem) == {"residual", "hc", "mhc", "shc"}, mem
for m in mem.values():
    assert m["parameter_bytes"] > 0 and m["saved_activation_bytes"] > 0, m
    assert m["step_peak_bytes"] >= m["saved_activation_bytes"], m
for kind in ("hc", "mhc", "shc"):
    assert mem[kind]["saved_activation_bytes"] > mem["residual"]["saved_activation_bytes"], mem
print("profile report OK")
