"""32-bit atomics as futex words (AtomicInt32 load/store/wait/notify), across real processes."""

from __future__ import annotations

import multiprocessing as mp
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import shmring
from shmring import AtomicInt32

DEADBEEF = 0xDEADBEEF - (1 << 32)  # the same 32 bits, as the signed value AtomicInt32 holds


def test_load_store(segment: shmring.Segment) -> None:
    assert AtomicInt32(segment, 0).load("acquire") == 0
    AtomicInt32(segment, 4).store(DEADBEEF, "release")
    assert AtomicInt32(segment, 4).load("acquire") == DEADBEEF
    assert bytes(segment.buf[4:8]) == (0xDEADBEEF).to_bytes(4, sys.byteorder)


@pytest.mark.parametrize("offset", [-4, 4093, 4096, 1 << 40])
def test_out_of_range_offsets(segment: shmring.Segment, offset: int) -> None:
    with pytest.raises((ValueError, OverflowError)):
        AtomicInt32(segment, offset)


@pytest.mark.parametrize("offset", [1, 2, 3, 4090])
def test_misaligned_offsets(segment: shmring.Segment, offset: int) -> None:
    with pytest.raises(ValueError, match="aligned"):
        AtomicInt32(segment, offset)


def test_store_needs_writable_mapping(segment: shmring.Segment) -> None:
    with shmring.Segment.open(segment.name, readonly=True) as ro:
        with pytest.raises(ValueError, match="read-only"):
            AtomicInt32(ro, 0)


def test_wait_returns_at_once_when_value_differs(segment: shmring.Segment) -> None:
    word = AtomicInt32(segment, 0)
    word.store(7)
    assert word.wait(6, 10.0) is True


def test_wait_times_out(segment: shmring.Segment) -> None:
    word = AtomicInt32(segment, 0)
    t0 = time.monotonic()
    assert word.wait(0, 0.2) is False
    assert 0.19 <= time.monotonic() - t0 < 2.0
    assert word.wait(0, 0) is False  # zero: just a check


def test_notify_without_sleepers(segment: shmring.Segment) -> None:
    word = AtomicInt32(segment, 0)
    assert word.notify() == 0
    with pytest.raises(ValueError):
        word.notify(0)


def _sleeper(seg: shmring.Segment, q: "mp.Queue[object]") -> None:
    with seg:
        word = AtomicInt32(seg, 0)
        q.put("waiting")
        woke = word.wait(0, 20.0)
        q.put((woke, word.load("acquire"), bytes(seg.buf[64:69])))
        del word


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_wake_across_processes(segment: shmring.Segment, method: str) -> None:
    ctx = mp.get_context(method)
    q = ctx.Queue()
    proc = ctx.Process(target=_sleeper, args=(segment, q))
    proc.start()
    assert q.get(timeout=30) == "waiting"
    time.sleep(0.1)
    segment.buf[64:69] = b"hello"
    word = AtomicInt32(segment, 0)
    word.store(1, "release")  # publishes the payload written above
    word.notify()
    assert q.get(timeout=10) == (True, 1, b"hello")
    proc.join(10)
    assert proc.exitcode == 0


SIGINT_SCRIPT = textwrap.dedent(
    """
    import sys, time, shmring
    seg = shmring.Segment.create(sys.argv[1], 64)
    try:
        word = shmring.AtomicInt32(seg, 0)
        print("ready", flush=True)
        try:
            word.wait(0, None)
        except KeyboardInterrupt:
            print("interrupted", time.monotonic(), flush=True)
        del word
    finally:
        seg.close()  # the only user: this removes it
    """
)


@pytest.mark.timeout(30)
def test_ctrl_c_interrupts_a_blocked_wait(name: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGINT_SCRIPT, name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # well into the wait
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    word, stamp = out.split()
    assert word == "interrupted"
    assert float(stamp) - sent < 0.1  # within 100 ms of Ctrl-C
