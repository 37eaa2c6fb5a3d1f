"""``shmring demo``: a producer process streams messages to a consumer process.

The consumer checks every message (its sequence number and its bytes), and
the same workload then runs through ``multiprocessing.Queue``.  A second
part measures the round trip of a 64-byte message (ping-pong between two
processes) over both.  The demo prints both side by side.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .channel import Channel

TIMEOUT_S = 60.0
PATTERNS = 256  # distinct bodies, so that a misplaced message is caught


def _bodies(size: int) -> list[bytes]:
    body = max(0, size - 8)
    return [bytes((k + j) % 251 for j in range(body)) for k in range(PATTERNS)]


def _message(seq: int, bodies: list[bytes]) -> bytes:
    return seq.to_bytes(8, "little") + bodies[seq % PATTERNS]


# -- consumers (run in the child process) -------------------------------------


def _check(msg: bytes, seq: int, bodies: list[bytes]) -> bool:
    return msg[:8] == seq.to_bytes(8, "little") and msg[8:] == bodies[seq % PATTERNS]


def _channel_consumer(ch: Channel, count: int, size: int, result: Any) -> None:
    bodies = _bodies(size)
    bad = 0
    with ch:
        t0 = time.perf_counter()
        for seq in range(count):
            if not _check(ch.recv(timeout=TIMEOUT_S), seq, bodies):
                bad += 1
        result.put((time.perf_counter() - t0, bad))


def _queue_consumer(q: Any, count: int, size: int, result: Any) -> None:
    bodies = _bodies(size)
    bad = 0
    t0 = time.perf_counter()
    for seq in range(count):
        if not _check(q.get(timeout=TIMEOUT_S), seq, bodies):
            bad += 1
    result.put((time.perf_counter() - t0, bad))


def _channel_echo(inbox: Channel, outbox: Channel, rounds: int) -> None:
    with inbox, outbox:
        for _ in range(rounds):
            outbox.send(inbox.recv(timeout=TIMEOUT_S))


def _queue_echo(inbox: Any, outbox: Any, rounds: int) -> None:
    for _ in range(rounds):
        outbox.put(inbox.get(timeout=TIMEOUT_S))


# -- the two parts ---------------------------------------------------------------


def _stream(progress: Progress, label: str, count: int, size: int, channel: bool) -> tuple[float, int]:
    """Send `count` messages of `size` bytes; returns (seconds, bad messages)."""
    ctx = mp.get_context("spawn")
    bodies = _bodies(size)
    result = ctx.Queue()
    task = progress.add_task(label, total=count)
    step = max(1, count // 100)
    if channel:
        with Channel.create(None, 1 << 22) as ch:
            proc = ctx.Process(target=_channel_consumer, args=(ch, count, size, result))
            proc.start()
            send = ch.send
            for seq in range(count):
                send(_message(seq, bodies), timeout=TIMEOUT_S)
                if seq % step == 0:
                    progress.update(task, completed=seq)
            elapsed, bad = result.get(timeout=TIMEOUT_S)
            proc.join(TIMEOUT_S)
    else:
        q = ctx.Queue()
        proc = ctx.Process(target=_queue_consumer, args=(q, count, size, result))
        proc.start()
        for seq in range(count):
            q.put(_message(seq, bodies))
            if seq % step == 0:
                progress.update(task, completed=seq)
        elapsed, bad = result.get(timeout=TIMEOUT_S)
        proc.join(TIMEOUT_S)
    progress.update(task, completed=count)
    if proc.exitcode != 0:
        raise RuntimeError(f"the {label} consumer failed with exit code {proc.exitcode}")
    return elapsed, bad


def _round_trips(rounds: int, channel: bool) -> list[float]:
    """Round-trip times of a 64-byte message, in seconds."""
    ctx = mp.get_context("spawn")
    msg = bytes(range(64))
    times: list[float] = []
    if channel:
        with Channel.create(None, 1 << 16) as ping, Channel.create(None, 1 << 16) as pong:
            proc = ctx.Process(target=_channel_echo, args=(ping, pong, rounds))
            proc.start()
            for _ in range(rounds):
                t0 = time.perf_counter()
                ping.send(msg)
                if pong.recv(timeout=TIMEOUT_S) != msg:
                    raise RuntimeError("echo mismatch")
                times.append(time.perf_counter() - t0)
            proc.join(TIMEOUT_S)
    else:
        ping_q, pong_q = ctx.Queue(), ctx.Queue()
        proc = ctx.Process(target=_queue_echo, args=(ping_q, pong_q, rounds))
        proc.start()
        for _ in range(rounds):
            t0 = time.perf_counter()
            ping_q.put(msg)
            if pong_q.get(timeout=TIMEOUT_S) != msg:
                raise RuntimeError("echo mismatch")
            times.append(time.perf_counter() - t0)
        proc.join(TIMEOUT_S)
    return times[rounds // 10 :]  # drop the warm-up


def run_demo(console: Console, messages: int = 200_000, size: int = 256, rounds: int = 5_000) -> int:
    """Run the demo and print the comparison.  Returns an exit status."""
    if messages < 1 or size < 8 or rounds < 10:
        console.print("need messages >= 1, size >= 8 and rounds >= 10")
        return 2
    columns = (TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        ch_time, ch_bad = _stream(progress, "shmring.Channel", messages, size, channel=True)
        q_time, q_bad = _stream(progress, "multiprocessing.Queue", messages, size, channel=False)
        rt_task = progress.add_task("round trips (ping-pong)", total=2)
        ch_rt = _round_trips(rounds, channel=True)
        progress.advance(rt_task)
        q_rt = _round_trips(rounds, channel=False)
        progress.advance(rt_task)

    table = Table(title=f"{messages:,} messages of {size} B from one process to another, every one checked")
    for column in ("", "shmring.Channel", "multiprocessing.Queue", "shmring speed-up"):
        table.add_column(column, justify="right")
    table.add_row(
        "messages/s",
        f"{messages / ch_time:,.0f}",
        f"{messages / q_time:,.0f}",
        f"{q_time / ch_time:.1f}x",
    )
    table.add_row(
        "MB/s",
        f"{messages * size / ch_time / 1e6:,.0f}",
        f"{messages * size / q_time / 1e6:,.0f}",
        "",
    )
    for label, pick in (("round trip p50", 0.5), ("round trip p99", 0.99)):
        a = _percentile(ch_rt, pick)
        b = _percentile(q_rt, pick)
        table.add_row(label, f"{a * 1e6:.1f} µs", f"{b * 1e6:.1f} µs", f"{b / a:.1f}x")
    console.print(table)
    ok = ch_bad == 0 and q_bad == 0
    console.print(
        "every message checked: "
        + ("[green]OK[/green]" if ok else f"[red]{ch_bad} bad on shmring, {q_bad} bad on the queue[/red]")
    )
    return 0 if ok else 1


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
