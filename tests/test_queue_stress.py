"""Multi-process stress and fault tests of shmring.Queue.

Every item is ``(producer, seq, blob)`` where ``blob`` is a pure function of
``(producer, seq)`` (a slice of a fixed noise block, its length picked from
the seq), so a consumer can tell a torn, duplicated, reordered or lost item.
Consumers report what they took to the parent through a pipe as they go
(one small message per get, written atomically), so that when a consumer is
killed the parent knows exactly what it had reported and can bound what it
took with it.

Faults: producers and consumers are killed with SIGKILL at random moments;
the ``_crash_in_put`` hook kills a producer while it holds the queue lock at
a chosen stage; and the control block and records are overwritten with
garbage through ``Segment.open(name).buf``, after which a victim process must
get a clean ``shmring.CorruptedError`` (never a crash).

Layout offsets (payload offsets of ``shmring_queue_ctrl`` in
include/shmring.h) are checked against its _Static_asserts by
test_layout_offsets_match_header.  Helpers at module level run in children.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import queue
import random
import re
import signal
import struct
import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmring

from conftest import Kids

pytestmark = pytest.mark.timeout(60)

SHM = Path("/dev/shm")
FORK = mp.get_context("fork")
OP_TIMEOUT = 15.0
RING = 1 << 20

# Payload offsets of shmring_queue_ctrl (include/shmring.h).
CAPACITY, DATA_OFFSET, MAXSIZE, FLAGS = 0, 8, 16, 24
LOCK_OWNER = 128
HEAD, TAIL, COUNT, BYTES, OVF_HEAD, OVF_TAIL = 152, 160, 168, 176, 184, 192
DATA = 384  # SHMRING_QUEUE_CTRL_SIZE: the ring starts here
# Payload offsets of shmring_queue_chunk.
CHUNK_CAPACITY, CHUNK_DATA_OFFSET, CHUNK_INDEX, CHUNK_HEAD, CHUNK_TAIL = 0, 8, 16, 24, 32
TAG_OBJECT, TAG_BYTES, TAG_PAD = 0x4F, 0x42, 0x50


def record_size(n: int) -> int:
    return 8 + (n + 7) // 8 * 8


def chunk_files(name: str) -> list[str]:
    prefix = name + ".q"
    return sorted(p.name for p in SHM.iterdir() if p.name.startswith(prefix) and p.name[len(prefix) :].isdigit())


def u64(buf: Any, off: int) -> int:
    return int(struct.unpack_from("<Q", buf, off)[0])


def set_u64(buf: Any, off: int, value: int) -> None:
    struct.pack_into("<Q", buf, off, value & (2**64 - 1))


def test_layout_offsets_match_header() -> None:
    header = "".join(p.read_text() for p in sorted((Path(__file__).resolve().parent.parent / "include").rglob("*.h")))
    asserted = dict(re.findall(r"offsetof\(shmring_queue_ctrl, (\w+)\) == (\d+)", header))
    offsets = {k: int(v) for k, v in asserted.items()}
    assert {k: offsets[k] for k in ("maxsize", "flags", "lock", "head", "count", "ovf_head")} == {
        "maxsize": MAXSIZE, "flags": FLAGS, "lock": LOCK_OWNER, "head": HEAD, "count": COUNT, "ovf_head": OVF_HEAD
    }
    assert re.search(r"#define SHMRING_QUEUE_CTRL_SIZE %du" % DATA, header)
    body = header[header.index("typedef struct shmring_queue_ctrl") :]
    body = body[: body.index("} shmring_queue_ctrl;")]
    ring_fields = re.findall(r"uint64_t (\w+);", body[body.index("shmring_mutex lock") :])
    assert ring_fields[:6] == ["head", "tail", "count", "bytes", "ovf_head", "ovf_tail"]
    assert shmring._core.QUEUE_CTRL_SIZE == DATA


def test_layout_seen_through_the_segment(new_name: Callable[[], str]) -> None:
    name = new_name()
    with shmring.Queue(max_size_bytes=256, name=name) as q:
        q.put_bytes(b"abc")
        q.put("o")
        seg = shmring.Segment.open(name)
        try:
            buf = seg.buf
            assert u64(buf, CAPACITY) == 256 and u64(buf, DATA_OFFSET) == DATA
            obj_len = len(q.dumps("o"))
            assert (u64(buf, HEAD), u64(buf, TAIL)) == (0, 16 + record_size(obj_len))
            assert (u64(buf, COUNT), u64(buf, BYTES)) == (2, 3 + obj_len)
            assert struct.unpack_from("<II", buf, DATA) == (3, TAG_BYTES)
            assert bytes(buf[DATA + 8 : DATA + 11]) == b"abc"
            assert struct.unpack_from("<II", buf, DATA + 16) == (obj_len, TAG_OBJECT)
            assert bytes(buf[DATA + 24 : DATA + 24 + obj_len]) == q.dumps("o")
            q.get_many()
            assert u64(buf, HEAD) == u64(buf, TAIL) and u64(buf, COUNT) == 0
        finally:
            seg.close()


# --------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Children
# --------------------------------------------------------------------------


def _producer(q: shmring.Queue, p: int, n: int, api: str, mode: str, seed: int) -> None:
    rng = random.Random(seed)
    s = 0
    while s < n:
        if api == "single":
            q.put(item(p, s, mode), timeout=OP_TIMEOUT)
            s += 1
        else:
            k = min(n - s, rng.randint(1, MAX_BATCH[mode]))
            q.put_many([item(p, s + i, mode) for i in range(k)], timeout=OP_TIMEOUT)
            s += k


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


@pytest.fixture
def collector(kids: Kids) -> Collector:
    return Collector(kids)


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


def assert_drained(q: shmring.Queue, producer_killed: bool = False) -> None:
    st = q.stats()
    assert (st["items"], st["bytes"], st["overflow_chunks"], st["holder"]) == (0, 0, 0, 0), st
    left = chunk_files(q.name)
    if producer_killed and left:
        # A producer killed while making the next chunk leaves it behind,
        # never linked into the chain; the next chunk of that index replaces
        # it, and the owner removes it at the end.
        seg = shmring.Segment.open(q.name)
        try:
            assert left == [f"{q.name}.q{u64(seg.buf, OVF_TAIL)}"], left
        finally:
            seg.close()
    else:
        assert left == []


# name of the kill-test mode -> (item sizes, maxsize): "maxsize" and "overflow"
# bound items, not bytes, so the victim cannot run away with the memory.
KILL_MODES = {"bounded": ("bounded", 0), "maxsize": ("unbounded", 24), "overflow": ("overflow", 40)}


# --------------------------------------------------------------------------
# Exactly-once delivery
# --------------------------------------------------------------------------

LAYOUTS = {"1x1": (1, 1), "4x1": (4, 1), "1x4": (1, 4), "3x3": (3, 3)}
TOTAL = {"unbounded": 20000, "bounded": 12000, "overflow": 1000}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["unbounded", "bounded", "overflow"])
@pytest.mark.parametrize("api", ["single", "batch"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_exactly_once(layout: str, api: str, mode: str, new_name: Callable[[], str], kids: Kids,
                      collector: Collector) -> None:
    producers, consumers = LAYOUTS[layout]
    per = TOTAL[mode] // producers
    seed = random.randrange(2**32)
    ctx = f"[seed {seed}] "
    gate = FORK.Event() if mode == "overflow" else None
    with make_queue(mode, new_name()) as q:
        for c in range(consumers):
            collector.consumer(c, q, api, mode, seed + 1000 + c, gate)
        prods = [kids.process(FORK, _producer, q, p, per, api, mode, seed + p) for p in range(producers)]
        most_chunks = 0
        if gate is not None:
            # Let the ring overflow before anyone consumes, then drain while
            # producers may still be filling chunks.
            deadline = time.monotonic() + OP_TIMEOUT
            while time.monotonic() < deadline:
                most_chunks = max(most_chunks, q.stats()["overflow_chunks"])
                if most_chunks >= 2 or not any(p.is_alive() for p in prods):
                    break
                time.sleep(0.002)
            gate.set()
        collector.join(prods, 40)
        assert all(p.exitcode == 0 for p in prods), [p.exitcode for p in prods]
        collector.put_markers(q, consumers)
        collector.wait_done(set(range(consumers)), 40)
        collector.join(kids.procs, 10)
        check_delivery(collector.got, {p: per for p in range(producers)}, ctx=ctx)
        if gate is not None:
            assert most_chunks >= 1, "the stream never overflowed the ring"
        assert_drained(q)


# --------------------------------------------------------------------------
# kill -9 in the middle of a stream
# --------------------------------------------------------------------------


def _wait_for(collector: Collector, pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        assert not collector.errors, collector.errors
        collector.pump(0.01)


def _streamer(q: shmring.Queue, p: int, api: str, mode: str, seed: int, stop: Any, conn: Any) -> None:
    """A producer that puts until ``stop`` is set, then reports how many."""
    rng = random.Random(seed)
    s = 0
    while not stop.value:
        if api == "single":
            q.put(item(p, s, mode), timeout=OP_TIMEOUT)
            s += 1
        else:
            k = rng.randint(1, MAX_BATCH[mode])
            q.put_many([item(p, s + i, mode) for i in range(k)], timeout=OP_TIMEOUT)
            s += k
    conn.send(s)


class Stream:
    """Streaming producers of one kill test."""

    def __init__(self, collector: Collector, q: shmring.Queue, api: str, mode: str, seed: int) -> None:
        self.collector, self.q, self.api, self.mode, self.seed = collector, q, api, mode, seed
        # A lock-free flag: a producer killed inside Event.is_set() would
        # leave the Event's lock held and hang the others.
        self.stop = FORK.RawValue("b", 0)
        self.procs: dict[int, Any] = {}
        self.counts: dict[int, Any] = {}

    def start(self, p: int) -> Any:
        r, w = FORK.Pipe(duplex=False)
        self.procs[p] = self.collector.kids.process(FORK, _streamer, self.q, p, self.api, self.mode, self.seed + p,
                                                    self.stop, w)
        w.close()
        self.counts[p] = r
        return self.procs[p]

    def delivered(self) -> int:
        return sum(len(g) for g in self.collector.got.values())

    def carry_on(self, more: int) -> None:
        """Let the others deliver ``more`` items, then stop the producers."""
        target = self.delivered() + more
        _wait_for(self.collector, lambda: self.delivered() >= target, 20, f"{more} more items after the kill")
        self.stop.value = 1

    def finish(self, survivors: list[int]) -> dict[int, int]:
        """Join the surviving producers: how many each put."""
        self.collector.join([self.procs[p] for p in survivors], 40)
        assert all(self.procs[p].exitcode == 0 for p in survivors), [self.procs[p].exitcode for p in survivors]
        return {p: self.counts[p].recv() for p in survivors}


def kill(proc: Any) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(OP_TIMEOUT)
    assert proc.exitcode == -signal.SIGKILL, proc.exitcode


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", list(KILL_MODES))
@pytest.mark.parametrize("api", ["single", "batch"])
@pytest.mark.parametrize("round", range(3))
def test_kill_producer_mid_stream(round: int, api: str, mode: str, new_name: Callable[[], str], kids: Kids,
                                  collector: Collector) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    ctx = f"[seed {seed}] "
    imode, maxsize = KILL_MODES[mode]
    victim = 2
    with make_queue(imode, new_name(), maxsize=maxsize) as q:
        for c in range(2):
            collector.consumer(c, q, api, imode, seed + 100 + c)
        stream = Stream(collector, q, api, imode, seed)
        for p in (0, 1, victim):
            stream.start(p)
        _wait_for(collector, lambda: collector.count_from(victim) >= 20, 20, "the victim's first items")
        time.sleep(rng.uniform(0, 0.03))
        kill(stream.procs[victim])
        stream.carry_on(100)
        expected = stream.finish([0, 1])
        collector.put_markers(q, 2)
        collector.wait_done({0, 1}, 40)
        collector.join(kids.procs, 10)
        delivered = collector.count_from(victim)
        expected[victim] = delivered
        check_delivery(collector.got, expected, prefix_only=frozenset({victim}), ctx=ctx)
        assert delivered >= 20
        assert_drained(q, producer_killed=True)
        q.put("still usable")
        assert q.get(timeout=1) == "still usable"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", list(KILL_MODES))
@pytest.mark.parametrize("api", ["single", "batch"])
@pytest.mark.parametrize("round", range(3))
def test_kill_consumer_mid_stream(round: int, api: str, mode: str, new_name: Callable[[], str], kids: Kids,
                                  collector: Collector) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    ctx = f"[seed {seed}] "
    imode, maxsize = KILL_MODES[mode]
    victim = 0
    with make_queue(imode, new_name(), maxsize=maxsize) as q:
        doomed = collector.consumer(victim, q, api, imode, seed + 100)
        for c in (1, 2):
            collector.consumer(c, q, api, imode, seed + 100 + c)
        stream = Stream(collector, q, api, imode, seed)
        for p in (0, 1):
            stream.start(p)
        _wait_for(collector, lambda: len(collector.got[victim]) >= 20, 20, "the victim's first items")
        time.sleep(rng.uniform(0, 0.03))
        kill(doomed)
        collector.drain(victim)  # what it reported before it died
        stream.carry_on(100)
        expected = stream.finish([0, 1])
        collector.put_markers(q, 2)
        collector.wait_done({1, 2}, 40)
        collector.join(kids.procs, 10)
        lose = 1 if api == "single" else MAX_BATCH[imode]
        check_delivery(collector.got, expected, may_lose=lose, ctx=ctx)
        assert_drained(q)


# --------------------------------------------------------------------------
# _crash_in_put: killed while holding the lock
# --------------------------------------------------------------------------


def _crash(q: shmring.Queue, stage: int) -> None:
    q._crash_in_put(stage)


def _put_after_crash(q: shmring.Queue, conn: Any) -> None:
    t0 = time.monotonic()
    q.put("after", timeout=OP_TIMEOUT)
    conn.send((time.monotonic() - t0, q.qsize()))


def crash_in_put(q: shmring.Queue, stage: int) -> int:
    p = FORK.Process(target=_crash, args=(q, stage))
    p.start()
    p.join(OP_TIMEOUT)
    assert p.exitcode == -signal.SIGKILL and p.pid is not None, p.exitcode
    return p.pid


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["unbounded", "bounded"])
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_crash_in_put_recovers(stage: int, mode: str, new_name: Callable[[], str]) -> None:
    with make_queue(mode, new_name()) as q:
        q.put("before")
        dead = crash_in_put(q, stage)
        assert q.stats()["holder"] == dead, "the dead process should still hold the lock"
        r, w = FORK.Pipe(duplex=False)
        helper = FORK.Process(target=_put_after_crash, args=(q, w))
        helper.start()
        assert r.poll(OP_TIMEOUT), "a put after the crash hangs"
        elapsed, qsize = r.recv()
        helper.join(OP_TIMEOUT)
        assert helper.exitcode == 0
        assert elapsed < 1.0, f"taking over the dead holder's lock took {elapsed:.3f} s"
        expected = ["before"] + ([b"crash"] if stage == 2 else []) + ["after"]
        assert qsize == len(expected) == q.qsize()
        assert q.stats()["holder"] == 0
        assert [q.get_nowait() for _ in expected] == expected
        with pytest.raises(queue.Empty):
            q.get_nowait()
        assert_drained(q)
        q.put_many([1, 2])
        assert q.get_many() == [1, 2]


@pytest.mark.timeout(30)
def test_crash_between_the_two_stores_of_a_ring_restart(new_name: Callable[[], str]) -> None:
    """A put on an empty ring restarted at offset 0 moves tail and head; a
    holder killed after storing tail and before head leaves a valid ring
    holding the padding record and its record: the next holder counts the
    record, and readers step over the padding."""
    with shmring.Queue(max_size_bytes=512, name=new_name()) as q:
        q.put_bytes(b"p" * 200)
        assert q.get_bytes() == b"p" * 200  # empty, tail at offset 208
        seg = shmring.Segment.open(q.name)
        try:
            head, tail = u64(seg.buf, HEAD), u64(seg.buf, TAIL)
            assert head == tail == 208
            crash_in_put(q, 4)
            assert (u64(seg.buf, HEAD), u64(seg.buf, TAIL)) == (208, 512 + record_size(5))
            assert struct.unpack_from("<II", seg.buf, DATA + 208) == (512 - 208 - 8, TAG_PAD)
        finally:
            seg.close()
        q.put("after", timeout=OP_TIMEOUT)  # takes the dead holder's lock over and recounts
        assert q.qsize() == 2 and q.data_size() == 5 + len(q.dumps("after"))
        assert [q.get_nowait(), q.get_nowait()] == [b"crash", "after"]
        assert_drained(q)
        q.put_bytes(b"w" * 496, timeout=OP_TIMEOUT)  # the whole ring, again
        assert q.get_bytes() == b"w" * 496


def _report_gets(q: shmring.Queue, conn: Any) -> None:
    while True:
        x = q.get(timeout=OP_TIMEOUT)
        conn.send((time.monotonic(), x))
        if x == "end":
            return


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_crash_in_put_with_a_consumer_asleep(stage: int, new_name: Callable[[], str]) -> None:
    with shmring.Queue(name=new_name()) as q:
        r, w = FORK.Pipe(duplex=False)
        consumer = FORK.Process(target=_report_gets, args=(q, w))
        consumer.start()
        time.sleep(0.1)  # asleep in get() on an empty queue
        crash_in_put(q, stage)
        crashed_at = time.monotonic()
        if stage == 2:
            # committed but never announced: the sleeper finds it on its own
            assert r.poll(5), "the committed record of the dead producer was never delivered"
            t, x = r.recv()
            assert x == b"crash" and t - crashed_at < 2.0
        else:
            assert not r.poll(0.2), "nothing was committed, yet the consumer got an item"
        q.put("end")
        assert r.poll(OP_TIMEOUT)
        assert r.recv()[1] == "end"
        consumer.join(OP_TIMEOUT)
        assert consumer.exitcode == 0
        assert_drained(q)


@pytest.mark.timeout(30)
def test_crash_in_put_stage2_keeps_joinable_task_count(new_name: Callable[[], str]) -> None:
    """The record committed by a producer that died before updating the
    counters is delivered, so it must also count as an unfinished task:
    otherwise task_done() for it raises and join() returns early."""
    with shmring.JoinableQueue(name=new_name()) as q:
        q.put("a")
        crash_in_put(q, 2)
        q.put("b")
        got = [q.get_nowait() for _ in range(3)]
        assert got == ["a", b"crash", "b"]
        unfinished = q.stats()["unfinished"]
        assert unfinished == 3, f"3 items were delivered but only {unfinished} count as unfinished tasks"
        q.task_done()
        q.task_done()
        with pytest.raises(shmring.Timeout):
            q.join(timeout=0.1)  # one of the three items is not done yet
        q.task_done()  # the third item taken from the queue: must be accepted
        q.join(timeout=1)


def _dead_pid() -> int:
    p = FORK.Process(target=os._exit, args=(0,))
    p.start()
    p.join(OP_TIMEOUT)
    assert p.pid is not None
    return p.pid


@pytest.mark.timeout(30)
def test_lock_held_by_a_dead_pid_is_taken_over(new_name: Callable[[], str]) -> None:
    name = new_name()
    with shmring.Queue(name=name) as q:
        q.put("x")
        seg = shmring.Segment.open(name)
        set_u64(seg.buf, LOCK_OWNER, _dead_pid() << 32)
        set_u64(seg.buf, COUNT, 7)  # a stale counter the next holder must recount
        seg.close()
        t0 = time.monotonic()
        q.put("y", timeout=OP_TIMEOUT)
        assert time.monotonic() - t0 < 1.0
        assert q.qsize() == 2
        assert q.get_many() == ["x", "y"]
        assert_drained(q)


# --------------------------------------------------------------------------
# No lost wake-ups
# --------------------------------------------------------------------------


def _ponger(a: shmring.Queue, b: shmring.Queue, n: int) -> None:
    for _ in range(n):
        b.put(a.get(timeout=OP_TIMEOUT))


@pytest.mark.timeout(30)
def test_ping_pong_has_no_lost_wakeups(new_name: Callable[[], str], kids: Kids) -> None:
    # Each wait that missed its wake-up would last a 50 ms slice: 300 round
    # trips would then take 15 s or more.
    n = 300
    with shmring.Queue(name=new_name()) as a, shmring.Queue(1, name=new_name()) as b:
        p = kids.process(FORK, _ponger, a, b, n)
        a.put(-1)
        assert b.get(timeout=OP_TIMEOUT) == -1  # the child is up
        t0 = time.monotonic()
        for i in range(n - 1):
            a.put(i)
            assert b.get(timeout=OP_TIMEOUT) == i
        elapsed = time.monotonic() - t0
        kids.join([p], 10)
        assert p.exitcode == 0
        assert elapsed < 3.0, f"{n} round trips took {elapsed:.2f} s: wake-ups are being lost"


def _timed_consumer(q: shmring.Queue, conn: Any) -> None:
    lat = []
    while True:
        x = q.get(timeout=OP_TIMEOUT)
        if x is None:
            break
        lat.append(time.monotonic() - x)
    conn.send(lat)


@pytest.mark.timeout(30)
def test_sleeping_consumers_are_woken_per_item(new_name: Callable[[], str], kids: Kids) -> None:
    with shmring.Queue(name=new_name()) as q:
        pipes = []
        for _ in range(4):
            r, w = FORK.Pipe(duplex=False)
            kids.process(FORK, _timed_consumer, q, w)
            w.close()
            pipes.append(r)
        time.sleep(0.1)
        for _ in range(150):
            q.put(time.monotonic())
            time.sleep(0.002)  # consumers go back to sleep between items
        q.put_many([None] * 4)
        lat = sorted(x for r in pipes for x in (r.recv() if r.poll(OP_TIMEOUT) else []))
        kids.join(kids.procs, 10)
        assert len(lat) == 150
        assert lat[len(lat) // 2] < 0.02, f"median wake-up latency {lat[len(lat) // 2]:.3f} s"


# --------------------------------------------------------------------------
# Corruption: garbage in shared memory gives CorruptedError, never a crash
# --------------------------------------------------------------------------


def _victim(names: list[str], ops: list[str], conn: Any, timeout: float) -> None:
    out = []
    for name in names:
        res = []
        try:
            q = shmring.Queue.open(name)
        except BaseException as e:  # noqa: BLE001
            conn.send(("ok", [[("open", type(e).__name__, isinstance(e, shmring.CorruptedError), str(e)[:200])]]))
            return
        for op in ops:
            r: Any
            try:
                if op == "get":
                    r = q.get_bytes(timeout=timeout)
                elif op == "get_obj":
                    r = q.get(timeout=timeout)
                elif op == "get_many":
                    r = q.get_many(timeout=timeout)
                elif op == "put":
                    r = q.put_bytes(b"v" * 24, timeout=timeout)  # type: ignore[func-returns-value]
                elif op == "put_many":
                    r = q.put_many([b"w", b"x"], timeout=timeout)  # type: ignore[func-returns-value]
                else:
                    raise ValueError(op)
                res.append((op, "ok", False, repr(r)[:80]))
            except BaseException as e:  # noqa: BLE001
                res.append((op, type(e).__name__, isinstance(e, shmring.CorruptedError), str(e)[:200]))
        out.append(res)
    conn.send(("ok", out))


def run_victim(names: list[str], ops: list[str], timeout: float = 0.1) -> list[list[tuple[str, str, bool, str]]]:
    r, w = FORK.Pipe(duplex=False)
    p = FORK.Process(target=_victim, args=(names, ops, w, timeout))
    p.start()
    w.close()
    assert r.poll(30), "the victim hangs"
    status, out = r.recv()
    p.join(OP_TIMEOUT)
    assert p.exitcode == 0, f"the victim died with {p.exitcode} (a crash on corrupted data)"
    result: list[list[tuple[str, str, bool, str]]] = out
    return result


def _filled(name: str, bounded: bool = True) -> shmring.Queue:
    q = shmring.Queue(max_size_bytes=256, name=name) if bounded else shmring.Queue(name=name)
    q.put_bytes(b"skip" * 10)
    q.get_bytes()  # head and tail away from 0
    q.put_bytes(b"a" * 10)
    q.put("obj")
    q.put_bytes(b"c" * 20)
    return q


def _first_record(buf: Any) -> int:
    return DATA + u64(buf, HEAD) % u64(buf, CAPACITY)


def _reverse_chain(b: Any) -> None:
    set_u64(b, OVF_HEAD, 9)
    set_u64(b, OVF_TAIL, 4)


CORRUPTIONS: dict[str, tuple[Callable[[Any], None], list[str], list[str]]] = {
    # name: (mutate the payload, ops of the victim, expected outcome of each: C = CorruptedError)
    "tail past capacity": (lambda b: set_u64(b, TAIL, u64(b, HEAD) + 256 + 8), ["get", "put", "get"], ["C", "C", "C"]),
    "tail misaligned": (lambda b: set_u64(b, TAIL, u64(b, TAIL) + 3), ["get", "put"], ["C", "C"]),
    "head after tail": (lambda b: set_u64(b, HEAD, u64(b, TAIL) + 8), ["get_many", "put_many"], ["C", "C"]),
    "head far ahead": (lambda b: set_u64(b, HEAD, 2**63), ["get", "put"], ["C", "C"]),
    "record length huge": (lambda b: struct.pack_into("<I", b, _first_record(b), 0xFFFFFFF0), ["get", "put"], ["C", "ok"]),
    "record length past tail": (
        lambda b: struct.pack_into("<I", b, _first_record(b), u64(b, TAIL) - u64(b, HEAD)),
        ["get_many", "get"],
        ["C", "C"],
    ),
    "record tag unknown": (lambda b: struct.pack_into("<I", b, _first_record(b) + 4, 0x41), ["get", "get_obj", "put"], ["C", "C", "ok"]),
    "padding of the wrong length": (lambda b: struct.pack_into("<II", b, _first_record(b), 8, TAG_PAD), ["get"], ["C"]),
    "count below items": (lambda b: set_u64(b, COUNT, 0), ["get"], ["C"]),
    "bytes below payload": (lambda b: set_u64(b, BYTES, 3), ["get_many"], ["C"]),
    "overflow chain too long": (lambda b: set_u64(b, OVF_TAIL, u64(b, OVF_HEAD) + 10**6), ["get", "put"], ["C", "C"]),
    "overflow chain reversed": (_reverse_chain, ["get", "put"], ["C", "C"]),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corruption_gives_corrupted_error(case: str, new_name: Callable[[], str]) -> None:
    mutate, ops, expected = CORRUPTIONS[case]
    name = new_name()
    with _filled(name):
        seg = shmring.Segment.open(name)
        mutate(seg.buf)
        seg.close()
        (res,) = run_victim([name], ops)
    outcome = ["C" if corrupted else ("ok" if kind == "ok" else kind) for _, kind, corrupted, _ in res]
    assert outcome == expected, res
    assert all("corrupted" in msg for _, _, corrupted, msg in res if corrupted)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "field, value", [(CAPACITY, 12345), (CAPACITY, 8), (CAPACITY, 2**40), (DATA_OFFSET, 0), (FLAGS, 0xFF)]
)
def test_corrupted_config_is_refused_on_open(field: int, value: int, new_name: Callable[[], str]) -> None:
    name = new_name()
    with _filled(name):
        seg = shmring.Segment.open(name)
        set_u64(seg.buf, field, value) if field != FLAGS else struct.pack_into("<I", seg.buf, field, value)
        seg.close()
        (res,) = run_victim([name], ["get"])
    assert [(op, corrupted) for op, _, corrupted, _ in res] == [("open", True)], res


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "field, value", [(CHUNK_INDEX, 7), (CHUNK_CAPACITY, 3), (CHUNK_DATA_OFFSET, 0), (CHUNK_TAIL, 2**40), (CHUNK_HEAD, 5)]
)
def test_corrupted_overflow_chunk(field: int, value: int, new_name: Callable[[], str]) -> None:
    name = new_name()
    with shmring.Queue(name=name) as q:
        q.put_bytes(b"m" * (RING - 100))
        q.put_bytes(b"k" * 5000)  # the ring is full: chunk 0
        (chunk,) = chunk_files(name)
        seg = shmring.Segment.open(chunk)
        set_u64(seg.buf, field, value)
        seg.close()
        (res,) = run_victim([name], ["get", "get", "put"])
    outcome = [("C" if corrupted else kind) for _, kind, corrupted, _ in res]
    assert outcome == ["ok", "C", "C"], res


@pytest.mark.timeout(30)
def test_random_garbage_never_crashes(new_name: Callable[[], str]) -> None:
    rng = random.Random(1234)
    names, queues = [], []
    try:
        for i in range(40):
            name = new_name()
            q = shmring.Queue(max_size_bytes=256, name=name)
            queues.append(q)
            names.append(name)
            for _ in range(rng.randint(0, 30)):  # move head and tail around the ring
                try:
                    q.put_bytes(bytes(rng.randint(0, 40)), block=False)
                except queue.Full:
                    pass
                if rng.random() < 0.6:
                    q.get_bytes(block=False)
            seg = shmring.Segment.open(name)
            buf = seg.buf
            for _ in range(rng.randint(1, 6)):
                where = rng.choice(["data", "data", "data", "ctrl"])
                if where == "data":
                    off = DATA + rng.randrange(0, 256 - 3) // 4 * 4
                    struct.pack_into("<I", buf, off, rng.choice([0, 1, 7, 8, 0x4F, 0x42, 0x50, 248, 2**31, rng.getrandbits(32)]))
                else:
                    off = rng.choice([HEAD, TAIL, COUNT, BYTES])
                    set_u64(buf, off, u64(buf, off) + rng.choice([-16, -8, -1, 1, 8, 16, 256, 2**63]))
            seg.close()
        results = run_victim(names, ["get", "get", "put", "get", "put_many", "get", "get"], timeout=0)
    finally:
        for q in queues:
            q.close()  # the last handle out removes it
    allowed = {"ok", "Empty", "Full"}
    for name, res in zip(names, results):
        for op, kind, corrupted, msg in res:
            assert corrupted or kind in allowed, f"{name}: {op} raised {kind}: {msg}"


# --------------------------------------------------------------------------
# Property test of the record layout against a model
# --------------------------------------------------------------------------


class RingModel:
    """The ring of a bounded queue, byte for byte, as include/shmring.h lays it out."""

    def __init__(self, cap: int, maxsize: int) -> None:
        self.cap, self.maxsize = cap, maxsize
        self.head = self.tail = 0
        self.main: deque[tuple[int, int, bytes, Any]] = deque()  # (pos, tag, payload, value); tag PAD for padding
        self.chain: deque[tuple[int, bytes, Any]] = deque()  # records larger than the ring, a chunk each

    @property
    def count(self) -> int:
        return sum(1 for r in self.main if r[1] != TAG_PAD) + len(self.chain)

    @property
    def data(self) -> int:
        return sum(len(r[2]) for r in self.main if r[1] != TAG_PAD) + sum(len(r[1]) for r in self.chain)

    def _restart(self, tail: int, head: int) -> tuple[int, int]:
        """An empty ring whose tail is not at offset 0 starts over at 0: a
        padding record to the end, and head and tail both past it."""
        if tail == head and tail % self.cap:
            tail += self.cap - tail % self.cap
            head = tail
        return tail, head

    def _reserve(self, tail: int, head: int, n: int) -> tuple[int, list[tuple[int, int, bytes, Any]]] | None:
        need, pos = record_size(n), tail % self.cap
        contig, room = self.cap - pos, self.cap - (tail - head)
        pads = []
        if contig < need:
            if room < contig + need:
                return None
            pads.append((tail, TAG_PAD, bytes(contig - 8), None))
            tail += contig
        elif room < need:
            return None
        return tail + need, pads + [(tail, -1, b"", None)]

    def put(self, recs: list[tuple[int, bytes, Any]]) -> str:
        n = len(recs)
        if n == 0:
            return "ok"
        if self.maxsize and n > self.maxsize:
            return "ValueError"
        if n > 1 and sum(record_size(len(p)) for _, p, _ in recs) > self.cap:
            return "ValueError"
        if self.maxsize and self.count + n > self.maxsize:
            return "Full"
        if n == 1 and record_size(len(recs[0][1])) > self.cap:
            self.chain.append(recs[0])
            return "ok"
        if self.chain:
            return "Full"  # FIFO: behind the chunk, which is full
        tail, head, added = self.tail, self.head, []
        if n > 1 and sum(record_size(len(p)) for _, p, _ in recs) > self.cap - tail % self.cap:
            tail, head = self._restart(tail, head)  # an empty ring takes the whole batch from offset 0
        for tag, payload, value in recs:
            if record_size(len(payload)) > self.cap - tail % self.cap:
                tail, head = self._restart(tail, head)  # any record that fits the ring fits it empty
            r = self._reserve(tail, head, len(payload))
            if r is None:
                return "Full"
            tail, placed = r
            added += placed[:-1] + [(placed[-1][0], tag, payload, value)]
        self.tail, self.head = tail, head
        self.main.extend(added)
        return "ok"

    def get(self, most: int) -> list[tuple[int, bytes, Any]]:
        out: list[tuple[int, bytes, Any]] = []
        while len(out) < most:
            while self.main and self.main[0][1] == TAG_PAD:
                pos, _, pad, _ = self.main.popleft()
                self.head += len(pad) + 8
            if self.main:
                pos, tag, payload, value = self.main.popleft()
                self.head += record_size(len(payload))
                out.append((tag, payload, value))
            elif self.chain:
                out.append(self.chain.popleft())
            else:
                break
        return out


sizes = st.one_of(st.integers(0, 64), st.integers(0, 560))
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put_bytes"), sizes),
        st.tuples(st.just("put"), sizes),
        st.tuples(st.just("put_many"), st.lists(st.integers(0, 120), max_size=4)),
        st.tuples(st.just("get"), st.just(1)),
        st.tuples(st.just("get_bytes"), st.just(1)),
        st.tuples(st.just("get_many"), st.integers(1, 5)),
    ),
    min_size=10,
    max_size=80,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cap=st.sampled_from([64, 128, 200, 256, 520]), maxsize=st.sampled_from([0, 0, 2, 5]), ops=OPS)
def test_record_layout_against_a_model(new_name: Callable[[], str], cap: int, maxsize: int, ops: list[Any]) -> None:
    name = new_name()
    model = RingModel(cap, maxsize)
    with shmring.Queue(maxsize, max_size_bytes=cap, name=name) as q:
        seg = shmring.Segment.open(name)
        try:
            for i, (op, arg) in enumerate(ops):
                if op in ("put_bytes", "put", "put_many"):
                    if op == "put_bytes":
                        payload = bytes([i % 256]) * arg
                        recs = [(TAG_BYTES, payload, payload)]
                        call: Callable[[], Any] = lambda: q.put_bytes(payload, block=False)  # noqa: E731
                    elif op == "put":
                        value = ("o", i, b"x" * arg)
                        recs = [(TAG_OBJECT, q.dumps(value), value)]
                        call = lambda: q.put(value, block=False)  # noqa: E731
                    else:
                        values = [("m", i, j, b"y" * n) for j, n in enumerate(arg)]
                        recs = [(TAG_OBJECT, q.dumps(v), v) for v in values]
                        call = lambda: q.put_many_nowait(values)  # noqa: E731
                    expected = model.put(recs)
                    try:
                        call()
                        outcome = "ok"
                    except queue.Full:
                        outcome = "Full"
                    except ValueError:
                        outcome = "ValueError"
                    assert outcome == expected, (i, op, arg)
                else:
                    want = model.get(arg)
                    try:
                        if op == "get":
                            got = [q.get(block=False)]
                        elif op == "get_bytes":
                            got = [q.get_bytes(block=False)]
                        else:
                            got = q.get_many_nowait(max_messages_to_get=arg)
                    except queue.Empty:
                        got = []
                    if op == "get_bytes":
                        assert got == [p for _, p, _ in want], (i, op)
                    else:
                        assert got == [v if t == TAG_OBJECT else p for t, p, v in want], (i, op)
                # counters and the bytes of every record
                buf = seg.buf
                assert (u64(buf, HEAD), u64(buf, TAIL)) == (model.head, model.tail), (i, op)
                assert q.qsize() == model.count and q.data_size() == model.data
                st_ = q.stats()
                assert st_["used_bytes"] == model.tail - model.head
                assert st_["overflow_chunks"] == len(model.chain) == len(chunk_files(name))
                for pos, tag, payload, _ in model.main:
                    at = DATA + pos % cap
                    assert struct.unpack_from("<II", buf, at) == (len(payload), tag), (i, op, pos)
                    if tag != TAG_PAD:
                        assert bytes(buf[at + 8 : at + 8 + len(payload)]) == payload
        finally:
            seg.close()
