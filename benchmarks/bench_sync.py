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

import argparse
import os
import platform
import secrets
import signal
import statistics
import sys
import time
import traceback
from collections import deque
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

# Shared helpers of the channel benchmark (tables, percentiles, machine load, teardown, report tails).
from _workloads import child_setup  # noqa: E402
from bench_channel import (  # noqa: E402
    MachineLoad, _percentiles, fmt_num, fmt_rate, fmt_ratio, git_note, last_line, machine_load_pcts, md_table,
    not_idle_warning, run_context, run_measured, sigterm_as_interrupt, skipped_and_failures, stop_workers,
    write_outputs,
)

START_METHOD = "spawn"
SECTIONS = ["uncontended", "handoff", "waitcpu", "contention", "kill"]
PREFIX = "bsync"  # every shmring segment and POSIX semaphore of a run: bsync-<pid>-...
SLOT = 64  # one cache line per primitive in the shared segment

# -- the subjects -----------------------------------------------------------

# Lock-like rows (sections 1, 3, 4, 5).
LOCKS = ["shmring.SpinLock", "shmring.Mutex", "shmring.Semaphore", "mp.Lock", "mp.Semaphore",
         "posix_ipc.Semaphore"]
# Signalling rows (sections 1, 2, 3): name -> what the ping-pong does.
SIGNALS = {
    "shmring.Semaphore": "two semaphores at 0: release() / acquire()",
    "shmring.Event": "two events: set() / wait(); clear()",
    "shmring.AtomicFlag": "two flags: set() / wait_set(); clear()",
    "shmring.Mutex+Condition": "Mutex + Condition + turn word: notify() / wait() in a loop",
    "shmring.SpinLock (polled)": "a turn word guarded by a SpinLock, polled (no sleeping)",
    "mp.Semaphore": "two semaphores at 0: release() / acquire()",
    "posix_ipc.Semaphore": "two semaphores at 0: release() / acquire()",
    "mp.Condition": "mp.Condition(mp.Lock()) + turn word: notify() / wait() in a loop",
}
# Which row stands for each primitive in the summary table.
SUMMARY = [
    ("shmring.SpinLock", "shmring.SpinLock (polled)", "polled flag"),
    ("shmring.Mutex", "shmring.Mutex+Condition", "with Condition"),
    ("shmring.Semaphore", "shmring.Semaphore", ""),
    ("shmring.Event", "shmring.Event", ""),
    ("shmring.AtomicFlag", "shmring.AtomicFlag", ""),
    ("mp.Lock", "mp.Condition", "mp.Condition"),
    ("mp.Semaphore", "mp.Semaphore", ""),
    ("posix_ipc.Semaphore", "posix_ipc.Semaphore", ""),
]
BASELINES = ["mp.Lock", "mp.Semaphore", "posix_ipc.Semaphore"]
HANDOFF_BASELINES = ["mp.Semaphore", "posix_ipc.Semaphore", "mp.Condition"]
# Extra rows of section 4: no lock at all (the count comes out wrong: that
# shows the check works) and a lock-free atomic increment.
CONTENTION_EXTRA = ["shmring.AtomicInt64.fetch_add", "unprotected (no lock)"]


ALL_CPUS = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()


def family(row: str) -> str:
    return row.split(".", 1)[0].split(" ", 1)[0]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def posix_ipc_or_none() -> Any:
    try:
        import posix_ipc  # type: ignore[import-not-found]
    except ImportError:
        return None
    return posix_ipc


def unique(tag: str) -> str:
    return f"{PREFIX}-{os.getpid()}-{secrets.token_hex(4)}-{tag}"


# ---------------------------------------------------------------------------
# The kit: every primitive of sections 1-4, in one shmring segment (one cache
# line each) plus the multiprocessing objects and named POSIX semaphores.
# The parent creates it; each worker attaches to the same objects.

# slot numbers
S_GO, S_SPIN, S_MUTEX, S_SEM, S_COUNTER, S_ATOMIC = 0, 1, 2, 3, 4, 5
S_SEM_PING, S_SEM_PONG, S_EV_PING, S_EV_PONG, S_FL_PING, S_FL_PONG = 6, 7, 8, 9, 10, 11
S_CMUTEX, S_COND, S_CTURN, S_PSPIN, S_PTURN, S_MPTURN, S_SCRATCH, S_STOP = 12, 13, 14, 15, 16, 17, 18, 19
N_SLOTS = 20


class Kit:
    def __init__(self, seg: Any, mp_objs: dict[str, Any], posix_names: dict[str, str], create: bool) -> None:
        import shmring

        self.seg = seg
        self.mp = mp_objs
        self.posix_names = posix_names
        o = lambda s: s * SLOT  # noqa: E731
        self.go = shmring.Event(seg, o(S_GO))
        self.spin = shmring.SpinLock(seg, o(S_SPIN))
        self.mutex = shmring.Mutex(seg, o(S_MUTEX))
        self.sem = shmring.Semaphore(seg, o(S_SEM), value=1 if create else None)
        self.atomic = shmring.AtomicInt64(seg, o(S_ATOMIC))
        self.sem_ping = shmring.Semaphore(seg, o(S_SEM_PING), value=0 if create else None)
        self.sem_pong = shmring.Semaphore(seg, o(S_SEM_PONG), value=0 if create else None)
        self.ev_ping, self.ev_pong = shmring.Event(seg, o(S_EV_PING)), shmring.Event(seg, o(S_EV_PONG))
        self.fl_ping, self.fl_pong = shmring.AtomicFlag(seg, o(S_FL_PING)), shmring.AtomicFlag(seg, o(S_FL_PONG))
        self.cmutex = shmring.Mutex(seg, o(S_CMUTEX))
        self.cond = shmring.Condition(seg, o(S_COND), lock=self.cmutex)
        self.pspin = shmring.SpinLock(seg, o(S_PSPIN))
        self.scratch = shmring.AtomicInt64(seg, o(S_SCRATCH))
        # plain (non-atomic) shared words: the counter of section 4 and the turns
        self.counter = seg.buf[o(S_COUNTER): o(S_COUNTER) + 8].cast("q")
        self.cturn = seg.buf[o(S_CTURN): o(S_CTURN) + 4].cast("i")
        self.pturn = seg.buf[o(S_PTURN): o(S_PTURN) + 4].cast("i")
        self.mpturn = seg.buf[o(S_MPTURN): o(S_MPTURN) + 4].cast("i")
        self.stop = seg.buf[o(S_STOP): o(S_STOP) + 4].cast("i")  # ping-pong: A's last ping says "stop"
        self.posix: dict[str, Any] = {}
        pi = posix_ipc_or_none()
        if pi is not None:
            for k, name in posix_names.items():
                self.posix[k] = pi.Semaphore(name)

    def close(self) -> None:
        for mv in (self.counter, self.cturn, self.pturn, self.mpturn, self.stop):
            mv.release()
        for s in self.posix.values():
            try:
                s.close()
            except Exception:
                pass
        self.seg.close()

    # -- rows -> operations --------------------------------------------------

    def lock(self, row: str) -> Any:
        """The object with acquire()/release() of a lock row."""
        return {
            "shmring.SpinLock": self.spin,
            "shmring.Mutex": self.mutex,
            "shmring.Semaphore": self.sem,
            "mp.Lock": self.mp.get("mp.Lock"),
            "mp.Semaphore": self.mp.get("mp.Semaphore"),
            "posix_ipc.Semaphore": self.posix.get("lock"),
        }[row]

    def signal_pair(self, row: str) -> tuple[Any, Any]:
        return {
            "shmring.Semaphore": (self.sem_ping, self.sem_pong),
            "shmring.Event": (self.ev_ping, self.ev_pong),
            "shmring.AtomicFlag": (self.fl_ping, self.fl_pong),
            "mp.Semaphore": (self.mp.get("mp.Semaphore ping"), self.mp.get("mp.Semaphore pong")),
            "posix_ipc.Semaphore": (self.posix.get("ping"), self.posix.get("pong")),
        }[row]

    def reset_signals(self) -> None:
        """Parent, between rows: everything clear, turns at 0."""
        for e in (self.ev_ping, self.ev_pong):
            e.clear()
        for f in (self.fl_ping, self.fl_pong):
            f.clear()
        self.cturn[0] = self.pturn[0] = self.mpturn[0] = self.stop[0] = 0
        self.counter[0] = 0
        self.atomic.store(0)


# ---------------------------------------------------------------------------
# measuring loops (run in the workers)


def _bench_loop(n: int, *fns: Any, arg: Any = None) -> int:
    """ns for n iterations calling fns in order (each with `arg` if given)."""
    clock = time.perf_counter_ns
    r = range(n)
    if arg is not None:
        (f,) = fns
        t0 = clock()
        for _ in r:
            f(arg)
        return clock() - t0
    if len(fns) == 1:
        (a,) = fns
        t0 = clock()
        for _ in r:
            a()
        return clock() - t0
    if len(fns) == 2:
        a, b = fns
        t0 = clock()
        for _ in r:
            a()
            b()
        return clock() - t0
    a, b, c = fns
    t0 = clock()
    for _ in r:
        a()
        b()
        c()
    return clock() - t0


def uncontended_ops(kit: Kit) -> list[tuple[str, str, tuple[Any, ...], Any]]:
    """(row, operation, functions, arg) for section 1, in report order."""
    import shmring

    ops: list[tuple[str, str, tuple[Any, ...], Any]] = []
    for row in LOCKS:
        lk = kit.lock(row)
        if lk is not None:
            ops.append((row, "acquire(); release()", (lk.acquire, lk.release), None))
    for row in ("shmring.Semaphore", "mp.Semaphore", "posix_ipc.Semaphore"):
        ping, _ = kit.signal_pair(row)
        if ping is not None:
            ops.append((row + " (signal)", "release(); acquire()  (post, then a wait that succeeds)",
                        (ping.release, ping.acquire), None))
    ops.append(("shmring.Event", "set(); wait(); clear()", (kit.ev_ping.set, kit.ev_ping.wait, kit.ev_ping.clear),
                None))
    ops.append(("shmring.AtomicFlag", "set(); wait_set(); clear()",
                (kit.fl_ping.set, kit.fl_ping.wait_set, kit.fl_ping.clear), None))
    # references and diagnostics
    ops.append(("(ref) shmring.Event", "set() alone (nobody waits)", (kit.ev_pong.set,), None))
    ops.append(("(ref) shmring.AtomicFlag", "set() alone (nobody waits)", (kit.fl_pong.set,), None))
    cell = kit.mutex._cell  # private: the C methods under the Python wrapper, to size the wrapper's cost
    ops.append(("(diag) shmring.Mutex", "_cell.mutex_acquire(); _cell.mutex_release()  (private C methods)",
                (cell.mutex_acquire, cell.mutex_release), None))
    cell = kit.spin._cell
    ops.append(("(diag) shmring.SpinLock", "_cell.spin_acquire(); _cell.spin_release()  (private C methods)",
                (cell.spin_acquire, cell.spin_release), None))
    nop = [].__len__
    ops.append(("(floor) Python loop", "two no-op C calls", (nop, nop), None))
    ops.append(("(ref) AtomicInt64", "load()", (kit.scratch.load,), None))
    ops.append(("(ref) AtomicInt64", "fetch_add(1)", (kit.scratch.fetch_add,), 1))
    ops.append(("(ref) shmring.fence", "fence()", (shmring.fence,), None))
    return ops


def task_uncontended(kit: Kit, conn: Any, n_target_s: float, repeats: int, only: list[str] | None) -> list[dict[str, Any]]:
    out = []
    for row, op, fns, arg in uncontended_ops(kit):
        if only and not _selected(row, only):
            continue
        # calibrate: aim each repeat at n_target_s
        n = 1000
        while True:
            dt = _bench_loop(n, *fns, arg=arg)
            if dt >= 0.02e9 or n >= 10_000_000:
                break
            n *= 4
        n = max(1000, int(n * n_target_s * 1e9 / max(dt, 1)))
        _bench_loop(n // 4 + 1, *fns, arg=arg)  # warm-up
        per = [_bench_loop(n, *fns, arg=arg) / n for _ in range(repeats)]
        med = statistics.median(per)
        out.append({"row": row, "op": op, "n": n, "ns": med, "min_ns": min(per),
                    "spread_pct": (max(per) - min(per)) / med * 100, "repeats": per})
    return out


def _handoff_fns(kit: Kit, row: str, side: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """(send, receive) for one side of the ping-pong of `row`: A sends ping
    and receives pong, B receives ping and sends pong."""
    if row in ("shmring.Semaphore", "mp.Semaphore", "posix_ipc.Semaphore"):
        ping, pong = kit.signal_pair(row)
        mine, theirs = (pong, ping) if side == "a" else (ping, pong)
        return theirs.release, mine.acquire
    if row in ("shmring.Event", "shmring.AtomicFlag"):
        ping, pong = kit.signal_pair(row)
        mine, theirs = (pong, ping) if side == "a" else (ping, pong)
        wait = mine.wait if row == "shmring.Event" else mine.wait_set
        clear = mine.clear

        def recv() -> None:
            wait()
            clear()

        return theirs.set, recv
    me, other = (0, 1) if side == "a" else (1, 0)
    if row in ("shmring.Mutex+Condition", "mp.Condition"):
        cond = kit.cond if row == "shmring.Mutex+Condition" else kit.mp["mp.Condition"]
        turn = kit.cturn if row == "shmring.Mutex+Condition" else kit.mpturn

        def send() -> None:
            with cond:
                turn[0] = other
                cond.notify()

        def recv() -> None:
            with cond:
                while turn[0] != me:
                    # The peer answers within microseconds: a wait that times out
                    # with the turn still not ours is a lost wake-up, not a slow peer.
                    if not cond.wait(LOST_WAKEUP_S) and turn[0] != me:
                        raise LostWakeup(f"{row}: wait() timed out after {LOST_WAKEUP_S:g} s with the turn not "
                                         f"ours: the peer's notify() did not wake this process (lost wake-up)")

        return send, recv
    if row == "shmring.SpinLock (polled)":
        lk, turn = kit.pspin, kit.pturn
        acq, rel = lk.acquire, lk.release

        def send() -> None:
            acq()
            turn[0] = other
            rel()

        def recv() -> None:
            while True:
                acq()
                t = turn[0]
                rel()
                if t == me:
                    return

        return send, recv
    raise ValueError(row)


LOST_WAKEUP_S = 1.0


class LostWakeup(RuntimeError):
    pass


def task_handoff(kit: Kit, conn: Any, row: str, side: str, n: int, warm: int, max_s: float) -> dict[str, Any]:
    """A times n round trips (after `warm` unmeasured ones), stopping early
    after max_s seconds (a tenth of it for the warm-up); then it sets the
    stop word and sends one last ping, on which B leaves without answering."""
    send, recv = _handoff_fns(kit, row, side)
    clock, cpu = time.perf_counter_ns, time.process_time
    stop = kit.stop
    c0 = cpu()
    if side == "a":
        lat: list[int] = []
        add = lat.append
        end = clock() + int(max_s * 0.1e9)
        for _ in range(warm):
            send()
            recv()
            if clock() > end:
                break
        end = clock() + int(max_s * 1e9)
        for _ in range(n):
            t0 = clock()
            send()
            recv()
            t1 = clock()
            add(t1 - t0)
            if t1 > end:
                break
        c1 = cpu()
        stop[0] = 1
        send()
        return {"lat": lat, "cpu": c1 - c0, "rts": len(lat) + warm}
    rts = 0
    while True:
        recv()
        if stop[0]:
            break
        send()
        rts += 1
    return {"cpu": cpu() - c0, "rts": rts}


def task_pin(kit: Kit, conn: Any, cpus: list[int] | None) -> list[int]:
    """Pin this worker to `cpus` (None: every CPU this process may use)."""
    os.sched_setaffinity(0, set(cpus) if cpus else ALL_CPUS)
    return sorted(os.sched_getaffinity(0))


def timed_wait(kit: Kit, row: str, secs: float) -> Callable[[], bool]:
    """A call that blocks on `row` for up to `secs` (the parent makes sure
    nothing will come): True if it got through, False on timeout."""
    if row in LOCKS and not row.startswith("shmring.Semaphore"):
        lk = kit.lock(row)
        if row == "posix_ipc.Semaphore":
            return _posix_timed(lk, secs)
        if row.startswith("mp."):
            return lambda: lk.acquire(True, secs)
        return lambda: lk.acquire(timeout=secs)
    if row == "shmring.Semaphore":
        return lambda: kit.sem_ping.acquire(timeout=secs)
    if row == "shmring.Event":
        return lambda: kit.ev_ping.wait(secs)
    if row == "shmring.AtomicFlag":
        return lambda: kit.fl_ping.wait_set(secs)
    if row in ("shmring.Mutex+Condition", "mp.Condition"):
        cond = kit.cond if row == "shmring.Mutex+Condition" else kit.mp["mp.Condition"]

        def w() -> bool:
            with cond:
                return bool(cond.wait(secs))

        return w
    raise ValueError(row)


def _posix_timed(sem: Any, secs: float) -> Callable[[], bool]:
    busy = posix_ipc_or_none().BusyError

    def w() -> bool:
        try:
            sem.acquire(secs)
            return True
        except busy:
            return False

    return w


def task_waitcpu(kit: Kit, conn: Any, row: str, secs: float) -> dict[str, Any]:
    w = timed_wait(kit, row, secs)
    c0, t0 = time.process_time(), time.perf_counter()
    got = w()
    t1, c1 = time.perf_counter(), time.process_time()
    return {"wall_s": t1 - t0, "cpu_s": c1 - c0, "got": got}


def task_contend(kit: Kit, conn: Any, row: str, k: int) -> dict[str, Any]:
    ctr = kit.counter
    conn.send(("armed",))
    if row == "shmring.AtomicInt64.fetch_add":
        fa = kit.atomic.fetch_add
        kit.go.wait()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(k):
            fa(1)
    elif row == "unprotected (no lock)":
        kit.go.wait()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(k):
            ctr[0] += 1
    else:
        lk = kit.lock(row)
        acq, rel = lk.acquire, lk.release
        kit.go.wait()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(k):
            acq()
            ctr[0] += 1  # read, add, write: not atomic; the lock makes it exact
            rel()
    t1, c1 = time.perf_counter(), time.process_time()
    return {"t0": t0, "t1": t1, "cpu": c1 - c0}


TASKS: dict[str, Callable[..., Any]] = {
    "uncontended": task_uncontended,
    "handoff": task_handoff,
    "pin": task_pin,
    "waitcpu": task_waitcpu,
    "contend": task_contend,
}


def _selected(row: str, only: list[str]) -> bool:
    r = row.lower()
    return any(tok in r for tok in only)


def worker_main(seg_name: str, mp_objs: dict[str, Any], posix_names: dict[str, str], conn: Any) -> None:
    """Entry point of the pool's workers: attach, then run tasks."""
    child_setup()
    kit = None
    try:
        import shmring

        kit = Kit(shmring.Segment.open(seg_name), mp_objs, posix_names, create=False)
        conn.send(("ok",))
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                break
            _, task, params = msg
            conn.send(("done", TASKS[task](kit, conn, *params)))
    except BaseException:
        try:
            conn.send(("error", f"worker (pid {os.getpid()}): " + traceback.format_exc()))
        except Exception:
            pass
    finally:
        if kit is not None:
            try:
                kit.close()
            except Exception:
                pass
        conn.close()


# -- section 5: the holder is killed ----------------------------------------

def _kill_open(kind: str, ref: Any) -> Any:
    if kind.startswith("shmring."):
        import shmring

        return getattr(shmring, kind.split(".", 1)[1]).open(ref)
    if kind == "posix_ipc.Semaphore":
        return posix_ipc_or_none().Semaphore(ref)
    return ref  # multiprocessing objects travel as they are


def _kill_acquire(kind: str, lk: Any, timeout: float) -> tuple[str, str]:
    """Acquire with a timeout: (outcome, detail); outcome is "acquired",
    "timed out", "OwnerDied", "LockNotRecoverable" or "error"."""
    try:
        if kind == "posix_ipc.Semaphore":
            try:
                lk.acquire(timeout)
                return "acquired", ""
            except posix_ipc_or_none().BusyError:
                return "timed out", ""
        ok = lk.acquire(True, timeout) if kind.startswith("mp.") else lk.acquire(timeout=timeout)
        return ("acquired", "") if ok else ("timed out", "")
    except Exception as e:
        name = type(e).__name__
        if name in ("OwnerDied", "LockNotRecoverable"):
            return name, str(e)
        return "error", f"{name}: {e}"


def kill_holder_main(kind: str, ref: Any, conn: Any) -> None:
    child_setup()
    try:
        lk = _kill_open(kind, ref)
        outcome, detail = _kill_acquire(kind, lk, 5.0)
        if outcome != "acquired":
            raise RuntimeError(f"the holder could not take the lock: {outcome} {detail}")
        conn.send(("held", os.getpid()))
        time.sleep(3600)  # until SIGKILL
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def kill_waiter_main(kind: str, ref: Any, timeout: float, conn: Any) -> None:
    """Block in acquire before the holder is killed; report what happened
    and when, then check that the lock can be used again."""
    child_setup()
    try:
        lk = _kill_open(kind, ref)
        conn.send(("ready",))
        t_start = time.perf_counter()
        outcome, detail = _kill_acquire(kind, lk, timeout)
        t_end = time.perf_counter()
        after = ""
        if outcome == "OwnerDied":
            # The new holder repairs the data, then the lock works as before.
            if kind == "shmring.Mutex":
                lk.mark_consistent()
            lk.release()
            o2, _ = _kill_acquire(kind, lk, 0.5)
            if o2 == "acquired":
                lk.release()
            after = f"repaired, released; next acquire: {o2}"
        elif outcome == "acquired":
            lk.release()
        conn.send(("done", {"outcome": outcome, "detail": detail, "t_start": t_start, "t_end": t_end, "after": after}))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


# ---------------------------------------------------------------------------
# parent side


class WorkerError(Exception):
    pass


class Pool:
    """The spawned workers of sections 1-4 and their control pipes; close()
    stops them ("stop", join, SIGTERM, SIGKILL)."""

    def __init__(self, ctx: Any, n: int, seg_name: str, mp_objs: dict[str, Any], posix_names: dict[str, str]) -> None:
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        self.stash: list[deque[Any]] = []
        try:
            for i in range(n):
                parent_end, child_end = ctx.Pipe(duplex=True)
                p = ctx.Process(target=worker_main, args=(seg_name, mp_objs, posix_names, child_end),
                                name=f"bench-sync-{i}", daemon=True)
                p.start()
                child_end.close()
                self.procs.append(p)
                self.conns.append(parent_end)
                self.stash.append(deque())
            for i in range(n):
                self.expect(i, "ok", 60)
        except BaseException:
            self.close()
            raise

    def send(self, i: int, task: str, *params: Any) -> None:
        try:
            self.conns[i].send(("run", task, params))
        except (BrokenPipeError, ConnectionError, EOFError, OSError):
            self._reraise_from(i)

    def _reraise_from(self, i: int) -> None:
        conn = self.conns[i]
        try:
            while conn.poll(0.5):
                m = conn.recv()
                if m[0] == "error":
                    raise WorkerError(m[1]) from None
        except (EOFError, OSError):
            pass
        raise WorkerError(f"worker {i} is gone (exit code {self.procs[i].exitcode})") from None

    def expect(self, i: int, tag: str, timeout: float) -> tuple[Any, ...]:
        """The next message of worker i, which must be `tag`; an error from
        any worker, an exit, or the timeout raises WorkerError."""
        from multiprocessing.connection import wait

        deadline = time.monotonic() + timeout
        by_conn = {c: j for j, c in enumerate(self.conns)}
        while True:
            if self.stash[i]:
                msg = self.stash[i].popleft()
                if msg[0] != tag:
                    raise WorkerError(f"worker {i}: expected {tag!r}, got {msg[0]!r}")
                return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(f"timeout: no {tag!r} from worker {i} after {timeout:.0f} s")
            for conn in wait(self.conns, timeout=min(left, 1.0)):
                j = by_conn[conn]
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    self.procs[j].join(1.0)
                    raise WorkerError(f"worker {j} exited (exit code {self.procs[j].exitcode})") from None
                if msg[0] == "error":
                    raise WorkerError(msg[1])
                self.stash[j].append(msg)

    def close(self) -> None:
        stop_workers(self.conns, self.procs)


class SectionLoad:
    """Like bench_channel's MachineLoad, for one section while the pool's
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
        left = []
        for name in self.shm_names:
            path = os.path.join("/dev/shm", name)
            if os.path.exists(path):
                left.append(path)
                try:
                    os.unlink(path)
                except OSError:
                    pass
        for name in self.posix_names:
            path = "/dev/shm/sem." + name.lstrip("/")
            if os.path.exists(path):
                left.append(path)
                try:
                    os.unlink(path)
                except OSError:
                    pass
        return left

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
        for fn in os.listdir("/dev/shm"):
            if fn.startswith(mine) or fn.startswith("sem." + mine):
                path = os.path.join("/dev/shm", fn)
                left.append(path)
                try:
                    os.unlink(path)
                except OSError:
                    pass
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
                     **_percentiles(sorted(a["lat"])),
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
                r = {"row": row, "procs": procs, "k": k, "rate": med, "spread_pct": (max(rates) - min(rates)) / med * 100,
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


# ---------------------------------------------------------------------------
# report


def _ratio_cells(value: float | None, base: dict[str, float], names: list[str], higher_is_better: bool) -> list[str]:
    out = []
    for b in names:
        v = base.get(b)
        if not v or not value:
            out.append("–")
        else:
            out.append(fmt_ratio(value / v if higher_is_better else v / value))
    return out


def fmt_ms(s: float) -> str:
    ms = s * 1000
    return f"{ms:.0f} ms" if ms >= 100 else (f"{ms:.1f} ms" if ms >= 1 else f"{ms * 1000:.0f} µs")


def kill_summary(r: dict[str, Any]) -> str:
    out = r["blocked_outcome"]
    if out == "timed out":
        return f"hangs (timed out after {r['blocked_waited_s']:.2f} s)"
    return f"{out} after {fmt_ms(r['blocked_detect_s'])} (max {fmt_ms(r['blocked_detect_max_s'])})"


def report(bench: Bench, meta: dict[str, Any]) -> str:
    R, o = bench.results, bench.opts
    P = [f"# shmring synchronisation primitives vs multiprocessing and posix_ipc ({meta['host']['cpus']} CPUs, "
         f"Python {meta['python']}, start method {START_METHOD})\n"]
    P.append("Ratios (x NAME): how many times better than NAME — cost and latency: NAME's / this one's; "
             "throughput: this rate / NAME's rate. Above 1 is better than NAME.\n")

    # summary
    unc = {r["row"]: r for r in R["uncontended"] if not r.get("failed")}
    hof = {(r["row"], r["placement"]): r for r in R["handoff"] if not r.get("failed")}
    places = list(dict.fromkeys(r["placement"] for r in R["handoff"] if r.get("placement")))
    hof_failed = {(r["row"], r["placement"]) for r in R["handoff"] if r.get("failed") and r.get("placement")}
    wcpu = {r["row"]: r for r in R["waitcpu"] if not r.get("failed")}
    con = {(r["row"], r["procs"]): r for r in R["contention"] if not r.get("failed")}
    kil = {r["row"]: r for r in R["kill"] if not r.get("failed")}
    if any(R.values()):
        rows: list[list[str]] = []
        for prim, ho, via in SUMMARY:
            if not bench.want(prim) and not bench.want(ho):
                continue
            u = unc.get(prim)
            w = wcpu.get(prim) or wcpu.get(ho)
            cells = [prim + (f" ({via})" if via else ""), f"{u['ns']:.0f}" if u else "–"]
            for pl in places:
                h = hof.get((ho, pl))
                cells.append(f"{fmt_num(h['p50_us'])} / {fmt_num(h['p99_us'])}" if h
                             else ("FAILED" if (ho, pl) in hof_failed else "–"))
            cells.append(f"{w['cpu_pct']:.1f}%" if w else "–")
            for procs in o.procs:
                c = con.get((prim, procs))
                cells.append(fmt_rate(c["rate"]) if c else "–")
            k = kil.get(prim)
            cells.append(kill_summary(k) if k else ("n/a (not a lock)" if prim in ("shmring.Event", "shmring.AtomicFlag") else "–"))
            rows.append(cells)
        P.append("## At a glance\n")
        P.append("Hand-off: round trip between two processes pinned to two CPUs / to one CPU; for the locks it is "
                 "the row named in brackets (a lock is not a signalling primitive). CPU while waiting: % of a core.\n")
        P.append(md_table(["primitive", "uncontended ns/pair"] + [f"round trip p50 / p99 µs, {pl}" for pl in places]
                          + ["CPU while waiting"]
                          + [f"{p} proc{'s' if p > 1 else ''} acq/s" for p in o.procs]
                          + ["holder SIGKILLed: blocked waiter gets"], rows) + "\n")

    # 1
    if R["uncontended"]:
        rows_all = R["uncontended"]
        P.append("## 1. Uncontended cost, one process, tight loop\n")
        P.append(f"ns per iteration of the loop (median of {o.repeat_uncontended} repeats of ~{o.target_uncontended:g} s), "
                 "Python call overhead included — what a Python caller pays. The floor row is the same loop calling two "
                 "no-op C functions.\n")
        lock_base = {r["row"]: r["ns"] for r in rows_all if not r.get("failed") and r["row"] in BASELINES}
        sig_base = {r["row"].replace(" (signal)", ""): r["ns"] for r in rows_all
                    if not r.get("failed") and r["row"].endswith("(signal)")}
        names = [b for b in BASELINES if b in lock_base]
        table = []
        for r in rows_all:
            if r.get("failed"):
                table.append([r["row"], r["failed"]] + [""] * (4 + len(names)))
                continue
            base = sig_base if (r["row"].endswith("(signal)") or r["row"] in ("shmring.Event", "shmring.AtomicFlag")) else lock_base
            ratios = ["–"] * len(names) if r["row"].startswith("(") else _ratio_cells(r["ns"], base, names, False)
            table.append([r["row"], r["op"], f"{r['ns']:.0f}", f"{r['min_ns']:.0f}", f"{r['spread_pct']:.0f}%"]
                         + ratios)
        P.append(md_table(["primitive", "operation", "ns (median)", "ns (min)", "spread"] + [f"x {b}" for b in names],
                          table) + "\n")
        P.append("Ratios of the signal rows (post + wait, Event, AtomicFlag) are against the same baselines used as "
                 "signals (release(); acquire() of a semaphore at 0); lock rows against acquire(); release().\n")

    # 2
    if R["handoff"]:
        P.append(f"## 2. Hand-off latency between two processes (up to {o.pingpong_n} round trips after "
                 f"{o.pingpong_warmup} unmeasured, at most {o.pingpong_max_s:g} s a row)\n")
        P.append("A posts, B (blocked) wakes and answers through a second primitive, A wakes: a round trip is two "
                 "hand-offs. Locks are not signalling primitives: the Mutex hands off through a Condition (its "
                 "natural partner), the SpinLock through a turn word it guards, polled (both processes spin), mp.Lock "
                 "through mp.Condition. The two processes are pinned: on **2 CPUs** every hand-off wakes a process "
                 "whose CPU went idle (a cross-CPU wake-up of an idle vCPU); on **1 CPU** a hand-off is a context "
                 "switch on that CPU. Unpinned, the scheduler picks one or the other from run to run.\n")
        for pl in places:
            rows_all = [r for r in R["handoff"] if r.get("placement") == pl]
            base = {r["row"]: r["p50_us"] for r in rows_all if not r.get("failed")}
            names = [b for b in HANDOFF_BASELINES if b in base]
            table = []
            for r in rows_all:
                if r.get("failed"):
                    table.append([r["row"], r["failed"]] + [""] * (5 + len(names)))
                    continue
                table.append([r["row"], r["how"], fmt_num(r["p50_us"]), fmt_num(r["p99_us"]), fmt_num(r["p999_us"]),
                              f"{r['a_cpu_us_per_rt']:.1f}/{r['b_cpu_us_per_rt']:.1f}",
                              str(r["n"]) + (" (time limit)" if r.get("time_bound_hit") else "")]
                             + _ratio_cells(r["p50_us"], base, names, False))
            P.append(f"### {pl}\n")
            P.append(md_table(["primitive", "how", "p50 µs", "p99 µs", "p99.9 µs", "CPU µs/rt A/B", "round trips"]
                              + [f"x {b}" for b in names], table) + "\n")
        fails = [r for r in R["handoff"] if r.get("failed") and not r.get("placement")]
        if fails:
            P.append("\n".join(f"- {r['row']}: {r['failed']}" for r in fails) + "\n")

    # 3
    if R["waitcpu"]:
        P.append(f"## 3. CPU burned while waiting ({o.wait_seconds:g} s, until the wait's timeout)\n")
        table = []
        for r in R["waitcpu"]:
            if r.get("failed"):
                table.append([r["row"], r["failed"], "", "", "", ""])
                continue
            table.append([r["row"], r["what"], f"{r['wall_s']:.3f}", f"{r['cpu_s'] * 1000:.1f}",
                          f"{r['cpu_pct']:.2f}%", "got through!" if r["got"] else "timed out"])
        P.append(md_table(["primitive", "waiting in", "wall s", "CPU ms", "% of a core", "result"], table) + "\n")
        if bench.notes["waitcpu"]:
            P.append("\n".join(f"- {n}" for n in bench.notes["waitcpu"]) + "\n")

    # 4
    if R["contention"]:
        P.append("## 4. Throughput under contention\n")
        P.append(f"N processes each do K cycles of acquire(); counter += 1; release() on one shared counter (a plain "
                 f"int64 in shared memory, read-modify-write in Python); the final count must be N x K. Acquisitions "
                 f"per second in total, median of {o.repeat} runs sized to ~{o.target_contention:g} s; 'cores busy' is the "
                 f"CPU time of all N processes over the run's wall time ({meta['host']['cpus']} CPUs here). 'first done at': "
                 f"when the first process finished its K, as a share of the run — 1/N means the processes took turns "
                 f"for whole time slices (the releaser re-takes the lock at once: high throughput, no fairness), 100% "
                 f"that they interleaved to the end. "
                 + ("Process i is pinned to CPU i mod the CPU count: up to that count each process has a CPU of its "
                    "own; beyond it, processes share CPUs (and a lock holder can be preempted)."
                    if o.pin else "Processes are not pinned (the scheduler may put several on one CPU).") + "\n")
        rows_names = list(dict.fromkeys(r["row"] for r in R["contention"]))
        summ = []
        for row in rows_names:
            cells = [row]
            for procs in o.procs:
                found = [x for x in R["contention"] if x["row"] == row and x.get("procs") == procs]
                if not found:
                    cells.append("–")
                elif found[0].get("failed"):
                    cells.append(found[0]["failed"])
                else:
                    ok = "" if found[0]["exact"] else (
                        " (count WRONG, as expected)" if row.startswith("unprotected") else " (count WRONG)")
                    cells.append(f"{fmt_rate(found[0]['rate'])}{ok}")
            summ.append(cells)
        P.append("Acquisitions/s:\n")
        P.append(md_table(["primitive"] + [f"{p} proc{'s' if p > 1 else ''}" for p in o.procs], summ) + "\n")
        for procs in o.procs:
            crows = [r for r in R["contention"] if r.get("procs") == procs]
            base = {r["row"]: r["rate"] for r in crows if not r.get("failed")}
            names = [b for b in BASELINES if b in base]
            table = []
            for r in crows:
                if r.get("failed"):
                    table.append([r["row"], r["failed"]] + [""] * (5 + len(names)))
                    continue
                cnt = "exact" if r["exact"] else "WRONG " + ", ".join(f"{c}/{t}" for c, t in r["counts"][:1])
                table.append([r["row"], fmt_rate(r["rate"]), f"{r['cores_busy']:.2f}", fmt_num(r["cpu_us_per_acq"]),
                              f"{r['first_done'] * 100:.0f}%" if procs > 1 else "–", cnt,
                              f"{r['spread_pct']:.0f}%", str(r["k"])] + _ratio_cells(r["rate"], base, names, True))
            P.append(f"### {procs} process{'es' if procs > 1 else ''}\n")
            P.append(md_table(["primitive", "acq/s", "cores busy", "CPU µs/acq", "first done at", "count", "spread",
                               "K per proc"]
                              + [f"x {b}" for b in names], table) + "\n")

    # 5
    if R["kill"]:
        T = o.kill_timeout
        P.append("## 5. The holder is killed with SIGKILL while holding the lock\n")
        P.append(f"Blocked waiter: a second process is already blocked in acquire(timeout={T:g}) when the holder is "
                 "killed (0.20-0.25 s after it started waiting); the holder is left a zombie (not reaped) until the waiter "
                 f"answers. 'detected after' is the time from the kill to the waiter's answer (median and max of "
                 f"{o.kill_repeats} kills for the locks that detect it; one kill for the others). Late acquirer: the "
                 "holder was killed and reaped before acquire(timeout) is called. After OwnerDied the waiter repairs "
                 "(Mutex: mark_consistent()) and releases, then acquires again ('then'); the last column is what the "
                 "next acquirer gets when the late acquirer releases after OwnerDied *without* repairing.\n")
        table = []
        for r in R["kill"]:
            if r.get("failed"):
                table.append([r["row"], r["failed"], "", "", "", "", ""])
                continue
            if r["blocked_outcome"] == "timed out":
                det = f"never (waited its full {r['blocked_waited_s']:.2f} s)"
            else:
                det = f"{fmt_ms(r['blocked_detect_s'])} (max {fmt_ms(r['blocked_detect_max_s'])})"
            late = (f"never (waited its full {r['late_detect_s']:.2f} s)" if r["late_outcome"] == "timed out"
                    else fmt_ms(r["late_detect_s"]))
            table.append([r["row"], r["blocked_outcome"], det, r["blocked_after"] or "–",
                          r["late_outcome"], late, r["late_unrepaired"] or "–"])
        P.append(md_table(["lock", "blocked waiter gets", "detected after", "then", "late acquirer gets",
                           "detected after", "released unrepaired: next gets"], table) + "\n")

    P += skipped_and_failures(meta["skipped"], [f"{e['section']} {e['row']}: {last_line(e['error'])}"
                                                for e in bench.errors])
    other, steal = machine_load_pcts(meta)
    P.append(f"Machine: {meta['host']['cpu_model'] or '?'}, {meta['host']['cpus']} CPUs, kernel {meta['host']['kernel']}; "
             f"load average {meta.get('loadavg_1min_at_start', -1):.2f} at start; other processes used {other:.1f}% of "
             f"the machine during the run, steal {steal:.1f}% (run took {meta.get('duration_s', 0):.0f} s); by section: "
             + ", ".join(f"{k} {v:.0f}%" for k, v in bench.section_load.items()) + ".\n")
    P += not_idle_warning(other, steal, "spinning and contention rows suffer most; ")
    P.append("Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + "\n")
    return "\n".join(P)


# ---------------------------------------------------------------------------


def collect_meta(opts: Any, bench: Bench) -> dict[str, Any]:
    import shmring

    versions: dict[str, Any] = {"python": platform.python_version(),
                                "shmring": shmring.__version__ + git_note(os.path.dirname(HERE))}
    pi = posix_ipc_or_none()
    if pi is not None:
        versions["posix_ipc"] = getattr(pi, "VERSION", "?")
    return {
        **run_context(START_METHOD),
        "options": {k: v for k, v in vars(opts).items()},
        "versions": versions,
        "skipped": bench.skipped,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs, one repeat: a smoke test (~30 s)")
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
    ap.add_argument("--run-timeout", type=float, default=120.0, help="seconds before a stuck run is abandoned")
    ap.add_argument("--json", metavar="PATH", help="write every result and the run's metadata")
    ap.add_argument("--markdown", metavar="PATH", help="also write the tables to this file")
    opts = ap.parse_args(argv)

    q = opts.quick
    opts.repeat = opts.repeat or (1 if q else 3)
    opts.repeat_uncontended = 3 if q else 7
    opts.target_uncontended = 0.02 if q else 0.05
    opts.target_contention = 0.1 if q else 0.4
    opts.contention_k0 = 1000 if q else 5000
    opts.contention_kmax = 5_000_000
    opts.procs = [int(x) for x in opts.procs.split(",")] if opts.procs else ([2, 4] if q else [1, 2, 4])
    opts.pingpong_n = opts.pingpong_n or (1000 if q else 10000)
    opts.pingpong_warmup = opts.pingpong_warmup if opts.pingpong_warmup is not None else (100 if q else 1000)
    opts.pingpong_max_s = 0.5 if q else 3.0
    opts.kill_repeats = 2 if q else 5
    opts.wait_seconds = opts.wait_seconds or (0.3 if q else 1.0)
    opts.kill_timeout = opts.kill_timeout or (1.0 if q else 2.0)
    opts.only = [x.strip().lower() for x in opts.only.split(",") if x.strip()] if opts.only else None
    if opts.sections:
        opts.sections = [s.strip() for s in opts.sections.split(",") if s.strip()]
        bad = [s for s in opts.sections if s not in SECTIONS]
        if bad:
            raise SystemExit(f"--sections: unknown {bad}; known: {','.join(SECTIONS)}")
    else:
        opts.sections = list(SECTIONS)
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
    log(f"total {meta['duration_s']:.0f} s")
    if bench.errors:
        log(f"\n!!! {len(bench.errors)} measurement(s) FAILED; see above")
        return 1
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
