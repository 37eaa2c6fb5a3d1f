"""Helpers of tests/test_corruption_matrix.py: every field of every kind's
control block (offsets from docs/PROTOCOL.md, payload at 4096 in the file),
hostile values written through an mmap of /dev/shm/<name>, and the main
operations of each kind called with short timeouts.  Module-level functions
run in child processes.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import shmring

PAYLOAD = 4096  # PROTOCOL.md 1: the header page, then the payload
T = 0.02  # the timeout of every blocking call

# kind -> {field: (payload offset, size)}  (PROTOCOL.md 3.1, 4, 5.1, 6.1)
FIELDS: dict[str, dict[str, tuple[int, int]]] = {
    "channel": {
        "capacity": (0, 8), "data_offset": (8, 8), "wait": (16, 4), "spin_ns": (20, 4),
        "writer_closed": (24, 4), "reader_closed": (28, 4), "claim_seq": (32, 4), "claim_waiters": (36, 4),
        "tail": (128, 8), "producer": (136, 8), "producer_handle": (144, 8), "sent_msgs": (152, 8),
        "head": (256, 8), "consumer": (264, 8), "consumer_handle": (272, 8),
        "data_seq": (384, 4), "consumer_waiting": (388, 4), "data_sem": (392, 8),
        "space_seq": (512, 4), "producer_waiting": (516, 4), "space_sem": (520, 8),
    },
    "queue": {
        "capacity": (0, 8), "data_offset": (8, 8), "maxsize": (16, 8), "flags": (24, 4), "spin_ns": (28, 4),
        "closed": (32, 4), "chunk_mode": (36, 4), "queue_id": (40, 8),
        "lock.owner": (128, 8), "lock.seq": (136, 4), "lock.waiters": (140, 4), "lock.state": (144, 4),
        "head": (152, 8), "tail": (160, 8), "count": (168, 8), "bytes": (176, 8),
        "ovf_head": (184, 8), "ovf_tail": (192, 8), "puts": (200, 8), "gets": (208, 8), "done": (216, 8),
        "items_seq": (256, 4), "items_waiters": (260, 4), "room_seq": (264, 4), "room_waiters": (268, 4),
        "done_seq": (272, 4), "done_waiters": (276, 4),
    },
    "topic": {
        "capacity": (0, 8), "data_offset": (8, 8), "policy": (16, 4), "max_subscribers": (20, 4),
        "spin_ns": (24, 4), "lock.owner": (64, 8), "lock.seq": (72, 4), "lock.waiters": (76, 4),
        "lock.state": (80, 4), "tail": (128, 8), "head": (136, 8), "next_seq": (144, 8), "last_pos": (152, 8),
        "data_seq": (256, 4), "data_waiters": (260, 4), "room_seq": (264, 4), "room_waiters": (268, 4),
        "sub0.token": (384, 8), "sub0.cursor": (392, 8), "sub0.next_seq": (400, 8), "sub0.lagged": (408, 8),
    },
    "mutex": {"owner": (0, 8), "seq": (8, 4), "waiters": (12, 4), "state": (16, 4)},
    "spinlock": {"owner": (0, 8), "reserved": (8, 8)},
    "semaphore": {"count": (0, 4), "waiters": (4, 4)},
    "event": {"flag": (0, 4), "waiters": (4, 4), "gen": (8, 4)},
    "condition": {"seq": (64, 4), "waiters": (68, 4), "wakeups": (72, 4)},
}


def _start_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22


def values(size: int, old: int, foreign_pid: int) -> dict[str, int]:
    """The hostile values for a field of `size` bytes now holding `old`."""
    mask = (1 << 8 * size) - 1
    token = foreign_pid << 32 | (_start_ticks(foreign_pid) & 0xFFFFFFFF or 1)
    return {
        "zero": 0,
        "ones": mask,
        "huge": mask >> 1,
        "misaligned": (old + 3) & mask,
        "live_pid": token & mask if size == 8 else foreign_pid,
    }


def poke(name: str, offset: int, size: int, value: int | None) -> int:
    """Write `value` (None: only read) at payload `offset`; the old value."""
    fmt = "<Q" if size == 8 else "<I"
    with open(f"/dev/shm/{name}", "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        old: int = struct.unpack_from(fmt, m, PAYLOAD + offset)[0]
        if value is not None:
            struct.pack_into(fmt, m, PAYLOAD + offset, value)
    return old


def make(kind: str, name: str) -> Any:
    """The object, with one item in it where it holds items."""
    if kind == "channel":
        return shmring.Channel.create(name, 4096)  # its ends free for the handle under test
    if kind == "queue":
        q = shmring.Queue(name=name)
        q.put(b"first", timeout=1)
        return q
    if kind == "topic":
        t = shmring.Topic.create(name, 4096, "block")
        sub = t.subscribe(timeout=1)
        with t.publisher() as pub:
            pub.send(b"first", timeout=1)
        return t, sub
    if kind == "condition":
        return shmring.Segment.create(name, 4096)
    cls: Any = {"mutex": shmring.Mutex, "spinlock": shmring.SpinLock, "semaphore": shmring.Semaphore,
                "event": shmring.Event}[kind]
    return cls.create(name)


def ops(kind: str, name: str) -> tuple[Any, dict[str, Callable[[Any], Any]]]:
    """A fresh handle on the object and the calls to try on it."""
    if kind == "channel":
        return shmring.Channel.open(name), {
            "send": lambda h: h.send(b"x" * 8, timeout=T), "recv": lambda h: h.recv(timeout=T),
            "try_recv": lambda h: h.try_recv(), "stats": lambda h: h.stats(),
        }
    if kind == "queue":
        return shmring.Queue.open(name), {
            "put": lambda q: q.put(b"x", timeout=T), "get": lambda q: q.get(timeout=T),
            "qsize": lambda q: q.qsize(),
        }
    if kind == "topic":
        return shmring.Topic.open(name), {
            "subscribe": lambda t: t.subscribe(timeout=T).close(),
            "send": lambda t: _publish(t), "latest": lambda t: t.latest(), "stats": lambda t: t.stats(),
        }
    if kind == "condition":
        seg = shmring.Segment.open(name)
        return seg, {"wait": _condition_wait, "notify": _condition_notify}
    if kind in ("mutex", "spinlock"):
        lock = {"mutex": shmring.Mutex, "spinlock": shmring.SpinLock}[kind].open(name)
        return lock, {"acquire": _acquire_release}
    if kind == "semaphore":
        return shmring.Semaphore.open(name), {"acquire": lambda s: s.acquire(timeout=T), "release": lambda s: s.release()}
    return shmring.Event.open(name), {"wait": lambda e: e.wait(T), "set": lambda e: e.set(),
                                      "clear": lambda e: e.clear()}


def _acquire_release(lock: Any) -> bool:
    if not lock.acquire(timeout=T):
        return False
    lock.release()
    return True


def _publish(t: Any) -> None:
    with t.publisher() as pub:
        pub.send(b"y", timeout=T)


def _condition(seg: Any) -> Any:
    lock = shmring.Mutex(seg, 0)
    return lock, shmring.Condition(seg, 64, lock=lock)


def _condition_wait(seg: Any) -> Any:
    lock, cond = _condition(seg)
    with cond:
        return cond.wait(T)


def _condition_notify(seg: Any) -> Any:
    lock, cond = _condition(seg)
    with cond:
        cond.notify()


def close(obj: Any) -> None:
    for o in obj if isinstance(obj, tuple) else (obj,):
        o.close()


def outcome(call: Callable[[Any], Any], handle: Any) -> str:
    try:
        result = call(handle)
    except Exception as e:  # noqa: BLE001 - the type is what is recorded
        return type(e).__name__
    return "False" if result is False else "ok"  # False: a lock or permit not had in time


def run_kind(kind: str, names: list[str], foreign_pid: int) -> dict[str, dict[str, str]]:
    """In a child: for each field and hostile value, a fresh object, the
    value written, each operation's outcome ("ok" or the exception's type).
    Keys "field=value", then "op"."""
    report: dict[str, dict[str, str]] = {}
    it = iter(names)
    for field, (offset, size) in FIELDS[kind].items():
        for label in ("zero", "ones", "huge", "misaligned", "live_pid"):
            name = next(it)
            obj = make(kind, name)
            try:
                old = poke(name, offset, size, None)
                poke(name, offset, size, values(size, old, foreign_pid)[label])
                try:
                    handle, calls = ops(kind, name)
                except Exception as e:  # noqa: BLE001
                    report[f"{field}={label}"] = {"open": type(e).__name__}
                    continue
                report[f"{field}={label}"] = {op: outcome(call, handle) for op, call in calls.items()}
                try:
                    close(handle)
                except Exception:  # noqa: BLE001, S110 - closing a damaged object may fail
                    pass
            finally:
                try:
                    close(obj)
                except Exception:  # noqa: BLE001, S110
                    pass
    return report


def cases(kind: str) -> int:
    return 5 * len(FIELDS[kind])


