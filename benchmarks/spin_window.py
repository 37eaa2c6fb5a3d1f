"""How long should the "adaptive" strategy spin before it sleeps?

A requester sends a 64-byte message and waits for the reply; the responder
replies after `delay` µs of work.  For each spin window the script reports
the requester's round-trip p50/p99 and the CPU it burned per round trip.
Spinning pays while the reply comes within the window (no futex wake-up,
which costs ~20-25 µs on these VMs); past it, the spin is wasted CPU.

    .venv/bin/python benchmarks/spin_window.py [--rounds N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from typing import Any

import shmring

SPINS_NS = [0, 5_000, 20_000, 50_000, 100_000]
DELAYS_US = [0, 10, 30, 100]


def _busy(us: float) -> None:
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


def _responder(ping: shmring.Channel, pong: shmring.Channel, rounds: int, delay_us: float) -> None:
    with ping, pong:
        for _ in range(rounds):
            msg = ping.recv(timeout=30)
            if delay_us:
                _busy(delay_us)
            pong.send(msg)


def measure(spin_ns: int, delay_us: float, rounds: int) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    with shmring.Channel.create(None, 1 << 16, "adaptive", spin_ns=spin_ns) as ping, shmring.Channel.create(
        None, 1 << 16, "adaptive", spin_ns=spin_ns
    ) as pong:
        proc = ctx.Process(target=_responder, args=(ping, pong, rounds, delay_us))
        proc.start()
        msg = bytes(range(64))
        times = []
        cpu0 = time.process_time()
        for _ in range(rounds):
            t0 = time.perf_counter()
            ping.send(msg)
            if pong.recv(timeout=30) != msg:
                raise RuntimeError("echo mismatch")
            times.append(time.perf_counter() - t0)
        cpu = time.process_time() - cpu0
        proc.join(30)
    times = sorted(times[rounds // 10 :])
    wall = sum(times)
    return {
        "spin_us": spin_ns / 1000,
        "delay_us": delay_us,
        "p50_us": statistics.median(times) * 1e6,
        "p99_us": times[int(0.99 * len(times))] * 1e6,
        "cpu_us_per_rt": cpu / rounds * 1e6,
        "cpu_share": cpu / max(wall, 1e-9),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    results = [measure(spin, delay, args.rounds) for delay in DELAYS_US for spin in SPINS_NS]
    print("| reply after | spin window | round trip p50 | p99 | requester CPU per round trip |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['delay_us']:.0f} µs | {r['spin_us']:.0f} µs | {r['p50_us']:.1f} µs | {r['p99_us']:.1f} µs "
            f"| {r['cpu_us_per_rt']:.1f} µs |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
