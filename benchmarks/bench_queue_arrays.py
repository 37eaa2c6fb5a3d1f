#!/usr/bin/env python3
"""Large numpy arrays through shmring.Queue and multiprocessing.Queue.

One producer and one consumer process (multiprocessing's "spawn" context)
pass float32 arrays of each size (default 1, 8 and 64 MiB) through

  mp.Queue                    multiprocessing.Queue(maxsize=4)
  shmring Queue               shmring.Queue(maxsize=4): a 1 MiB ring, larger items in overflow chunks
  shmring Queue, sized ring   shmring.Queue(maxsize=4, max_size_bytes=room for maxsize items)
  shmring Queue, in-band      shmring.Queue(maxsize=4, dumps=<pickle.dumps, highest protocol>,
                              loads=pickle.loads): a serializer of the user's, so every array
                              is pickled in-band (the path of every item before the
                              out-of-band records, docs/PROTOCOL.md section 5.2)

The producer puts ``count`` arrays taken in turn from maxsize + 2 arrays made
before the run (an array is written again only once the consumer has taken
it: mp.Queue pickles in a feeder thread after put returns); element 0 and
the last one hold the sequence number.  The consumer checks every array:
dtype, shape, the sequence number at both ends, and every 4099th element
against the pattern.  A failed check fails the run (exit status 1).

Throughput: arrays x bytes / seconds from the start barrier to the moment the
consumer has checked the last array; the median of --runs runs after one
unmeasured run.

    .venv/bin/python benchmarks/bench_queue_arrays.py            # ~1-2 min on 2 cores
    .venv/bin/python benchmarks/bench_queue_arrays.py --quick    # 1 MiB and 8 MiB, 1 run
    .venv/bin/python benchmarks/bench_queue_arrays.py --sizes 8 --only mp,shmring
"""

from __future__ import annotations

import os
import pickle
import statistics
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _harness import (  # noqa: E402
    MiB, Mismatch, bench_parser, child_setup, chosen, fmt_ratio, log, md_table, orders, send_error, size_label,
)

START_METHOD = "spawn"
MAXSIZE = 4  # items in flight: every queue holds at most this many
SUBJECTS = ["mp", "shmring", "shmring-sized", "shmring-inband"]
LABELS = {
    "mp": "mp.Queue",
    "shmring": "shmring Queue",
    "shmring-sized": "shmring Queue, sized ring",
    "shmring-inband": "shmring Queue, in-band pickle",
}
BYTES_PER_RUN = 512 * MiB  # arrays of one run: ~0.3-2 s on 2 cores
STRIDE = 4099  # every STRIDE-th element is checked against the pattern


def inband_dumps(obj: Any) -> bytes:
    """The serializer of the in-band row (a function of the user's: the
    queue then pickles every item as before the out-of-band records)."""
    return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)


def pattern(n: int) -> Any:
    import numpy as np

    return (np.arange(n, dtype=np.int64) % 1021).astype(np.float32)


def make_queue(ctx: Any, subject: str, nbytes: int) -> Any:
    if subject == "mp":
        return ctx.Queue(MAXSIZE)
    import shmring

    if subject == "shmring-sized":
        return shmring.Queue(MAXSIZE, max_size_bytes=(MAXSIZE + 1) * (nbytes + 4096))
    if subject == "shmring-inband":
        return shmring.Queue(MAXSIZE, dumps=inband_dumps, loads=pickle.loads)
    return shmring.Queue(MAXSIZE)


def produce(q: Any, n: int, count: int) -> None:
    base = pattern(n)
    arrays = [base.copy() for _ in range(MAXSIZE + 2)]
    put = q.put
    for seq in range(count):
        a = arrays[seq % len(arrays)]
        a[0] = a[-1] = seq
        put(a)


def consume(q: Any, n: int, count: int) -> None:
    import numpy as np

    expected = pattern(n)[STRIDE:-1:STRIDE]
    get = q.get
    for seq in range(count):
        a = get()
        if a.dtype != np.float32 or a.shape != (n,) or a[0] != seq or a[-1] != seq:
            raise Mismatch(f"array {seq}: got {a.dtype} {a.shape} holding {a[0]}..{a[-1]}")
        if not np.array_equal(a[STRIDE:-1:STRIDE], expected):
            raise Mismatch(f"array {seq}: wrong elements")


def worker_main(role: str, q: Any, conn: Any, barrier: Any) -> None:
    child_setup()
    try:
        conn.send(("ready",))
        for _, n, count in orders(conn):
            barrier.wait(60)
            t0 = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
            (produce if role == "producer" else consume)(q, n, count)
            conn.send(("done", t0, time.monotonic()))
    except BaseException as e:
        send_error(conn, role, isinstance(e, Mismatch))
    finally:
        conn.close()


def measure(ctx: Any, subject: str, nbytes: int, runs: int, run_timeout: float) -> list[float]:
    """Bytes per second of each measured run (after one unmeasured run)."""
    n = nbytes // 4
    count = max(8, BYTES_PER_RUN // nbytes)
    q = make_queue(ctx, subject, nbytes)
    barrier = ctx.Barrier(2)
    procs, conns = [], []
    for role in ("producer", "consumer"):
        mine, theirs = ctx.Pipe()
        p = ctx.Process(target=worker_main, args=(role, q, theirs, barrier), daemon=True)
        p.start()
        theirs.close()
        procs.append(p)
        conns.append(mine)
    rates: list[float] = []
    try:
        for c in conns:
            if not c.poll(run_timeout) or c.recv()[0] != "ready":
                raise RuntimeError(f"{subject}: a worker did not start")
        for i in range(runs + 1):
            for c in conns:
                c.send(("run", n, count))
            done = []
            for c in conns:
                if not c.poll(run_timeout):
                    raise RuntimeError(f"{subject} {size_label(nbytes)}: a run took over {run_timeout} s")
                msg = c.recv()
                if msg[0] != "done":
                    raise Mismatch(f"{subject} {size_label(nbytes)}: {msg[1]}")
                done.append(msg)
            seconds = done[1][2] - min(done[0][1], done[1][1])
            if i > 0:
                rates.append(count * nbytes / seconds)
    finally:
        for c in conns:
            try:
                c.send(("stop",))
            except OSError:
                pass
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        q.close()
    return rates


def main(argv: list[str] | None = None) -> int:
    import multiprocessing as mp

    ap = bench_parser(__doc__, "1 MiB and 8 MiB arrays, 1 measured run")
    ap.add_argument("--sizes", help="array sizes in MiB (default 1,8,64)")
    ap.add_argument("--runs", type=int, help="measured runs per cell; the median is reported (default 3)")
    ap.add_argument("--only", help=f"comma-separated subjects: {','.join(SUBJECTS)}")
    ap.add_argument("--run-timeout", type=float, default=120.0, help="seconds before a stuck run fails")
    ap.add_argument("--markdown", metavar="PATH", help="also write the table to this file")
    opts = ap.parse_args(argv)
    sizes = [int(float(s) * MiB) for s in (opts.sizes or ("1,8" if opts.quick else "1,8,64")).split(",")]
    runs = opts.runs or (1 if opts.quick else 3)
    subjects = chosen("--only", opts.only, SUBJECTS)
    ctx = mp.get_context(START_METHOD)
    medians: dict[tuple[str, int], float] = {}
    spreads: dict[tuple[str, int], str] = {}
    for nbytes in sizes:
        for subject in subjects:
            rates = measure(ctx, subject, nbytes, runs, opts.run_timeout)
            medians[subject, nbytes] = statistics.median(rates)
            spreads[subject, nbytes] = " / ".join(f"{r / 1e9:.2f}" for r in rates)
            log(f"{size_label(nbytes):>7}  {LABELS[subject]:<30} {medians[subject, nbytes] / 1e9:6.2f} GB/s"
                f"  (runs: {spreads[subject, nbytes]})")
    header = ["subject"] + [f"{size_label(s)} GB/s" for s in sizes] + [f"{size_label(s)} x mp.Queue" for s in sizes]
    rows = []
    for subject in subjects:
        row = [LABELS[subject]] + [f"{medians[subject, s] / 1e9:.2f}" for s in sizes]
        base = [medians.get(("mp", s)) for s in sizes]
        row += [fmt_ratio(medians[subject, s] / b) if b else "" for s, b in zip(sizes, base)]
        rows.append(row)
    table = md_table(header, rows)
    print(f"float32 arrays, 1 producer and 1 consumer ({START_METHOD}), maxsize {MAXSIZE}; "
          f"median of {runs} run(s), GB/s of array bytes\n")
    print(table)
    if opts.markdown:
        with open(opts.markdown, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
