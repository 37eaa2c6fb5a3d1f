"""Helpers of the Queue tests (tests/test_queue_*.py).

Layout offsets (payload offsets of ``shmring_queue_ctrl`` and
``shmring_queue_chunk`` in include/shmring.h, checked against its
_Static_asserts by test_queue_ring.py::test_layout_offsets_match_header).

Items of the multi-process tests are ``(producer, seq, blob)`` where ``blob``
is a pure function of ``(producer, seq)`` (a slice of a fixed noise block,
its length picked from the seq), so a consumer can tell a torn, duplicated,
reordered or lost item.  Consumers report what they took to the parent
through a pipe as they go (one small message per get, written atomically;
``Collector``), so that when a consumer is killed the parent knows exactly
what it had reported and can bound what it took with it.

Module-level functions here run in child processes (spawn and forkserver
re-import this module by name), so they stay at module level.
"""

from __future__ import annotations

import multiprocessing.connection as mpc
import os
import queue
import random
import struct
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import shmring

from conftest import FORK, SHM, Kids, u64

# Bound on any single blocking call made by a test or a child: a lost wake-up
# or a deadlock fails with Empty/Full instead of hanging until pytest-timeout.
OP_TIMEOUT = 15.0

RING = 1 << 20  # shmring.queue.DEFAULT_CAPACITY
SMALL = 256  # ring bytes of the small bounded queues: 32 record positions

# -- Layout (include/shmring.h) ------------------------------------------------------

# Payload offsets of shmring_queue_ctrl (include/shmring.h).
CAPACITY, DATA_OFFSET, MAXSIZE, FLAGS = 0, 8, 16, 24
LOCK_OWNER = 128
CHUNK_KEY = 48  # the 16-byte secret that keys the chunks' names
HEAD, TAIL, COUNT, BYTES, OVF_HEAD, OVF_TAIL = 152, 160, 168, 176, 184, 192
DATA = 384  # SHMRING_QUEUE_CTRL_SIZE: the ring starts here
# Payload offsets of shmring_queue_chunk.
CHUNK_CAPACITY, CHUNK_DATA_OFFSET, CHUNK_INDEX, CHUNK_HEAD, CHUNK_TAIL = 0, 8, 16, 24, 32
TAG_OBJECT, TAG_BYTES, TAG_PAD, TAG_VALUE = 0x4F, 0x42, 0x50, 0x56


def chunk_files(name: str) -> list[str]:
    """The overflow chunk segments of queue ``name`` present in /dev/shm."""
    return sorted(p.name for p in SHM.iterdir() if shmring._core.chunk_index(p.name, name) is not None)


def chunk_name(name: str, index: int) -> str:
    """The name of overflow chunk ``index`` of queue ``name``, keyed by the
    chunk key in its control block (the queue's owner can read it)."""
    seg = shmring.Segment.open(name)
    try:
        key = bytes(seg.buf[CHUNK_KEY : CHUNK_KEY + 16])
    finally:
        seg.close()
    return shmring._core.chunk_name(name, index, key)


def ring_counters(seg: shmring.Segment) -> tuple[int, int]:
    head, tail = struct.unpack_from("<QQ", seg.buf, HEAD)
    return head, tail


def park_tail(q: shmring.Queue, seg: shmring.Segment, pos: int) -> None:
    """Leave the (empty) ring with its tail at offset ``pos``, by records that
    fit exactly before the end (so none of them needs padding)."""
    head, tail = ring_counters(seg)
    assert head == tail, "park_tail needs an empty ring"
    at = tail % SMALL
    if pos < at:
        q.put_bytes(b"\0" * (SMALL - at - 8), block=False)  # exactly to the end
        q.get_bytes(block=False)
        at = 0
    if pos > at:
        q.put_bytes(b"\0" * (pos - at - 8), block=False)
        q.get_bytes(block=False)
    head, tail = ring_counters(seg)
    assert head == tail and tail % SMALL == pos


# -- Threads and objects of the single-process tests ----------------------------------


def runs_within(fn: Callable[[], Any], timeout: float) -> tuple[bool, Any]:
    """Run ``fn`` in a daemon thread: (finished within ``timeout``, its result or exception)."""
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(("ok", fn()))
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            out.append(("error", e))

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return False, None
    return True, out[0]


def later(delay: float, fn: Callable[[], Any]) -> threading.Thread:
    """Call ``fn`` from another thread after ``delay`` seconds."""

    def target() -> None:
        time.sleep(delay)
        fn()

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


@dataclass(frozen=True)
class Point:
    x: int
    y: int


def _grandchild(q: Any) -> None:
    q.put(("grandchild", os.getpid(), os.getppid()))


# -- Items of the multi-process tests ---------------------------------------------------

_NOISE = random.Random(0x5EED).randbytes(1 << 17)
_MULT = 2654435761

SIZES = {
    "unbounded": (0, 1, 7, 8, 9, 60, 200, 1000),
    "bounded": (0, 1, 7, 8, 9, 33, 64, 100, 120),  # in a 512-byte ring
    "overflow": (20_000, 33_333, 50_000, 70_000),  # ~45 KB: the 1 MiB ring overflows
}
MAX_BATCH = {"unbounded": 16, "bounded": 3, "overflow": 4}  # bounded: 3 records of <= 152 bytes fit 512


def blob(p: int, s: int, sizes: tuple[int, ...]) -> bytes:
    n = sizes[((s * _MULT + p) >> 7) % len(sizes)]
    off = ((p + 1) * 7919 + s * _MULT) % (len(_NOISE) - n + 1)
    return _NOISE[off : off + n]


def item(p: int, s: int, mode: str) -> tuple[int, int, bytes]:
    return (p, s, blob(p, s, SIZES[mode]))


def make_queue(mode: str, name: str, maxsize: int = 0) -> shmring.Queue:
    if mode == "bounded":
        return shmring.Queue(maxsize, max_size_bytes=512, name=name)
    return shmring.Queue(maxsize, name=name)


# -- Consumers and their reports ----------------------------------------------------------


def _consumer(q: shmring.Queue, conn: Any, api: str, mode: str, seed: int, gate: Any = None) -> None:
    rng = random.Random(seed)
    try:
        if gate is not None and not gate.wait(OP_TIMEOUT):
            raise RuntimeError("gate never opened")
        while True:
            if api == "single":
                got = [q.get(timeout=OP_TIMEOUT)]
            else:
                got = q.get_many(timeout=OP_TIMEOUT, max_messages_to_get=rng.randint(1, MAX_BATCH[mode]))
            recs, stops = [], 0
            for it in got:
                if it is None:
                    stops += 1
                    continue
                if stops:
                    raise AssertionError(f"item {it[:2]} came after an end marker")
                p, s, b = it
                if b != blob(p, s, SIZES[mode]):
                    raise AssertionError(f"item {p}/{s} is torn or corrupted ({len(b)} bytes)")
                recs.append((p, s))
            if recs:
                conn.send(("items", recs))  # < 4 KiB: one atomic write
            if stops:
                if stops > 1:
                    q.put_many([None] * (stops - 1), timeout=OP_TIMEOUT)  # markers meant for others
                conn.send(("done", None))
                return
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise


class Collector:
    """Consumers of one test (children in ``kids``), and the reports they
    send while they run."""

    def __init__(self, kids: Kids) -> None:
        self.kids = kids
        self.conns: dict[Any, int] = {}
        self.got: dict[int, list[tuple[int, int]]] = {}
        self.done: set[int] = set()
        self.errors: list[str] = []

    def add(self, c: int, conn: Any) -> None:
        self.conns[conn] = c
        self.got[c] = []

    def consumer(self, c: int, *args: Any) -> Any:
        r, w = FORK.Pipe(duplex=False)
        p = self.kids.process(FORK, _consumer, args[0], w, *args[1:])
        w.close()  # closed before the next child is forked: EOF when this one dies
        self.add(c, r)
        return p

    def pump(self, timeout: float) -> None:
        for conn in mpc.wait(list(self.conns), timeout):
            self._read(conn)

    def _read(self, conn: Any) -> None:
        c = self.conns[conn]
        try:
            while conn.poll():
                kind, value = conn.recv()
                if kind == "items":
                    self.got[c].extend(value)
                elif kind == "done":
                    self.done.add(c)
                else:
                    self.errors.append(f"consumer {c}: {value}")
        except EOFError:
            del self.conns[conn]

    def drain(self, conn_of: int) -> None:
        for conn, c in list(self.conns.items()):
            if c == conn_of:
                self._read(conn)

    def wait_done(self, consumers: set[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not consumers <= self.done and not self.errors and time.monotonic() < deadline:
            self.pump(0.05)
        assert not self.errors, "\n".join(self.errors)
        assert consumers <= self.done, f"consumers {sorted(consumers - self.done)} never finished"

    def count_from(self, p: int) -> int:
        return sum(1 for g in self.got.values() for pp, _ in g if pp == p)

    def join(self, procs: list[Any], timeout: float) -> None:
        """``kids.join``, reading reports meanwhile."""
        self.kids.join(procs, timeout, self.pump)

    def put_markers(self, q: shmring.Queue, n: int, timeout: float = 40) -> None:
        """Put ``n`` end markers, reading reports meanwhile: a consumer
        blocked on a full report pipe would otherwise never make room."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                q.put_many([None] * n, timeout=0.02)
                return
            except queue.Full:
                assert time.monotonic() < deadline, f"no room for the end markers after {timeout} s: {q.stats()}"
                self.pump(0)


def check_delivery(
    got: dict[int, list[tuple[int, int]]],
    expected: dict[int, int],
    *,
    prefix_only: frozenset[int] = frozenset(),
    may_lose: int = 0,
    ctx: str = "",
) -> None:
    """Exactly once, in per-producer order per consumer.  Producers in
    ``prefix_only`` were killed: what they delivered must be 0..k-1.  Up to
    ``may_lose`` items of the others may be missing (taken by a killed
    consumer that died before reporting them)."""
    seen: dict[tuple[int, int], int] = {}
    for c, recs in got.items():
        last: dict[int, int] = {}
        for p, s in recs:
            assert (p, s) not in seen, f"{ctx}item {p}/{s} delivered twice (consumers {seen[(p, s)]} and {c})"
            seen[(p, s)] = c
            assert s > last.get(p, -1), f"{ctx}consumer {c} got {p}/{s} after {p}/{last[p]}: out of order"
            last[p] = s
    missing = []
    for p, n in expected.items():
        seqs = sorted(s for (pp, s) in seen if pp == p)
        if p in prefix_only:
            assert seqs == list(range(len(seqs))), f"{ctx}killed producer {p}: delivered seqs are not a prefix"
        else:
            assert set(seqs) <= set(range(n)), f"{ctx}producer {p}: unknown seqs"
            missing += [(p, s) for s in sorted(set(range(n)) - set(seqs))]
    assert len(missing) <= may_lose, f"{ctx}{len(missing)} items lost (at most {may_lose} allowed): {missing[:10]}"


def overflow_chain(name: str) -> tuple[int, int]:
    """(ovf_head, ovf_tail) of queue ``name``: its overflow chain."""
    seg = shmring.Segment.open(name)
    try:
        head, tail = struct.unpack_from("<QQ", seg.buf, OVF_HEAD)
        return head, tail
    finally:
        seg.close()


def assert_drained(q: shmring.Queue, producer_killed: bool = False, consumer_killed: bool = False) -> None:
    st = q.stats()
    assert (st["items"], st["bytes"], st["overflow_chunks"], st["holder"]) == (0, 0, 0, 0), st
    left = chunk_files(q.name)
    if not left:
        return
    head, tail = overflow_chain(q.name)
    if consumer_killed:
        # A consumer killed between retiring a drained chunk (the chain's
        # head moved past it first, so that a missing chunk in the chain
        # always means lost items) and removing its name leaves that one
        # chunk behind, out of the chain; the last one out removes it.
        assert len(left) == 1 and shmring._core.chunk_index(left[0], q.name) < head, (left, head)
    elif producer_killed:
        # A producer killed while making the next chunk leaves it behind,
        # never linked into the chain; the next chunk of that index replaces
        # it, and the owner removes it at the end.
        assert left == [chunk_name(q.name, tail)], left
    else:
        assert left == []
