"""Overflow chunks of unbounded queues.

A put never waits for room: items past the ring go to chunk segments
(<name>.q<N>.<tag>) chained in FIFO order, each removed once drained; an item
larger than the ring gets a chunk of its own (on a bounded queue too).  Every
handle unmaps the chunks others retired, a chunk a killed producer left
unpublished is replaced, a queue merely named like a chunk is never
touched, and another user cannot take the name of a chunk before the queue
needs it.
"""

from __future__ import annotations

import os
import pickle
import queue
from pathlib import Path
from typing import Any

import pytest

import shmring

from _queue_helpers import OP_TIMEOUT, RING, chunk_files, chunk_name
from conftest import SHM


def test_overflow_keeps_fifo_and_removes_its_chunks(sq: shmring.Queue) -> None:
    items = [bytes([i % 251]) * 40_000 + i.to_bytes(4, "little") for i in range(150)]  # ~6 MB
    objs = [("obj", i) for i in range(50)]
    for i, it in enumerate(items):
        sq.put_bytes(it)  # never blocks: no consumer at all
        if i % 3 == 0:
            sq.put(objs[i // 3])
    expected: list[Any] = []
    for i, it in enumerate(items):
        expected.append(it)
        if i % 3 == 0:
            expected.append(objs[i // 3])
    st = sq.stats()
    assert st["items"] == len(expected) == sq.qsize()
    assert st["overflow_chunks"] >= 4
    assert len(chunk_files(sq.name)) == st["overflow_chunks"]
    assert sq.data_size() == sum(len(x) for x in items) + sum(len(sq.dumps(o)) for o in objs)
    got = [sq.get(timeout=OP_TIMEOUT) for _ in range(len(expected) // 2)]
    # more puts while chunks are being drained still come after the older ones
    sq.put_many(["tail-1", "tail-2"])
    got += sq.get_many(timeout=OP_TIMEOUT)
    assert got == expected + ["tail-1", "tail-2"]
    assert sq.empty() and sq.data_size() == 0
    assert chunk_files(sq.name) == [] and sq.stats()["overflow_chunks"] == 0
    sq.put("back in the main ring")
    assert sq.stats()["overflow_chunks"] == 0 and sq.stats()["used_bytes"] > 0
    assert sq.get() == "back in the main ring"


def test_overflow_with_maxsize_still_bounds_items(name: str) -> None:
    with shmring.Queue(5, name=name) as q:
        for i in range(5):
            q.put_bytes(bytes([i]) * (RING // 2))
        assert q.stats()["overflow_chunks"] >= 1
        with pytest.raises(queue.Full):
            q.put_bytes(b"x", block=False)
        assert [q.get_bytes()[0] for _ in range(5)] == [0, 1, 2, 3, 4]
        assert chunk_files(name) == []


@pytest.mark.parametrize("size", [RING - 8, RING - 7, RING + 1, 3 * RING + 12345])
def test_single_item_larger_than_the_ring_unbounded(sq: shmring.Queue, size: int) -> None:
    big = os.urandom(64) * (size // 64) + b"z" * (size % 64)
    sq.put("before")
    sq.put_bytes(big)
    sq.put("after")
    assert sq.qsize() == 3
    assert [sq.get(), sq.get_bytes(), sq.get()] == ["before", big, "after"]
    assert chunk_files(sq.name) == []
    sq.put(big)  # pickled, even larger
    assert sq.get() == big
    assert chunk_files(sq.name) == []


def test_single_item_larger_than_the_ring_bounded(name: str) -> None:
    with shmring.Queue(max_size_bytes=4096, name=name) as q:
        big = b"B" * (1 << 20)
        q.put("before")
        q.put(big, timeout=OP_TIMEOUT)  # cannot ever fit the ring: gets a chunk of its own
        st = q.stats()
        assert st["overflow_chunks"] == 1 and len(chunk_files(name)) == 1
        assert st["used_bytes"] < 4096
        assert q.get() == "before"
        assert q.get() == big
        assert chunk_files(name) == [] and q.stats()["overflow_chunks"] == 0
        q.put_bytes(b"s" * 100)
        q.put_bytes(big)
        assert q.get_many() == [b"s" * 100, big]
        assert chunk_files(name) == []


def test_overflow_removes_a_chunk_left_unpublished_by_a_killed_producer(name: str) -> None:
    with shmring.Queue(name=name) as q:
        (SHM / chunk_name(name, 0)).write_bytes(b"")  # created, never published: its maker died
        q.put_bytes(b"y" * (RING + 1))  # needs chunk 0
        assert q.stats()["overflow_chunks"] == 1
        assert q.get_bytes(timeout=1) == b"y" * (RING + 1)


# -- chunk names and other users ----------------------------------------------------

OTHER_UID = 65534  # "nobody": a user that is not the queue's owner


def _squat_as_another_user(names: list[str]) -> None:
    """Create each of `names` in /dev/shm from a child running as another
    user, as an attacker would: world-readable, holding bytes that are no
    shmring segment; the owner cannot use it (nor, unless root, remove it
    from the sticky /dev/shm)."""
    pid = os.fork()
    if pid == 0:  # the child: no Python-level cleanup, only system calls
        code = 1
        try:
            os.setgroups([])
            os.setgid(OTHER_UID)
            os.setuid(OTHER_UID)
            for n in names:
                fd = os.open(SHM / n, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                os.write(fd, b"squatted" * 1024)
                os.close(fd)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the other user could not create its names"
    assert all((SHM / n).stat().st_uid == OTHER_UID for n in names)


def _names_to_squat(name: str, taken: set[str]) -> list[str]:
    """What another user can predict from listing /dev/shm: for every entry
    that looks like a chunk of `name`, the next indexes under the same tag
    (and without one)."""
    prefix = name + ".q"
    guesses = []
    for entry in os.listdir(SHM):
        if not entry.startswith(prefix) or entry in taken:
            continue
        index, _, tag = entry[len(prefix) :].partition(".")
        if index.isdigit():
            for nxt in range(int(index) + 1, int(index) + 10):
                guesses += [f"{prefix}{nxt}.{tag}" if tag else f"{prefix}{nxt}", f"{prefix}{nxt}"]
    return sorted(set(guesses) - taken - set(os.listdir(SHM)))


@pytest.mark.timeout(60)
def test_another_user_cannot_take_the_names_of_the_next_overflow_chunks(name: str) -> None:
    """Regression (issue 14): chunk names were predictable ("<queue>.q0",
    ".q1", ...) in the world-listable, sticky /dev/shm, so another user
    could create them first and every put past the ring failed with
    FileExistsError.  Another uid creates every name it can predict (the
    old names before the first chunk, then whatever it derives from the
    chunk names it lists); the owner's puts still succeed and every item
    comes back, in order."""
    if os.geteuid() != 0:
        pytest.fail("this test runs a child as another uid: run the suite as root (CI does)")
    size = 300_000  # three to a 1 MiB ring or chunk
    items = [i.to_bytes(4, "little") * (size // 4) for i in range(30)]
    squatted = [f"{name}.q{i}" for i in range(10)]
    try:
        with shmring.Queue(name=name) as q:
            _squat_as_another_user(squatted)
            for it in items[:5]:  # the ring, then chunk 0
                q.put_bytes(it)
            assert chunk_files(name), "no chunk was made: the attack below needs one to look at"
            more = _names_to_squat(name, set(squatted))
            assert more
            _squat_as_another_user(more)
            squatted += more
            for it in items[5:]:  # chunks 1 to 9, past every guess
                q.put_bytes(it, timeout=OP_TIMEOUT)
            assert q.stats()["overflow_chunks"] >= 8
            got = [q.get_bytes(timeout=OP_TIMEOUT) for _ in items]
            assert [g[:4] for g in got] == [it[:4] for it in items] and got == items
            assert chunk_files(name) == sorted(n for n in squatted if shmring._core.chunk_index(n, name) is not None)
    finally:
        for n in squatted:
            (SHM / n).unlink(missing_ok=True)


# -- chunks and the other handles ---------------------------------------------------


def _mapped_chunks(name: str) -> list[str]:
    with open("/proc/self/maps") as f:
        return [line.split(maxsplit=5)[-1].strip() for line in f if f"/{name}.q" in line]


def test_producer_unmaps_chunks_retired_by_another_handle(sq: shmring.Queue) -> None:
    """A handle that only puts must not keep chunks that consumers retired:
    the mapping pins the (unlinked) tmpfs pages, so a long-running producer
    would grow by a chunk (>= 1 MiB) per overflow, forever."""
    consumer = pickle.loads(pickle.dumps(sq))  # a second handle, as another process would hold
    for _ in range(8):
        sq.put_bytes(b"p" * 400_000)
    assert sq.stats()["overflow_chunks"] >= 2
    for _ in range(8):
        consumer.get_bytes()
    assert chunk_files(sq.name) == []
    sq.put("one more")  # the producer takes the lock again and sees the chain is empty
    assert consumer.get() == "one more"
    stale = _mapped_chunks(sq.name)
    assert stale == [], f"the producer handle still maps {len(stale)} retired chunk(s): {stale[:3]}"


def test_a_consumer_unmaps_chunks_another_consumer_retired(name: str) -> None:
    with shmring.Queue(name=name) as q:
        other = shmring.Queue.open(name)
        for _ in range(3):
            q.put_bytes(b"z" * 700_000)  # main ring, then chunks 0 and 1
        assert q.get_bytes() and q.get_bytes()  # q maps chunk 0 and retires it
        assert other.get_bytes()  # other maps chunk 1 and retires it
        q.put("next")
        assert q.get() == "next"
        maps = Path("/proc/self/maps").read_text()
        assert f"{name}.q0" not in maps and f"{name}.q1" not in maps
        other.close()


def test_queue_named_like_another_queues_chunk_survives(name: str) -> None:
    """A queue may legally be called '<x>.q0'; removing queue '<x>' (or its
    overflow) must not unlink it."""
    with shmring.Queue(name=f"{name}.q0") as neighbour:
        neighbour.put("precious")
        with shmring.Queue(name=name) as q:
            q.put(1)
        assert (SHM / f"{name}.q0").exists(), "closing queue X unlinked the unrelated queue 'X.q0'"
        with shmring.Queue(name=name) as q:
            try:
                q.put_bytes(b"x" * (RING + 1))  # wants chunk 'X.q0': may fail, must not take the name over
            except OSError:
                pass
            try:
                again = shmring.Queue.open(f"{name}.q0")
            except ValueError as e:
                pytest.fail(f"overflowing queue X replaced the unrelated queue 'X.q0' with its chunk: {e}")
            assert again.get_nowait() == "precious"


def test_unlink_keeps_overflow_items_for_attached_handles(name: str) -> None:
    """unlink() promises that attached processes keep working; the items in
    overflow chunks must not vanish with the chunk names (and qsize() must
    not keep counting items that get() can no longer reach)."""
    q = shmring.Queue(name=name)
    try:
        for i in range(3):
            q.put_bytes(bytes([i]) * 600_000)  # main ring, then two chunks
        assert q.stats()["overflow_chunks"] == 2
        attached = shmring.Queue.open(name)  # has not mapped any chunk yet
        q.unlink()
        got: list[Any] = []
        for _ in range(3):
            try:
                got.append(attached.get_bytes(timeout=0.5)[:1])
            except queue.Empty:
                got.append(f"Empty (qsize() == {attached.qsize()})")
        assert got == [b"\0", b"\1", b"\2"], got
        attached.close()
    finally:
        q.close()
