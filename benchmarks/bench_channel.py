#!/usr/bin/env python3
"""Benchmark shmring's Channel against its peers, side by side, in one run.

Every measurement uses two real processes started with multiprocessing's
"spawn" context (each child starts from a fresh interpreter: no state of the
parent, no zmq context or iceoryx2 node, is inherited; shmring channels are
attached by name).  Every message is checked by the receiver, which counts
them; a mismatch fails the run (exit status 1).

Workloads:
  1. throughput   one send/recv call per message; 8 B, 64 B, 1 KiB, 64 KiB, 1 MiB
  2. batch        64 B messages in batches of 64 (send_many/recv_many, put_many/get_many,
                  pyzmq send_multipart/recv_multipart)
  3. zerocopy     1 MiB messages written and read in place (shmring reserve/peek,
                  iceoryx2 loan/receive); sequence number in the first and last 8 bytes
  3b. large       64 KiB and 1 MiB messages copied in: send + recv, recv_into, peek,
                  from hot and cold sources, against memcpy in the same run (_large.py)
  4. pingpong     64 B round trips: p50/p99/p99.9 (plus C futex and C spin floors)
  5. idle         CPU of a shmring reader blocked in recv ("adaptive", "block")

    .venv/bin/python benchmarks/bench_channel.py            # everything, ~3-5 min on 2 cores
    .venv/bin/python benchmarks/bench_channel.py --quick    # smoke test, ~30-60 s
    .venv/bin/python benchmarks/bench_channel.py --only pyzmq,mp.Pipe --workloads throughput
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _large as L  # noqa: E402
import _transports as T  # noqa: E402  (light: libraries are imported lazily)
import _workloads as W  # noqa: E402
from _harness import (  # noqa: E402
    KiB, MiB, WorkerError, WorkerGroup, add_output_arguments, bench_parser, chosen, clean_up_run, exit_status, fmt_num,
    fmt_rate, last_line, log, machine_load_text, md_table, percentiles, quick_defaults, ratio_cells, results_table,
    run_measured, run_meta, run_warnings, sigterm_as_interrupt, size_label, skipped_and_failures, spread_pct,
    write_outputs,
)

SIZES = [8, 64, KiB, 64 * KiB, MiB]
WORKLOADS = ["throughput", "batch", "zerocopy", "large", "pingpong", "idle"]
START_METHOD = "spawn"
MAX_COUNT = 50_000_000

BASELINES = {
    "throughput": ["mp.Queue", "pyzmq", "faster-fifo", "iceoryx2"],
    "batch": ["faster-fifo", "pyzmq"],
    "zerocopy": ["iceoryx2"],
    "pingpong": ["mp.Queue", "pyzmq", "faster-fifo", "iceoryx2", "C futex", "C futex, sleeping peer"],
}
UNSUPPORTED = {
    "batch": "no batch API",
    "zerocopy": "no in-place write/read API",
}
IDLE_STRATEGIES = ("shmring-adaptive", "shmring-block")
ONE_WAY_KINDS = {"throughput": "stream", "batch": "batch", "zerocopy": "zc"}  # workload -> kind of run (_workloads.py)


def parse_size(s: str) -> int:
    s = s.strip().upper().replace(" ", "")
    for suffix, mul in (("KIB", KiB), ("MIB", MiB), ("K", KiB), ("M", MiB), ("B", 1)):
        if s.endswith(suffix):
            return int(float(s[: -len(suffix)]) * mul)
    return int(s)


# ---------------------------------------------------------------------------
# worker processes


class Group(WorkerGroup):
    """The child processes of one measurement (one per role: "tx"/"rx",
    "a"/"b" or "idle") and their control pipes.  Leaving the `with` block
    stops them: "stop", then join with a timeout, then SIGTERM, then SIGKILL;
    nothing outlives the measurement."""

    def __init__(self, ctx: Any, transport: T.Transport, roles: dict[str, Any], size: int, opts: Any,
                 distinct: int | None = None) -> None:
        super().__init__(ctx, opts, [f"the {role} worker" for role in roles])
        self.transport, self.specs, self.size = transport, roles, size
        self.roles = list(roles)
        self.killed = False
        self.distinct = opts.distinct if distinct is None else distinct
        self.run_no = 0  # runs so far: each run numbers its messages from its own base

    def __enter__(self) -> Group:
        try:
            for role, spec in self.specs.items():
                self._spawn(W.worker_main, (self.transport, role, spec, self.size), f"bench-{self.transport.name}-{role}",
                            {"connect_timeout": self.opts.connect_timeout, "k": self.distinct}, conn_arg="ctrl")
            self._handshake()
        except BaseException:
            self.close()
            raise
        return self

    def send(self, role: str, msg: tuple[Any, ...]) -> None:
        self._send(self.roles.index(role), msg)

    def expect(self, role: str, tag: str, timeout: float) -> tuple[Any, ...]:
        """The next message of `role`, which must be `tag`; an error from any
        worker, an exit, or the timeout raises WorkerError."""
        return self._expect(self.roles.index(role), tag, timeout)

    def _handshake(self) -> None:
        t = self.opts.connect_timeout + 60.0  # includes interpreter start-up and payloads
        for phase in ("phase2", "connect", None):
            for role in self.roles:
                self.expect(role, "ok", t)
            if phase:
                for role in self.roles:
                    self.send(role, (phase,))

    def close(self) -> None:
        if self._stop_workers():
            self.killed = True


# ---------------------------------------------------------------------------
# measurements


class Bench:
    def __init__(self, opts: Any, transports: list[T.Transport]) -> None:
        import multiprocessing as mp

        self.opts = opts
        self.ctx = mp.get_context(START_METHOD)
        self.transports = transports
        self.tmpdir = tempfile.mkdtemp(prefix="shmring-bench-")
        self.results: dict[str, list[dict[str, Any]]] = {w: [] for w in WORKLOADS}
        self.errors: list[dict[str, Any]] = []
        self.notes: dict[str, list[str]] = {w: [] for w in WORKLOADS}
        self.shm_names: list[str] = []
        self.iceoryx2_used = False
        self.killed_workers = 0
        self.c_exe: str | None = None
        self.c_error: str | None = None

    # -- helpers ------------------------------------------------------------

    def capacity_for(self, size: int) -> int:
        """Ring bytes: 1 MiB, or room for 8 messages (a power of two) when larger."""
        need = 8 * (size + 8)
        cap = 1 << 20
        while cap < need:
            cap <<= 1
        return cap

    def _fail(self, workload: str, t: T.Transport, size: int | None, e: BaseException) -> dict[str, Any]:
        mismatch = isinstance(e, WorkerError) and e.mismatch
        text = str(e).rstrip()
        tag = "MISMATCH" if mismatch else "FAILED"
        where = f"{workload} {t.name}" + (f" {size_label(size)}" if size else "")
        log(f"!!! {tag}: {where}\n{text}\n")
        self.errors.append({"workload": workload, "transport": t.name, "size": size, "mismatch": mismatch, "error": text})
        return {"transport": t.name, "size": size, "failed": tag, "error": text}

    def _resources(self) -> T.Resources:
        return T.Resources(self.tmpdir, self.ctx)

    def _after(self, res: T.Resources, group: Group | None) -> None:
        self.shm_names.extend(res.shm_names)
        if group is not None and group.killed:
            self.killed_workers += 1

    # -- one-way workloads ----------------------------------------------------

    def _run_oneway(self, g: Group, kind: str, count: int, size: int, timeout: float,
                    extra: Any = None) -> dict[str, Any]:
        run_no = g.run_no
        g.run_no += 1
        g.send("rx", ("run", kind, count, run_no, extra))
        g.expect("rx", "armed", 30)
        g.send("tx", ("run", kind, count, run_no, extra))
        g.expect("tx", "armed", 30)
        rx = g.expect("rx", "done", timeout)[1]
        g.send("tx", ("fin",))
        tx = g.expect("tx", "done", 30)[1]
        elapsed = rx["t1"] - tx["t0"]
        return {
            "count": count,
            "elapsed_s": elapsed,
            "msgs_per_s": count / elapsed,
            "gb_per_s": count * size / elapsed / 1e9,
            "tx_cpu_us_per_msg": tx["cpu"] / count * 1e6,
            "rx_cpu_us_per_msg": rx["cpu"] / count * 1e6,
            # share of a core over each process's own window (the sender's ends
            # when the receiver has everything; the receiver's starts when armed)
            "tx_cpu_pct": tx["cpu"] / (tx["t_cpu"] - tx["t0"]) * 100,
            "rx_cpu_pct": rx["cpu"] / (rx["t1"] - rx["t0"]) * 100,
            "tx_loop_s": tx["t1"] - tx["t0"],
        }

    def measure_oneway(self, workload: str, kind: str, t: T.Transport, size: int) -> dict[str, Any]:
        opts = self.opts
        step = W.BATCH if kind == "batch" else 1
        target = opts.target_seconds
        group = None
        with self._resources() as res:
            try:
                if isinstance(t, T.Iceoryx2Transport):
                    self.iceoryx2_used = True
                cap = self.capacity_for(size)
                spec = t.link(res, size, cap)
                with Group(self.ctx, t, {"tx": spec, "rx": spec}, size, opts) as group:
                    count, calib = self._calibrate(group, kind, size, step)
                    runs = []
                    for _ in range(opts.repeat):
                        runs.append(self._run_oneway(group, kind, count, size, max(30.0, 20 * target)))
            except Exception as e:  # any failure fails this row only
                return self._fail(workload, t, size, e)
            finally:
                self._after(res, group)
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "count"}
        rates = [r["msgs_per_s"] for r in runs]
        return {
            "transport": t.name,
            "size": size,
            "capacity": cap,
            "count": count,
            "repeats": runs,
            "calibration": calib,
            "spread_pct": spread_pct(rates),
            **med,
        }

    def _calibrate(self, group: Group, kind: str, size: int, step: int,
                   extra: Any = None) -> tuple[int, list[tuple[int, float]]]:
        """Messages a run so that a measured run lasts about the target
        time, from short runs that are also the warm-up: (count, [(count,
        seconds) of each calibration run])."""
        target = self.opts.target_seconds
        count = 1000 if kind == "zc" else max(64, min(10_000, (8 * MiB) // size))
        calib = []
        while True:
            count = -(-count // step) * step
            r = self._run_oneway(group, kind, count, size, self.opts.run_timeout, extra)
            calib.append((count, r["elapsed_s"]))
            if r["elapsed_s"] >= min(0.1, target / 2) or len(calib) >= 4 or count >= MAX_COUNT:
                break
            count = int(count * min(100.0, max(2.0, 0.15 / max(r["elapsed_s"], 1e-5))))
        count = max(step, min(MAX_COUNT, int(r["msgs_per_s"] * target)))
        return -(-count // step) * step, calib

    def measure_large(self, t: T.Transport, size: int, capacity: int) -> list[dict[str, Any]]:
        """The rows of one transport in the "large" workload at ``size``,
        through a ring of ``capacity`` bytes (iceoryx2: as many samples):
        each (mode, source) variant calibrated, then measured ``repeat``
        times, the variants interleaved run by run (_large.py)."""
        opts, variants, group = self.opts, L.variants(t.name), None
        if isinstance(t, T.Iceoryx2Transport):
            self.iceoryx2_used = True
        with self._resources() as res:
            try:
                spec = t.link(res, size, capacity)
                with Group(self.ctx, t, {"tx": spec, "rx": spec}, size, opts, distinct=1) as group:
                    counts = {v: self._calibrate(group, "large", size, 1, v)[0] for v in variants}
                    runs: dict[tuple[str, str], list[dict[str, Any]]] = {v: [] for v in variants}
                    for _ in range(opts.repeat):
                        for v in variants:
                            runs[v].append(self._run_oneway(group, "large", counts[v], size,
                                                            max(30.0, 20 * opts.target_seconds), v))
            except Exception as e:  # any failure fails this transport's rows only
                failed = self._fail("large", t, size, e)
                return [{**failed, "capacity": capacity, "mode": mode, "source": source} for mode, source in variants]
            finally:
                self._after(res, group)
        rows = []
        for (mode, source), rs in runs.items():
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "count"}
            rows.append({"transport": t.name, "size": size, "capacity": capacity, "mode": mode, "source": source,
                         "count": counts[(mode, source)],
                         "repeats": rs, "spread_pct": spread_pct([r["msgs_per_s"] for r in rs]), **med})
        return rows

    # -- ping-pong ------------------------------------------------------------

    def measure_pingpong(self, t: T.Transport) -> dict[str, Any]:
        n, warm, size = self.opts.pingpong_n, self.opts.pingpong_warmup, 64
        if isinstance(t, T.CPingPong):
            return self.measure_c(t, n, warm)
        group = None
        with self._resources() as res:
            try:
                if isinstance(t, T.Iceoryx2Transport):
                    self.iceoryx2_used = True
                spec = t.pp_link(res, size, self.capacity_for(size))
                with Group(self.ctx, t, {"a": spec, "b": spec}, size, self.opts) as group:
                    group.send("b", ("run", "pingpong", n, 0, warm))
                    group.expect("b", "armed", 30)
                    group.send("a", ("run", "pingpong", n, 0, warm))
                    group.expect("a", "armed", 30)
                    timeout = 60.0 + (n + warm) * 0.002
                    a = group.expect("a", "done", timeout)[1]
                    b = group.expect("b", "done", 30)[1]
            except Exception as e:  # any failure fails this row only
                return self._fail("pingpong", t, None, e)
            finally:
                self._after(res, group)
        lat = sorted(a["lat"])
        return {
            "transport": t.name,
            "n": n,
            "warmup": warm,
            **percentiles(lat),
            "a_cpu_us_per_rt": a["cpu"] / (n + warm) * 1e6,
            "b_cpu_us_per_rt": b["cpu"] / (n + warm) * 1e6,
        }

    def _compile_c(self) -> str:
        if self.c_exe or self.c_error:
            if self.c_error:
                raise RuntimeError(self.c_error)
            return self.c_exe  # type: ignore[return-value]
        src = os.path.join(HERE, "futex_pingpong.c")
        exe = os.path.join(self.tmpdir, "futex_pingpong")
        cmd = ["gcc", "-O2", "-std=gnu11", "-Wall", "-Wextra", "-o", exe, src]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            self.c_error = f"gcc failed: {e}"
            raise RuntimeError(self.c_error) from None
        if out.returncode != 0:
            self.c_error = f"gcc failed ({' '.join(cmd)}):\n{out.stderr}"
            raise RuntimeError(self.c_error)
        self.c_exe = exe
        return exe

    def measure_c(self, t: T.CPingPong, n: int, warm: int) -> dict[str, Any]:
        try:
            exe = self._compile_c()
            out = subprocess.run([exe, t.mode, str(n), str(warm), str(t.work_ns)], capture_output=True, text=True,
                                 timeout=60 + (n + warm) * 0.002)
            if out.returncode != 0:
                raise RuntimeError(f"{exe} exited with {out.returncode}: {out.stderr.strip()}")
            d = json.loads(out.stdout)
        except Exception as e:  # gcc, the programme or its output
            return self._fail("pingpong", t, None, e)
        us = {k.replace("_ns", "_us"): v / 1000 for k, v in d.items() if k.endswith("_ns")}
        return {"transport": t.name, "n": n, "warmup": warm, **us}

    # -- idle -----------------------------------------------------------------

    def measure_idle(self, t: T.Transport) -> dict[str, Any]:
        secs = self.opts.idle_seconds
        group = None
        with self._resources() as res:
            try:
                spec = t.link(res, 64, 1 << 20)
                with Group(self.ctx, t, {"idle": spec}, 64, self.opts) as group:
                    group.send("idle", ("run", "idle", 0, 0, secs))
                    group.expect("idle", "armed", 30)
                    d = group.expect("idle", "done", secs + 30)[1]
            except Exception as e:  # any failure fails this row only
                return self._fail("idle", t, None, e)
            finally:
                self._after(res, group)
        wall = d["t1"] - d["t0"]
        return {
            "transport": t.name,
            "wall_s": wall,
            "cpu_s": d["cpu"],
            "cpu_pct": d["cpu"] / wall * 100,
            "outcome": d["outcome"],
        }

    # -- driver ---------------------------------------------------------------

    def supported(self, workload: str) -> list[T.Transport]:
        out = []
        for t in self.transports:
            if workload == "idle":
                if t.name in IDLE_STRATEGIES:
                    out.append(t)
                continue
            if workload in t.workloads:
                out.append(t)
            elif workload in UNSUPPORTED and not isinstance(t, T.CPingPong):
                self.notes[workload].append(f"{t.name}: not measured ({UNSUPPORTED[workload]})")
        return out

    def _measure(self, workload: str, t: T.Transport, size: int) -> dict[str, Any]:
        """One cell: ``t`` in ``workload`` (messages of ``size`` bytes in a one-way workload)."""
        if workload == "pingpong":
            return self.measure_pingpong(t)
        if workload == "idle":
            return self.measure_idle(t)
        return self.measure_oneway(workload, ONE_WAY_KINDS[workload], t, size)

    def run(self) -> None:
        for workload in self.opts.workloads:
            ts = self.supported(workload)
            if workload == "large":
                self.run_large([t for t in ts if L.variants(t.name)])
                continue
            # throughput: every size, the transports in turn for each; batch: 64 B; zero-copy: 1 MiB
            sizes = {"throughput": self.opts.sizes, "batch": [64], "zerocopy": [MiB]}.get(workload, [0])
            for size in sizes:
                for t in ts:
                    r = self._measure(workload, t, size)
                    self.results[workload].append(r)
                    self._progress(workload, r)

    def run_large(self, ts: list[T.Transport]) -> None:
        cases = L.CASES
        if self.opts.large_capacity:
            cases = list(dict.fromkeys((size, self.opts.large_capacity) for size, _ in cases))
        for size, capacity in cases:
            rows = L.memcpy_rows(size, capacity, self.opts.target_seconds, self.opts.repeat)
            for t in ts:
                rows += self.measure_large(t, size, capacity)
            where = f"[large {size_label(size)}, {size_label(capacity)} ring]"
            for r in rows:
                self.results["large"].append(r)
                if r.get("failed"):
                    log(f"{where} {r['transport']} {r['mode']} {r['source']}: {r['failed']}")
                else:
                    log(f"{where} {r['transport']} {r['mode']} {r['source']}: "
                        f"{r['gb_per_s']:.2f} GB/s (spread {r['spread_pct']:.0f}%)")

    def _progress(self, workload: str, r: dict[str, Any]) -> None:
        what = f"[{workload}{' ' + size_label(r['size']) if r.get('size') and workload == 'throughput' else ''}] {r['transport']}"
        if r.get("failed"):
            log(f"{what}: {r['failed']}")
        elif workload == "pingpong":
            log(f"{what}: p50 {r['p50_us']:.2f} us, p99 {r['p99_us']:.2f} us")
        elif workload == "idle":
            log(f"{what}: {r['cpu_pct']:.2f}% of a core")
        else:
            log(f"{what}: {fmt_rate(r['msgs_per_s'])} msgs/s, {r['gb_per_s']:.3f} GB/s "
                f"(count {r['count']}, spread {r['spread_pct']:.0f}%)")

    def cleanup(self) -> list[str]:
        """Last line of defence: nothing of this run may stay behind."""
        return clean_up_run(self.shm_names, self.tmpdir, self.iceoryx2_used and self.killed_workers > 0)


# ---------------------------------------------------------------------------
# report


def _rate_table(rows: list[dict[str, Any]], names: list[str], runs_column: bool) -> str:
    """The table of a one-way workload (throughput, batch, zero-copy): rate,
    CPU, spread (and messages a run), then the "x NAME" ratios of the rate
    against the baselines ``names``."""
    base = {r["transport"]: r["msgs_per_s"] for r in rows if not r.get("failed")}
    header = ["transport", "msgs/s", "GB/s", "send CPU µs/msg", "recv CPU µs/msg", "CPU % send/recv", "spread"]
    runs = ["msgs/run"] if runs_column else []

    def cells(r: dict[str, Any]) -> list[str]:
        return ([fmt_rate(r["msgs_per_s"]), fmt_num(r["gb_per_s"]), fmt_num(r["tx_cpu_us_per_msg"]),
                 fmt_num(r["rx_cpu_us_per_msg"]), f"{r['tx_cpu_pct']:.0f}/{r['rx_cpu_pct']:.0f}",
                 f"{r['spread_pct']:.0f}%"] + ([str(r["count"])] if runs_column else [])
                + ratio_cells(r["msgs_per_s"], base, names, True))

    return results_table(header + runs + [f"x {b}" for b in names], rows, cells, name="transport")


def report(bench: Bench, meta: dict[str, Any]) -> str:
    R = bench.results
    parts = [f"# shmring Channel vs peers ({meta['host']['cpus']} CPUs, Python {meta['python']}, "
             f"start method {START_METHOD}, median of {bench.opts.repeat} runs)\n"]
    parts.append("Ratios (x NAME): how many times better than NAME for the same size — "
                 "throughput: this rate / NAME's rate; latency: NAME's p50 / this p50.\n")

    # 1. throughput
    rows_all = R["throughput"]
    if rows_all:
        parts.append("## 1. Throughput, one send/recv call per message\n")
        names = [b for b in BASELINES["throughput"] if any(r["transport"] == b and not r.get("failed") for r in rows_all)]
        sizes = [s for s in bench.opts.sizes if any(r["size"] == s for r in rows_all)]
        # summary
        transports = list(dict.fromkeys(r["transport"] for r in rows_all))
        summary = []
        for tn in transports:
            cells = [tn]
            for s in sizes:
                r = next((r for r in rows_all if r["transport"] == tn and r["size"] == s), None)
                if r is None:
                    cells.append("")
                elif r.get("failed"):
                    cells.append(r["failed"])
                elif s >= 64 * KiB:
                    cells.append(f"{fmt_rate(r['msgs_per_s'])} ({fmt_num(r['gb_per_s'])} GB/s)")
                else:
                    cells.append(fmt_rate(r["msgs_per_s"]))
            summary.append(cells)
        parts.append("Messages/s (GB/s for large messages):\n")
        parts.append(md_table(["transport"] + [size_label(s) for s in sizes], summary) + "\n")
        for s in sizes:
            parts.append(f"### {size_label(s)}\n")
            parts.append(_rate_table([r for r in rows_all if r["size"] == s], names, runs_column=True) + "\n")
    if bench.notes["throughput"]:
        parts.append("\n".join(f"- {n}" for n in bench.notes["throughput"]) + "\n")

    # 2. batch / 3. zerocopy
    for workload, title in (("batch", "## 2. 64 B messages in batches of 64\n"),
                            ("zerocopy", "## 3. 1 MiB zero-copy (written and read in place)\n")):
        rows = R[workload]
        if not rows and not bench.notes[workload]:
            continue
        parts.append(title)
        if workload == "zerocopy":
            parts.append("The sender writes only the sequence number into the first and last 8 bytes of each "
                         "1 MiB message; GB/s counts the whole message (what a consumer could read).\n")
        names = [b for b in BASELINES[workload] if any(r["transport"] == b and not r.get("failed") for r in rows)]
        if rows:
            parts.append(_rate_table(rows, names, runs_column=False) + "\n")
        if bench.notes[workload]:
            parts.append("\n".join(f"- {n}" for n in bench.notes[workload]) + "\n")

    # 3b. large messages
    if R["large"]:
        parts.append(L.report(R["large"], bench.opts.repeat))

    # 4. ping-pong
    rows = R["pingpong"]
    if rows:
        parts.append("## 4. 64 B ping-pong round trip\n")
        names = [b for b in BASELINES["pingpong"] if any(r["transport"] == b and not r.get("failed") for r in rows)]
        base = {r["transport"]: r["p50_us"] for r in rows if not r.get("failed")}
        parts.append(results_table(
            ["transport", "p50 µs", "p99 µs", "p99.9 µs", "mean µs", "CPU µs/rt a/b", "round trips"]
            + [f"x {b}" for b in names], rows,
            lambda r: [fmt_num(r["p50_us"]), fmt_num(r["p99_us"]), fmt_num(r["p999_us"]), fmt_num(r["mean_us"]),
                       f"{r['a_cpu_us_per_rt']:.1f}/{r['b_cpu_us_per_rt']:.1f}" if "a_cpu_us_per_rt" in r else "–",
                       str(r["n"])] + ratio_cells(r["p50_us"], base, names, False),
            name="transport") + "\n")
        parts.append("C futex / C spin: two C processes (fork) flipping words in a shared anonymous mapping, "
                     "waiting with FUTEX_WAIT / a pause loop: the floors for the \"block\" and \"spin\" strategies. "
                     "With no work between receive and reply, a C reply usually lands before the peer has gone "
                     "to sleep; \"sleeping peer\" adds 1 µs of work before each post (about what a Python caller "
                     "spends), so that every post wakes a process that is asleep.\n")

    # 5. idle
    rows = R["idle"]
    if rows:
        parts.append(f"## 5. Idle reader CPU ({bench.opts.idle_seconds:g} s blocked in recv, no sender)\n")
        parts.append(results_table(
            ["transport", "wall s", "CPU ms", "% of a core", "< 1%"], rows,
            lambda r: [f"{r['wall_s']:.2f}", f"{r['cpu_s'] * 1000:.1f}", f"{r['cpu_pct']:.2f}%",
                       "yes" if r["cpu_pct"] < 1.0 else "NO"],
            name="transport") + "\n")

    parts += skipped_and_failures(meta["skipped"], [
        f"{'MISMATCH' if e['mismatch'] else 'FAILED'}: {e['workload']} {e['transport']}"
        f"{' ' + size_label(e['size']) if e['size'] else ''}: {last_line(e['error'])}" for e in bench.errors])
    parts.append(f"Machine: {meta['host']['cpu_model'] or '?'}, kernel {meta['host']['kernel']}; "
                 f"{machine_load_text(meta)}.\n")
    parts += run_warnings(meta, "spinning transports suffer most; ")
    parts.append("Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + "\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------------


def select(only: str | None) -> tuple[list[T.Transport], dict[str, str]]:
    ts = T.all_transports()
    if only:
        tokens = [x.strip().lower() for x in only.split(",") if x.strip()]
        known = set()
        for t in ts:
            known |= {t.name.lower(), t.family.lower(), *(a.lower() for a in t.aliases)}
        bad = [x for x in tokens if x not in known]
        if bad:
            names = ", ".join(t.aliases[0] if isinstance(t, T.CPingPong) else t.name for t in ts)
            raise SystemExit(f"--only: unknown name(s) {bad}; known: {names} "
                             f"(or a family: shmring, mp, c)")
        ts = [t for t in ts if {t.name.lower(), t.family.lower(), *(a.lower() for a in t.aliases)} & set(tokens)]
    usable, skipped = [], {}
    for t in ts:
        why = t.check()
        if why:
            skipped[t.name] = why
            log(f"skipping {t.name}: {why}")
        else:
            usable.append(t)
    return usable, skipped


# ---------------------------------------------------------------------------


def collect_meta(opts: Any, transports: list[T.Transport], skipped: dict[str, str]) -> dict[str, Any]:
    versions: dict[str, Any] = {}
    for t in transports:
        if t.family not in versions and not isinstance(t, T.CPingPong):
            v = t.version()
            if v:
                versions[t.family] = v
    if any(isinstance(t, T.CPingPong) for t in transports):
        try:
            versions["gcc"] = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True,
                                             timeout=30).stdout.strip()
        except Exception:
            pass
    return run_meta(START_METHOD, opts, versions, skipped, distinct_payloads=opts.distinct)


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__, "short runs, one repeat: a smoke test (~30-60 s)")
    ap.add_argument("--only", help="comma-separated transports or families (e.g. shmring,pyzmq,mp.Queue,c-futex)")
    ap.add_argument("--workloads", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    ap.add_argument("--sizes", help="throughput sizes, e.g. 64,1KiB,1MiB (default 8,64,1KiB,64KiB,1MiB)")
    ap.add_argument("--repeat", type=int, help="runs per throughput measurement; the median is reported (default 3)")
    ap.add_argument("--target-seconds", type=float, help="length of each measured run (default 0.5)")
    ap.add_argument("--pingpong-n", type=int, help="measured round trips (default 20000)")
    ap.add_argument("--pingpong-warmup", type=int, help="unmeasured round trips first (default 2000)")
    ap.add_argument("--idle-seconds", type=float, help="idle reader duration (default 2)")
    ap.add_argument("--large-capacity", type=parse_size,
                    help="one ring size for every message size of the large workload (default: 1 MiB for "
                         "64 KiB, 4 MiB and 16 MiB for 1 MiB; iceoryx2 gets as many samples)")
    ap.add_argument("--distinct", type=int, default=W.K,
                    help="distinct payloads per size, a power of two (default 256; 256 x 1 MiB do not fit in cache)")
    ap.add_argument("--connect-timeout", type=float, default=20.0)
    add_output_arguments(ap, 60.0, "killed")
    opts = ap.parse_args(argv)

    quick_defaults(opts, repeat=(1, 3), target_seconds=(0.1, 0.5), pingpong_n=(2000, 20000), idle_seconds=(0.5, 2.0))
    if opts.pingpong_warmup is None:  # (0 is a valid count)
        opts.pingpong_warmup = 200 if opts.quick else 2000
    opts.sizes = [parse_size(s) for s in opts.sizes.split(",")] if opts.sizes else list(SIZES)
    for s in opts.sizes:
        if s < 8:
            raise SystemExit("--sizes: messages must be at least 8 bytes")
    opts.workloads = chosen("--workloads", opts.workloads, WORKLOADS)
    if opts.distinct < 1 or opts.distinct & (opts.distinct - 1):
        raise SystemExit("--distinct must be a power of two")
    if opts.repeat < 1:
        raise SystemExit("--repeat must be >= 1")

    sigterm_as_interrupt()  # SIGTERM ends the run like ^C: workers stopped, what was measured reported

    transports, skipped = select(opts.only)
    meta = collect_meta(opts, transports, skipped)
    bench = Bench(opts, transports)
    interrupted = run_measured(bench.run, meta, bench.cleanup)

    write_outputs(report(bench, meta), opts.markdown, opts.json,
                  {"meta": meta, "results": bench.results, "notes": bench.notes, "errors": bench.errors})
    n_mis = sum(e["mismatch"] for e in bench.errors)
    return exit_status(meta, bench.errors, interrupted, f"measurement(s) FAILED ({n_mis} data mismatch(es))")


if __name__ == "__main__":
    sys.exit(main())
