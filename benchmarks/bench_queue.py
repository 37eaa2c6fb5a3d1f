#!/usr/bin/env python3
"""Benchmark shmring's multi-producer/multi-consumer Queue against its peers.

Subjects (each optional peer is skipped with a note when it does not import):

  mp.Queue put/get                     multiprocessing.Queue (no batch API)
  faster-fifo put/get                  faster_fifo.Queue
  faster-fifo put_many/get_many (64)
  shmring put/get                      shmring.Queue
  shmring put_many/get_many (64)

Workload: P producer and C consumer processes (started with multiprocessing's
"spawn" context) pass pickled tuples (producer_id, seq, payload), the payload
sized so that the pickle is ~64 B or ~1 KiB, in the configurations 1x1, 4x1,
1x4 and 4x4 (PxC).  faster-fifo and shmring get the same ring capacity
(max_size_bytes); mp.Queue is unbounded, as by default.

Every object is checked: each consumer checks that the sequence numbers of
each producer increase and that the payload is the producer's; the parent
checks exactly-once delivery from the consumers' per-producer count, sum and
sum of squares of seq, and that the queue is empty at the end.  A failed
check fails the run (exit status 1, MISMATCH in the tables).

Throughput: total objects / seconds from the start barrier (all processes
ready) to the moment the last consumer is done; median of --runs runs.

    .venv/bin/python benchmarks/bench_queue.py             # everything, ~2 min on 2 cores
    .venv/bin/python benchmarks/bench_queue.py --quick     # smoke test, ~10-20 s
    .venv/bin/python benchmarks/bench_queue.py --configs 8x8,16x16 --only shmring,faster-fifo
"""

from __future__ import annotations

import os
import pickle
import queue as stdqueue
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _harness import (  # noqa: E402
    KiB, MachineLoad, MiB, Mismatch, WorkerError, WorkerGroup, add_output_arguments, bench_parser, child_setup,
    exit_status, fmt_rate, fmt_ratio, last_line, load_line, log, md_table, orders, quick_defaults, record_failure,
    run_line, run_measured, run_meta, run_warnings, send_error, shmring_build, shmring_source_note, sizes,
    sigterm_as_interrupt, size_label, skipped_and_failures, spread_pct, warn_if_rebuilt, write_outputs,
)

START_METHOD = "spawn"
BATCH = 64
SIZES = [64, KiB]  # target size of each pickled object
DEFAULT_CONFIGS = "1x1,4x1,1x4,4x4"
DEFAULT_CAPACITY = 4 * MiB  # max_size_bytes of faster-fifo and shmring
TARGET = 3.0  # the target: shmring >= 3x faster-fifo in every cell
MARKER = -1  # seq of the end marker each producer puts after its objects
# faster-fifo has no "block forever": its timeout defaults to 10 s and is a C
# float, so a blocked call needs a large finite one (11.6 days).
FF_TIMEOUT = 1e6
DEFAULT_MARKDOWN = os.path.join(HERE, "results", "queue.md")


@dataclass(frozen=True)
class Transport:
    name: str  # row label
    family: str  # "mp", "faster-fifo" or "shmring": which queue the parent makes
    batch: bool  # put_many/get_many in batches of BATCH instead of put/get
    # Total objects of one measured run for 64 B and 1 KiB objects (before
    # --scale): ~0.5-1.5 s a run on 2 cores (long enough to average out a
    # noisy shared VM), so that a full run takes ~2 minutes.
    counts: tuple[int, int]


TRANSPORTS = [
    Transport("mp.Queue put/get", "mp", False, (200_000, 120_000)),
    Transport("faster-fifo put/get", "faster-fifo", False, (160_000, 100_000)),
    Transport("faster-fifo put_many/get_many (64)", "faster-fifo", True, (400_000, 200_000)),
    Transport("shmring put/get", "shmring", False, (1_200_000, 600_000)),
    Transport("shmring put_many/get_many (64)", "shmring", True, (2_400_000, 1_000_000)),
]
# (numerator, denominator, label) of the ratio rows; the first two are the
# issue's target (single vs single, batch vs batch).
RATIOS = [
    ("shmring put/get", "faster-fifo put/get", "shmring ÷ faster-fifo, put/get"),
    ("shmring put_many/get_many (64)", "faster-fifo put_many/get_many (64)", "shmring ÷ faster-fifo, batches"),
    ("shmring put/get", "mp.Queue put/get", "shmring put/get ÷ mp.Queue"),
    ("shmring put_many/get_many (64)", "mp.Queue put/get", "shmring batches ÷ mp.Queue"),
]
TARGET_RATIOS = 2  # how many of RATIOS are held to TARGET


# ---------------------------------------------------------------------------
# worker processes
#
# Protocol over each worker's control Pipe:
#   worker -> parent  ("ready",)                        once, after start-up
#   parent -> worker  ("run", count, payload_len)      count: this producer's objects
#   worker -> parent  ("marker", producer_id)           consumer: got that producer's end marker
#   worker -> parent  ("done", result)                  after the run
#   parent -> worker  ("stop",)
#   worker -> parent  ("error", traceback_text, is_mismatch)


def payload_len_for(size: int) -> int:
    """Payload bytes so that pickle.dumps((pid, seq, payload)) is `size` bytes
    for a 4-byte seq (seq >= 65536; smaller seqs pickle 1-3 bytes shorter).
    mp.Queue and faster-fifo pickle with ForkingPickler (protocol 4), shmring
    with the highest protocol: the same bytes for this tuple."""
    overhead = len(pickle.dumps((0, 1 << 20, b""), pickle.HIGHEST_PROTOCOL))
    n = size - overhead
    # past 255 bytes, the bytes opcode takes a 4-byte length instead of 1
    return n - 3 if n > 255 else n


def make_payload(pid: int, n: int) -> bytes:
    """A payload that differs between producers, so that a mix-up shows."""
    return bytes((pid * 37 + j * 11) & 0xFF for j in range(n))


def produce(q: Any, batch: bool, pid: int, count: int, payload: bytes, timeout: float | None) -> None:
    # Positional (obj, block, timeout): the signature that mp.Queue,
    # faster-fifo and shmring share; no keyword parsing per call.
    if batch:
        put_many = q.put_many
        for start in range(0, count, BATCH):
            put_many([(pid, seq, payload) for seq in range(start, min(start + BATCH, count))], True, timeout)
    else:
        put = q.put
        for seq in range(count):
            put((pid, seq, payload), True, timeout)
    # The end marker travels behind this producer's objects through the queue
    # itself: once a consumer has it, they are all out of the queue, even for
    # mp.Queue, whose put returns before its feeder thread has written them.
    q.put((pid, MARKER, None), True, timeout)


def consume(q: Any, batch: bool, n_prod: int, payloads: list[bytes], timeout: float | None,
            retry_empty: bool, conn: Any) -> dict[str, Any]:
    last = [MARKER] * n_prod  # last seq seen per producer: they must increase
    count, s1, s2 = [0] * n_prod, [0] * n_prod, [0] * n_prod
    markers = spurious_empty = sentinels = 0
    m: Any = None

    def odd(m: Any) -> None:
        """The slow path: an end marker, or a failed check."""
        nonlocal markers
        pid, seq, payload = m
        if seq == MARKER and payload is None:
            markers += 1
            conn.send(("marker", pid))
            return
        what = f"after seq {last[pid]}" if seq <= last[pid] else f"with a wrong payload ({len(payload)} bytes)"
        raise Mismatch(f"producer {pid}: got seq {seq} {what}")

    # The single and batch loops repeat the checks inline: a function call per
    # object would cost more than shmring's get itself.
    try:
        if batch:
            get_many = q.get_many
            while not sentinels:
                try:
                    items = get_many(True, timeout, BATCH)
                except stdqueue.Empty:
                    # faster-fifo only: after growing its read buffer, get/get_many
                    # retries without blocking and raises Empty when another
                    # consumer took the object meanwhile (a known quirk of the
                    # peer).  Anywhere else Empty (with this timeout) is a bug.
                    if not retry_empty:
                        raise
                    spurious_empty += 1
                    continue
                for m in items:
                    if m is None:  # the parent's stop sentinel (put after every end marker)
                        sentinels += 1
                        continue
                    pid, seq, payload = m
                    if seq <= last[pid] or payload != payloads[pid]:
                        odd(m)
                        continue
                    last[pid] = seq
                    count[pid] += 1
                    s1[pid] += seq
                    s2[pid] += seq * seq
        else:
            get = q.get
            while True:
                try:
                    m = get(True, timeout)
                except stdqueue.Empty:
                    if not retry_empty:  # as above
                        raise
                    spurious_empty += 1
                    continue
                if m is None:
                    sentinels = 1
                    break
                pid, seq, payload = m
                if seq <= last[pid] or payload != payloads[pid]:
                    odd(m)
                    continue
                last[pid] = seq
                count[pid] += 1
                s1[pid] += seq
                s2[pid] += seq * seq
    except (ValueError, TypeError, IndexError) as e:
        raise Mismatch(f"unexpected object from the queue: {repr(m)[:200]}") from e
    # get_many can take more than one sentinel; every consumer needs its own.
    for _ in range(sentinels - 1):
        q.put(None, True, timeout)
    return {"count": count, "s1": s1, "s2": s2, "markers": markers, "spurious_empty": spurious_empty}


def worker_main(role: str, idx: int, n_prod: int, family: str, batch: bool, q: Any, barrier: Any,
                conn: Any, wait_timeout: float) -> None:
    """Entry point of every child: a producer (idx = producer_id) or a consumer."""
    # Dies with the parent; ^C is the parent's; on a hang the parent sends
    # SIGUSR1: every worker prints where it is stuck.
    child_setup(stacks_on_sigusr1=True)
    timeout = FF_TIMEOUT if family == "faster-fifo" else None
    try:
        conn.send(("ready",))
        for _, count, payload_len in orders(conn):
            payloads = [make_payload(p, payload_len) for p in range(n_prod)]
            barrier.wait(wait_timeout)
            t0 = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
            if role == "producer":
                produce(q, batch, idx, count, payloads[idx], timeout)
                res: dict[str, Any] = {}
            else:
                res = consume(q, batch, n_prod, payloads, timeout, family == "faster-fifo", conn)
            res.update(t0=t0, t1=time.monotonic())
            conn.send(("done", res))
        if family == "mp":
            q.close()
            q.join_thread()  # flush the feeder thread (a consumer's passed-on sentinels)
    except BaseException as e:
        send_error(conn, f"{role} {idx}", isinstance(e, Mismatch))
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# parent side


def make_queue(ctx: Any, family: str, capacity: int) -> Any:
    if family == "mp":
        return ctx.Queue()
    if family == "faster-fifo":
        import faster_fifo  # type: ignore[import-not-found]  # (no stubs)

        return faster_fifo.Queue(max_size_bytes=capacity)
    if family == "shmring":
        import shmring

        return shmring.Queue(max_size_bytes=capacity)
    raise ValueError(family)


class Group(WorkerGroup):
    """One transport in one PxC configuration: its queue and its processes,
    kept for every run of that configuration (spawning 8 interpreters costs
    ~1 s here).  Leaving the `with` block stops everything: "stop", join,
    then SIGTERM, then SIGKILL; the queue is closed (shmring's removed by that last close)."""

    def __init__(self, ctx: Any, t: Transport, n_prod: int, n_cons: int, opts: Any) -> None:
        # producers first, then consumers
        self.roles = [("producer", i) for i in range(n_prod)] + [("consumer", i) for i in range(n_cons)]
        super().__init__(ctx, opts, [f"{role} {i}" for role, i in self.roles])
        self.t, self.n_prod, self.n_cons = t, n_prod, n_cons
        self.q: Any = None
        self.markers: set[int] = set()  # producers whose end marker a consumer got, this run

    def __enter__(self) -> Group:
        try:
            self.q = make_queue(self.ctx, self.t.family, self.opts.capacity)
            barrier = self.ctx.Barrier(self.n_prod + self.n_cons)
            for role, i in self.roles:
                self._spawn(worker_main, (role, i, self.n_prod, self.t.family, self.t.batch, self.q, barrier),
                            f"bq-{self.t.family}-{role}{i}", {"wait_timeout": self.opts.run_timeout})
            for i in range(len(self.conns)):
                self._expect(i, "ready", 120.0)
        except BaseException:
            self.close()
            raise
        return self

    def _put_sentinel(self) -> None:
        self.q.put(None, True, FF_TIMEOUT if self.t.family == "faster-fifo" else None)

    def run(self, total: int, size: int) -> dict[str, Any]:
        """One run of `total` objects of `size` pickled bytes, checked."""
        return self._guard(lambda: self._run(total, size))

    def _not_run_message(self, broken: WorkerError) -> str:
        return f"not run: this transport's workers were stopped after an earlier {broken.tag} in this configuration"

    def _run(self, total: int, size: int) -> dict[str, Any]:
        P, C = self.n_prod, self.n_cons
        counts = [total // P + (1 if i < total % P else 0) for i in range(P)]  # split evenly
        plen = payload_len_for(size)
        for i in range(P + C):
            self.conns[i].send(("run", counts[i] if i < P else 0, plen))
        self.markers = set()
        results = self._collect()
        self._verify(counts, [results[P + j] for j in range(C)], self.markers)
        t0 = min(r["t0"] for r in results.values())
        t1 = max(results[P + j]["t1"] for j in range(C))
        return {
            "total": total,
            "seconds": t1 - t0,
            "objects_per_s": total / (t1 - t0),
            "spurious_empty": sum(results[P + j]["spurious_empty"] for j in range(C)),
        }

    def _on_message(self, i: int, msg: tuple[Any, ...]) -> None:
        if msg[0] != "marker":
            super()._on_message(i, msg)
            return
        pid = msg[1]
        if pid in self.markers:
            raise WorkerError(f"end marker of producer {pid} delivered twice", "MISMATCH")
        self.markers.add(pid)
        if len(self.markers) == self.n_prod:
            # Every object is out of the queue (each producer's marker came
            # after its objects): one stop sentinel per consumer.  Costs the
            # parent's wake-up and C puts, tens of µs against runs of ~0.1-1 s.
            for _ in range(self.n_cons):
                self._put_sentinel()

    def _verify(self, counts: list[int], cons: list[dict[str, Any]], markers: set[int]) -> None:
        errors = []
        if len(markers) != self.n_prod:
            errors.append(f"end markers from producers {sorted(markers)} only")
        for pid, n in enumerate(counts):
            got = (sum(r["count"][pid] for r in cons), sum(r["s1"][pid] for r in cons),
                   sum(r["s2"][pid] for r in cons))
            want = (n, n * (n - 1) // 2, (n - 1) * n * (2 * n - 1) // 6)
            if got != want:
                per = [r["count"][pid] for r in cons]
                errors.append(f"producer {pid}: (count, sum seq, sum seq²) = {got}, expected {want} "
                              f"(per consumer counts {per}): objects lost or duplicated")
        left = self.q.qsize()
        if left:
            errors.append(f"{left} object(s) still in the queue after every consumer stopped")
        if errors:
            raise WorkerError("; ".join(errors), "MISMATCH")

    def _diagnose_hang(self, results: dict[int, dict[str, Any]]) -> None:
        """Say who is stuck and where (faulthandler stacks on stderr), then fail."""
        markers, waiting = self.markers, self._waiting(results)
        state = f"qsize() {self._safe(self.q.qsize)}"
        if self.t.family == "shmring":
            state += f", stats() {self._safe(self.q.stats)}"
        log(f"!!! HANG: {self.t.name} {self.n_prod}x{self.n_cons}: no result after {self.opts.run_timeout:.0f} s "
            f"from {', '.join(waiting)}; end markers seen from producers {sorted(markers)}; {state}. "
            "Stacks of the workers follow:")
        self._dump_stacks(results)
        raise WorkerError(f"no result from {', '.join(waiting)} after {self.opts.run_timeout:.0f} s "
                          f"(end markers seen: {sorted(markers)}; {state})", "HANG")

    def close(self) -> None:
        self._stop_workers()
        q, self.q = self.q, None
        if q is None:
            return
        if self.t.family == "mp":
            q.close()
            q.cancel_join_thread()  # after a failure its pipe may be full: never wait on it
        elif self.t.family == "shmring":
            q.close()  # the last user to leave (the workers are gone) removes the queue and its chunks


# ---------------------------------------------------------------------------
# the run


class Bench:
    def __init__(self, opts: Any, transports: list[Transport]) -> None:
        import multiprocessing as mp

        self.opts = opts
        self.ctx = mp.get_context(START_METHOD)
        self.transports = transports
        # (transport, size, config) -> result (runs, median, ...) or failure
        self.results: dict[tuple[str, int, str], dict[str, Any]] = {}
        self.errors: list[dict[str, Any]] = []
        # % of the machine other processes used while each configuration ran
        self.config_load: dict[str, float] = {}

    def count_for(self, t: Transport, size: int) -> int:
        base = t.counts[SIZES.index(size)] if size in SIZES else t.counts[0 if size < KiB else 1]
        return max(BATCH * 4, int(base * self.opts.scale))

    def _fail(self, t: Transport, size: int, cfg: str, e: BaseException) -> None:
        self.results[(t.name, size, cfg)] = record_failure(f"{t.name}, {size_label(size)}, {cfg}", e, self.errors,
                                                           transport=t.name, size=size, config=cfg)

    def run(self) -> None:
        for n_prod, n_cons in self.opts.configs:
            cfg = f"{n_prod}x{n_cons}"
            load = MachineLoad()
            with ExitStack() as stack:
                # One group per transport, all alive together, so that the runs
                # can alternate between transports: drift in the machine's load
                # (a shared VM) then spreads over all of them instead of biasing one.
                groups: dict[str, Group] = {}
                for t in self.transports:
                    try:
                        log(f"[{cfg}] starting {n_prod + n_cons} workers for {t.name}")
                        groups[t.name] = stack.enter_context(Group(self.ctx, t, n_prod, n_cons, self.opts))
                    except Exception as e:  # this transport's cells fail; the others go on
                        for size in self.opts.sizes:
                            self._fail(t, size, cfg, e)
                for size in self.opts.sizes:
                    self._run_cells(groups, size, cfg)
            self.config_load[cfg] = load.summary()["other_processes_pct_of_machine"]

    def _run_cells(self, groups: dict[str, Group], size: int, cfg: str) -> None:
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in groups}
        live = dict(groups)
        # run -1: warm-up (a tenth of the objects, not measured): first-touch
        # page faults, faster-fifo's read buffers, the interpreters' caches.
        for r in range(-1, self.opts.runs):
            for name, g in list(live.items()):
                total = self.count_for(g.t, size)
                if r < 0:
                    total = max(BATCH * 4, total // 10)
                try:
                    res = g.run(total, size)
                except Exception as e:  # fails this cell only
                    self._fail(g.t, size, cfg, e)
                    del live[name]
                    continue
                if r >= 0:
                    runs[name].append(res)
        for name, g in live.items():
            rates = [x["objects_per_s"] for x in runs[name]]
            med = statistics.median(rates)
            out = {
                "objects_per_s": med,
                "runs": runs[name],
                "objects_per_run": runs[name][0]["total"],
                "spread_pct": spread_pct(rates),
                "spurious_empty": sum(x["spurious_empty"] for x in runs[name]),
            }
            self.results[(name, size, cfg)] = out
            log(f"[{cfg} {size_label(size)}] {name}: {fmt_rate(med)} objects/s "
                f"({out['objects_per_run']} a run, spread {out['spread_pct']:.0f}%)")


# ---------------------------------------------------------------------------
# report


def _cell(res: dict[str, Any] | None) -> str:
    if res is None:
        return "–"
    if res.get("failed"):
        return f"**{res['failed']}**"
    return fmt_rate(res["objects_per_s"])


def report(bench: Bench, meta: dict[str, Any]) -> str:
    opts = bench.opts
    cfgs = [f"{p}x{c}" for p, c in opts.configs]
    names = [t.name for t in bench.transports]
    P = ["# shmring.Queue vs peers: multi-producer/multi-consumer, pickled objects\n", run_line(meta),
         f"Objects/s, median of {opts.runs} run(s) (after one unmeasured warm-up run), from the start barrier to "
         "the last consumer done. Columns: producers x consumers. Objects: `(producer_id, seq, payload)`, the "
         "payload sized so that the pickle is the size named. faster-fifo and shmring: `max_size_bytes="
         f"{opts.capacity}`; mp.Queue unbounded. Batches: `put_many` of {BATCH}, `get_many("
         f"max_messages_to_get={BATCH})`.\n"]
    met, cells = [], 0
    for size in opts.sizes:
        plen = payload_len_for(size)
        P.append(f"## {size_label(size)} objects (payload {plen} B)\n")
        rows = [[n] + [_cell(bench.results.get((n, size, c))) for c in cfgs] for n in names]
        ratio_rows = []
        for num, den, label in RATIOS:
            if num not in names or den not in names:
                continue
            row = [label]
            held = any(label == r[2] for r in RATIOS[:TARGET_RATIOS])
            for c in cfgs:
                a, b = bench.results.get((num, size, c)), bench.results.get((den, size, c))
                if not a or not b or a.get("failed") or b.get("failed"):
                    row.append("–")
                    continue
                x = a["objects_per_s"] / b["objects_per_s"]
                mark = ""
                if held:
                    cells += 1
                    ok = x >= TARGET
                    met.append((ok, f"{size_label(size)} {c} {label.split(', ')[1]}: {fmt_ratio(x)}x"))
                    mark = " ✓" if ok else " ✗"
                row.append(f"{fmt_ratio(x)}x{mark}")
            ratio_rows.append(row)
        if ratio_rows:
            rows += [["**ratios**"] + [""] * len(cfgs)] + ratio_rows
        P.append(md_table(["objects/s"] + cfgs, rows) + "\n")
    if cells:
        n_ok = sum(ok for ok, _ in met)
        P.append(f"## Target: shmring >= {TARGET:g}x faster-fifo (single vs single, batch vs batch)\n")
        P.append(f"Met in {n_ok} of {cells} cells (✓ above)."
                 + ("" if n_ok == cells else " Missed: " + "; ".join(s for ok, s in met if not ok) + ".") + "\n")

    # per-cell details: spread and anything odd
    detail = []
    for size in opts.sizes:
        for n in names:
            for c in cfgs:
                r = bench.results.get((n, size, c))
                if not r or r.get("failed"):
                    continue
                rates = ", ".join(fmt_rate(x["objects_per_s"]) for x in r["runs"])
                detail.append([size_label(size), n, c, str(r["objects_per_run"]), rates, f"{r['spread_pct']:.0f}%",
                               str(r["spurious_empty"]) if n.startswith("faster-fifo") else "–"])
    if detail:
        P.append("## Runs\n")
        P.append("Spread: (max - min) / median. Spurious Empty: faster-fifo's `get` raising `queue.Empty` despite "
                 "a blocking call (it grew its read buffer and retried without blocking while another consumer "
                 "took the object); the consumer calls again.\n")
        P.append(md_table(["size", "transport", "config", "objects/run", "objects/s of each run", "spread",
                           "spurious Empty"], detail) + "\n")
    P += skipped_and_failures(meta["skipped"], [
        f"{e['tag']}: {e['transport']}, {size_label(e['size'])}, {e['config']}: {last_line(e['error'])}"
        for e in bench.errors])
    P.append(load_line(meta, "configuration", bench.config_load))
    P += run_warnings(meta)
    return "\n".join(P)


# ---------------------------------------------------------------------------


def select(only: str | None) -> tuple[list[Transport], dict[str, str]]:
    ts = list(TRANSPORTS)
    if only:
        tokens = [x.strip().lower() for x in only.split(",") if x.strip()]
        known = {t.family for t in ts} | {"mp.queue", "batch", "single"}
        bad = [x for x in tokens if x not in known]
        if bad:
            raise SystemExit(f"--only: unknown {bad}; known: mp, faster-fifo, shmring (families), batch, single")
        fams = {("mp" if x == "mp.queue" else x) for x in tokens if x not in ("batch", "single")} or {
            t.family for t in ts}
        kinds = {x == "batch" for x in tokens if x in ("batch", "single")} or {True, False}
        ts = [t for t in ts if t.family in fams and t.batch in kinds]
    skipped: dict[str, str] = {}
    for fam, module in (("faster-fifo", "faster_fifo"), ("shmring", "shmring")):
        if not any(t.family == fam for t in ts):
            continue
        try:
            __import__(module)
            if fam == "shmring":
                import shmring

                shmring.Queue  # noqa: B018  (the Queue is new: an older build lacks it)
        except Exception as e:
            skipped[fam] = f"import failed: {type(e).__name__}: {e}"
            log(f"skipping {fam}: {skipped[fam]}")
    return [t for t in ts if t.family not in skipped], skipped


def versions() -> dict[str, str]:
    out = {}
    for fam, dist in (("shmring", "shmring"), ("faster-fifo", "faster-fifo")):
        try:
            from importlib.metadata import version

            out[fam] = version(dist)
        except Exception:
            pass
    shmring_source_note(out, os.path.dirname(HERE))
    return out


def parse_configs(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        try:
            p, c = (int(x) for x in item.strip().lower().split("x"))
        except ValueError:
            raise SystemExit(f"--configs: {item!r} is not PxC (e.g. 4x4)") from None
        if p < 1 or c < 1:
            raise SystemExit(f"--configs: {item!r}: at least one producer and one consumer")
        out.append((p, c))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__, "a tenth of the objects, one run: a smoke test (~10-20 s)")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS,
                    help=f"comma-separated PxC configurations (default {DEFAULT_CONFIGS}; e.g. 8x8,16x16)")
    ap.add_argument("--runs", type=int, help="measured runs per cell; the median is reported (default 3)")
    ap.add_argument("--scale", type=float, help="multiply the objects of every run (default 1; --quick 0.1)")
    ap.add_argument("--sizes", help="pickled object sizes, e.g. 64,1KiB (default 64,1024)")
    ap.add_argument("--only", help="comma-separated families (mp, faster-fifo, shmring) and/or batch, single")
    ap.add_argument("--capacity", type=int, default=DEFAULT_CAPACITY,
                    help=f"max_size_bytes of faster-fifo and shmring (default {DEFAULT_CAPACITY})")
    add_output_arguments(ap, 60.0, "declared a HANG", DEFAULT_MARKDOWN)
    opts = ap.parse_args(argv)

    quick_defaults(opts, runs=(1, 3), scale=(0.1, 1.0))
    opts.configs = parse_configs(opts.configs)
    opts.sizes = sizes("--sizes", opts.sizes, SIZES)
    if opts.runs < 1 or opts.scale <= 0:
        raise SystemExit("--runs and --scale must be positive")
    for s in opts.sizes:
        if payload_len_for(s) < 0:
            raise SystemExit(f"--sizes: {s} B is smaller than the tuple without payload")

    sigterm_as_interrupt()  # SIGTERM ends the run like ^C: workers stopped, what was measured reported

    transports, skipped = select(opts.only)
    meta = run_meta(START_METHOD, opts, versions(), skipped, warnings=[])
    build = shmring_build() if any(t.family == "shmring" for t in transports) else None
    bench = Bench(opts, transports)
    interrupted = run_measured(bench.run, meta)
    warn_if_rebuilt(build, meta, "cells")

    write_outputs(report(bench, meta), opts.markdown, opts.json,
                  {"meta": meta, "errors": bench.errors, "config_load_other_pct": bench.config_load,
                   "results": [{"transport": k[0], "size": k[1], "config": k[2], **v}
                               for k, v in bench.results.items()]})
    return exit_status(meta, bench.errors, interrupted, "cell(s) FAILED", opts.markdown)


if __name__ == "__main__":
    sys.exit(main())
