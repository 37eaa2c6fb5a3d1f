"""The 32-bit atomics and futex helpers of _core, across real processes."""

from __future__ import annotations

import multiprocessing as mp
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import shmring
from shmring import _core


def test_load_store(segment: shmring.Segment) -> None:
    assert _core.atomic_load_u32(segment.buf, 0) == 0
    _core.atomic_store_u32(segment.buf, 4, 0xDEADBEEF)
    assert _core.atomic_load_u32(segment.buf, 4) == 0xDEADBEEF
    assert bytes(segment.buf[4:8]) == (0xDEADBEEF).to_bytes(4, sys.byteorder)


@pytest.mark.parametrize("offset", [-4, 4093, 4096, 1 << 40])
def test_out_of_range_offsets(segment: shmring.Segment, offset: int) -> None:
    with pytest.raises((ValueError, OverflowError)):
        _core.atomic_load_u32(segment.buf, offset)
    with pytest.raises((ValueError, OverflowError)):
        _core.futex_wake(segment.buf, offset)


@pytest.mark.parametrize("offset", [1, 2, 3, 4090])
def test_misaligned_offsets(segment: shmring.Segment, offset: int) -> None:
    with pytest.raises(ValueError, match="aligned"):
        _core.atomic_store_u32(segment.buf, offset, 1)
    with pytest.raises(ValueError, match="aligned"):
        _core.futex_wait(segment.buf, offset, 0, 0.01)


def test_store_needs_writable_buffer() -> None:
    with pytest.raises((TypeError, BufferError)):
        _core.atomic_store_u32(bytes(8), 0, 1)


def test_wait_returns_at_once_when_value_differs(segment: shmring.Segment) -> None:
    _core.atomic_store_u32(segment.buf, 0, 7)
    assert _core.futex_wait(segment.buf, 0, 6, 10.0) is True


def test_wait_times_out(segment: shmring.Segment) -> None:
    t0 = time.monotonic()
    assert _core.futex_wait(segment.buf, 0, 0, 0.2) is False
    assert 0.19 <= time.monotonic() - t0 < 2.0
    assert _core.futex_wait(segment.buf, 0, 0, 0) is False  # zero: just a check


def test_wake_without_sleepers(segment: shmring.Segment) -> None:
    assert _core.futex_wake(segment.buf, 0) == 0
    with pytest.raises(ValueError):
        _core.futex_wake(segment.buf, 0, 0)


def _sleeper(seg: shmring.Segment, q: "mp.Queue[object]") -> None:
    with seg:
        q.put("waiting")
        woke = _core.futex_wait(seg.buf, 0, 0, 20.0)
        q.put((woke, _core.atomic_load_u32(seg.buf, 0), bytes(seg.buf[64:69])))


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
    _core.atomic_store_u32(segment.buf, 0, 1)
    _core.futex_wake(segment.buf, 0)
    assert q.get(timeout=10) == (True, 1, b"hello")
    proc.join(10)
    assert proc.exitcode == 0


SIGINT_SCRIPT = textwrap.dedent(
    """
    import sys, time, shmring
    from shmring import _core
    seg = shmring.Segment.create(sys.argv[1], 64)
    try:
        print("ready", flush=True)
        try:
            _core.futex_wait(seg.buf, 0, 0, None)
        except KeyboardInterrupt:
            print("interrupted", time.monotonic(), flush=True)
    finally:
        seg.close(); seg.unlink()
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
