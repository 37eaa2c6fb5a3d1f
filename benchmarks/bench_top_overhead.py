#!/usr/bin/env python3
"""What `shmring top` costs the processes it watches: a Channel's throughput
(one send/recv call per message, 64 B and 1 KiB, a producer and a consumer
process, every message checked by the consumer) alone, and while `shmring
top` runs beside it in a pseudo-terminal at its normal 1 s interval and at a
stressed 0.1 s one.

The producer is pinned to CPU 0 and the consumer to CPU 1 (--no-pin: not):
on a machine of 2 CPUs, any third process that wakes up (`top`, or anything
else) may otherwise get the scheduler to put both on one CPU for a while,
which divides the throughput by up to ten and says nothing of what reading
the shared memory costs.  `top` itself is not pinned.

Both `top` processes start first and are stopped (SIGSTOP) at once: a run
"alone" has every `top` stopped, a run "top, 1 s" lets that one run
(SIGCONT) for its length.  So the three conditions alternate back to back
(their order rotating), on the same pair of workers and the same channel;
each reports the median of its runs and its ratio to the median alone, the
median of its ratios to the run alone of the same round (neighbours in time:
this machine's slow spells last seconds), and its best run.  `top` watches every object of the user,
as a person would run it, and its own CPU use is reported beside.

    .venv/bin/python benchmarks/bench_top_overhead.py            # 11 runs per condition, ~3 min
    .venv/bin/python benchmarks/bench_top_overhead.py --quick    # 3 runs, smoke test
"""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
import platform
import signal
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
OTHERS_MAX = 0.05  # a run during which other processes took more of the machine is redone...
MAX_REDO = 8  # ...this many times at most (then it counts as it is, and the report says so)


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

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        os.write(self.master, b"q")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        self._drain.join(5)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class OthersMeter:
    """The share of the machine that processes other than ``pids`` used
    meanwhile (this is a shared machine: a run they disturbed is redone)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.t0, self.busy0, self.ours0 = time.monotonic(), machine_busy_seconds(), self._ours()

    def _ours(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def share(self) -> float:
        wall = time.monotonic() - self.t0
        other = (machine_busy_seconds() - self.busy0) - (self._ours() - self.ours0)
        return max(0.0, other) / (wall * (os.cpu_count() or 1))


def measure(pair: Pair, tops: list[Top], top: Top | None, count: int) -> dict[str, float]:
    """One run with ``top`` running (None: with every top stopped): messages/s,
    top's share of a core meanwhile, and the share of the machine other processes took."""
    meter = OthersMeter([os.getpid(), *(p.pid for p in pair.procs), *(t.proc.pid for t in tops)])
    if top is None:
        return {"msgs_per_s": pair.run(count), "top_cpu_pct": 0.0, "others": meter.share()}
    top.resume()
    try:
        c0, t0 = cpu_seconds(top.proc.pid), time.monotonic()
        rate = pair.run(count)
        cpu = (cpu_seconds(top.proc.pid) - c0) / (time.monotonic() - t0) * 100
    finally:
        top.pause()
    return {"msgs_per_s": rate, "top_cpu_pct": cpu, "others": meter.share()}


def undisturbed(pair: Pair, tops: list[Top], top: Top | None, count: int, redone: list[int]) -> dict[str, float]:
    """A run that other processes did not disturb (they took under OTHERS_MAX
    of the machine), after at most MAX_REDO tries; each redo is counted in ``redone``."""
    for _ in range(MAX_REDO):
        result = measure(pair, tops, top, count)
        if result["others"] < OTHERS_MAX:
            return result
        redone[0] += 1
        time.sleep(1.0)
    return result


def bench_size(opts: Any, size: int, redone: list[int]) -> dict[str, list[dict[str, float]]]:
    import shmring

    ctx = mp.get_context("spawn")
    transport = T.ShmringTransport("adaptive")
    with shmring.Channel.create(None, capacity=1 << 20, wait="adaptive") as ch, \
            Pair(ctx, opts, transport, ch.name, size) as pair:
        if opts.pin:
            for cpu, proc in enumerate(pair.procs):
                os.sched_setaffinity(proc.pid, {cpu % (os.cpu_count() or 1)})
        rate = statistics.median(pair.run(20_000) for _ in range(3))  # warm-up and calibration
        count = max(10_000, int(rate * TARGET_S))
        runs: dict[str, list[dict[str, float]]] = {c: [] for c in CONDITIONS}
        names = list(CONDITIONS)
        tops = {c: Top(interval) for c, interval in CONDITIONS.items() if interval is not None}
        try:
            for top in tops.values():
                top.wait_drawn(2)  # started, and past its first refresh: its start-up is not what is measured
                top.pause()
            for rep in range(opts.repeat):
                order = names[rep % len(names):] + names[:rep % len(names)]  # rotate: no condition always first
                for condition in order:
                    runs[condition].append(undisturbed(pair, list(tops.values()), tops.get(condition), count, redone))
                log(f"{size_label(size)} run {rep + 1}/{opts.repeat}: " + ", ".join(
                    f"{c} {fmt_rate(runs[c][-1]['msgs_per_s'])} (others {runs[c][-1]['others']:.0%})" for c in names))
        finally:
            for top in tops.values():
                top.stop()
        return runs


def report(results: dict[int, dict[str, list[dict[str, float]]]], meta: dict[str, Any]) -> str:
    meta["worst_others"] = max(r["others"] for runs in results.values() for these in runs.values() for r in these)
    rows = []
    for size, runs in results.items():
        alone = [r["msgs_per_s"] for r in runs["alone"]]
        for condition, these in runs.items():
            rates = [r["msgs_per_s"] for r in these]
            med = statistics.median(rates)
            spread = (max(rates) - min(rates)) / med * 100
            top_cpu = statistics.median(r["top_cpu_pct"] for r in these)
            paired = statistics.median(r / a for r, a in zip(rates, alone))
            rows.append([size_label(size), condition, fmt_rate(med), f"{med / statistics.median(alone):.3f}",
                         f"{paired:.3f}", fmt_rate(max(rates)), f"{max(rates) / max(alone):.3f}", f"{spread:.0f}%",
                         f"{top_cpu:.1f}%" if condition != "alone" else "-"])
    host = meta["host"]
    head = (f"Channel throughput with and without `shmring top` ({host['cpus']} CPUs, {host['cpu_model']}, "
            f"Python {platform.python_version()}, median of {meta['repeat']} alternated runs each; producer and consumer "
            f"{'pinned to CPUs 0 and 1' if meta['pin'] else 'not pinned'}).  Load average "
            f"{meta['load_start']} at the start, {meta['load_end']} at the end; other processes took "
            f"{meta['other_pct']:.0f}% of the machine over the whole run; {meta['redone']} runs redone because "
            f"they took {OTHERS_MAX:.0%} of it or more meanwhile; the most they took during a kept run: "
            f"{meta['worst_others']:.1%}.")
    table = md_table(["size", "condition", "msgs/s (median)", "ratio to alone", "paired ratio", "best run",
                      "ratio to alone",
                      "spread", "top's CPU (% of a core)"], rows)
    return head + "\n\n" + table


def main() -> int:
    ap = bench_parser(__doc__, "3 runs per condition")
    ap.add_argument("--repeat", type=int, default=0, help="runs per condition (default 11, --quick 3)")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="leave the producer and the consumer unpinned (by default: CPU 0 and CPU 1)")
    ap.add_argument("--run-timeout", type=float, default=60.0, help="seconds before a stuck run fails")
    opts = ap.parse_args()
    opts.repeat = opts.repeat or (3 if opts.quick else 11)
    meta: dict[str, Any] = {**run_context("spawn"), "repeat": opts.repeat, "pin": opts.pin,
                            "load_start": loadavg_1min()}
    load = MachineLoad()
    try:
        redone = [0]
        results = {size: bench_size(opts, size, redone) for size in SIZES}
    except WorkerError as e:
        log(f"FAILED: {e}")
        return 1
    meta["load_end"] = loadavg_1min()
    meta["other_pct"] = load.summary()["other_processes_pct_of_machine"]
    meta["redone"] = redone[0]
    print(report(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
