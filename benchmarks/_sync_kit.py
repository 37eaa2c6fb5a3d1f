"""The subjects of bench_sync.py and what its worker processes run.

The rows (which primitive, measured how), the ``Kit`` (every primitive of
sections 1-4 in one shmring segment, one cache line each, plus the
multiprocessing objects and named POSIX semaphores; the parent creates it and
each worker attaches), the measuring loops and tasks a worker runs, its
``worker_main``, and the children of the kill test (section 5).
"""

from __future__ import annotations

import os
import secrets
import statistics
import time
import traceback
from typing import Any, Callable

from _harness import child_setup, orders, send_error, spread_pct

START_METHOD = "spawn"
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
# Extra rows of section 4: no lock at all (the count comes out wrong: that
# shows the check works) and a lock-free atomic increment.
CONTENTION_EXTRA = ["shmring.AtomicInt64.fetch_add", "unprotected (no lock)"]


ALL_CPUS = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()


def family(row: str) -> str:
    return row.split(".", 1)[0].split(" ", 1)[0]


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
    native = kit.mutex._native  # private: the C type under the Python wrapper, to size the wrapper's cost
    ops.append(("(diag) shmring.Mutex", "_native.acquire(); _native.release()  (private C methods)",
                (native.acquire, native.release), None))
    native = kit.spin._native
    ops.append(("(diag) shmring.SpinLock", "_native.acquire(); _native.release()  (private C methods)",
                (native.acquire, native.release), None))
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
                    "spread_pct": spread_pct(per), "repeats": per})
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
        for _, task, params in orders(conn):
            conn.send(("done", TASKS[task](kit, conn, *params)))
    except BaseException:
        send_error(conn, "worker", False)
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
