#!/usr/bin/env python3
"""Runs watchdog_probe under mpirun and checks that the hung job ended the way SPEC §5 requires.

usage: check_watchdog.py TIMEOUT_S EXPECTED_WAITING [--op OP] COMMAND...

Passes when COMMAND exits 5, its stderr holds
  collective #3 OP timed out after TIMEOUT_S s; waiting for ranks EXPECTED_WAITING
(OP is all_reduce unless given)
(on a line of its own), and it took less than TIMEOUT_S + 10 s of wall time.
"""
import os
import re
import signal
import subprocess
import sys
import time


def main() -> int:
    timeout_s, waiting, command = sys.argv[1], sys.argv[2], sys.argv[3:]
    op = "all_reduce"
    if command[:1] == ["--op"]:
        op, command = command[1], command[2:]
    limit = float(timeout_s) + 10
    start = time.monotonic()
    # Own process group, so that a hang can be killed together with every rank.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=limit + 30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        print(f"FAIL: the job still ran after {limit + 30:.0f} s (hang)\n{stdout}{stderr}")
        return 1
    elapsed = time.monotonic() - start
    print(f"exit code {process.returncode}, {elapsed:.1f} s\n--- stdout\n{stdout}--- stderr\n{stderr}")

    failures = []
    if process.returncode != 5:
        failures.append(f"exit code {process.returncode}, expected 5")
    pattern = (r"^\[rank \d+\] collective #3 " + op + " timed out after "
               + re.escape(timeout_s) + r" s; waiting for ranks " + re.escape(waiting) + r"$")
    if not re.search(pattern, stderr, re.MULTILINE):
        failures.append(f"no stderr line matching {pattern!r}")
    if elapsed >= limit:
        failures.append(f"took {elapsed:.1f} s, limit {limit:.0f} s")
    for failure in failures:
        print("FAIL:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
