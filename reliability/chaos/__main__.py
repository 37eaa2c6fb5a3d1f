"""``python -m reliability.chaos``: run the kill storms, check logs, plant faults.

  run [--long] [--kills N] [--only NAME] [--plant-fault] [--out DIR] [--json FILE] [--keep-logs]
  check DIR            check the logs of one storm (exit status 1 on a failure)
  plant DIR            plant faults in a copy of DIR's logs; exit status 1 unless the checker finds them
  storm NAME DIR KILLS SEED WEDGE_S   (internal: one storm, in a fresh interpreter)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from typing import Any

from .checker import COUNTS, FAILURES, check
from .plant import plant_and_check
from .scenarios import KINDS, SCENARIOS, Scenario

SHORT_KILLS = 400  # per kind
LONG_KILLS = 10_000
ROUND_KILLS = 500  # a longer storm is run as rounds of fresh objects: bounded logs, bounded memory to check them
SUMMARY_COLUMNS = {"kills": "kills", "committed": "committed", "delivered": "delivered", "lost": "lost",
                   "lost_explained": "explained", "lost_unexplained": "unexplained", "duplicated": "duplicated",
                   "corrupted": "corrupted", "phantom": "phantom", "reordered": "reordered", "stale": "stale",
                   "errors": "errors", "wedges": "wedges"}


def write_scenario(directory: str, name: str) -> None:
    scenario = next(s for s in SCENARIOS if s.name == name)
    groups = {g.name: {"producers": [s for s, r in g.slots() if r == "producer"],
                       "consumers": [s for s, r in g.slots() if r == "consumer"] + [g.name + ".drain"]}
              for g in scenario.groups}
    with open(os.path.join(directory, "scenario.json"), "w") as f:
        json.dump({"name": name, "kind": scenario.kind, "groups": groups}, f, indent=1)


def run_storm(name: str, directory: str, kills: int, seed: int, wedge_s: float) -> dict[str, Any]:
    """One storm in a fresh interpreter (a small process to fork from)."""
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    write_scenario(directory, name)
    cmd = [sys.executable, "-m", "reliability.chaos", "storm", name, directory, str(kills), str(seed), str(wedge_s)]
    rc = subprocess.call(cmd)
    try:
        with open(os.path.join(directory, "storm.json")) as f:
            storm: dict[str, Any] = json.load(f)
    except FileNotFoundError:
        storm = {"scenario": name, "kills": 0, "wedged": [], "failed": f"the supervisor exited with {rc}"}
    return storm


def failures(counts: dict[str, Any]) -> int:
    return sum(int(counts[k]) for k in FAILURES)


def total(groups: list[dict[str, Any]]) -> dict[str, int]:
    return {k: sum(int(g.get(k, 0)) for g in groups) for k in ("kills", "kills_holding_lock") + COUNTS}


def run_round(scenario: Scenario, directory: str, kills: int, seed: int, args: argparse.Namespace,
              plant: bool) -> dict[str, Any]:
    """One storm and its check (and the planted faults' check, when asked)."""
    t0 = time.monotonic()
    storm = run_storm(scenario.name, directory, kills, seed, args.wedge_s)
    t1 = time.monotonic()
    groups = check(directory)
    counts = total(list(groups.values()))
    counts["kills"] = int(storm["kills"])
    counts["kills_holding_lock"] = int(storm.get("kills_holding_lock", 0))
    bad = failures(counts) + (1 if storm.get("failed") else 0)
    entry: dict[str, Any] = {"seed": seed, "counts": counts, "storm_s": round(t1 - t0, 1),
                             "check_s": round(time.monotonic() - t1, 1),
                             "overflow_chunks_peak": storm.get("overflow_chunks_peak", {})}
    if plant and not bad:
        entry["plant"] = plant_and_check(directory, directory + ".planted")
        bad += 0 if entry["plant"]["ok"] else 1
    entry["ok"] = not bad
    if bad:
        entry["logs"] = directory
        entry["examples"] = [x for c in groups.values() for x in c["examples"]][:20] + (
            [storm["failed"]] if storm.get("failed") else [])
    elif not args.keep_logs:
        shutil.rmtree(directory, ignore_errors=True)
    return entry


def command_run(args: argparse.Namespace) -> int:
    budget = args.kills or (LONG_KILLS if args.long else SHORT_KILLS)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    chosen = [s for s in SCENARIOS if not args.only or any(o in s.name for o in args.only)]
    report: dict[str, Any] = {"mode": "long" if args.long else "short", "kills_per_kind": budget, "seed": seed,
                              "scenarios": [], "kinds": {}}
    started = time.monotonic()
    print(f"kill storms: {budget} kills per kind, seed {seed}, logs in {args.out}", flush=True)
    for scenario in chosen:
        kills = max(1, round(budget * scenario.share))
        rounds = -(-kills // ROUND_KILLS)
        entries = []
        for r in range(rounds):
            directory = os.path.join(args.out, scenario.name, f"round-{r}")
            share = kills // rounds + (1 if r < kills % rounds else 0)
            entries.append(run_round(scenario, directory, share, seed, args, args.plant_fault and r == 0))
            seed += 1
            entry = entries[-1]
            print(f"  {scenario.name} round {r + 1}/{rounds}: {entry['counts']['kills']} kills, storm "
                  f"{entry['storm_s']} s, check {entry['check_s']} s"
                  f"{'' if 'plant' not in entry else ', planted faults ' + ('caught' if entry['plant']['ok'] else 'MISSED')}"
                  f": {'ok' if entry['ok'] else 'FAILED'}", flush=True)
            for example in entry.get("examples", [])[:8]:
                print(f"      {example}")
        report["scenarios"].append({"name": scenario.name, "kind": scenario.kind,
                                    "ok": all(e["ok"] for e in entries),
                                    "counts": total([e["counts"] for e in entries]), "rounds": entries})
    print()
    print(f"{'':<10}" + "".join(f"{title:>12}" for title in SUMMARY_COLUMNS.values()))
    for kind in KINDS:
        counts = [s["counts"] for s in report["scenarios"] if s["kind"] == kind]
        if counts:
            report["kinds"][kind] = total(counts)
            print(f"{kind:<10}" + "".join(f"{report['kinds'][kind][k]:>12}" for k in SUMMARY_COLUMNS))
    report["ok"] = all(s["ok"] for s in report["scenarios"])
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    print(f"\n{'ok' if report['ok'] else 'FAILED'} in {report['elapsed_s']} s; summary in {args.json}")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    return 0 if report["ok"] else 1


def command_check(args: argparse.Namespace) -> int:
    groups = check(args.directory)
    print(json.dumps(groups, indent=1))
    return 1 if any(failures(c) for c in groups.values()) else 0


def command_plant(args: argparse.Namespace) -> int:
    result = plant_and_check(args.directory, args.directory.rstrip("/") + ".planted")
    print(json.dumps(result, indent=1))
    return 0 if result["ok"] else 1


def command_storm(args: argparse.Namespace) -> int:
    from .storm import Storm

    scenario = next(s for s in SCENARIOS if s.name == args.name)
    result = Storm(scenario, args.directory, args.kills, args.seed, args.wedge_s).run()
    return 1 if result["wedged"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the kill storms and check them")
    run.add_argument("--long", action="store_true", help=f"{LONG_KILLS} kills per kind (else {SHORT_KILLS})")
    run.add_argument("--kills", type=int, help="kills per kind (overrides --long)")
    run.add_argument("--only", action="append", help="scenarios whose name contains this (repeatable)")
    run.add_argument("--plant-fault", action="store_true", help="also plant faults in each clean storm's logs")
    run.add_argument("--out", default="build/chaos", help="where the logs go (kept only for failed storms)")
    run.add_argument("--json", default="build/chaos/summary.json", help="the summary file")
    run.add_argument("--keep-logs", action="store_true")
    run.add_argument("--seed", type=int)
    run.add_argument("--wedge-s", type=float, default=10.0, help="no delivery for this long is a wedge")
    check_cmd = sub.add_parser("check", help="check the logs of one storm")
    check_cmd.add_argument("directory")
    plant = sub.add_parser("plant", help="plant faults in a copy of one storm's logs and check them")
    plant.add_argument("directory")
    storm = sub.add_parser("storm", help="(internal) one storm")
    storm.add_argument("name")
    storm.add_argument("directory")
    storm.add_argument("kills", type=int)
    storm.add_argument("seed", type=int)
    storm.add_argument("wedge_s", type=float)
    args = parser.parse_args(argv)
    commands = {"run": command_run, "check": command_check, "plant": command_plant, "storm": command_storm}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
