#!/usr/bin/env python3
"""Where one Queue put + get of a small object spends its time, in one
process (no contention, no waiting: every get finds the item just put).

Each step is a loop of N operations; it is measured two ways:

- instructions per operation, counted around a fresh interpreter running
  only that loop, minus the empty loop: ``perf stat -e instructions:u``
  where the CPU's counters are available, else valgrind's callgrind (on a
  shorter loop); stable on a noisy machine, the breakdown's main figure;
- nanoseconds per operation, the best of several timed runs in this process
  (noisy on a shared machine; the ratios between steps are what matter).

The steps build up the full path:

    loop        the empty loop (subtracted from the others)
    c-call      a call of a C function with one argument (len): the Python
                call overhead every step pays at least once
    dumps       pickle.dumps(obj, protocol 5)
    loads       pickle.loads(data)
    mutex       shmring.Mutex acquire + release: a robust lock round trip
    put-get-b   Queue.put_bytes + Queue.get_bytes of the pickled bytes: the
                queue itself (two calls, two lock holds, the copies, the
                counters, the result's allocation), without pickling
    put-get     Queue.put + Queue.get of obj: the full path
    send-recv   Channel.send + Channel.recv of the same bytes: the
                lock-free ring, for comparison

and, per item, the batch path and what bench_queue.py's processes do
around it (batches of 64; figures per item):

    build       the producer's list of 64 (producer, seq, payload) tuples
    put-get-many  Queue.put_many of that list + Queue.get_many(64)
    check       the consumer's checks of 64 items (bench_queue.py's loop:
                order per producer, payload, count and sums)

    .venv/bin/python benchmarks/queue_breakdown.py             # 64-byte object
    .venv/bin/python benchmarks/queue_breakdown.py --size 1024
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from typing import Any

STEPS = ["loop", "c-call", "dumps", "loads", "mutex", "put-get-b", "put-get", "send-recv", "build", "put-get-many",
         "check"]
BATCH = 64
ITEMS = {"build": BATCH, "put-get-many": BATCH, "check": BATCH}  # items per loop body (1 for the others)


def make_object(size: int) -> Any:
    """A tuple of an int and bytes whose pickle is about ``size`` bytes."""
    obj: Any = (12345, b"x" * max(0, size - 20))
    return obj


def setup(step: str, size: int) -> tuple[Any, Any]:
    """(the loop body as a zero-argument callable, what to close after)."""
    import shmring

    obj = make_object(size)
    data = pickle.dumps(obj, 5)
    if step == "loop":
        return (lambda: None), None
    if step == "c-call":
        return (lambda: len(data)), None
    if step == "dumps":
        return (lambda: pickle.dumps(obj, 5)), None
    if step == "loads":
        return (lambda: pickle.loads(data)), None
    if step == "mutex":
        seg = shmring.Segment.create(None, 4096)
        m = shmring.Mutex(seg, 0)

        def lock() -> None:
            m.acquire()
            m.release()

        return lock, seg
    if step in ("build", "put-get-many", "check"):
        return batch_step(step, size)
    if step in ("put-get-b", "put-get"):
        q: Any = shmring.Queue()
        if step == "put-get-b":
            put_b, get_b = q.put_bytes, q.get_bytes
            return (lambda: (put_b(data), get_b())), q
        put, get = q.put, q.get
        return (lambda: (put(obj), get())), q
    ch = shmring.Channel.create(None, 1 << 16)
    send, recv = ch.send, ch.recv
    return (lambda: (send(data), recv())), ch


def batch_step(step: str, size: int) -> tuple[Any, Any]:
    """The batch steps: what bench_queue.py's producers and consumers do
    per batch, with the objects it sends (payload sized as there)."""
    import shmring

    pid, payload = 1, b"p" * max(0, size - 24)
    items = [(pid, seq, payload) for seq in range(BATCH)]
    if step == "build":
        return (lambda: [(pid, seq, payload) for seq in range(BATCH)]), None
    if step == "put-get-many":
        q: Any = shmring.Queue(max_size_bytes=1 << 22)
        put_many, get_many = q.put_many, q.get_many
        return (lambda: (put_many(items, True, None), get_many(True, None, BATCH))), q
    last, count, s1, s2, payloads = [-1, -1], [0, 0], [0, 0], [0, 0], [payload, payload]

    def check() -> None:  # bench_queue.py's consume(), batch branch, for one batch
        last[pid] = -1
        for m in items:
            if m is None:
                continue
            p, seq, data = m
            if seq <= last[p] or data != payloads[p]:
                raise AssertionError(m)
            last[p] = seq
            count[p] += 1
            s1[p] += seq
            s2[p] += seq * seq

    return check, None


def run_loop(step: str, size: int, n: int) -> float:
    """Run the step for n items (n // items-per-body bodies); seconds taken."""
    body, owned = setup(step, size)
    try:
        t0 = time.perf_counter()
        for _ in range(n // ITEMS.get(step, 1)):
            body()
        return time.perf_counter() - t0
    finally:
        if owned is not None:
            owned.close()


def child(step: str, size: int, n: int) -> list[str]:
    return [sys.executable, __file__, "--child", step, "--size", str(size), "--n", str(n)]


# The same hash seed in every counted run: the interpreter's start (net of
# which every step is given) otherwise varies by thousands of instructions.
COUNT_ENV = {**os.environ, "PYTHONHASHSEED": "0"}


def perf_instructions(step: str, size: int, n: int) -> int | None:
    """User-space instructions of a fresh interpreter running the step n
    times, from perf stat; None where the CPU's counters are not available."""
    if shutil.which("perf") is None:
        return None
    proc = subprocess.run(["perf", "stat", "-x", ",", "-e", "instructions:u", *child(step, size, n)],
                          capture_output=True, text=True, env=COUNT_ENV)
    for line in proc.stderr.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("instructions") and fields[0].isdigit():
            return int(fields[0])
    return None


def callgrind_instructions(step: str, size: int, n: int) -> int | None:
    """The same from valgrind's callgrind (instructions executed); None without valgrind."""
    if shutil.which("valgrind") is None:
        return None
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *child(step, size, n)],
                          capture_output=True, text=True, env=COUNT_ENV)
    match = re.search(r"Collected : (\d+)", proc.stderr)
    return int(match.group(1)) if match else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64, help="pickled size of the object (default 64)")
    ap.add_argument("--n", type=int, default=200_000, help="operations per loop (default 200,000)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per step, the best is kept (default 5)")
    ap.add_argument("--json", help="write the figures to this file too")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_loop(args.child, args.size, args.n)
        return 0
    rows: dict[str, dict[str, float | None]] = {}
    # Which counter: perf if it counts here, else callgrind on a loop ten
    # times shorter (it runs some fifty times slower).
    counter, count_n = perf_instructions, args.n
    if perf_instructions("loop", args.size, 1000) is None:
        counter, count_n = callgrind_instructions, max(1000, args.n // 10)
    # The loop of every step but "loop" costs the empty loop too: both
    # figures are given net of it (the interpreter's start as well, for the
    # instructions: the same in every run).
    base_ins = counter("loop", args.size, count_n)
    start_ins = counter("loop", args.size, 0)  # the interpreter's start alone: the batch steps loop fewer times
    base_ns = min(run_loop("loop", args.size, args.n) for _ in range(args.repeat)) / args.n * 1e9
    for step in STEPS:
        ins = counter(step, args.size, count_n) if step != "loop" else base_ins
        ns = min(run_loop(step, args.size, args.n) for _ in range(args.repeat)) / args.n * 1e9
        k = ITEMS.get(step, 1)  # the empty loop ran n times, a batch step n // k times
        loop_ns = base_ns / k
        loop_ins = None if base_ins is None or start_ins is None else start_ins + (base_ins - start_ins) / k
        rows[step] = {
            "ns": ns - loop_ns if step != "loop" else ns,
            # (the empty loop's own count is mostly the interpreter's start: not shown)
            "instructions": None if ins is None or loop_ins is None or step == "loop" else (ins - loop_ins) / count_n,
        }
    counted_by = "perf" if counter is perf_instructions else "callgrind"
    print(f"queue_breakdown: object pickled to {len(pickle.dumps(make_object(args.size), 5))} bytes, "
          f"{args.n} operations per timed loop, instructions by {counted_by} over {count_n}, "
          f"Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.2f}")
    print(f"{'step':12} {'instructions/op':>16} {'ns/op':>8}")
    for step, r in rows.items():
        ins_text = f"{r['instructions']:.0f}" if r["instructions"] is not None else "-"
        print(f"{step:12} {ins_text:>16} {r['ns']:8.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size": args.size, "n": args.n, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
