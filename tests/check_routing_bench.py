"""Runs `shc profile --routing-bench` on a small problem and checks the JSON report's schema:
every method x n x pass x projection case present once, with a positive ns_per_token."""
import json
import subprocess
import sys

shc, out = sys.argv[1], sys.argv[2]
subprocess.run([shc, "profile", "--routing-bench", "--out", out, "--profile.tokens", "64",
                "--profile.hidden", "16", "--profile.streams", "2,4", "--profile.repeats", "2"],
               check=True)
with open(out) as f:
    report = json.load(f)
cases = {}
for r in report["results"]:
    key = (r["method"], r["n"], r["iters"], r["pass"], r["with_projection"])
    assert key not in cases, f"duplicate case {key}"
    assert r["ns_per_token"] > 0, r
    cases[key] = r
expected = {(m, n, it, p, proj)
            for (m, it) in [("shc", 0), ("mhc", 10), ("mhc", 20), ("hc", 0)]
            for n in (2, 4) for p in ("fwd", "fwd_bwd") for proj in (False, True)}
missing = expected - set(cases)
assert not missing, f"missing cases: {sorted(missing)}"
assert set(cases) == expected, f"unexpected cases: {sorted(set(cases) - expected)}"
print(f"routing bench report OK: {len(cases)} cases")
