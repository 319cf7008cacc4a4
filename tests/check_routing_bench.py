"""Runs `shc profile --routing-bench` on a small problem and checks the JSON report's schema:
every scope x method x n x pass x projection case present once, with a positive ns_per_token;
the hyper-connection rows carry the byte model's bytes and the memory-traffic limit at the
measured copy bandwidth, and their fwd_bwd rows of the multi-stream kinds the two-pass floor."""
import json
import subprocess
import sys

shc, out = sys.argv[1], sys.argv[2]
subprocess.run([shc, "profile", "--routing-bench", "--out", out, "--profile.tokens", "64",
                "--profile.hidden", "16", "--profile.streams", "2,4", "--profile.repeats", "2",
                "--profile.copy_mb", "8"],
               check=True)
with open(out) as f:
    report = json.load(f)
assert report["copy_bandwidth_gb_per_s"] > 0, report
assert "byte_model" in report
cases = {}
for r in report["results"]:
    key = (r["scope"], r["method"], r["n"], r["iters"], r["pass"], r["with_projection"])
    assert key not in cases, f"duplicate case {key}"
    assert r["ns_per_token"] > 0, r
    if r["scope"] == "hyper_connection":
        n, d = r["n"], report["hidden"]
        elements = (3 if r["method"] == "residual" else 2 * n + 2) * d
        if r["pass"] == "fwd_bwd":
            elements += (3 if r["method"] == "residual" else 3 * n + 3) * d
        assert r["bytes_per_token"] == 4 * elements, r
        limit = r["bytes_per_token"] / report["copy_bandwidth_gb_per_s"]
        assert abs(r["traffic_limit_ns_per_token"] - limit) <= 1e-9 * limit, r
        assert abs(r["x_traffic_limit"] - r["ns_per_token"] / limit) <= 1e-6 * r["x_traffic_limit"]
        # The two-pass floor: fwd_bwd rows of the multi-stream kinds only.
        if r["pass"] == "fwd_bwd" and r["method"] != "residual":
            assert r["floor_bytes_per_token"] == 4 * (8 * n + 5) * d, r
            floor = r["floor_bytes_per_token"] / report["copy_bandwidth_gb_per_s"]
            assert abs(r["floor_ns_per_token"] - floor) <= 1e-9 * floor, r
            assert abs(r["x_floor"] - r["ns_per_token"] / floor) <= 1e-6 * r["x_floor"], r
        else:
            assert "floor_bytes_per_token" not in r, r
    cases[key] = r
kinds = [("shc", 0), ("mhc", 10), ("mhc", 20), ("hc", 0)]
expected = {("h_res", m, n, it, p, proj)
            for (m, it) in kinds
            for n in (2, 4) for p in ("fwd", "fwd_bwd") for proj in (False, True)}
expected |= {("hyper_connection", m, n, it, p, True)
             for (m, it) in kinds for n in (2, 4) for p in ("fwd", "fwd_bwd")}
expected |= {("hyper_connection", "residual", 1, 0, p, False) for p in ("fwd", "fwd_bwd")}
missing = expected - set(cases)
assert not missing, f"missing cases: {sorted(missing)}"
assert set(cases) == expected, f"unexpected cases: {sorted(set(cases) - expected)}"
print(f"routing bench report OK: {len(cases)} cases")
