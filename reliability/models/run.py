"""Check the Promela models of reliability/models with Spin.

Each model is checked exhaustively (pan with safety checks: assertions and
invalid end states) in its correct form, which must show no error, and with
each planted fault, which must show one: a model that cannot find a planted
bug proves nothing.  Exit status 0 when every outcome is as expected.

    python reliability/models/run.py            # the CI sizes (about a minute)
    python reliability/models/run.py --long     # larger configurations
    python reliability/models/run.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class Check:
    model: str          # file name in this folder
    defines: tuple[str, ...]
    expect_error: bool  # a planted fault: pan must report an error
    long_only: bool = False


CHECKS = [
    # channel.pml: the SPSC ring, its waiting flags and barrier handshake
    Check("channel.pml", (), False),
    Check("channel.pml", ("UNREGISTERED_FENCED",), False),
    Check("channel.pml", ("MSGS=6", "CAP=3"), False, long_only=True),
    Check("channel.pml", ("PLANT_NO_RECHECK",), True),
    Check("channel.pml", ("PLANT_UNREGISTERED",), True),
    Check("channel.pml", ("PLANT_TAIL_FIRST",), True),
    # queue.pml: one-store commits and the recount after a dead lock holder
    Check("queue.pml", ("KILLS=0",), False),
    Check("queue.pml", ("KILLS=1",), False),
    Check("queue.pml", ("KILLS=2",), False),
    Check("queue.pml", ("KILLS=3",), False, long_only=True),
    Check("queue.pml", ("KILLS=1", "PLANT_NO_RECOUNT"), True),
    Check("queue.pml", ("KILLS=1", "PLANT_COMMIT_FIRST"), True),
    Check("queue.pml", ("KILLS=0", "PLANT_SEQ_AFTER_UNLOCK"), True),
]


def run_check(check: Check, work: Path, memlim_mb: int) -> dict:
    """Generate, compile and run pan for one check; its figures."""
    src = work / check.model
    shutil.copy(HERE / check.model, src)
    flags = [f"-D{d}" for d in check.defines]
    subprocess.run(["spin", *flags, "-a", check.model], cwd=work, check=True, capture_output=True)
    subprocess.run(["cc", "-O2", "-w", "-DSAFETY", "-DCOLLAPSE", f"-DMEMLIM={memlim_mb}", "-o", "pan", "pan.c"],
                   cwd=work, check=True, capture_output=True)
    t0 = time.monotonic()
    out = subprocess.run(["./pan", "-m2000000"], cwd=work, capture_output=True, text=True).stdout
    seconds = time.monotonic() - t0

    def number(pattern: str) -> int:
        m = re.search(pattern, out)
        return int(m.group(1)) if m else -1

    errors = number(r"errors: (\d+)")
    complete = "Search not completed" not in out or errors > 0
    first_error = next((line.strip() for line in out.splitlines() if line.startswith("pan:1:")), "")
    ok = complete and ((errors > 0) if check.expect_error else (errors == 0))
    return {"model": check.model, "defines": list(check.defines), "expect_error": check.expect_error,
            "errors": errors, "first_error": first_error, "states": number(r"(\d+) states, stored"),
            "depth": number(r"depth reached (\d+)"), "complete": complete, "seconds": round(seconds, 2),
            "ok": ok}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long", action="store_true", help="also check the larger configurations")
    parser.add_argument("--memlim", type=int, default=2048, help="pan's memory limit in MB (default 2048)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if shutil.which("spin") is None:
        print("spin is not installed (Debian: apt-get install spin)", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="shmring-models-") as tmp:
        for check in CHECKS:
            if check.long_only and not args.long:
                continue
            r = run_check(check, Path(tmp), args.memlim)
            results.append(r)
            verdict = "ok" if r["ok"] else "UNEXPECTED"
            what = "planted fault found" if check.expect_error else "no violation"
            if not r["ok"]:
                what = "search incomplete" if not r["complete"] else (
                    "planted fault NOT found" if check.expect_error else f"violation: {r['first_error']}")
            print(f"{verdict:10} {check.model:12} {' '.join(check.defines) or '(as written)':40} "
                  f"{what:22} {r['states']:>10} states  {r['seconds']:6.1f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    bad = [r for r in results if not r["ok"]]
    print(f"{len(results) - len(bad)}/{len(results)} checks as expected")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
