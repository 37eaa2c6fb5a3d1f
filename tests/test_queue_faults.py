"""Queue faults: producers and consumers killed with SIGKILL mid-stream (what
a killed producer delivered is a prefix of its items; a killed consumer
takes at most what it held), and a producer killed while it holds the queue
lock, at each stage of a put (tests/c/queue_crash.c, a C producer that
kills itself there): the next holder takes the lock over, recounts, removes
leftover chunks, and nothing committed is lost.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import shmring

from _queue_helpers import (
    COUNT, DATA, HEAD, LOCK_OWNER, MAX_BATCH, OP_TIMEOUT, TAG_PAD, TAIL, Collector, assert_drained, check_delivery,
    chunk_name, item, make_queue,
)
from conftest import FORK, SHM, record_size, set_u64, u64

# name of the kill-test mode -> (item sizes, maxsize): "maxsize" and "overflow"
# bound items, not bytes, so the victim cannot run away with the memory.
KILL_MODES = {"bounded": ("bounded", 0), "maxsize": ("unbounded", 24), "overflow": ("overflow", 40)}


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


class KillRun:
    """One kill test: its seed (named in every failure message), its queue
    (a mode of KILL_MODES) and the producers that stream into it until they
    are stopped; its consumers are the collector's."""

    def __init__(self, collector: Collector, api: str, mode: str, name: str) -> None:
        self.seed = random.randrange(2**32)
        self.rng = random.Random(self.seed)
        self.ctx = f"[seed {self.seed}] "
        self.mode, maxsize = KILL_MODES[mode]
        self.collector, self.api = collector, api
        self.q = make_queue(self.mode, name, maxsize=maxsize)
        self.procs: dict[int, Any] = {}
        self.counts: dict[int, Any] = {}

    def __enter__(self) -> KillRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.q.close()

    def consumer(self, c: int) -> Any:
        return self.collector.consumer(c, self.q, self.api, self.mode, self.seed + 100 + c)

    def producers(self, *ps: int) -> None:
        # A lock-free flag: a producer killed inside Event.is_set() would
        # leave the Event's lock held and hang the others.
        self.stop = FORK.RawValue("b", 0)
        for p in ps:
            r, w = FORK.Pipe(duplex=False)
            self.procs[p] = self.collector.kids.process(FORK, _streamer, self.q, p, self.api, self.mode,
                                                        self.seed + p, self.stop, w)
            w.close()
            self.counts[p] = r

    def kill_after_first_items(self, victim: Any, got_them: Callable[[], bool]) -> None:
        """Once ``got_them()`` (the victim's first items went through), kill
        ``victim`` at a random moment within 30 ms."""
        _wait_for(self.collector, got_them, 20, "the victim's first items")
        time.sleep(self.rng.uniform(0, 0.03))
        kill(victim)

    def delivered(self) -> int:
        return sum(len(g) for g in self.collector.got.values())

    def wind_down(self, consumers: set[int]) -> dict[int, int]:
        """After the kill: the others deliver 100 more items, then producers
        0 and 1 stop; the consumers ``consumers`` finish on their end
        markers.  How many items each of the two producers put."""
        target = self.delivered() + 100
        _wait_for(self.collector, lambda: self.delivered() >= target, 20, "100 more items after the kill")
        self.stop.value = 1
        self.collector.join([self.procs[p] for p in (0, 1)], 40)
        assert all(self.procs[p].exitcode == 0 for p in (0, 1)), [self.procs[p].exitcode for p in (0, 1)]
        expected = {p: self.counts[p].recv() for p in (0, 1)}
        self.collector.put_markers(self.q, 2)
        self.collector.wait_done(consumers, 40)
        self.collector.join(self.collector.kids.procs, 10)
        return expected


def kill(proc: Any) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(OP_TIMEOUT)
    assert proc.exitcode == -signal.SIGKILL, proc.exitcode


def _every_kill_case(test: Callable[..., None]) -> Callable[..., None]:
    """Three rounds of each API (single items, batches) in each mode of KILL_MODES."""
    for mark in (pytest.mark.parametrize("round", range(3)), pytest.mark.parametrize("api", ["single", "batch"]),
                 pytest.mark.parametrize("mode", list(KILL_MODES)), pytest.mark.timeout(60)):
        test = mark(test)
    return test


@_every_kill_case
def test_kill_producer_mid_stream(round: int, api: str, mode: str, new_name: Callable[[], str],
                                  collector: Collector) -> None:
    victim = 2
    with KillRun(collector, api, mode, new_name()) as run:
        for c in range(2):
            run.consumer(c)
        run.producers(0, 1, victim)
        run.kill_after_first_items(run.procs[victim], lambda: collector.count_from(victim) >= 20)
        expected = run.wind_down({0, 1})
        delivered = collector.count_from(victim)
        expected[victim] = delivered
        check_delivery(collector.got, expected, prefix_only=frozenset({victim}), ctx=run.ctx)
        assert delivered >= 20
        assert_drained(run.q, producer_killed=True)
        run.q.put("still usable")
        assert run.q.get(timeout=1) == "still usable"


@_every_kill_case
def test_kill_consumer_mid_stream(round: int, api: str, mode: str, new_name: Callable[[], str],
                                  collector: Collector) -> None:
    victim = 0
    with KillRun(collector, api, mode, new_name()) as run:
        doomed = run.consumer(victim)
        for c in (1, 2):
            run.consumer(c)
        run.producers(0, 1)
        run.kill_after_first_items(doomed, lambda: len(collector.got[victim]) >= 20)
        collector.drain(victim)  # what it reported before it died
        expected = run.wind_down({1, 2})
        lose = 1 if api == "single" else MAX_BATCH[run.mode]
        check_delivery(collector.got, expected, may_lose=lose, ctx=run.ctx)
        assert_drained(run.q, consumer_killed=True)


# -- killed while holding the lock ---------------------------------------------------


@pytest.fixture(scope="module")
def crasher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/c/queue_crash.c, built with warnings as errors against get_include()."""
    exe = tmp_path_factory.mktemp("queue-crash") / "queue_crash"
    proc = subprocess.run(
        ["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I", shmring.get_include(),
         str(Path(__file__).resolve().parent / "c" / "queue_crash.c"), "-o", str(exe)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return exe


def _put_after_crash(q: shmring.Queue, conn: Any) -> None:
    t0 = time.monotonic()
    q.put("after", timeout=OP_TIMEOUT)
    conn.send((time.monotonic() - t0, q.qsize()))


def crash_in_put(crasher: Path, q: shmring.Queue, stage: int) -> int:
    """Run queue_crash on `q` at `stage`: it dies holding the lock.  Its pid."""
    p = subprocess.Popen([str(crasher), q.name, str(stage)], stderr=subprocess.PIPE, text=True)
    _, err = p.communicate(timeout=OP_TIMEOUT)
    assert p.returncode == -signal.SIGKILL, (p.returncode, err)
    return p.pid


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["unbounded", "bounded"])
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_crash_in_put_recovers(stage: int, mode: str, new_name: Callable[[], str], crasher: Path) -> None:
    with make_queue(mode, new_name()) as q:
        q.put("before")
        dead = crash_in_put(crasher, q, stage)
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
def test_crash_between_the_two_stores_of_a_ring_restart(new_name: Callable[[], str], crasher: Path) -> None:
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
            crash_in_put(crasher, q, 4)
            assert (u64(seg.buf, HEAD), u64(seg.buf, TAIL)) == (208, 512 + record_size(5))
            assert struct.unpack_from("<II", seg.buf, DATA + 208) == (512 - 208 - 8, TAG_PAD)
        finally:
            seg.close()
        q.put("after", timeout=OP_TIMEOUT)  # takes the dead holder's lock over and recounts
        assert q.qsize() == 2 and q.data_size() == 5 + len(shmring._core.value_encode("after") or b"")
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
def test_crash_in_put_with_a_consumer_asleep(stage: int, new_name: Callable[[], str], crasher: Path) -> None:
    with shmring.Queue(name=new_name()) as q:
        r, w = FORK.Pipe(duplex=False)
        consumer = FORK.Process(target=_report_gets, args=(q, w))
        consumer.start()
        time.sleep(0.1)  # asleep in get() on an empty queue
        crash_in_put(crasher, q, stage)
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
def test_crash_in_put_stage2_keeps_joinable_task_count(new_name: Callable[[], str], crasher: Path) -> None:
    """The record committed by a producer that died before updating the
    counters is delivered, so it must also count as an unfinished task:
    otherwise task_done() for it raises and join() returns early."""
    with shmring.JoinableQueue(name=new_name()) as q:
        q.put("a")
        crash_in_put(crasher, q, 2)
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


@pytest.mark.timeout(30)
def test_recovery_removes_every_chunk_left_past_the_chain(name: str, crasher: Path) -> None:
    with shmring.Queue(name=name) as q:
        leftovers = [chunk_name(name, i) for i in (0, 1, 2)]
        for leftover in leftovers:
            (SHM / leftover).write_bytes(b"")  # a killed multi-chunk put_many's leftovers
        crash_in_put(crasher, q, 3)
        q.put("after")  # takes the dead holder's lock over, recounts, cleans up
        assert not any((SHM / leftover).exists() for leftover in leftovers)
        assert q.get(timeout=1) == "after"


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


# -- a holder stopped while holding the lock -------------------------------------------


def _stopped_holder(crasher: Path, q: shmring.Queue) -> subprocess.Popen[str]:
    """queue_crash at stage 5: it takes the lock and stops itself (SIGSTOP)."""
    p = subprocess.Popen([str(crasher), q.name, "5"], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline() == "held\n"
    deadline = time.monotonic() + OP_TIMEOUT
    while Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline, "the holder did not stop"
        time.sleep(0.001)
    return p


def _timed_raise(call: Callable[[], Any], exc: type[BaseException]) -> float:
    t0 = time.monotonic()
    with pytest.raises(exc):
        call()
    return time.monotonic() - t0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["unbounded", "bounded"])
def test_nowait_calls_return_while_a_stopped_process_holds_the_lock(
    mode: str, new_name: Callable[[], str], crasher: Path
) -> None:
    """Regression (issue 14): get_nowait, get(block=False), get_many_nowait and
    put_nowait waited for a holder stopped by SIGSTOP (Ctrl-Z, a debugger) for
    as long as it stayed stopped.  They give up after a bounded wait for the
    lock (SHMRING_NOWAIT_LOCK_NS, 1 ms) with Empty / Full, and get / put with a
    timeout (and the C API's get with a deadline) honour it while the lock
    is held."""
    with make_queue(mode, new_name()) as q:
        q.put("before")
        holder = _stopped_holder(crasher, q)
        try:
            for call, exc in ((q.get_nowait, queue.Empty), (lambda: q.get(block=False), queue.Empty),
                              (q.get_many_nowait, queue.Empty), (lambda: q.put_nowait("x"), queue.Full),
                              (lambda: q.put("x", block=False), queue.Full)):
                assert _timed_raise(call, exc) < 0.5
            assert 0.15 < _timed_raise(lambda: q.get(timeout=0.2), queue.Empty) < 2.0
            assert 0.15 < _timed_raise(lambda: q.put("x", timeout=0.2), queue.Full) < 2.0
            # the C API's shmring_queue_get, with a 200 ms deadline
            out = subprocess.run([str(crasher), q.name, "6"], capture_output=True, text=True, timeout=OP_TIMEOUT)
            verb, result, ms = out.stdout.split()
            assert (verb, result) == ("get", "timeout"), out
            assert 150 <= float(ms) < 2000, out
            assert q.stats()["holder"] == holder.pid
        finally:
            os.kill(holder.pid, signal.SIGCONT)
        assert holder.wait(OP_TIMEOUT) == 0
        assert q.stats()["holder"] == 0
        assert q.get_nowait() == "before"
        with pytest.raises(queue.Empty):
            q.get_nowait()
        assert_drained(q)
