#!/usr/bin/env python3
"""Run the libFuzzer targets of reliability/fuzz/ one after the other and
summarise them (``make fuzz`` builds them and calls this).

Each target starts from its seed corpus in reliability/fuzz/corpus/<target>/
(read only) and grows a working corpus in <build>/corpus/<target>/; a crash,
a sanitizer report, a leak or an input running past the timeout (a hang) is
written to <build>/artifacts/<target>/.  One line per target says how many
inputs ran, in how long, how large the corpus grew and how many crashes
there were; the same figures go to <build>/summary.json.  The exit status
is 1 if any target crashed.

Short mode (the default): each target for --seconds (30).  Long mode
(--long): each target for --runs executions (2,000,000: 10 million for the
five targets), without a time limit.

Refresh the seed corpus (after a harness changed) with --merge: the
working corpus and the seeds are minimised together (libFuzzer -merge=1,
edge coverage only, so that a few dozen inputs per target stay) into
reliability/fuzz/corpus/<target>/.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGETS = ("segment", "channel", "queue", "topic", "sync")
# An input that runs longer than this is a hang (libFuzzer writes it out as timeout-*).
HANG_SECONDS = 10
# Longest input: about 300 operations, each of a few bytes.
MAX_LEN = 1024


def corpus_size(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0


def run_target(name: str, binary: Path, build: Path, limit: list[str], log: Path) -> dict[str, Any]:
    work = build / "corpus" / name
    artifacts = build / "artifacts" / name
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True)
    cmd = [str(binary), *limit, f"-timeout={HANG_SECONDS}", f"-max_len={MAX_LEN}", "-rss_limit_mb=2048", "-print_final_stats=1",
           f"-artifact_prefix={artifacts}/", str(work), str(HERE / "corpus" / name)]
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        rc = proc.wait()
    seconds = time.monotonic() - start
    for left in Path("/dev/shm").glob(f"shmring-fuzz-{proc.pid}.*"):
        left.unlink()  # fuzz_queue's chunk, left when the target died on a crash
    text = log.read_text(errors="replace")
    runs = re.search(r"stat::number_of_executed_units: (\d+)", text)
    executions = int(runs.group(1)) if runs else 0
    if not runs:  # a crash ends the run before the final statistics: the last status line
        status = re.findall(r"^#(\d+)\s", text, re.M)
        executions = int(status[-1]) if status else 0
    found = sorted(p.name for p in artifacts.iterdir())
    return {
        "target": f"fuzz_{name}",
        "executions": executions,
        "seconds": round(seconds, 1),
        "exec_per_second": round(executions / seconds) if seconds > 0 else 0,
        "corpus": corpus_size(work),
        "crashes": len(found) if found or rc == 0 else 1,
        "artifacts": [str(artifacts / f) for f in found],
        "exit_status": rc,
        "log": str(log),
    }


def merge_seeds(name: str, binary: Path, build: Path) -> int:
    """Minimise the working corpus and the seeds into the seed folder."""
    seeds = HERE / "corpus" / name
    fresh = build / "merged" / name
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    cmd = [str(binary), "-merge=1", "-use_counters=0", str(fresh), str(seeds), str(build / "corpus" / name)]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    shutil.rmtree(seeds, ignore_errors=True)
    shutil.copytree(fresh, seeds)
    return corpus_size(seeds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="build/fuzz/bin", help="folder of the built targets (fuzz_<name>)")
    ap.add_argument("--build", default="build/fuzz", help="folder for corpora, artifacts, logs and the summary")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset of " + ",".join(TARGETS))
    ap.add_argument("--seconds", type=int, default=30, help="short mode: seconds per target")
    ap.add_argument("--long", action="store_true", help="run each target for --runs executions instead")
    ap.add_argument("--runs", type=int, default=2_000_000, help="long mode: executions per target")
    ap.add_argument("--merge", action="store_true", help="refresh the seed corpus from the working corpus")
    args = ap.parse_args()

    build = Path(args.build)
    (build / "logs").mkdir(parents=True, exist_ok=True)
    names = [t for t in args.targets.split(",") if t]
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        ap.error(f"unknown targets: {', '.join(unknown)}")
    if args.merge:
        for name in names:
            print(f"fuzz_{name}: {merge_seeds(name, Path(args.bin) / f'fuzz_{name}', build)} seed inputs")
        return 0

    limit = [f"-runs={args.runs}", "-max_total_time=0"] if args.long else [f"-max_total_time={args.seconds}"]
    results = []
    for name in names:
        r = run_target(name, Path(args.bin) / f"fuzz_{name}", build, limit, build / "logs" / f"fuzz_{name}.log")
        results.append(r)
        print(f"{r['target']}: {r['executions']} executions in {r['seconds']} s ({r['exec_per_second']}/s), "
              f"corpus {r['corpus']} inputs, {r['crashes']} crashes"
              + (f" -> {', '.join(r['artifacts'])} (log: {r['log']})" if r["crashes"] else ""), flush=True)
    total = {
        "mode": "long" if args.long else "short",
        "executions": sum(int(r["executions"]) for r in results),
        "seconds": round(sum(float(r["seconds"]) for r in results), 1),
        "crashes": sum(int(r["crashes"]) for r in results),
        "targets": results,
    }
    (build / "summary.json").write_text(json.dumps(total, indent=2) + "\n")
    print(f"fuzz: {total['executions']} executions in {total['seconds']} s, {total['crashes']} crashes "
          f"(summary: {build / 'summary.json'})")
    return 1 if total["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
