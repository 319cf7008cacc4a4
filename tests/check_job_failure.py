#!/usr/bin/env python3
"""Runs a multi-rank job that fails on one rank and checks that it ended the way SPEC §5 requires:
every rank gone within --max-seconds, the job's exit code the failing rank's, and the failing
rank's message on stderr (and in its log file, with --log).

usage: check_job_failure.py --code N --message REGEX [--log GLOB] [--max-seconds S]
                            [--setup SCRIPT ARG...] [--file-in-the-way PATH] -- COMMAND...

--setup runs a Python file first with the given arguments (e.g. to write a faulty data shard).
--file-in-the-way creates a regular file at PATH (and its parent directories), so that a job
cannot create a directory there: running as root, chmod would not stop it.
--log GLOB: exactly one file matching GLOB (e.g. RUN/logs/rank*.log) must contain REGEX.
"""
import argparse
import glob
import os
import re
import runpy
import signal
import subprocess
import sys
import time


def main() -> int:
    args = sys.argv[1:]
    split = args.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--code", type=int, required=True)
    parser.add_argument("--message", required=True)
    parser.add_argument("--log")
    parser.add_argument("--max-seconds", type=float, default=30)
    parser.add_argument("--setup", nargs="+")
    parser.add_argument("--file-in-the-way")
    options = parser.parse_args(args[:split])
    command = args[split + 1:]

    if options.setup:
        sys.argv = options.setup
        runpy.run_path(options.setup[0], run_name="__main__")

    if options.file_in_the_way:
        os.makedirs(os.path.dirname(options.file_in_the_way), exist_ok=True)
        open(options.file_in_the_way, "w").close()

    start = time.monotonic()
    # Own process group, so that a hang can be killed together with every rank.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=options.max_seconds + 60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        print(f"FAIL: still running after {options.max_seconds + 60:.0f} s (hang)\n{stdout}{stderr}")
        return 1
    elapsed = time.monotonic() - start
    print(f"exit code {process.returncode}, {elapsed:.1f} s\n--- stdout\n{stdout}--- stderr\n{stderr}")

    failures = []
    if process.returncode != options.code:
        failures.append(f"exit code {process.returncode}, expected {options.code}")
    pattern = re.compile(options.message, re.MULTILINE)
    if not pattern.search(stderr):
        failures.append(f"no stderr line matching {options.message!r}")
    if options.log:
        holding = [f for f in sorted(glob.glob(options.log)) if pattern.search(open(f).read())]
        if len(holding) != 1:
            failures.append(f"{len(holding)} log files matching {options.log} hold the message "
                            f"(expected exactly the failing rank's): {holding}")
    if elapsed >= options.max_seconds:
        failures.append(f"took {elapsed:.1f} s, limit {options.max_seconds:.0f} s")
    for failure in failures:
        print("FAIL:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
