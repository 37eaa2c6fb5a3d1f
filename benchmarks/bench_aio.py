#!/usr/bin/env python3
"""shmring.aio side by side: asyncio round trips and throughput, against the
synchronous API and against pyzmq's ``zmq.asyncio`` over ``ipc://``.

The other process is always a plain synchronous program (an echo for the
round trips, a producer for the throughput), so the rows differ only in the
consumer: the sync API (wait "block"), shmring.aio on asyncio's loop and on
uvloop, and zmq.asyncio (one ``await sock.recv()`` per message, and the same
draining what is queued with non-blocking receives after each await).  Every
message carries its number and is checked.

    python benchmarks/bench_aio.py [--runs 5] [--quick] [--json out.json]

Targets of issue 11: async 64 B round trip p50 within 2x of sync "block";
async throughput with ``recv_many`` at least 5x zmq.asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import fmt_num, fmt_rate, log, md_table, percentiles  # noqa: E402

import shmring  # noqa: E402
import shmring.aio as aio  # noqa: E402

SIZE = 64
PAD = bytes(SIZE - 8)
CTX = mp.get_context("fork")


def msg(i: int) -> bytes:
    return struct.pack("<Q", i) + PAD


def check(data: bytes, i: int) -> None:
    if len(data) != SIZE or struct.unpack_from("<Q", data)[0] != i:
        raise AssertionError(f"message {i}: got {data[:8]!r}... ({len(data)} bytes)")


# -- the synchronous side (child processes) --------------------------------------------


def shm_echo(ping: shmring.Channel, pong: shmring.Channel) -> None:
    while True:
        try:
            pong.send(ping.recv())
        except shmring.Closed:
            return


def shm_produce(ch: shmring.Channel, n: int) -> None:
    batch = 256
    for start in range(0, n, batch):
        ch.send_many([msg(i) for i in range(start, min(n, start + batch))])
    ch.close()


def zmq_echo(addr_in: str, addr_out: str, n: int) -> None:
    import zmq

    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.connect(addr_in)
    b.connect(addr_out)
    for _ in range(n):
        b.send(a.recv())
    ctx.destroy(linger=1000)


def zmq_produce(addr: str, n: int) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, 100_000)
    s.connect(addr)
    for i in range(n):
        s.send(msg(i))
    ctx.destroy(linger=10_000)


# -- round trips ---------------------------------------------------------------------------


def rtt_shmring(n: int, mode: str) -> list[int]:
    ping = shmring.Channel.create(capacity=1 << 16, wait="block")
    pong = shmring.Channel.create(capacity=1 << 16, wait="block")
    p = CTX.Process(target=shm_echo, args=(ping, pong))
    p.start()
    times: list[int] = []
    try:
        if mode == "sync":
            for i in range(n):
                t0 = time.perf_counter_ns()
                ping.send(msg(i))
                check(pong.recv(), i)
                times.append(time.perf_counter_ns() - t0)
        else:
            async def run() -> None:
                a_ping, a_pong = aio.Channel(ping), aio.Channel(pong)
                for i in range(n):
                    t0 = time.perf_counter_ns()
                    await a_ping.send(msg(i))
                    check(await a_pong.recv(), i)
                    times.append(time.perf_counter_ns() - t0)
            _run_loop(run, mode)
        ping.close()
        p.join(10)
    finally:
        for ch in (ping, pong):
            ch.close()  # the last user out removes it
    return times


def rtt_zmq(n: int, tmp: str) -> list[int]:
    import zmq
    import zmq.asyncio

    a_in, a_out = f"ipc://{tmp}/ping", f"ipc://{tmp}/pong"
    ctx = zmq.asyncio.Context()
    ping, pong = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    ping.bind(a_in)
    pong.bind(a_out)
    p = CTX.Process(target=zmq_echo, args=(a_in, a_out, n))
    p.start()
    times: list[int] = []

    async def run() -> None:
        for i in range(n):
            t0 = time.perf_counter_ns()
            await ping.send(msg(i))
            check(await pong.recv(), i)
            times.append(time.perf_counter_ns() - t0)

    asyncio.run(run())
    p.join(10)
    ctx.destroy(linger=0)
    return times


# -- throughput ----------------------------------------------------------------------------


def tput_shmring(n: int, mode: str) -> float:
    ch = shmring.Channel.create(capacity=1 << 20, wait="block")
    p = CTX.Process(target=shm_produce, args=(ch, n))
    t0 = time.perf_counter()
    p.start()
    try:
        if mode == "sync":
            i = 0
            while True:
                try:
                    batch = ch.recv_many(256)
                except shmring.Closed:
                    break
                for m in batch:
                    check(m, i)
                    i += 1
        else:
            count = [0]

            async def run() -> None:
                view, i = aio.Channel(ch), 0
                while True:
                    try:
                        batch = await view.recv_many(256)
                    except shmring.Closed:
                        break
                    for m in batch:
                        check(m, i)
                        i += 1
                count[0] = i
            _run_loop(run, mode)
            i = count[0]
        elapsed = time.perf_counter() - t0
        if i != n:
            raise AssertionError(f"received {i} of {n}")
        p.join(10)
    finally:
        ch.close()
    return n / elapsed


def tput_zmq(n: int, tmp: str, drain: bool) -> float:
    import zmq
    import zmq.asyncio

    addr = f"ipc://{tmp}/pull"
    ctx = zmq.asyncio.Context()
    s = ctx.socket(zmq.PULL)
    s.setsockopt(zmq.RCVHWM, 100_000)
    s.bind(addr)
    p = CTX.Process(target=zmq_produce, args=(addr, n))
    t0 = time.perf_counter()
    p.start()

    async def run() -> None:
        i = 0
        while i < n:
            check(await s.recv(), i)
            i += 1
            while drain and i < n:
                try:
                    data = s.recv(zmq.NOBLOCK).result()
                except zmq.Again:
                    break
                check(data, i)
                i += 1

    asyncio.run(run())
    elapsed = time.perf_counter() - t0
    p.join(10)
    ctx.destroy(linger=0)
    return n / elapsed


def _run_loop(run: Callable[[], Any], mode: str) -> None:
    if mode == "uvloop":
        import uvloop

        uvloop.run(run())
    else:
        asyncio.run(run())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs of each row; the median is reported")
    ap.add_argument("--quick", action="store_true", help="fewer messages and runs (a smoke run)")
    ap.add_argument("--json", help="write the results here too")
    opts = ap.parse_args()
    runs = 1 if opts.quick else opts.runs
    n_rtt, n_tput = (2_000, 100_000) if opts.quick else (20_000, 500_000)
    try:
        import zmq  # noqa: F401

        have_zmq = True
    except ImportError:
        have_zmq = False
        log("pyzmq is not installed: its rows are skipped (pip install 'shmring[bench]')")
    try:
        import uvloop  # noqa: F401

        modes = ["sync", "aio", "uvloop"]
    except ImportError:
        modes = ["sync", "aio"]
    tmp = tempfile.mkdtemp(prefix="bench-aio-")
    rtt: dict[str, list[dict[str, float]]] = {}
    tput: dict[str, list[float]] = {}
    for r in range(runs):
        log(f"run {r + 1}/{runs}")
        for mode in modes:
            rtt.setdefault(mode, []).append(percentiles(sorted(rtt_shmring(n_rtt, mode))))
            tput.setdefault(mode, []).append(tput_shmring(n_tput, mode))
        if have_zmq:
            rtt.setdefault("zmq.asyncio", []).append(percentiles(sorted(rtt_zmq(n_rtt, tmp))))
            tput.setdefault("zmq.asyncio", []).append(tput_zmq(n_tput, tmp, drain=False))
            tput.setdefault("zmq.asyncio drained", []).append(tput_zmq(n_tput, tmp, drain=True))
    names = {"sync": "shmring sync (block)", "aio": "shmring.aio (asyncio)", "uvloop": "shmring.aio (uvloop)"}
    rtt_med = {k: {f: statistics.median(x[f] for x in v) for f in ("p50_us", "p99_us")} for k, v in rtt.items()}
    tput_med = {k: statistics.median(v) for k, v in tput.items()}
    sync_p50 = rtt_med["sync"]["p50_us"]
    zmq_best = max((v for k, v in tput_med.items() if k.startswith("zmq")), default=None)
    rows = [[names.get(k, k), fmt_num(v["p50_us"]), fmt_num(v["p99_us"]), fmt_num(v["p50_us"] / sync_p50)]
            for k, v in rtt_med.items()]
    print(f"## 64 B round trips ({n_rtt:,} per run, median of {runs} runs; the echo is a sync process)\n")
    print(md_table(["consumer", "p50 µs", "p99 µs", "p50 / sync"], rows))
    rows = [[names.get(k, k), fmt_rate(v), fmt_num(v / zmq_best) if zmq_best else "–"] for k, v in tput_med.items()]
    print(f"\n## 64 B throughput ({n_tput:,} messages per run, median of {runs}; recv_many(256) for shmring)\n")
    print(md_table(["consumer", "msg/s", "x best zmq.asyncio"], rows))
    print(f"\nmachine: {os.cpu_count()} CPUs, {sys.platform}, Python {sys.version.split()[0]}")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"rtt": rtt, "throughput": tput, "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
