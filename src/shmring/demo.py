"""``shmring demo``: a producer hands data to a consumer through a Segment.

The producer process writes a block into the shared segment, publishes it by
storing the round number into an atomic ``ready`` word (release order) and
waking the consumer's futex; the consumer sleeps on that word, reads the
block in place and checks its CRC, then acknowledges through a second word.
The same hand-over through ``multiprocessing.Queue`` (pickle + pipe) runs
next to it, and the demo prints both timings.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
import zlib
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from . import _core
from .segment import Segment

# Control words at the start of the demo's payload; the data follows.
READY = 0  # u32: round number the producer has published
ACK = 4  # u32: round number the consumer has checked
BAD = 8  # u32: first round whose CRC failed, 0 if none
CRC = 16  # u32: CRC-32 of the round's data
DATA = 64

TIMEOUT_S = 30.0


def _payload(block: bytes, round_no: int) -> bytes:
    return round_no.to_bytes(8, "little") + block[8:]


def _segment_consumer(seg: Segment, rounds: int) -> None:
    with seg:
        buf = seg.buf
        n = seg.size - DATA
        for r in range(1, rounds + 1):
            while _core.atomic_load_u32(buf, READY) != r:  # acquire: pairs with the producer's release
                if not _core.futex_wait(buf, READY, r - 1, TIMEOUT_S):
                    raise TimeoutError("producer went quiet")
            crc = int.from_bytes(buf[CRC : CRC + 4], "little")
            if zlib.crc32(buf[DATA : DATA + n]) != crc and not _core.atomic_load_u32(buf, BAD):
                _core.atomic_store_u32(buf, BAD, r)
            _core.atomic_store_u32(buf, ACK, r)  # release: pairs with the producer's acquire below
            _core.futex_wake(buf, ACK)
        del buf


def _queue_consumer(q: Any, acks: Any, rounds: int) -> None:
    for r in range(1, rounds + 1):
        data, crc = q.get(timeout=TIMEOUT_S)
        acks.put(r if zlib.crc32(data) == crc else -r)


def run_demo(console: Console, size_mib: int = 64, rounds: int = 5) -> int:
    """Run both hand-overs and print the comparison.  Returns an exit status."""
    if size_mib < 1 or rounds < 1:
        console.print("size and rounds must be positive")
        return 2
    ctx = mp.get_context("spawn")  # the segment handle re-attaches by name in the child
    n = size_mib << 20
    block = os.urandom(n)
    results: dict[str, list[float]] = {"shmring Segment + futex": [], "multiprocessing.Queue": []}
    ok = True

    with Segment.create(None, DATA + n) as seg, Progress(console=console, transient=True) as progress:
        task = progress.add_task("shmring Segment", total=rounds)
        consumer = ctx.Process(target=_segment_consumer, args=(seg, rounds))
        consumer.start()
        buf = seg.buf
        for r in range(1, rounds + 1):
            data = _payload(block, r)
            t0 = time.perf_counter()
            buf[DATA : DATA + n] = data
            buf[CRC : CRC + 4] = zlib.crc32(data).to_bytes(4, "little")
            _core.atomic_store_u32(buf, READY, r)  # release: publishes data and CRC
            _core.futex_wake(buf, READY)
            while _core.atomic_load_u32(buf, ACK) != r:  # acquire: pairs with the consumer's release
                if not _core.futex_wait(buf, ACK, r - 1, 1.0) and not consumer.is_alive():
                    raise RuntimeError("the consumer process died")
            results["shmring Segment + futex"].append(time.perf_counter() - t0)
            progress.advance(task)
        consumer.join(TIMEOUT_S)
        ok &= _core.atomic_load_u32(buf, BAD) == 0 and consumer.exitcode == 0
        del buf

        task = progress.add_task("multiprocessing.Queue", total=rounds)
        q, acks = ctx.Queue(), ctx.Queue()
        consumer = ctx.Process(target=_queue_consumer, args=(q, acks, rounds))
        consumer.start()
        for r in range(1, rounds + 1):
            data = _payload(block, r)
            t0 = time.perf_counter()
            q.put((data, zlib.crc32(data)))
            ok &= acks.get(timeout=TIMEOUT_S) == r
            results["multiprocessing.Queue"].append(time.perf_counter() - t0)
            progress.advance(task)
        consumer.join(TIMEOUT_S)
        ok &= consumer.exitcode == 0

    table = Table(title=f"Handing {size_mib} MiB from one process to another ({rounds} rounds, CRC-checked)")
    for column in ("transport", "median time", "throughput", "speed-up"):
        table.add_column(column, justify="right")
    baseline = statistics.median(results["multiprocessing.Queue"])
    for label, times in results.items():
        median = statistics.median(times)
        table.add_row(label, f"{median * 1e3:.1f} ms", f"{n / median / 1e9:.2f} GB/s", f"{baseline / median:.1f}x")
    console.print(table)
    console.print("every round's data checked: " + ("[green]OK[/green]" if ok else "[red]MISMATCH[/red]"))
    return 0 if ok else 1
