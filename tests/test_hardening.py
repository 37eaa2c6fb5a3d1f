"""Regression tests for misuse and hostile input found in review: each of
these once crashed, leaked, hung or could hand an end to two processes."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import shmring
from shmring import _core

PAYLOAD = _core.HEADER_SIZE  # channel control block offset in the mapping


def test_dropped_pending_peek_then_recv(name: str) -> None:
    with shmring.Channel.create(name, 1024) as ch:
        ch.send(b"one")
        ch.send(b"two")
        region = ch.peek()
        del region  # never entered: its message stays unread
        assert ch.recv() == b"one"
        assert ch.recv() == b"two"


def test_abandoned_regions_do_not_keep_a_channel_alive(name: str) -> None:
    with shmring.Channel.create(name, 1024) as owner:
        rx = shmring.Channel.open(name)
        tx_region = owner.reserve(4)
        del tx_region
        gc.collect()
        owner.send(b"kept")  # the abandoned reserve was discarded: sends work again
        region = rx.peek()
        del region, rx
        gc.collect()
        with shmring.Channel.open(name) as again:  # the consumer end was given back
            assert again.recv(timeout=1) == b"kept"


def test_entered_peek_with_escaped_view_completes_when_dropped(name: str) -> None:
    with shmring.Channel.create(name, 1024) as owner:
        owner.send(b"first")
        owner.send(b"second")
        rx = shmring.Channel.open(name)
        with pytest.raises(shmring.BufferInUseError):
            with rx.peek() as mv:
                escaped = mv[1:3]
        assert bytes(escaped) == b"ir"
        del mv, escaped, rx
        gc.collect()
        with shmring.Channel.open(name) as again:
            assert again.recv(timeout=1) == b"second"  # the peeked one was consumed


def _fork_inside_reserve(name: str, q: "mp.Queue[object]") -> None:
    ch = shmring.Channel.open(name)
    with ch.reserve(3) as mv:
        mv[:] = b"abc"
        pid = os.fork()
        if pid == 0:  # the child leaves the block later and must not touch the ring
            time.sleep(0.3)
            os._exit(0)
    ch.send(b"de")
    ch.send(b"fg")
    os.waitpid(pid, 0)
    q.put("done")
    ch.close()


@pytest.mark.timeout(30)
def test_fork_inside_a_region_does_not_rewind_the_parent(name: str) -> None:
    with shmring.Channel.create(name, 1024) as ch:
        q = mp.get_context("fork").Queue()
        p = mp.get_context("fork").Process(target=_fork_inside_reserve, args=(name, q))
        p.start()
        assert q.get(timeout=20) == "done"
        p.join(10)
        assert list(ch) == [b"abc", b"de", b"fg"]


def test_iterator_closing_the_channel_mid_send_many(name: str) -> None:
    """send_many collects its batch before it enters the producer end, so an
    iterator may close the handle: the batch then sends nothing (issue 9:
    one publication, checked whole first)."""
    with shmring.Channel.create(name, 1024) as ch:
        reader = shmring.Channel.open(name)
        def items():
            yield b"a"
            ch.close()
            yield b"b"
        with pytest.raises(shmring.Closed, match="handle is closed"):
            ch.send_many(items())
        with pytest.raises(shmring.Timeout):
            reader.recv(timeout=0)  # nothing of the batch, and the stream was never started
        reader.close()


def test_uninitialised_native_channel() -> None:
    raw = _core.Channel.__new__(_core.Channel)
    with pytest.raises(ValueError, match="not initialised"):
        raw.send(b"x")
    with pytest.raises(ValueError, match="not initialised"):
        raw.recv(timeout=0)


def test_value_conversion_that_closes_the_segment(name: str) -> None:
    seg = shmring.Segment.create(name, 64)
    atom = shmring.AtomicInt64(seg, 0)

    class Evil:
        def __index__(self) -> int:
            seg.close()
            return 1

    with pytest.raises(ValueError, match="closed"):
        atom.store(Evil())  # type: ignore[arg-type]
    assert not Path("/dev/shm", name).exists()  # closed by its only user: removed


def test_hostile_semaphore_count_cannot_hang_a_timed_recv(name: str) -> None:
    with shmring.Channel.create(name, 1024, "semaphore") as ch:
        with shmring.Segment.open(name) as raw:
            # data_sem.count of the control block (docs/PROTOCOL.md 3.1)
            raw.buf[392:396] = struct.pack("<I", 0x80000000)
        t0 = time.monotonic()
        with pytest.raises(shmring.Timeout):
            ch.recv(timeout=0.2)
        assert time.monotonic() - t0 < 2


def test_liveness_when_proc_cannot_be_read() -> None:
    """With no file descriptor left, /proc cannot be read: a live process
    must not be declared dead (that would hand its lock to another)."""
    script = textwrap.dedent(
        """
        import os, resource
        from shmring import _core
        start = _core.process_start_time(os.getppid())
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        fds = []
        try:
            while True:
                fds.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        print(_core.process_alive(os.getppid(), start))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "True", out.stderr


def test_dead_process_is_still_dead() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = _core.process_start_time(proc.pid)
    proc.wait()
    assert start is not None
    assert _core.process_alive(proc.pid, start) is False
    assert _core.process_alive(os.getpid(), _core.process_start_time(os.getpid()) or 0) is True


def _cond_child(seg: shmring.Segment, q: "mp.Queue[object]") -> None:
    cond = shmring.Condition(seg, 32, lock=shmring.Mutex(seg, 0))
    with cond:
        q.put("waiting")
        t0 = time.monotonic()
        q.put((cond.wait(5.0), time.monotonic() - t0))


@pytest.mark.timeout(30)
def test_a_notifier_that_waits_next_does_not_steal_its_own_notification(segment: shmring.Segment) -> None:
    """notify() then wait() on the same condition (the ping-pong pattern):
    the notification goes to the process that was waiting, not to the
    notifier that arrived after it."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    proc = ctx.Process(target=_cond_child, args=(segment, q))
    proc.start()
    try:
        assert q.get(timeout=10) == "waiting"
        time.sleep(0.1)
        cond = shmring.Condition(segment, 32, lock=shmring.Mutex(segment, 0))
        with cond:
            cond.notify()
            assert cond.wait(0.5) is False  # nobody notified the notifier
        woke, waited = q.get(timeout=10)
        assert woke is True and waited < 2.0
    finally:
        proc.join(10)
