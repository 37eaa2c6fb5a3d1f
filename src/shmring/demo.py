"""``shmring demo``: a producer process streams messages to a consumer process.

The consumer checks every message (its sequence number and its bytes), and
the same workload then runs through ``multiprocessing.Queue``.  A second
part measures the round trip of a 64-byte message (ping-pong between two
processes) over both.  A third sends Python objects from 2 producer
processes to 2 consumer processes through ``shmring.Queue`` and through
``multiprocessing.Queue`` (the same code: only the class differs), checking
per-producer order and exactly-once delivery.  The demo prints them side by
side.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from contextlib import ExitStack
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .channel import Channel
from .queue import Queue

TIMEOUT_S = 60.0
PATTERNS = 256  # distinct bodies, so that a misplaced message is caught


def _bodies(size: int) -> list[bytes]:
    body = max(0, size - 8)
    return [bytes((k + j) % 251 for j in range(body)) for k in range(PATTERNS)]


def _message(seq: int, bodies: list[bytes]) -> bytes:
    return seq.to_bytes(8, "little") + bodies[seq % PATTERNS]


# -- either transport: a Channel or a multiprocessing.Queue -----------------------


def _sender(endpoint: Any) -> Any:
    return endpoint.send if isinstance(endpoint, Channel) else endpoint.put


def _receiver(endpoint: Any) -> Any:
    return endpoint.recv if isinstance(endpoint, Channel) else endpoint.get


def _check(msg: bytes, seq: int, bodies: list[bytes]) -> bool:
    return msg[:8] == seq.to_bytes(8, "little") and msg[8:] == bodies[seq % PATTERNS]


# -- children -----------------------------------------------------------------------


def _consumer(source: Any, count: int, size: int, result: Any) -> None:
    bodies = _bodies(size)
    recv = _receiver(source)
    bad = 0
    t0 = time.perf_counter()
    for seq in range(count):
        if not _check(recv(timeout=TIMEOUT_S), seq, bodies):
            bad += 1
    result.put((time.perf_counter() - t0, bad))
    if isinstance(source, Channel):
        source.close()


def _echo(inbox: Any, outbox: Any, rounds: int) -> None:
    recv, send = _receiver(inbox), _sender(outbox)
    for _ in range(rounds):
        send(recv(timeout=TIMEOUT_S), timeout=TIMEOUT_S)
    for endpoint in (inbox, outbox):
        if isinstance(endpoint, Channel):
            endpoint.close()


def _object_producer(q: Any, ident: int, count: int, ready: Any, go: Any) -> None:
    payload = b"x" * 40
    ready.put(ident)
    go.wait(TIMEOUT_S)
    for seq in range(count):
        q.put((ident, seq, payload))


def _object_consumer(q: Any, result: Any) -> None:
    last: dict[int, int] = {}
    got = bad = 0
    for ident, seq, _ in iter(q.get, None):  # None: the end
        if seq <= last.get(ident, -1):  # each producer's objects arrive in order
            bad += 1
        last[ident] = seq
        got += 1
    result.put((got, bad, last))


# -- the parts --------------------------------------------------------------------------------------------------------------------------------


def _endpoint(stack: ExitStack, ctx: Any, channel: bool, capacity: int) -> Any:
    if channel:
        return stack.enter_context(Channel.create(None, capacity))
    return ctx.Queue()


def _stream(progress: Progress, label: str, count: int, size: int, channel: bool) -> tuple[float, int]:
    """Send `count` messages of `size` bytes; returns (seconds, bad messages)."""
    ctx = mp.get_context("spawn")
    bodies = _bodies(size)
    result = ctx.Queue()
    task = progress.add_task(label, total=count)
    step = max(1, count // 100)
    with ExitStack() as stack:
        sink = _endpoint(stack, ctx, channel, 1 << 22)
        proc = ctx.Process(target=_consumer, args=(sink, count, size, result))
        proc.start()
        send = _sender(sink)
        for seq in range(count):
            send(_message(seq, bodies), timeout=TIMEOUT_S)
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
    with ExitStack() as stack:
        ping, pong = _endpoint(stack, ctx, channel, 1 << 16), _endpoint(stack, ctx, channel, 1 << 16)
        proc = ctx.Process(target=_echo, args=(ping, pong, rounds))
        proc.start()
        send, recv = _sender(ping), _receiver(pong)
        for _ in range(rounds):
            t0 = time.perf_counter()
            send(msg, timeout=TIMEOUT_S)
            if recv(timeout=TIMEOUT_S) != msg:
                raise RuntimeError("echo mismatch")
            times.append(time.perf_counter() - t0)
        proc.join(TIMEOUT_S)
    return times[rounds // 10 :]  # drop the warm-up


def _objects(progress: Progress, label: str, shm: bool, count: int, producers: int = 2, consumers: int = 2) -> tuple[float, int]:
    """Objects from `producers` processes to `consumers` processes; returns
    (seconds, errors): out-of-order, duplicated or missing objects."""
    ctx = mp.get_context("spawn")
    q: Any = Queue() if shm else ctx.Queue()
    result, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    task = progress.add_task(label, total=producers + consumers)
    per = count // producers
    pros = [ctx.Process(target=_object_producer, args=(q, i, per, ready, go)) for i in range(producers)]
    cons = [ctx.Process(target=_object_consumer, args=(q, result)) for _ in range(consumers)]
    for p in pros + cons:
        p.start()
    for _ in pros:
        ready.get(timeout=TIMEOUT_S)  # time the transfer, not the process start-up
    t0 = time.perf_counter()
    go.set()
    for p in pros:
        p.join(TIMEOUT_S)
        progress.advance(task)
    for _ in cons:
        q.put(None)
    outcomes = [result.get(timeout=TIMEOUT_S) for _ in cons]
    elapsed = time.perf_counter() - t0
    for p in cons:
        p.join(TIMEOUT_S)
        progress.advance(task)
    got = sum(o[0] for o in outcomes)
    bad = sum(o[1] for o in outcomes) + abs(got - per * producers)
    q.close()  # (shmring: the last user to leave removes the queue)
    return elapsed, bad


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
        obj_count = max(2, messages // 2)
        sq_time, sq_bad = _objects(progress, "shmring.Queue (objects, 2 x 2)", True, obj_count)
        mq_time, mq_bad = _objects(progress, "multiprocessing.Queue (objects, 2 x 2)", False, obj_count)

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
    per = obj_count // 2 * 2
    objects = Table(title=f"{per:,} objects (id, seq, 40 B) from 2 producer processes to 2 consumers, every one checked")
    for column in ("", "shmring.Queue", "multiprocessing.Queue", "shmring speed-up"):
        objects.add_column(column, justify="right")
    objects.add_row("objects/s", f"{per / sq_time:,.0f}", f"{per / mq_time:,.0f}", f"{mq_time / sq_time:.1f}x")
    console.print(objects)
    ok = ch_bad == 0 and q_bad == 0 and sq_bad == 0 and mq_bad == 0
    console.print(
        "every message checked: "
        + (
            "[green]OK[/green]"
            if ok
            else f"[red]{ch_bad + sq_bad} bad on shmring, {q_bad + mq_bad} bad on multiprocessing[/red]"
        )
    )
    return 0 if ok else 1


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
