#!/usr/bin/env python3
"""Where one large Channel message spends its time, step by step, in one
process (every receive finds the message just sent: no waiting, no other
core), so that the steps can be timed one by one on a noisy machine.

Each step is timed around its own call (perf_counter_ns: 1 MiB steps take
tens of µs, the clock's ~50 ns is noise) over N messages, best and median
of several rounds reported, with the page faults per message (getrusage's
minor faults) around the whole loop.  The sender's source is "hot" (one
buffer) or "cold" (a rotation over 96 MiB, more than the L3 cache):

    memcpy          ctypes.memmove of the source into one buffer: the bound
    memcpy-ring     the same into a rotating destination as large as the
                    ring (what a send's copy sees: every line a miss)
    send            Channel.send (copy into the ring, commit, publish)
    recv            Channel.recv (a new bytes, copy out, release)
    recv_into       Channel.recv_into a preallocated bytearray
    peek            Channel.peek + the loan's release (no copy)
    bytes-alloc     bytes(n) then dropping it (the allocator alone, zeroing
                    included: an upper bound of recv's allocation)

With --two-process, a second process (spawned) receives, so that each
copy crosses cores as in bench_channel.py; each side times its own calls
and the medians filter out the waits and the preemptions of a busy machine:

    send            the sender's Channel.send (waits for room included)
    copy-out        the receiver's copy out of a peek's view (a memoryview
                    slice assignment: one memcpy): bytes another core just wrote
    recv_into       the receiver's Channel.recv_into (waits included)

and, in the last column, the futex sleeps of both sides a message.

    .venv/bin/python benchmarks/large_breakdown.py                  # 1 MiB and 64 KiB
    .venv/bin/python benchmarks/large_breakdown.py --sizes 1MiB --capacity 4MiB
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _workloads import U64, large_sources  # noqa: E402

KiB, MiB = 1024, 1 << 20
SPIN_NS: int | None = None  # --spin-ns: the adaptive strategy's spin window (None: the default)


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def parse_size(s: str) -> int:
    s = s.strip().upper()
    for suffix, mul in (("MIB", MiB), ("KIB", KiB), ("M", MiB), ("K", KiB)):
        if s.endswith(suffix):
            return int(float(s[: -len(suffix)]) * mul)
    return int(s)


class Steps:
    """Per-step nanoseconds of the current round, and faults."""

    def __init__(self) -> None:
        self.ns: dict[str, list[int]] = {}

    def add(self, name: str, ns: int) -> None:
        self.ns.setdefault(name, []).append(ns)


def round_channel(ch: Any, size: int, sources: list[bytearray], n: int, receive: str, steps: Steps) -> float:
    """n messages sent and received the `receive` way; returns faults/message."""
    clock, nb, pack = time.perf_counter_ns, len(sources), U64.pack_into
    into = bytearray(size)
    f0 = faults()
    for i in range(n):
        buf = sources[i % nb]
        pack(buf, 0, i)
        pack(buf, size - 8, i)
        t0 = clock()
        ch.send(buf)
        t1 = clock()
        if receive == "recv":
            m = ch.recv()
            t2 = clock()
            ok = U64.unpack_from(m, size - 8)[0] == i
            del m
        elif receive == "recv_into":
            ch.recv_into(into)
            t2 = clock()
            ok = U64.unpack_from(into, size - 8)[0] == i
        else:
            with ch.peek() as mv:
                ok = U64.unpack_from(mv, size - 8)[0] == i
            t2 = clock()
        if not ok:
            raise AssertionError(f"message {i} did not come back")
        steps.add("send", t1 - t0)
        steps.add(receive, t2 - t1)
    return (faults() - f0) / n


def round_copy(size: int, sources: list[bytearray], n: int, ring_bytes: int, steps: Steps) -> None:
    clock, nb = time.perf_counter_ns, len(sources)
    keep = [(ctypes.c_char * size).from_buffer(b) for b in sources]
    addrs = [ctypes.addressof(a) for a in keep]
    one = (ctypes.c_char * size)()
    ring = (ctypes.c_char * ring_bytes)()
    ctypes.memset(ring, 1, ring_bytes)
    base, slots = ctypes.addressof(ring), max(1, ring_bytes // size)
    for i in range(n):
        t0 = clock()
        ctypes.memmove(one, addrs[i % nb], size)
        t1 = clock()
        ctypes.memmove(base + (i % slots) * size, addrs[i % nb], size)
        t2 = clock()
        steps.add("memcpy", t1 - t0)
        steps.add("memcpy-ring", t2 - t1)
        t0 = clock()
        b = bytes(size)
        del b
        steps.add("bytes-alloc", clock() - t0)
    del keep


def measure(size: int, source: str, capacity: int, n: int, rounds: int) -> dict[str, Any]:
    import shmring

    sources = large_sources(size, source)
    ch = shmring.Channel.create(None, capacity=capacity)
    result: dict[str, Any] = {"size": size, "source": source, "capacity": capacity, "steps": {}, "faults": {}}
    try:
        per_round: list[Steps] = []
        fault_rates: dict[str, list[float]] = {}
        for r in range(rounds + 1):  # round 0 warms up (first lap of the ring, allocator)
            steps = Steps()
            round_copy(size, sources, n, capacity, steps)
            for receive in ("recv", "recv_into", "peek"):
                fault_rates.setdefault(receive, []).append(round_channel(ch, size, sources, n, receive, steps))
            if r:
                per_round.append(steps)
        names = list(per_round[0].ns)
        for name in names:
            meds = [statistics.median(s.ns[name]) for s in per_round]
            result["steps"][name] = {"median_us": statistics.median(meds) / 1000, "best_us": min(meds) / 1000}
        result["faults"] = {k: statistics.median(v[1:]) for k, v in fault_rates.items()}
    finally:
        ch.close()
    return result


def _receiver(name: str, size: int, n: int, conn: Any) -> None:
    import shmring

    ch = shmring.Channel.open(name)
    clock, into = time.perf_counter_ns, bytearray(size)
    dst = memoryview(into)  # (a bytearray's own slice assignment copies a foreign buffer twice)
    copy_ns, into_ns = [], []
    for i in range(n):
        with ch.peek() as mv:
            t0 = clock()
            dst[:] = mv  # one memcpy
            copy_ns.append(clock() - t0)
        if U64.unpack_from(into, size - 8)[0] != i:
            raise AssertionError(f"message {i} did not come back")
    for i in range(n):
        t0 = clock()
        ch.recv_into(into)
        into_ns.append(clock() - t0)
    conn.send((statistics.median(copy_ns), statistics.median(into_ns)))
    ch.close()


def measure_two_process(size: int, source: str, capacity: int, n: int, rounds: int) -> dict[str, Any]:
    import multiprocessing as mp

    import shmring

    ctx, sources = mp.get_context("spawn"), large_sources(size, source)
    clock, nb, pack = time.perf_counter_ns, len(sources), U64.pack_into
    sends, copies, intos, sleeps = [], [], [], []
    for r in range(rounds + 1):  # round 0 warms up; a channel a round (its reader closes it)
        with shmring.Channel.create(None, capacity=capacity, spin_ns=SPIN_NS) as ch:
            here, there = ctx.Pipe()
            p = ctx.Process(target=_receiver, args=(ch.name, size, n, there))
            p.start()
            send_ns = []
            for i in range(2 * n):
                buf = sources[i % nb]
                pack(buf, 0, i % n)
                pack(buf, size - 8, i % n)
                t0 = clock()
                ch.send(buf)
                send_ns.append(clock() - t0)
            copy_med, into_med = here.recv()
            p.join(30)
            st = ch.stats()
        if r:
            sleeps.append((st["producer_blocked"] + st["consumer_blocked"]) / (2 * n))
            sends.append(statistics.median(send_ns))
            copies.append(copy_med)
            intos.append(into_med)
    steps = {name: {"median_us": statistics.median(v) / 1000, "best_us": min(v) / 1000}
             for name, v in (("send", sends), ("copy-out", copies), ("recv_into", intos))}
    # "faults" column: here the futex sleeps of either side a message (adaptive strategy)
    return {"size": size, "source": source, "capacity": capacity, "steps": steps,
            "faults": {"send": statistics.median(sleeps)}}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| size | source | step | median µs | best µs | GB/s (median) | faults (sleeps: 2 processes)/msg |",
             "|---|---|---|---|---|---|---|"]
    for res in results:
        for name, st in res["steps"].items():
            gbs = res["size"] / (st["median_us"] * 1000)
            f = res["faults"].get(name)
            lines.append(f"| {res['size'] // KiB} KiB | {res['source']} | {name} | {st['median_us']:.1f} | "
                         f"{st['best_us']:.1f} | {gbs:.1f} | {'' if f is None else f'{f:.2f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1MiB,64KiB")
    ap.add_argument("--capacity", help="ring bytes (default: room for 8 messages, at least 1 MiB, as bench_channel.py)")
    ap.add_argument("--n", type=int, default=200, help="messages a round (default 200)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--two-process", action="store_true", help="receive in a second process")
    ap.add_argument("--spin-ns", type=int, help="the channel's adaptive spin window (--two-process)")
    ap.add_argument("--json", help="write the results here too")
    opts = ap.parse_args(argv)
    global SPIN_NS
    SPIN_NS = opts.spin_ns
    results = []
    for size in (parse_size(s) for s in opts.sizes.split(",")):
        cap = parse_size(opts.capacity) if opts.capacity else max(MiB, 1 << (8 * (size + 8) - 1).bit_length())
        for source in ("hot", "cold"):
            how = measure_two_process if opts.two_process else measure
            results.append(how(size, source, cap, opts.n, opts.rounds))
            print(f"{size // KiB} KiB {source}: done", file=sys.stderr)
    print(table(results))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
