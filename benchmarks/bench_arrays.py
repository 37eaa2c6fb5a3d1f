#!/usr/bin/env python3
"""Benchmark numpy frames from a producer process to a consumer process, side by side.

Transports (--transports; an optional peer that does not import is skipped
with a note):

  send_array      shmring Channel send_array / recv_array: one copy each way
  reserve_array   shmring Channel reserve_array / peek_array: the producer
                  fills the frame in the ring, the consumer checks it there
  shmring.Queue   shmring Queue put(array) / get(): whatever the Queue does
                  with an ndarray (pickled today)
  mp.Queue        multiprocessing.Queue put(array) / get() (pickled, pipe)
  shared_memory   a hand-written ring in a multiprocessing.shared_memory block:
                  DEPTH frame slots, two counters, two multiprocessing
                  Semaphores (free and filled slots); np.copyto in and out
  pyzmq           PUSH/PULL over ipc://, send(array, copy=False, track=True),
                  recv(copy=False) and np.frombuffer of the frame's buffer
  iceoryx2        publish/subscribe, a loaned sample filled in place through
                  an ndarray, the received sample checked in place

Method: for each frame size (1, 8 and 64 MiB), dtype (uint8, float32) and
transport, a producer and a consumer process (multiprocessing's "spawn"
context: fresh interpreters) move frames, C-ordered arrays of shape
(size / itemsize / 1024, 1024).  Every producer writes every frame the same
way: all its elements set to seq % 251 (--fill stamps: only the sampled
ones), then the frame number seq in its first and last 8 bytes.  Every
consumer checks every frame the same way: shape, dtype, the frame number at
both ends, and 64 elements sampled across the frame at offsets that move
with seq.  Frame numbers continue from run to run, so that a frame lost,
repeated or left over shows; a failed check fails the run (MISMATCH, exit
status 1).  Copying producers fill one of 8 arrays of their own in turn
(pyzmq waits for its MessageTracker before filling one again), in-place
producers fill the frame in shared memory.

Frames in flight: 4 where it can be set (Queue maxsize, slots, iceoryx2's
subscriber buffer, pyzmq's high-water marks 2 + 2); a shmring Channel's
ring is a power of two, the smallest one holding 4 frames (it holds up to 7).

Timing: from the producer's start to the consumer's last frame checked
(both armed first); a first run, unmeasured, warms up and sizes the runs to
last --target-seconds each (at least 12 frames); frames/s and GB/s are the
median of --runs runs.  Ratios (x NAME): frames/s over NAME's for the same
size and dtype.

    .venv/bin/python benchmarks/bench_arrays.py              # everything, ~3 min on 2 cores
    .venv/bin/python benchmarks/bench_arrays.py --quick      # smoke test, ~1 min
    .venv/bin/python benchmarks/bench_arrays.py --sizes 8MiB --dtypes uint8 --transports shmring,mp.Queue
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from contextlib import ExitStack
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _array_workers import DEPTH, POOL, SHM_HEADER, FrameFormat, Spec, worker_main  # noqa: E402
from _harness import (  # noqa: E402
    KiB, MachineLoad, MiB, WorkerError, WorkerGroup, add_output_arguments, bench_parser, chosen, clean_up_run,
    exit_status, fmt_num, fmt_rate, fmt_ratio, last_line, load_line, log, md_table, quick_defaults, ratio_cells,
    record_failure, results_table, run_line, run_measured, run_meta, run_warnings, shmring_build,
    shmring_source_note, sigterm_as_interrupt, sizes, size_label, skipped_and_failures, spread_pct, warn_if_rebuilt,
    write_outputs,
)

START_METHOD = "spawn"
SIZES = [MiB, 8 * MiB, 64 * MiB]
DTYPES = ["uint8", "float32"]
ROW = 1024  # elements in the last dimension of a frame
MIN_FRAMES = 12  # frames in a measured run, at least (three times what is in flight)
WARMUP_BYTES = 128 * MiB  # the first (unmeasured) run moves about this much, at least 2 x DEPTH frames
MAX_FRAMES = 200_000
DEFAULT_MARKDOWN = os.path.join(HERE, "results", "arrays.md")

# key (for --transports), row label, the module it needs
TRANSPORTS = [
    ("send_array", "shmring send_array/recv_array", "shmring"),
    ("reserve_array", "shmring reserve_array/peek_array (in place)", "shmring"),
    ("shmring.Queue", "shmring Queue put/get", "shmring"),
    ("mp.Queue", "multiprocessing.Queue put/get", None),
    ("shared_memory", "mp.shared_memory ring, hand-written", None),
    ("pyzmq", "pyzmq PUSH/PULL copy=False", "zmq"),
    ("iceoryx2", "iceoryx2 loan/receive (in place)", "iceoryx2"),
]
LABEL = {key: label for key, label, _ in TRANSPORTS}
FAMILIES = {"shmring": ["send_array", "reserve_array", "shmring.Queue"]}
BASELINES = ["pyzmq", "iceoryx2", "mp.Queue"]
# The targets: (transport, baseline, ratio at least, only at this size or None for every size)
TARGETS = [
    ("reserve_array", "iceoryx2", 1.2, None),
    ("send_array", "pyzmq", 2.0, None),
    ("shmring.Queue", "mp.Queue", 5.0, 8 * MiB),
]


def frame_shape(size: int, itemsize: int) -> tuple[int, ...]:
    n = size // itemsize
    return (n // ROW, ROW) if n % ROW == 0 else (n,)


def cell_label(size: int, dtype: str) -> str:
    return f"{size_label(size)} {dtype}"


# ---------------------------------------------------------------------------
# parent side


class Pair(WorkerGroup):
    """The producer and the consumer process of one cell (transport, size,
    dtype), kept for all its runs.  Leaving the ``with`` block stops them
    ("stop", join, SIGTERM, SIGKILL)."""

    def __init__(self, bench: Bench, spec: Spec, label: str) -> None:
        super().__init__(bench.ctx, bench.opts, ["the producer", "the consumer"])
        self.spec, self.label = spec, label
        self.killed = False

    def __enter__(self) -> Pair:
        try:
            for role in ("producer", "consumer"):
                self._spawn(worker_main, (self.spec, role), f"bench-arrays-{self.spec.transport}-{role}")
            for i in (0, 1):
                self._expect(i, "ready", 120.0)
            for i in (0, 1):  # the producer first: iceoryx2 drops samples for subscribers older than it
                self._send(i, ("open",))
                self._expect(i, "opened", 60.0)
            self._send(0, ("connect",))
            self._expect(0, "connected", 90.0)
        except BaseException:
            self.close()
            raise
        return self

    def run(self, count: int, base: int) -> dict[str, Any]:
        return self._guard(lambda: self._run(count, base))

    def _run(self, count: int, base: int) -> dict[str, Any]:
        self._send(1, ("run", count, base))
        self._expect(1, "armed", 30.0)
        self._send(0, ("run", count, base))
        self._expect(0, "armed", 30.0)
        rx = self._expect(1, "done", self.opts.run_timeout)[1]
        self._send(0, ("fin",))
        tx = self._expect(0, "done", 30.0)[1]
        elapsed = rx["t1"] - tx["t0"]
        return {
            "count": count,
            "elapsed_s": elapsed,
            "frames_per_s": count / elapsed,
            "producer_cpu_us_per_frame": tx["cpu"] / count * 1e6,
            "consumer_cpu_us_per_frame": rx["cpu"] / count * 1e6,
            # share of a core over each process's own window
            "producer_cpu_pct": tx["cpu"] / (tx["t_cpu"] - tx["t0"]) * 100,
            "consumer_cpu_pct": rx["cpu"] / (rx["t1"] - rx["t0"]) * 100,
        }

    def _diagnose_hang(self, results: dict[int, dict[str, Any]]) -> None:
        waiting = self._waiting(results)
        log(f"!!! HANG: {self.label}: no result after {self.opts.run_timeout:g} s from {', '.join(waiting)}. "
            "Stacks of the workers follow:")
        self._dump_stacks(results)
        raise WorkerError(f"no result from {', '.join(waiting)} after {self.opts.run_timeout:g} s", "HANG")

    def close(self) -> None:
        if self._stop_workers():
            self.killed = True


def channel_capacity(fmt: FrameFormat) -> tuple[int, int]:
    """(ring bytes, frames it holds) of the smallest shmring channel ring
    (a power of two) that holds DEPTH array messages of this format."""
    import numpy as np
    from shmring import arrays

    header = len(arrays.pack_header(np.dtype(fmt.dtype), fmt.shape, "C"))
    record = 8 + (header + fmt.nbytes + 7) // 8 * 8  # record header, 8-byte aligned body
    cap = 1 << 16
    while cap < DEPTH * record:
        cap <<= 1
    return cap, cap // record


class Bench:
    def __init__(self, opts: Any) -> None:
        import multiprocessing as mp

        self.opts = opts
        self.ctx: Any = mp.get_context(START_METHOD)
        self.tmpdir = tempfile.mkdtemp(prefix="bench-arrays-")
        self.results: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.cell_load: dict[str, float] = {}
        self.in_flight: dict[str, list[str]] = {}  # transport -> what it holds in flight (per frame size if it varies)
        self.shm_names: list[str] = []
        self.iceoryx2_killed = False
        self._n = 0

    def cleanup(self) -> list[str]:
        """Last line of defence: nothing of this run may stay behind."""
        return clean_up_run(self.shm_names, self.tmpdir, self.iceoryx2_killed)

    def _holds(self, key: str, what: str) -> None:
        if what not in self.in_flight.setdefault(key, []):
            self.in_flight[key].append(what)

    def _unique(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}-{os.getpid()}-{self._n}"

    def handles(self, key: str, fmt: FrameFormat, stack: ExitStack) -> dict[str, Any]:
        """Make what the two workers of ``key`` share; ``stack`` lets go of it."""
        if key in ("send_array", "reserve_array"):
            import shmring

            cap, holds = channel_capacity(fmt)
            ch = stack.enter_context(shmring.Channel.create(None, capacity=cap))
            self.shm_names.append(ch.name)
            self._holds(key, f"{size_label(fmt.nbytes)} frames: ring of {size_label(cap)}, up to {holds} frames")
            return {"channel": ch.name}
        if key == "shmring.Queue":
            import shmring

            q = shmring.Queue(DEPTH, max_size_bytes=DEPTH * (fmt.nbytes + 64 * KiB))
            stack.callback(q.close)
            self.shm_names.append(q.name)
            self._holds(key, f"maxsize {DEPTH}, max_size_bytes {DEPTH} x (frame + 64 KiB)")
            return {"queue": q}
        if key == "mp.Queue":
            q = self.ctx.Queue(DEPTH)
            stack.callback(q.close)
            self._holds(key, f"maxsize {DEPTH}")
            return {"queue": q}
        if key == "shared_memory":
            from multiprocessing import shared_memory

            shm = shared_memory.SharedMemory(create=True, size=SHM_HEADER + DEPTH * fmt.nbytes)
            self.shm_names.append(shm.name)
            stack.callback(shm.close)
            stack.callback(shm.unlink)
            self._holds(key, f"{DEPTH} slots")
            return {"shm": shm.name, "free": self.ctx.Semaphore(DEPTH), "filled": self.ctx.Semaphore(0)}
        if key == "pyzmq":
            self._holds(key, f"SNDHWM {DEPTH // 2} + RCVHWM {DEPTH // 2} (and what the socket buffers hold)")
            return {"addr": f"ipc://{self.tmpdir}/{self._unique('zmq')}.sock", "hwm": DEPTH // 2}
        if key == "iceoryx2":
            self._holds(key, f"subscriber buffer {DEPTH}")
            return {"service": f"shmring-bench-arrays/{self._unique('iox2')}"}
        raise ValueError(key)

    def run(self) -> None:
        for size in self.opts.sizes:
            for dtype in self.opts.dtypes:
                load = MachineLoad()
                for key in self.opts.transports:
                    r = self.measure(key, size, dtype)
                    self.results.append(r)
                self.cell_load[cell_label(size, dtype)] = load.summary()["other_processes_pct_of_machine"]

    def measure(self, key: str, size: int, dtype: str) -> dict[str, Any]:
        import numpy as np

        shape = frame_shape(size, np.dtype(dtype).itemsize)
        where = f"{LABEL[key]}, {cell_label(size, dtype)}"
        cell = {"transport": key, "label": LABEL[key], "size": size, "dtype": dtype, "shape": list(shape)}
        pair = None
        try:
            with ExitStack() as stack:
                fmt = FrameFormat(shape, dtype, self.opts.fill)
                spec = Spec(key, shape, dtype, self.opts.fill, self.handles(key, fmt, stack))
                pair = stack.enter_context(Pair(self, spec, where))
                result = self._runs(pair, size)
        except Exception as e:  # any failure fails this cell only
            return {**cell, **record_failure(where, e, self.errors, transport=key, size=size, dtype=dtype)}
        finally:
            if pair is not None and pair.killed and key == "iceoryx2":
                self.iceoryx2_killed = True
        out = {**cell, **result}
        log(f"[{cell_label(size, dtype)}] {LABEL[key]}: {fmt_rate(out['frames_per_s'])} frames/s, "
            f"{out['gb_per_s']:.2f} GB/s (frames/run {out['count']}, spread {out['spread_pct']:.0f}%)")
        return out

    def _runs(self, pair: Pair, size: int) -> dict[str, Any]:
        """The unmeasured first runs (warm-up, and the count that lasts
        --target-seconds), then --runs measured runs; their medians."""
        base, count = 0, max(2 * DEPTH, min(MAX_FRAMES, WARMUP_BYTES // size))
        calibration = []
        for _ in range(3):
            r = pair.run(count, base)
            base += count
            calibration.append((count, r["elapsed_s"]))
            if r["elapsed_s"] >= 0.05:
                break
            count = min(MAX_FRAMES, count * 4)
        count = max(MIN_FRAMES, min(MAX_FRAMES, int(r["frames_per_s"] * self.opts.target_seconds)))
        runs = []
        for _ in range(self.opts.runs):
            runs.append(pair.run(count, base))
            base += count
        med = {k: statistics.median(x[k] for x in runs) for k in runs[0] if k != "count"}
        rates = [x["frames_per_s"] for x in runs]
        return {**med, "gb_per_s": med["frames_per_s"] * size / 1e9, "count": count, "spread_pct": spread_pct(rates),
                "runs": runs, "calibration": calibration}


# ---------------------------------------------------------------------------
# report


def _ok(r: dict[str, Any] | None) -> bool:
    return r is not None and not r.get("failed")


def report(bench: Bench, meta: dict[str, Any]) -> str:
    opts = bench.opts
    cells = [(s, d) for s in opts.sizes for d in opts.dtypes]
    by = {(r["transport"], r["size"], r["dtype"]): r for r in bench.results}
    P = [f"# numpy frames, producer -> consumer ({meta['host']['cpus']} CPUs, Python {meta['python']}, "
         f"start method {START_METHOD}, median of {opts.runs} run{'s' if opts.runs > 1 else ''})\n"]
    P.append(run_line(meta))
    fill = ("every element written" if opts.fill == "whole" else
            "only the 64 checked elements written")
    P.append(f"Each frame is a C-ordered array of shape (size / itemsize / {ROW}, {ROW}) made by the producer "
             f"({fill}, frame number in its first and last 8 bytes) and checked by the consumer (shape, dtype, "
             f"frame number at both ends, 64 sampled elements), the same way for every transport. Frames/s from "
             f"the producer's start to the consumer's last frame checked; GB/s = frames/s x frame bytes. "
             f"Ratios (x NAME): frames/s over NAME's for the same frame.\n")

    # summary
    P.append("## GB/s\n")
    rows = []
    for key in opts.transports:
        row = [LABEL[key]]
        for s, d in cells:
            r = by.get((key, s, d))
            row.append("" if r is None else r["failed"] if r.get("failed") else fmt_num(r["gb_per_s"]))
        rows.append(row)
    P.append(md_table(["transport"] + [cell_label(s, d) for s, d in cells], rows) + "\n")

    # the targets
    target_rows = []
    for key, baseline, at_least, only_size in TARGETS:
        if key not in opts.transports or baseline not in opts.transports:
            continue
        row = [f"{key} ÷ {baseline} ≥ {at_least:g}" + (f" at {size_label(only_size)}" if only_size else "")]
        for s, d in cells:
            a, b = by.get((key, s, d)), by.get((baseline, s, d))
            if not (_ok(a) and _ok(b)):
                row.append("–")
                continue
            ratio = a["frames_per_s"] / b["frames_per_s"]  # type: ignore[index]
            if only_size is not None and s != only_size:
                row.append(f"({fmt_ratio(ratio)})")  # for information: the target is for another size
            else:
                row.append(f"{fmt_ratio(ratio)} {'met' if ratio >= at_least else 'NOT met'}")
        target_rows.append(row)
    if target_rows:
        P.append("## The issue's targets\n")
        P.append("Frames/s of the first over the second, for the same frame (in parentheses: a size the target "
                 "does not name).\n")
        P.append(md_table(["target"] + [cell_label(s, d) for s, d in cells], target_rows) + "\n")

    # one table per frame
    names = [b for b in BASELINES if b in opts.transports]
    for s, d in cells:
        rows_here = [by[(k, s, d)] for k in opts.transports if (k, s, d) in by]
        if not rows_here:
            continue
        rates = {r["transport"]: r["frames_per_s"] for r in rows_here if _ok(r)}
        shape = tuple(rows_here[0]["shape"])
        P.append(f"## {cell_label(s, d)} (shape {shape})\n")
        P.append(results_table(
            ["transport", "frames/s", "GB/s", "producer CPU µs/frame", "consumer CPU µs/frame", "CPU % prod/cons",
             "spread", "frames/run"] + [f"x {b}" for b in names],
            rows_here,
            lambda r: [fmt_rate(r["frames_per_s"]), fmt_num(r["gb_per_s"]),
                       fmt_num(r["producer_cpu_us_per_frame"]), fmt_num(r["consumer_cpu_us_per_frame"]),
                       f"{r['producer_cpu_pct']:.0f}/{r['consumer_cpu_pct']:.0f}", f"{r['spread_pct']:.0f}%",
                       str(r["count"])] + ratio_cells(r["frames_per_s"], rates, names, True),
            name="label") + "\n")

    P.append("## Transports\n")
    notes = {
        "send_array": "one copy each way: `send_array` writes the array into the ring, `recv_array` returns a new "
                      "array copied out of it",
        "reserve_array": "`with reserve_array(shape, dtype) as a:` (zero-filled by shmring), filled in place, "
                         "`del a`; `with peek_array() as a:` checked in place, `del a`",
        "shmring.Queue": "`put(array)` / `get()`: whatever the Queue does with an ndarray",
        "mp.Queue": "`put(array)` / `get()`: pickled by its feeder thread, through a pipe",
        "shared_memory": "a hand-written SPSC ring in a `multiprocessing.shared_memory` block: two counters "
                         "(frames written, read) on their own cache lines, two `multiprocessing.Semaphore` "
                         "(free, filled slots); `np.copyto` into the slot, and out into the consumer's own array",
        "pyzmq": "`send(array, copy=False, track=True)` (an array is filled again once its tracker is done), "
                 "`recv(copy=False)`, `np.frombuffer(frame.buffer)`",
        "iceoryx2": "`loan_slice_uninit` filled through an ndarray over the sample, `send`; the received sample "
                    "checked through an ndarray over it; RetryUntilDelivered; the subscriber polls (a full core)",
    }
    P.append("\n".join(f"- {LABEL[k]}: {notes[k]}; in flight: {'; '.join(bench.in_flight.get(k, ['?']))}."
                       for k in opts.transports) + "\n")
    P.append(f"Copying producers fill one of {POOL} arrays of their own in turn; in-place ones fill the frame in "
             f"shared memory. Frames in flight: {DEPTH} where it can be set.\n")

    P += skipped_and_failures(meta["skipped"], [
        f"{e['tag']}: {LABEL[e['transport']]}, {cell_label(e['size'], e['dtype'])}: {last_line(e['error'])}"
        for e in bench.errors])
    P.append(load_line(meta, "frame", bench.cell_load))
    P += run_warnings(meta, "the polling and spinning transports suffer most; ")
    return "\n".join(P)


# ---------------------------------------------------------------------------


def select(text: str | None) -> tuple[list[str], dict[str, str]]:
    keys = [k for k, _, _ in TRANSPORTS]
    if text:
        wanted: list[str] = []
        for name in chosen("--transports", text, keys + list(FAMILIES)):
            wanted += FAMILIES.get(name, [name])
        keys = [k for k in keys if k in wanted]
    skipped: dict[str, str] = {}
    for key, _, module in TRANSPORTS:
        if key not in keys or module is None:
            continue
        try:
            __import__(module)
        except Exception as e:
            skipped[LABEL[key]] = f"import {module} failed: {type(e).__name__}: {e}"
            log(f"skipping {LABEL[key]}: {skipped[LABEL[key]]}")
    usable = [k for k in keys if LABEL[k] not in skipped]
    if not usable:
        raise SystemExit("no transport to measure")
    return usable, skipped


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out: dict[str, str] = {}
    for dist in ("shmring", "numpy", "pyzmq", "iceoryx2"):
        try:
            out[dist] = version(dist)
        except Exception:
            continue
    if "pyzmq" in out:
        try:
            import zmq

            out["pyzmq"] += f" (libzmq {zmq.zmq_version()})"
        except Exception:
            pass
    shmring_source_note(out, os.path.dirname(HERE))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__, "short runs (0.1 s), one each: a smoke test of every transport and frame (~1 min)")
    ap.add_argument("--transports", help="comma-separated, of " + ", ".join(k for k, _, _ in TRANSPORTS)
                    + " (or shmring: its three)")
    ap.add_argument("--sizes", help="frame sizes, e.g. 1MiB,8MiB (default 1MiB,8MiB,64MiB)")
    ap.add_argument("--dtypes", help="comma-separated numpy dtypes (default uint8,float32)")
    ap.add_argument("--runs", type=int, help="measured runs per cell; the median is reported (default 3)")
    ap.add_argument("--target-seconds", type=float, help="length of each measured run (default 0.5; --quick 0.1)")
    ap.add_argument("--fill", choices=["whole", "stamps"], default="whole",
                    help="what producers write: every element (default), or only the checked ones")
    add_output_arguments(ap, 120.0, "declared a HANG", DEFAULT_MARKDOWN)
    opts = ap.parse_args(argv)

    quick_defaults(opts, runs=(1, 3), target_seconds=(0.1, 0.5))
    # No transport uses BLAS: keep numpy's thread pool from starting threads in
    # every worker (spawned workers inherit this environment).
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    opts.sizes = sizes("--sizes", opts.sizes, SIZES)
    opts.dtypes = [d.strip() for d in opts.dtypes.split(",") if d.strip()] if opts.dtypes else list(DTYPES)
    if opts.runs < 1 or opts.target_seconds <= 0:
        raise SystemExit("--runs and --target-seconds must be positive")
    import numpy as np

    for d in opts.dtypes:
        try:
            itemsize = np.dtype(d).itemsize
        except TypeError:
            raise SystemExit(f"--dtypes: numpy does not know {d!r}") from None
        for s in opts.sizes:
            if s % itemsize or s < 64 * KiB:
                raise SystemExit(f"--sizes: frames of at least 64 KiB, a multiple of {d}'s {itemsize} bytes")

    sigterm_as_interrupt()  # SIGTERM ends the run like ^C: workers stopped, what was measured reported

    opts.transports, skipped = select(opts.transports)
    meta = run_meta(START_METHOD, opts, versions(), skipped, warnings=[])
    build = shmring_build()
    bench = Bench(opts)
    interrupted = run_measured(bench.run, meta, bench.cleanup)
    warn_if_rebuilt(build, meta, "cells")

    write_outputs(report(bench, meta), opts.markdown, opts.json,
                  {"meta": meta, "results": bench.results, "errors": bench.errors, "in_flight": bench.in_flight,
                   "cell_load_other_pct": bench.cell_load})
    return exit_status(meta, bench.errors, interrupted, "cell(s) FAILED", opts.markdown)


if __name__ == "__main__":
    sys.exit(main())
