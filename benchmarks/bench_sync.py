#!/usr/bin/env python3
"""Benchmark shmring's process-shared synchronisation primitives against the
stdlib's and posix_ipc's, side by side, in one run.

Subjects: shmring SpinLock, Mutex, Semaphore (as a lock and as a signal),
Event, AtomicFlag (wait/notify) and Condition (over a Mutex), and the peers
multiprocessing.Lock, multiprocessing.Semaphore, multiprocessing.Condition
and posix_ipc.Semaphore (each peer optional: skipped with a note).  Every
measurement that needs two or more processes uses real processes started
with multiprocessing's "spawn" context.

Sections:
  1. uncontended   acquire+release (post+wait) pairs in a tight loop, one
                   process: ns per pair, median of repeats (plus the Python
                   loop floor and the atomics for reference)
  2. handoff       ping-pong between two processes through two primitives:
                   round trip p50/p99 in µs (locks are not signalling
                   primitives: Mutex hands off through a Condition, SpinLock
                   through a polled flag it guards)
  3. waitcpu       CPU used by a process blocked ~1 s (until its timeout)
  4. contention    1, 2 and 4 processes each doing K lock/increment/unlock
                   cycles on a shared counter; the final count is checked
  5. kill          the holder is killed with SIGKILL while holding the lock:
                   does a blocked waiter hang, get an error, or get
                   OwnerDied, and how long does it take to know

    .venv/bin/python benchmarks/bench_sync.py            # everything, ~1.5-2 min on 2 cores
    .venv/bin/python benchmarks/bench_sync.py --quick    # smoke test, ~30 s
    .venv/bin/python benchmarks/bench_sync.py --only shmring,posix --sections handoff,kill
"""

from __future__ import annotations

import os
import secrets
import signal
import statistics
import sys
import time
import traceback
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _harness import (  # noqa: E402
    MachineLoad, WorkerError, WorkerGroup, add_output_arguments, bench_parser, chosen, exit_status, fmt_rate, git_note,
    log, percentiles, quick_defaults, remove_leftovers, run_measured, run_meta, sigterm_as_interrupt, spread_pct,
    write_outputs,
)
from _sync_kit import (  # noqa: E402
    CONTENTION_EXTRA, LOCKS, LOST_WAKEUP_S, N_SLOTS, PREFIX, SIGNALS, SLOT, START_METHOD, Kit, _kill_acquire,
    _selected, family, kill_holder_main, kill_waiter_main, posix_ipc_or_none, unique, worker_main,
)
from _sync_report import report  # noqa: E402

SECTIONS = ["uncontended", "handoff", "waitcpu", "contention", "kill"]


# ---------------------------------------------------------------------------
# parent side


class Pool(WorkerGroup):
    """The spawned workers of sections 1-4 and their control pipes; close()
    stops them ("stop", join, SIGTERM, SIGKILL)."""

    def __init__(self, ctx: Any, n: int, seg_name: str, mp_objs: dict[str, Any], posix_names: dict[str, str]) -> None:
        super().__init__(ctx, None, [f"worker {i}" for i in range(n)])
        try:
            for i in range(n):
                self._spawn(worker_main, (seg_name, mp_objs, posix_names), f"bench-sync-{i}")
            for i in range(n):
                self._expect(i, "ok", 60)
        except BaseException:
            self.close()
            raise

    def send(self, i: int, task: str, *params: Any) -> None:
        """Worker i runs TASKS[task](kit, conn, *params) and answers ("done", result)."""
        self._send(i, ("run", task, params))

    def expect(self, i: int, tag: str, timeout: float) -> tuple[Any, ...]:
        """The next message of worker i, which must be `tag`; an error from
        any worker, an exit, or the timeout raises WorkerError."""
        return self._expect(i, tag, timeout)


class SectionLoad:
    """Like _harness.MachineLoad, for one section while the pool's
    workers are alive: their CPU time is read from /proc (getrusage only
    counts children once they have been reaped)."""

    def __init__(self, bench: Any) -> None:
        self.bench = bench
        self.t0, self.busy0, self.ours0 = time.monotonic(), MachineLoad._stat()[0], self._ours()

    def _ours(self) -> float:
        total = MachineLoad._ours()
        pool = self.bench.pool
        hz = os.sysconf("SC_CLK_TCK")
        for p in pool.procs if pool else []:
            try:
                with open(f"/proc/{p.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / hz  # utime, stime
            except (OSError, ValueError, IndexError):
                pass
        return total

    def other_pct(self) -> float:
        wall = time.monotonic() - self.t0
        other = (MachineLoad._stat()[0] - self.busy0) - (self._ours() - self.ours0)
        return max(0.0, other) / (wall * (os.cpu_count() or 1)) * 100 if wall > 0 else 0.0


class Bench:
    def __init__(self, opts: Any) -> None:
        import multiprocessing as mp

        self.opts = opts
        self.ctx = mp.get_context(START_METHOD)
        self.results: dict[str, list[dict[str, Any]]] = {s: [] for s in SECTIONS}
        self.notes: dict[str, list[str]] = {s: [] for s in SECTIONS}
        self.errors: list[dict[str, Any]] = []
        self.skipped: dict[str, str] = {}
        self.section_load: dict[str, float] = {}  # % of the machine used by other processes, per section
        self.shm_names: list[str] = []  # shmring segment names of this run
        self.posix_names: list[str] = []  # POSIX semaphore names of this run
        self.children: list[Any] = []  # kill-test processes
        self.kit: Kit | None = None
        self.pool: Pool | None = None
        self.posix = posix_ipc_or_none()
        if self.posix is None:
            self.skipped["posix_ipc.Semaphore"] = "posix_ipc does not import (pip install posix_ipc)"
        elif not self.posix.SEMAPHORE_TIMEOUT_SUPPORTED:
            self.skipped["posix_ipc.Semaphore"] = "this platform has no sem_timedwait"
            self.posix = None
        try:
            self.ctx.Lock()
        except (ImportError, OSError) as e:  # no sem_open: no multiprocessing.synchronize
            self.skipped["mp.Lock / mp.Semaphore / mp.Condition"] = f"multiprocessing.synchronize: {e}"
            self.have_mp = False
        else:
            self.have_mp = True

    def want(self, row: str) -> bool:
        if family(row) == "posix_ipc" and self.posix is None:
            return False
        if family(row) == "mp" and not self.have_mp:
            return False
        return not self.opts.only or _selected(row, self.opts.only)

    # -- setup / teardown ----------------------------------------------------

    def posix_sem(self, tag: str, value: int) -> Any:
        name = "/" + unique(tag)
        s = self.posix.Semaphore(name, self.posix.O_CREX, initial_value=value)
        self.posix_names.append(name)
        return s

    def setup(self, workers: int) -> None:
        import shmring

        name = unique("kit")
        seg = shmring.Segment.create(name, N_SLOTS * SLOT)
        self.shm_names.append(name)
        mp_objs: dict[str, Any] = {}
        if self.have_mp:
            c = self.ctx
            mp_objs = {"mp.Lock": c.Lock(), "mp.Semaphore": c.Semaphore(1), "mp.Semaphore ping": c.Semaphore(0),
                       "mp.Semaphore pong": c.Semaphore(0), "mp.Condition": c.Condition(c.Lock())}
        pnames: dict[str, str] = {}
        if self.posix is not None:
            for tag, value in (("lock", 1), ("ping", 0), ("pong", 0)):
                s = self.posix_sem(tag, value)
                pnames[tag] = s.name
                s.close()
        self.kit = Kit(seg, mp_objs, pnames, create=True)
        if workers:
            self.pool = Pool(self.ctx, workers, name, mp_objs, pnames)

    def teardown(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        if self.kit is not None:
            try:
                self.kit.seg.unlink()
            except FileNotFoundError:
                pass
            for name in self.kit.posix_names.values():
                try:
                    self.posix.unlink_semaphore(name)
                except Exception:
                    pass
            try:
                self.kit.close()
            except Exception as e:
                log(f"closing the kit: {e}")
            self.kit = None

    def restart(self) -> None:
        """After a failed measurement: fresh workers and fresh primitives (a
        killed worker may have left a lock taken)."""
        n = len(self.pool.procs) if self.pool else 0
        self.teardown()
        self.setup(n)

    def unlink_all(self) -> list[str]:
        """Remove every segment and semaphore of this run that still has a
        name; returns the paths that were still there."""
        return remove_leftovers([os.path.join("/dev/shm", name) for name in self.shm_names]
                                + ["/dev/shm/sem." + name.lstrip("/") for name in self.posix_names])

    def cleanup(self) -> list[str]:
        """Last line of defence: nothing of this run may stay behind."""
        for p in self.children:
            if p.is_alive():
                p.kill()
            p.join(2.0)
        try:
            self.teardown()
        except Exception as e:
            log(f"teardown: {e}")
        left = self.unlink_all()
        # anything else with this run's prefix (e.g. a name created just before an interrupt)
        mine = f"{PREFIX}-{os.getpid()}-"
        left += remove_leftovers(os.path.join("/dev/shm", fn) for fn in os.listdir("/dev/shm")
                                 if fn.startswith(mine) or fn.startswith("sem." + mine))
        return left

    def _fail(self, section: str, row: str, e: BaseException, restart: bool = True) -> dict[str, Any]:
        text = str(e).rstrip() or type(e).__name__
        log(f"!!! FAILED: {section} {row}\n{text}\n")
        self.errors.append({"section": section, "row": row, "error": text})
        if restart and self.pool is not None:
            try:
                self.restart()
            except Exception as e2:
                log(f"restart failed: {e2}")
        return {"row": row, "failed": "FAILED", "error": text}

    # -- 1. uncontended --------------------------------------------------------

    def run_uncontended(self) -> None:
        o = self.opts
        only = [t for t in o.only] if o.only else None
        assert self.pool is not None
        try:
            self.pool.send(0, "uncontended", o.target_uncontended, o.repeat_uncontended, only)
            rows = self.pool.expect(0, "done", 300)[1]
        except Exception as e:
            self.results["uncontended"].append(self._fail("uncontended", "all", e))
            return
        for r in rows:
            if self.want(r["row"].replace(" (signal)", "")) or r["row"].startswith("("):
                self.results["uncontended"].append(r)
                log(f"[uncontended] {r['row']} {r['op']}: {r['ns']:.0f} ns")

    # -- 2. hand-off -------------------------------------------------------------

    def placements(self) -> list[tuple[str, list[int], list[int]]]:
        """(label, CPUs of A, CPUs of B): on two different CPUs (every
        hand-off wakes a process on the other, idle CPU) and both on one
        CPU (a hand-off is a context switch on that CPU)."""
        cpus = sorted(os.sched_getaffinity(0))
        out = []
        if len(cpus) >= 2:
            out.append(("2 CPUs", [cpus[0]], [cpus[1]]))
        out.append(("1 CPU", [cpus[0]], [cpus[0]]))
        return out

    def run_handoff(self) -> None:
        o = self.opts
        assert self.pool is not None and self.kit is not None
        for label, cpu_a, cpu_b in self.placements():
            for row in SIGNALS:
                if not self.want(row):
                    continue
                try:
                    # (again for every row: a failed row restarts the workers)
                    self.pool.send(0, "pin", cpu_a)
                    self.pool.expect(0, "done", 30)
                    self.pool.send(1, "pin", cpu_b)
                    self.pool.expect(1, "done", 30)
                    self.kit.reset_signals()
                    self.pool.send(1, "handoff", row, "b", o.pingpong_n, o.pingpong_warmup, o.pingpong_max_s)
                    self.pool.send(0, "handoff", row, "a", o.pingpong_n, o.pingpong_warmup, o.pingpong_max_s)
                    a = self.pool.expect(0, "done", o.pingpong_max_s * 1.1 + 2 * LOST_WAKEUP_S + 10)[1]
                    b = self.pool.expect(1, "done", 30)[1]
                except Exception as e:
                    r = self._fail("handoff", f"{row} ({label})", e)
                    r["row"], r["placement"] = row, label
                    self.results["handoff"].append(r)
                    continue
                n = len(a["lat"])
                r = {"row": row, "placement": label, "cpus": [cpu_a, cpu_b], "how": SIGNALS[row], "n": n,
                     **percentiles(sorted(a["lat"])),
                     "a_cpu_us_per_rt": a["cpu"] / a["rts"] * 1e6, "b_cpu_us_per_rt": b["cpu"] / max(1, b["rts"]) * 1e6,
                     "time_bound_hit": n < o.pingpong_n}
                self.results["handoff"].append(r)
                log(f"[handoff {label}] {row}: p50 {r['p50_us']:.1f} us, p99 {r['p99_us']:.1f} us ({n} round trips)")
        try:
            for i in (0, 1):
                self.pool.send(i, "pin", None)
                self.pool.expect(i, "done", 30)
        except Exception as e:
            self._fail("handoff", "unpinning", e)

    # -- 3. CPU while waiting -------------------------------------------------------

    def run_waitcpu(self) -> None:
        o = self.opts
        assert self.pool is not None and self.kit is not None
        rows = [r for r in LOCKS if r != "shmring.Semaphore"] + [
            "shmring.Semaphore", "shmring.Event", "shmring.AtomicFlag", "shmring.Mutex+Condition", "mp.Condition"]
        for row in rows:
            if not self.want(row):
                continue
            held = None
            try:
                self.kit.reset_signals()
                if row in LOCKS and row != "shmring.Semaphore":
                    held = self.kit.lock(row)  # the parent holds it: the worker waits
                    ok = _kill_acquire(row, held, 1.0)[0] == "acquired"
                    if not ok:
                        raise RuntimeError(f"the parent could not take {row}")
                self.pool.send(0, "waitcpu", row, o.wait_seconds)
                d = self.pool.expect(0, "done", o.wait_seconds + 30)[1]
            except Exception as e:
                self.results["waitcpu"].append(self._fail("waitcpu", row, e))
                continue
            finally:
                if held is not None:
                    try:
                        held.release()
                    except Exception as e:
                        log(f"releasing {row}: {e}")
            what = {"shmring.Semaphore": "acquire() on a semaphore at 0", "shmring.Event": "wait() on a clear event",
                    "shmring.AtomicFlag": "wait_set() on a clear flag",
                    "shmring.Mutex+Condition": "Condition.wait() (nobody notifies)",
                    "mp.Condition": "Condition.wait() (nobody notifies)"}.get(row, "acquire() of a lock held by another process")
            r = {"row": row, "what": what, **d, "cpu_pct": d["cpu_s"] / d["wall_s"] * 100}
            self.results["waitcpu"].append(r)
            if d["got"]:
                self.notes["waitcpu"].append(f"{row}: the wait returned True (expected a timeout)")
            log(f"[waitcpu] {row}: {r['cpu_pct']:.2f}% of a core over {d['wall_s']:.2f} s")

    # -- 4. contention ---------------------------------------------------------------

    def _contend_once(self, row: str, procs: int, k: int) -> dict[str, Any]:
        assert self.pool is not None and self.kit is not None
        kit = self.kit
        kit.go.clear()
        kit.counter[0] = 0
        kit.atomic.store(0)
        for i in range(procs):
            self.pool.send(i, "contend", row, k)
        for i in range(procs):
            self.pool.expect(i, "armed", 30)
        kit.go.set()
        ds = [self.pool.expect(i, "done", self.opts.run_timeout)[1] for i in range(procs)]
        wall = max(d["t1"] for d in ds) - min(d["t0"] for d in ds)
        total = procs * k
        got = kit.atomic.load() if row == "shmring.AtomicInt64.fetch_add" else kit.counter[0]
        t_first = min(d["t0"] for d in ds)
        return {"procs": procs, "k": k, "total": total, "count": got, "exact": got == total, "wall_s": wall,
                # when the first process finished, as a share of the run: 1/procs = one
                # process at a time (no interleaving), 1.0 = all finished together
                "first_done": (min(d["t1"] for d in ds) - t_first) / wall,
                "rate": total / wall, "cores_busy": sum(d["cpu"] for d in ds) / wall,
                "cpu_us_per_acq": sum(d["cpu"] for d in ds) / total * 1e6}

    def _pin_pool(self, spread: bool) -> None:
        """Worker i on CPU i mod the CPU count (spread), or unpinned."""
        assert self.pool is not None
        cpus = sorted(os.sched_getaffinity(0))
        for i in range(len(self.pool.procs)):
            self.pool.send(i, "pin", [cpus[i % len(cpus)]] if spread else None)
            self.pool.expect(i, "done", 30)

    def run_contention(self) -> None:
        o = self.opts
        rows = [r for r in LOCKS + CONTENTION_EXTRA if self.want(r)]
        for procs in o.procs:
            if o.pin:
                try:
                    self._pin_pool(True)
                except Exception as e:
                    self._fail("contention", "pinning", e)
            for row in rows:
                try:
                    k = o.contention_k0
                    calib = self._contend_once(row, procs, k)
                    k = int(min(o.contention_kmax, max(1000, calib["rate"] * o.target_contention / procs)))
                    runs = [self._contend_once(row, procs, k) for _ in range(o.repeat)]
                except Exception as e:
                    r = self._fail("contention", row, e)
                    r["procs"] = procs
                    self.results["contention"].append(r)
                    continue
                rates = [x["rate"] for x in runs]
                med = statistics.median(rates)
                mid = min(runs, key=lambda x: abs(x["rate"] - med))
                exact = all(x["exact"] for x in runs)
                r = {"row": row, "procs": procs, "k": k, "rate": med, "spread_pct": spread_pct(rates),
                     "cores_busy": mid["cores_busy"], "cpu_us_per_acq": mid["cpu_us_per_acq"], "exact": exact,
                     "first_done": mid["first_done"],
                     "counts": [(x["count"], x["total"]) for x in runs], "runs": runs}
                self.results["contention"].append(r)
                if not exact and row != "unprotected (no lock)":
                    bad = next(x for x in runs if not x["exact"])
                    msg = f"count {bad['count']} != {bad['total']}: the lock let two holders in"
                    self.errors.append({"section": "contention", "row": f"{row} x{procs}", "error": msg})
                    log(f"!!! WRONG COUNT: {row} x{procs}: {msg}")
                log(f"[contention x{procs}] {row}: {fmt_rate(med)} acq/s, {mid['cores_busy']:.2f} cores, "
                    f"first done at {mid['first_done'] * 100:.0f}%, count {'exact' if exact else 'WRONG'} (K={k})")
        if o.pin:
            try:
                self._pin_pool(False)
            except Exception as e:
                self._fail("contention", "unpinning", e)

    # -- 5. holder killed ----------------------------------------------------------------

    def _kill_make(self, kind: str) -> tuple[Any, Any, Callable[[], None]]:
        """A fresh lock of `kind`: (what the children get, the parent's handle, closer)."""
        import shmring

        if kind.startswith("shmring."):
            cls = getattr(shmring, kind.split(".", 1)[1])
            name = unique("kill")
            self.shm_names.append(name)
            prim = cls.create(name, 1) if kind == "shmring.Semaphore" else cls.create(name)
            return name, prim, prim.close
        if kind == "posix_ipc.Semaphore":
            s = self.posix_sem("kill", 1)

            def close() -> None:
                s.close()
                self.posix.unlink_semaphore(s.name)

            return s.name, s, close
        lk = self.ctx.Lock() if kind == "mp.Lock" else self.ctx.Semaphore(1)
        return lk, lk, lambda: None

    def _kill_spawn(self, target: Any, *args: Any) -> tuple[Any, Any]:
        parent_end, child_end = self.ctx.Pipe(duplex=True)
        p = self.ctx.Process(target=target, args=(*args, child_end), daemon=True)
        p.start()
        child_end.close()
        self.children.append(p)
        return p, parent_end

    @staticmethod
    def _recv(conn: Any, p: Any, tag: str, timeout: float) -> Any:
        if not conn.poll(timeout):
            raise WorkerError(f"timeout: no {tag!r} after {timeout:.0f} s")
        try:
            msg = conn.recv()
        except EOFError:
            p.join(1.0)
            raise WorkerError(f"child exited (exit code {p.exitcode}) before {tag!r}") from None
        if msg[0] == "error":
            raise WorkerError(msg[1])
        if msg[0] != tag:
            raise WorkerError(f"expected {tag!r}, got {msg!r}")
        return msg

    def _stop(self, *procs: Any) -> None:
        for p in procs:
            if p is not None and p.is_alive():
                p.kill()
            if p is not None:
                p.join(2.0)
                if p in self.children:
                    self.children.remove(p)

    def _kill_blocked(self, kind: str, closers: list[Callable[[], None]]) -> dict[str, Any]:
        """(a) a waiter is blocked in acquire when the holder is killed; the
        holder stays a zombie (not reaped) until the waiter has answered."""
        T = self.opts.kill_timeout
        h = w = None
        try:
            ref, _, close = self._kill_make(kind)
            closers.append(close)
            h, hc = self._kill_spawn(kill_holder_main, kind, ref)
            self._recv(hc, h, "held", 60)
            w, wc = self._kill_spawn(kill_waiter_main, kind, ref, T)
            self._recv(wc, w, "ready", 60)
            # The waiter is now asleep (or spinning) in acquire.  A random phase, so
            # that repeats sample the whole of a waiter's 50 ms wait slices.
            time.sleep(0.2 + secrets.randbelow(50_000) / 1e6)
            t_kill = time.perf_counter()
            os.kill(h.pid, signal.SIGKILL)
            d = self._recv(wc, w, "done", T + 30)[1]
        finally:
            self._stop(h, w)
        return {**d, "detect_s": d["t_end"] - t_kill, "waited_s": d["t_end"] - d["t_start"]}

    def _kill_late(self, kind: str, closers: list[Callable[[], None]]) -> dict[str, Any]:
        """(b) the parent comes to the lock after its holder was killed and
        reaped; after OwnerDied it releases *without* repairing, and tries
        once more."""
        h = None
        try:
            ref, prim, close = self._kill_make(kind)
            closers.append(close)
            h, hc = self._kill_spawn(kill_holder_main, kind, ref)
            self._recv(hc, h, "held", 60)
            os.kill(h.pid, signal.SIGKILL)
        finally:
            self._stop(h)
        t0 = time.perf_counter()
        out, detail = _kill_acquire(kind, prim, self.opts.kill_timeout)
        dt = time.perf_counter() - t0
        unrepaired = ""
        if out == "OwnerDied":
            prim.release()
            unrepaired = _kill_acquire(kind, prim, 0.5)[0]
            if unrepaired == "acquired":
                prim.release()
        elif out == "acquired":
            prim.release()
        return {"outcome": out, "detail": detail, "detect_s": dt, "unrepaired": unrepaired}

    def run_kill(self) -> None:
        o = self.opts
        for kind in LOCKS:
            if not self.want(kind):
                continue
            closers: list[Callable[[], None]] = []
            try:
                trials = [self._kill_blocked(kind, closers)]
                if trials[0]["outcome"] != "timed out":  # repeat the ones that detect: a distribution
                    for _ in range(o.kill_repeats - 1):
                        trials.append(self._kill_blocked(kind, closers))
                late = self._kill_late(kind, closers)
            except Exception as e:
                self.results["kill"].append(self._fail("kill", kind, e, restart=False))
                continue
            finally:
                for c in closers:
                    try:
                        c()
                    except Exception as e:
                        log(f"closing a {kind} of the kill test: {e}")
            outcomes = sorted({t["outcome"] for t in trials})
            det = sorted(t["detect_s"] for t in trials)
            d = trials[0]
            r = {"row": kind, "timeout_s": o.kill_timeout, "blocked_outcome": "/".join(outcomes),
                 "blocked_detect_s": statistics.median(det), "blocked_detect_max_s": det[-1],
                 "blocked_waited_s": statistics.median(t["waited_s"] for t in trials), "trials": len(trials),
                 "blocked_after": d["after"], "late_outcome": late["outcome"], "late_detect_s": late["detect_s"],
                 "late_unrepaired": late["unrepaired"], "detail": d["detail"] or late["detail"],
                 "trial_results": trials}
            self.results["kill"].append(r)
            log(f"[kill] {kind}: blocked waiter -> {r['blocked_outcome']} after {r['blocked_detect_s'] * 1000:.1f} ms "
                f"(median of {len(trials)}, max {det[-1] * 1000:.1f} ms); late acquirer -> {late['outcome']} after "
                f"{late['detect_s'] * 1000:.1f} ms")

    # -- driver ---------------------------------------------------------------------------

    def run(self) -> None:
        o = self.opts
        need_pool = [s for s in o.sections if s != "kill"]
        workers = 0
        if need_pool:
            workers = max(o.procs) if "contention" in o.sections else (2 if "handoff" in o.sections else 1)
        self.setup(workers)
        for s in o.sections:
            load = SectionLoad(self)
            getattr(self, f"run_{s}")()
            self.section_load[s] = load.other_pct()


def collect_meta(opts: Any, bench: Bench) -> dict[str, Any]:
    import shmring

    versions: dict[str, Any] = {"shmring": shmring.__version__ + git_note(os.path.dirname(HERE))}
    pi = posix_ipc_or_none()
    if pi is not None:
        versions["posix_ipc"] = getattr(pi, "VERSION", "?")
    return run_meta(START_METHOD, opts, versions, bench.skipped)


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__, "short runs, one repeat: a smoke test (~30 s)")
    ap.add_argument("--only", help="comma-separated substrings of row names (e.g. shmring,posix,mp.lock)")
    ap.add_argument("--sections", help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--repeat", type=int, help="runs per contention measurement (default 3)")
    ap.add_argument("--procs", help="process counts for contention (default 1,2,4; --quick 2,4)")
    ap.add_argument("--pingpong-n", type=int, help="measured round trips (default 10000)")
    ap.add_argument("--pingpong-warmup", type=int, help="unmeasured round trips first (default 1000)")
    ap.add_argument("--wait-seconds", type=float, help="how long the waiter of section 3 waits (default 1)")
    ap.add_argument("--kill-timeout", type=float, help="acquire timeout after the holder is killed (default 2)")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="contention: leave the processes unpinned (default: process i on CPU i mod the CPU count)")
    add_output_arguments(ap, 120.0, "abandoned")
    opts = ap.parse_args(argv)

    quick_defaults(opts, repeat=(1, 3), repeat_uncontended=(3, 7), target_uncontended=(0.02, 0.05),
                   target_contention=(0.1, 0.4), contention_k0=(1000, 5000), contention_kmax=(5_000_000, 5_000_000),
                   pingpong_n=(1000, 10000), pingpong_max_s=(0.5, 3.0), kill_repeats=(2, 5), wait_seconds=(0.3, 1.0),
                   kill_timeout=(1.0, 2.0))
    opts.procs = [int(x) for x in opts.procs.split(",")] if opts.procs else ([2, 4] if opts.quick else [1, 2, 4])
    if opts.pingpong_warmup is None:  # (0 is a valid count)
        opts.pingpong_warmup = 100 if opts.quick else 1000
    opts.only = [x.strip().lower() for x in opts.only.split(",") if x.strip()] if opts.only else None
    opts.sections = chosen("--sections", opts.sections, SECTIONS)
    if opts.repeat < 1 or any(p < 1 for p in opts.procs):
        raise SystemExit("--repeat and --procs must be >= 1")

    sigterm_as_interrupt()  # SIGTERM ends the run like ^C: workers stopped, what was measured reported

    bench = Bench(opts)
    for k, v in bench.skipped.items():
        log(f"skipping {k}: {v}")
    meta = collect_meta(opts, bench)

    def run() -> None:
        try:
            bench.run()
        except Exception as e:  # reported in the tables; the cleanup still runs
            bench.errors.append({"section": "setup", "row": "-", "error": traceback.format_exc()})
            log(f"!!! {e}")

    interrupted = run_measured(run, meta, bench.cleanup)

    text = report(bench, meta)
    meta["section_load_other_pct"] = bench.section_load  # for the JSON: the report has it already
    write_outputs(text, opts.markdown, opts.json,
                  {"meta": meta, "results": bench.results, "notes": bench.notes, "errors": bench.errors})
    return exit_status(meta, bench.errors, interrupted, "measurement(s) FAILED")


if __name__ == "__main__":
    sys.exit(main())
