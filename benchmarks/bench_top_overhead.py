#!/usr/bin/env python3
"""What `shmring top` costs the processes it watches: a Channel's throughput
(one send/recv call per message, 64 B and 1 KiB, a producer and a consumer
process, every message checked by the consumer) alone, and while `shmring
top` runs beside it in a pseudo-terminal at its normal 1 s interval and at a
stressed 0.1 s one.

The three conditions alternate run by run (their order rotating), on the same
pair of workers and the same channel; each reports the median of its runs
and its ratio to the median alone.  `top` watches every object of the user,
as a person would run it, and its own CPU use is reported beside.

    .venv/bin/python benchmarks/bench_top_overhead.py            # 7 runs per condition, ~2 min
    .venv/bin/python benchmarks/bench_top_overhead.py --quick    # 3 runs, smoke test
"""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import platform
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _transports as T  # noqa: E402
import _workloads as W  # noqa: E402
from _harness import (  # noqa: E402
    KiB, MachineLoad, WorkerError, WorkerGroup, bench_parser, fmt_rate, loadavg_1min, log, md_table, run_context,
    size_label,
)

SIZES = [64, KiB]
CONDITIONS = {"alone": None, "top, 1 s": 1.0, "top, 0.1 s": 0.1}  # condition -> top's interval
TARGET_S = 1.0  # length of one measured run


class Pair(WorkerGroup):
    """A producer ("tx") and a consumer ("rx") process on one shmring channel."""

    def __init__(self, ctx: Any, opts: Any, transport: T.Transport, spec: str, size: int) -> None:
        super().__init__(ctx, opts, ["the tx worker", "the rx worker"])
        self.transport, self.spec, self.size = transport, spec, size
        self.run_no = 0

    def __enter__(self) -> Pair:
        try:
            for role in ("tx", "rx"):
                self._spawn(W.worker_main, (self.transport, role, self.spec, self.size), f"bench-top-{role}",
                            {"connect_timeout": 30.0}, conn_arg="ctrl")
            for phase in ("phase2", "connect", None):
                for i in (0, 1):
                    self._expect(i, "ok", 90)
                if phase:
                    for i in (0, 1):
                        self._send(i, (phase,))
        except BaseException:
            self.close()
            raise
        return self

    def run(self, count: int) -> float:
        """Stream ``count`` messages; messages per second, from the producer's start to the consumer's end."""
        self._send(1, ("run", "stream", count, self.run_no, None))
        self._expect(1, "armed", 30)
        self._send(0, ("run", "stream", count, self.run_no, None))
        self._expect(0, "armed", 30)
        rx = self._expect(1, "done", self.opts.run_timeout)[1]
        self._send(0, ("fin",))
        tx = self._expect(0, "done", 30)[1]
        self.run_no += 1
        return count / (rx["t1"] - tx["t0"])


class Top:
    """`shmring top --interval S` in a pseudo-terminal (200x50) whose output a thread drains."""

    def __init__(self, interval: float) -> None:
        self.master, terminal = os.openpty()
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color"}
        self.proc = subprocess.Popen([sys.executable, "-m", "shmring", "top", "--interval", str(interval)],
                                     stdin=terminal, stdout=terminal, stderr=terminal, env=env, start_new_session=True)
        os.close(terminal)
        self.frames = 0
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.frames += data.count(b"shmring top ")

    def wait_drawn(self, frames: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.frames < frames:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"shmring top drew {self.frames} screens (exit status {self.proc.poll()})")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        os.write(self.master, b"q")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        self._drain.join(5)


def measure(pair: Pair, interval: float | None, count: int) -> dict[str, float]:
    """One run under one condition: messages/s, and top's share of a core meanwhile."""
    if interval is None:
        return {"msgs_per_s": pair.run(count), "top_cpu_pct": 0.0}
    top = Top(interval)
    try:
        top.wait_drawn(2)  # started, and past its first refresh (its start-up is not what is measured)
        c0, t0 = top.cpu_seconds(), time.monotonic()
        rate = pair.run(count)
        cpu = (top.cpu_seconds() - c0) / (time.monotonic() - t0) * 100
    finally:
        top.stop()
    return {"msgs_per_s": rate, "top_cpu_pct": cpu}


def bench_size(opts: Any, size: int) -> dict[str, list[dict[str, float]]]:
    import shmring

    ctx = mp.get_context("spawn")
    transport = T.ShmringTransport("adaptive")
    with shmring.Channel.create(None, capacity=1 << 20, wait="adaptive") as ch, \
            Pair(ctx, opts, transport, ch.name, size) as pair:
        rate = statistics.median(pair.run(20_000) for _ in range(3))  # warm-up and calibration
        count = max(10_000, int(rate * TARGET_S))
        runs: dict[str, list[dict[str, float]]] = {c: [] for c in CONDITIONS}
        names = list(CONDITIONS)
        for rep in range(opts.repeat):
            order = names[rep % len(names):] + names[:rep % len(names)]  # rotate: no condition always first
            for condition in order:
                runs[condition].append(measure(pair, CONDITIONS[condition], count))
            log(f"{size_label(size)} run {rep + 1}/{opts.repeat}: " + ", ".join(
                f"{c} {fmt_rate(runs[c][-1]['msgs_per_s'])}" for c in names))
        return runs


def report(results: dict[int, dict[str, list[dict[str, float]]]], meta: dict[str, Any]) -> str:
    rows = []
    for size, runs in results.items():
        alone = statistics.median(r["msgs_per_s"] for r in runs["alone"])
        for condition, these in runs.items():
            rates = [r["msgs_per_s"] for r in these]
            med = statistics.median(rates)
            spread = (max(rates) - min(rates)) / med * 100
            top_cpu = statistics.median(r["top_cpu_pct"] for r in these)
            rows.append([size_label(size), condition, fmt_rate(med), f"{med / alone:.3f}", f"{spread:.0f}%",
                         f"{top_cpu:.1f}%" if condition != "alone" else "-"])
    host = meta["host"]
    head = (f"Channel throughput with and without `shmring top` ({host['cpus']} CPUs, {host['cpu_model']}, "
            f"Python {platform.python_version()}, median of {meta['repeat']} alternated runs each; "
            f"load average {meta['load_start']} at the start, {meta['load_end']} at the end; "
            f"other processes {meta['other_pct']:.0f}% of the machine)")
    table = md_table(["size", "condition", "msgs/s", "ratio to alone", "spread", "top's CPU (% of a core)"], rows)
    return head + "\n\n" + table


def main() -> int:
    ap = bench_parser(__doc__, "3 runs per condition")
    ap.add_argument("--repeat", type=int, default=0, help="runs per condition (default 7, --quick 3)")
    ap.add_argument("--run-timeout", type=float, default=60.0, help="seconds before a stuck run fails")
    opts = ap.parse_args()
    opts.repeat = opts.repeat or (3 if opts.quick else 7)
    meta: dict[str, Any] = {**run_context("spawn"), "repeat": opts.repeat, "load_start": loadavg_1min()}
    load = MachineLoad()
    try:
        results = {size: bench_size(opts, size) for size in SIZES}
    except WorkerError as e:
        log(f"FAILED: {e}")
        return 1
    meta["load_end"] = loadavg_1min()
    meta["other_pct"] = load.summary()["other_processes_pct_of_machine"]
    print(report(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
