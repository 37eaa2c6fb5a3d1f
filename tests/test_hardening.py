"""Regression tests for misuse and hostile input found in review: each of
these once crashed, leaked, hung or could hand an end to two processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import shmring
from shmring import _core

PAYLOAD = _core.HEADER_SIZE  # channel control block offset in the mapping


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
