"""Channel.reserve() and peek(): messages written and read in place.

A reserve commits on leaving its block (or is discarded on an exception),
its loan is zero-filled and commit(k) cuts the message (issue 9); a peek
consumes its message on leaving its block; a view that escapes the block
keeps the record until it is released; a loan never entered, dropped, or
left behind by a fork does no harm.  What Channel and Topic loans share is
in test_loans.py.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import time

import pytest

import shmring
from shmring import _core


def test_reserve_commits_on_exit(ch: shmring.Channel) -> None:
    with ch.reserve(5) as mv:
        assert isinstance(mv, _core.Loan) and len(mv) == 5 and not mv.readonly
        mv[:] = b"hello"
        assert ch.try_recv() is None  # not visible before the commit
    assert ch.recv() == b"hello"


def test_reserve_discarded_on_exception(ch: shmring.Channel) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with ch.reserve(5) as mv:
            mv[:] = b"wrong"
            raise RuntimeError("boom")
    assert ch.try_recv() is None
    ch.send(b"next")
    assert ch.recv() == b"next"


def test_reserve_blocks_other_sends_until_done(ch: shmring.Channel) -> None:
    region = ch.reserve(3)
    with pytest.raises(RuntimeError, match="reserve"):
        ch.send(b"x")
    with region as mv:
        mv[:] = b"abc"
    ch.send(b"x")
    assert ch.recv_many(5) == [b"abc", b"x"]


def test_peek_releases_on_exit(ch: shmring.Channel) -> None:
    ch.send(b"first")
    ch.send(b"second")
    with ch.peek() as mv:
        assert mv.readonly and bytes(mv) == b"first"
        with pytest.raises(TypeError):
            mv[0] = 1
    assert ch.recv() == b"second"


def test_peek_without_with_consumes_nothing(ch: shmring.Channel) -> None:
    ch.send(b"kept")
    region = ch.peek()
    assert region.nbytes == 4
    del region
    assert ch.recv() == b"kept"


def test_view_used_after_release_raises(ch: shmring.Channel) -> None:
    ch.send(b"gone")
    with ch.peek() as mv:
        pass
    with pytest.raises(ValueError, match="released"):
        bytes(mv)
    with ch.reserve(4) as wmv:
        wmv[:] = b"ok!!"
    with pytest.raises(ValueError):
        wmv[0] = 1


def test_escaped_slice_keeps_the_message(ch: shmring.Channel) -> None:
    ch.send(b"precious")
    with pytest.raises(shmring.BufferInUseError, match="still alive"):
        with ch.peek() as mv:
            escaped = mv[2:5]
    assert bytes(escaped) == b"eci"  # still valid memory: the record was kept
    ch.send(b"later")
    with pytest.raises(shmring.BufferInUseError):
        ch.recv()  # the held record cannot be released yet
    escaped.release()
    assert ch.recv() == b"later"  # the peeked record was released first


def test_escaped_export_from_reserve(ch: shmring.Channel) -> None:
    with pytest.raises(shmring.BufferInUseError):
        with ch.reserve(4) as mv:
            mv[:] = b"abcd"
            exported = memoryview(mv)  # a buffer export, as numpy would take
    assert ch.try_recv() is None  # not committed while a view lives
    exported.release()
    ch.close()  # the pending reserve is discarded, the handle closes


def test_region_entered_twice(ch: shmring.Channel) -> None:
    ch.send(b"x")
    region = ch.peek()
    with region:
        with pytest.raises(RuntimeError, match="once"):
            region.__enter__()


def _dirty_channel_ring(ch: shmring.Channel) -> None:
    """Send and receive 0xEE-filled messages all around the ring, so that
    every byte of it holds old data, and leave the tail at offset 0."""
    for _ in range(2):
        ch.send(b"\xee" * ch.max_message)
        assert ch.recv() == b"\xee" * ch.max_message


def test_channel_reserve_is_zero_filled(name: str) -> None:
    with shmring.Channel.create(name, 256) as ch:
        _dirty_channel_ring(ch)
        with ch.reserve(40) as buf:
            assert bytes(buf) == bytes(40)
            buf[:3] = b"abc"
        assert ch.recv() == b"abc" + bytes(37)


def test_channel_commit_cuts_the_message(name: str) -> None:
    with shmring.Channel.create(name, 256) as ch:
        _dirty_channel_ring(ch)
        with ch.reserve(40) as buf:
            buf[:3] = b"abc"
            buf.commit(3)
        assert ch.recv() == b"abc"
        with ch.reserve(40) as buf:
            buf[:5] = b"hello"
            buf.commit(40)
            buf.commit(5)  # the last call wins
            assert buf.committed == 5
        with ch.reserve(16) as buf:
            buf.commit(0)
        assert ch.recv_many(5) == [b"hello", b""]
        assert ch.stats()["sent_bytes"] == 2 * ch.max_message + 3 + 5 + 0  # what was sent, not what was reserved


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
