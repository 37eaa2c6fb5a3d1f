"""Channel: creating and opening, sending and receiving, argument checking,
stats, and pickling (by name, in one process and as Process arguments).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

import shmring
from shmring import Channel, _core

from _channel_helpers import DATA, REC
from conftest import SHM, record_size


# -- creating and opening ---------------------------------------------------


def test_create_defaults_and_properties(name: str) -> None:
    with shmring.Channel.create(name) as c:
        assert c.name == name and c.owner and not c.closed
        assert c.capacity == 1 << 20 and c.max_message == (1 << 20) - REC
        assert c.wait == "adaptive" and c.spin_ns == _core.CHANNEL_DEFAULT_SPIN_NS
        assert c.segment.info().kind == "channel"
        assert c.segment.size == DATA + c.capacity
        assert "owner" in repr(c)
    assert not (SHM / name).exists()


def test_unique_name() -> None:
    with shmring.Channel.create() as a, shmring.Channel.create() as b:
        assert a.name != b.name


@pytest.mark.parametrize("capacity", [0, 63, 100, 1000, 3 << 10, 1 << 33, -1, -4096, 2**70, -(2**70)])
def test_bad_capacity(name: str, capacity: int) -> None:
    # The size is reported as written (a negative one too, not wrapped to 2**64 - 1).
    with pytest.raises(ValueError, match=f"power of two .*, not {capacity}$"):
        shmring.Channel.create(name, capacity)
    assert not (SHM / name).exists()


def test_bad_arguments(name: str) -> None:
    with pytest.raises(TypeError):
        shmring.Channel.create(name, "1024")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wait"):
        shmring.Channel.create(name, 1024, "sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="spin_ns"):
        shmring.Channel.create(name, 1024, spin_ns=-5)
    with pytest.raises(ValueError, match="mode"):
        shmring.Channel.create(name, 1024, mode=0o1777)
    with pytest.raises(TypeError, match="Channel.create"):
        shmring.Channel()
    assert not (SHM / name).exists()


def test_open_and_override_wait(ch: shmring.Channel) -> None:
    with shmring.Channel.open(ch.name, "spin", spin_ns=5) as other:
        assert other.wait == "spin" and other.spin_ns == 5 and not other.owner
    with shmring.Channel.open(ch.name) as other:
        assert other.wait == "adaptive"
    assert (SHM / ch.name).exists()  # a non-owner's with-block does not unlink


def test_open_a_plain_segment_is_refused(segment: shmring.Segment) -> None:
    with pytest.raises(ValueError, match="not a channel"):
        shmring.Channel.open(segment.name)


def test_open_missing(name: str) -> None:
    with pytest.raises(FileNotFoundError):
        shmring.Channel.open(name)


def test_semaphore_wait_needs_a_semaphore_channel(channel: Callable[..., Channel]) -> None:
    ch = channel(256, "adaptive")
    with pytest.raises(ValueError, match="semaphore"):
        Channel.open(ch.name, "semaphore")


def test_uninitialised_native_channel() -> None:
    raw = _core.Channel.__new__(_core.Channel)
    with pytest.raises(ValueError, match="not initialised"):
        raw.send(b"x")
    with pytest.raises(ValueError, match="not initialised"):
        raw.recv(timeout=0)


# -- messages ---------------------------------------------------------------


def test_send_recv_any_bytes_like(ch: shmring.Channel) -> None:
    import array

    ch.send(b"bytes")
    ch.send(bytearray(b"bytearray"))
    ch.send(memoryview(b"xmemoryviewx")[1:-1])
    ch.send(array.array("i", [1, 2]))
    ch.send(b"")
    assert ch.recv() == b"bytes"
    assert ch.recv() == b"bytearray"
    assert ch.recv() == b"memoryview"
    assert ch.recv() == array.array("i", [1, 2]).tobytes()
    assert ch.recv() == b""
    assert ch.try_recv() is None


@pytest.mark.parametrize("bad", ["text", 3, None, [1, 2]])
def test_send_wrong_types(ch: shmring.Channel, bad: object) -> None:
    with pytest.raises(TypeError):
        ch.send(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ch.try_send(bad)  # type: ignore[arg-type]
    assert ch.try_recv() is None  # nothing half-sent


def test_keywords_and_argument_errors(ch: shmring.Channel) -> None:
    ch.send(data=b"k", timeout=1.0)
    assert ch.recv(timeout=1) == b"k"
    with pytest.raises(TypeError, match="unexpected keyword"):
        ch.send(b"x", timeot=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="missing required"):
        ch.send()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="at most"):
        ch.send(b"x", 1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="duplicate"):
        ch.send(b"x", data=b"y")  # type: ignore[misc]
    with pytest.raises(ValueError, match="non-negative"):
        ch.recv(timeout=-1)
    with pytest.raises(ValueError, match="non-negative"):
        ch.recv(timeout=float("nan"))
    with pytest.raises(TypeError):
        ch.recv(timeout="soon")  # type: ignore[arg-type]


def test_recv_into(ch: shmring.Channel) -> None:
    ch.send(b"0123456789")
    small = bytearray(4)
    with pytest.raises(ValueError, match="too small"):
        ch.recv_into(small)
    buf = bytearray(16)
    assert ch.recv_into(buf) == 10  # the message stayed until it fitted
    assert bytes(buf[:10]) == b"0123456789"
    with pytest.raises(TypeError):
        ch.recv_into(b"readonly")
    with pytest.raises(shmring.Timeout):
        ch.recv_into(buf, timeout=0)


# -- stats ------------------------------------------------------------------


def test_stats(ch: shmring.Channel) -> None:
    ch.send_many([b"12345", b"678"])
    s = ch.stats()
    assert s["sent_messages"] == 2 and s["sent_bytes"] == 8
    assert s["fill_bytes"] == record_size(5) + record_size(3)
    assert s["producer_pid"] == os.getpid() and s["producer_alive"]
    ch.recv_many(10)
    ch.try_recv()  # an empty ring hands everything back
    s = ch.stats()
    assert s["received_messages"] == 2 and s["received_bytes"] == 8 and s["fill_bytes"] == 0
    assert s["consumer_pid"] == os.getpid()
    assert not s["writer_closed"] and not s["reader_closed"]


# -- pickling ---------------------------------------------------------------


def test_pickle_reattaches_with_same_overrides(ch: shmring.Channel) -> None:
    with shmring.Channel.open(ch.name, "adaptive", spin_ns=1234) as tuned:
        clone = pickle.loads(pickle.dumps(tuned))
        try:
            assert clone.name == ch.name and clone.wait == "adaptive" and clone.spin_ns == 1234
            assert not clone.owner
        finally:
            clone.close()


def _echo_upper(inbox: Channel, outbox: Channel, n: int) -> None:
    with inbox, outbox:
        for _ in range(n):
            outbox.send(inbox.recv(timeout=10).upper())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_channels_as_process_arguments(method: str, channel: Callable[..., Channel]) -> None:
    """Channel objects are plain Process arguments under every start method:
    they pickle by name and the child re-attaches; its with-block does not
    unlink the creator's segments."""
    inbox, outbox = channel(4096, "adaptive"), channel(4096, "adaptive")
    proc = mp.get_context(method).Process(target=_echo_upper, args=(inbox, outbox, 100))
    proc.start()
    try:
        for i in range(100):
            inbox.send(b"msg %d" % i)
            assert outbox.recv(timeout=10) == b"MSG %d" % i
        proc.join(20)
        assert proc.exitcode == 0
        assert Path("/dev/shm", inbox.name).exists() and Path("/dev/shm", outbox.name).exists()
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
