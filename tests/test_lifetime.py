"""One lifetime model for every kind of object (issue 9).

An object lives while any live process is attached to it; every handle is an
attachment, held until it is closed, garbage collected, or its process ends
(normally, by an exception, or by SIGKILL); the last one out removes the
object and its overflow chunks; `shmring gc` removes only objects nobody is
attached to.  The matrix below checks it for every kind x every way of
leaving x start methods, with checked messages:

- the creator leaves while a consumer it started still drains: nothing the
  creator wrote is lost;
- a user leaves while the creator stays: nothing the user wrote is lost;
- once every user is gone, /dev/shm holds nothing of the object (after
  `shmring gc` when the last user crashed), and gc never touched it before.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import shmring
from shmring import _core

from _queue_helpers import chunk_name
from conftest import Kids

SHM = Path("/dev/shm")
N = 40  # messages per run
WAIT = 15.0  # bound on any wait of a child: a hang fails the test instead

KINDS = ["segment", "channel", "queue", "topic", "semaphore"]
MODES = ["close", "collected", "exit", "exception", "sigkill"]
METHODS = ["fork", "spawn"]


def message(i: int) -> bytes:
    """Message i: its number, filler whose size varies, and a CRC-32.  Every
    10th is 300 kB, so that queues spill into overflow chunks."""
    size = 300_000 if i % 10 == 3 else 20 + (i * 37) % 200
    body = struct.pack("<I", i) + bytes((i + k) % 251 for k in range(size))
    return body + zlib.crc32(body).to_bytes(4, "little")


def check(i: int, data: bytes) -> None:
    assert data == message(i), f"message {i} differs from what was sent"


def leftovers(name: str) -> list[str]:
    """What /dev/shm still holds of object ``name`` (its chunks included)."""
    return sorted(p.name for p in SHM.iterdir() if p.name == name or _core.chunk_index(p.name, name) is not None)


# -- the kinds: make, write N messages, read them --------------------------------------


def make(kind: str, name: str) -> Any:
    if kind == "segment":
        return shmring.Segment.create(name, 8 * N)
    if kind == "channel":
        return shmring.Channel.create(name, 1 << 22)  # room for all N (the reader may start late)
    if kind == "queue":
        return shmring.Queue(name=name)  # 1 MiB ring: the large messages go to overflow chunks
    if kind == "topic":
        return shmring.Topic.create(name, 1 << 22, "block")
    return shmring.Semaphore.create(name, 0)


def writer_end(kind: str, obj: Any) -> Any:
    """What writes: a topic's publisher (an attachment of its own), else the object."""
    return obj.publisher() if kind == "topic" else obj


def reader_end(kind: str, obj: Any) -> Any:
    return obj.subscribe() if kind == "topic" else obj


def write_all(kind: str, end: Any) -> None:
    """Write the N messages (for a topic, through a publisher)."""
    for i in range(N):
        if kind == "segment":
            end.buf[8 * i : 8 * i + 8] = struct.pack("<Q", zlib.crc32(message(i)))
        elif kind == "channel":
            end.send(message(i), timeout=WAIT)
        elif kind == "queue":
            end.put((i, message(i)), timeout=WAIT)
        elif kind == "topic":
            end.send(message(i), timeout=WAIT)
        else:
            end.release()


def read_all(kind: str, end: Any) -> int:
    """Read the N messages; returns how many were checked."""
    for i in range(N):
        if kind == "segment":
            assert struct.unpack_from("<Q", end.buf, 8 * i)[0] == zlib.crc32(message(i)), f"slot {i}"
        elif kind == "channel":
            check(i, end.recv(timeout=WAIT))
        elif kind == "queue":
            j, data = end.get(timeout=WAIT)
            assert j == i
            check(i, data)
        elif kind == "topic":
            check(i, end.recv(timeout=WAIT))
        else:
            assert end.acquire(timeout=WAIT), f"permit {i} missing"
    if kind == "semaphore":
        assert end.value == 0
    return N


def leave(mode: str, handles: list[Any]) -> None:
    """Leave as `mode` says, with every handle in `handles` (the object, and
    a topic's publisher made from it): closed, or dropped (the list is the
    only reference left) and collected, or kept until the process ends."""
    if mode == "close":
        for h in reversed(handles):
            h.close()
    elif mode == "collected":
        handles.clear()
        gc.collect()
    elif mode == "exception":
        raise RuntimeError("leaving by an exception")
    elif mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    # "exit": return, and let the process end normally


def wait_until_left(name: str, pid: int) -> None:
    """Until process ``pid`` is no longer a live user of ``name`` (its roster
    entry is gone, or it is dead)."""
    deadline = time.monotonic() + WAIT
    while True:
        mapping = _core.open(name, True, True, False)
        try:
            users = mapping.users()
        finally:
            mapping.close()
        if not any(p == pid and alive for p, alive, _ in users):
            return
        assert time.monotonic() < deadline, f"process {pid} never left {name}"
        time.sleep(0.01)


# -- direction A: the creator leaves while the consumer it started drains ---------------


def _consumer(kind: str, obj: Any, creator: int, ready: Any, report: Any) -> None:
    end = reader_end(kind, obj)
    ready.set()  # (a topic's subscriber exists before anything is published)
    wait_until_left(obj.name, creator)
    report.send(("checked", read_all(kind, end)))
    # the consumer ends normally: as the last user, it removes the object


def write_all_and_leave(kind: str, handles: list[Any], mode: str) -> None:
    """Write the N messages through a writer end of ``handles[0]`` (added to
    ``handles``), then leave with all of them as ``mode`` says."""
    handles.append(writer_end(kind, handles[0]))
    write_all(kind, handles[-1])
    leave(mode, handles)


def _creator(kind: str, name: str, mode: str, method: str, report: Any) -> None:
    ctx = mp.get_context(method)
    handles = [make(kind, name)]
    ready = ctx.Event()
    consumer = ctx.Process(target=_consumer, args=(kind, handles[0], os.getpid(), ready, report))
    consumer.start()  # (start() drops its reference to the arguments)
    assert ready.wait(WAIT)
    report.send(("consumer", consumer.pid))
    write_all_and_leave(kind, handles, mode)
    if mode == "collected":
        consumer.join(WAIT)  # alive, attached to nothing, until the consumer is done


def every_kind_way_and_method(test: Callable[..., None]) -> Callable[..., None]:
    """The matrix of the module's docstring: every kind x every way of
    leaving x start method, 90 s a case."""
    for mark in (pytest.mark.parametrize("kind", KINDS), pytest.mark.parametrize("mode", MODES),
                 pytest.mark.parametrize("method", METHODS), pytest.mark.timeout(90)):
        test = mark(test)
    return test


@every_kind_way_and_method
def test_creator_leaves_while_its_consumer_drains(
    kind: str, mode: str, method: str, new_name: Callable[[], str], kids: Kids
) -> None:
    name = new_name()
    ctx = mp.get_context(method)
    report_r, report_w = ctx.Pipe(duplex=False)
    creator = ctx.Process(target=_creator, args=(kind, name, mode, method, report_w))
    kids.items.append(creator)
    creator.start()
    report_w.close()
    got = {}
    while "checked" not in got:
        assert report_r.poll(WAIT + 10), f"no report; so far {got}"
        key, value = report_r.recv()
        got[key] = value
    assert got["checked"] == N
    creator.join(WAIT)
    assert creator.exitcode == {"exception": 1, "sigkill": -signal.SIGKILL}.get(mode, 0)
    _wait_gone(got["consumer"])
    assert leftovers(name) == []  # the consumer, the last one out, removed it all


# -- direction B: a user leaves while the creator stays ----------------------------------


def _user(kind: str, box: list[Any], mode: str) -> None:
    # The handle comes in a list that we empty: the Process object keeps its
    # arguments while it runs, and "collected" needs ours to be the only reference.
    write_all_and_leave(kind, [box.pop()], mode)
    if mode == "collected":
        time.sleep(0.2)  # alive, attached to nothing


@every_kind_way_and_method
def test_user_leaves_while_the_creator_stays(
    kind: str, mode: str, method: str, new_name: Callable[[], str], kids: Kids
) -> None:
    name = new_name()
    obj = make(kind, name)
    reader = reader_end(kind, obj)
    user = kids.process(mp.get_context(method), _user, kind, [obj], mode)
    user.join(WAIT + 10)
    assert user.exitcode == {"exception": 1, "sigkill": -signal.SIGKILL}.get(mode, 0)
    assert read_all(kind, reader) == N  # nothing the user wrote was lost
    if reader is not obj:
        reader.close()
    obj.close()
    assert leftovers(name) == []


# -- every user crashed: gc removes it all, and never what a live process uses -----------


CRASH_SCRIPT = """
import os, signal, sys
sys.path.insert(0, sys.argv[3])
import test_lifetime as t
obj = t.make(sys.argv[1], sys.argv[2])
end = t.writer_end(sys.argv[1], obj)
t.write_all(sys.argv[1], end)
print("written", flush=True)
sys.stdin.readline()
os.kill(os.getpid(), signal.SIGKILL)
"""


@contextmanager
def crashing_user(kind: str, name: str) -> Iterator[subprocess.Popen[str]]:
    """A process running CRASH_SCRIPT: the block starts once it has made
    ``kind`` ``name`` and written the N messages; it is killed at the end of
    the block if it is still running."""
    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, kind, name, str(Path(__file__).parent)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "written\n"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def crash(proc: subprocess.Popen[str]) -> None:
    """Tell a ``crashing_user`` to SIGKILL itself, and wait until it has."""
    proc.communicate("crash\n", timeout=30)
    assert proc.returncode == -signal.SIGKILL


def gc_cli() -> str:
    result = subprocess.run([sys.executable, "-m", "shmring", "gc"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", KINDS)
def test_gc_removes_what_crashed_users_left_and_only_that(kind: str, new_name: Callable[[], str]) -> None:
    name = new_name()
    with crashing_user(kind, name) as proc:
        attached = {"segment": shmring.Segment, "channel": shmring.Channel, "queue": shmring.Queue,
                    "topic": shmring.Topic, "semaphore": shmring.Semaphore}[kind].open(name)  # type: ignore[attr-defined]
        crash(proc)
        before = leftovers(name)
        assert name in before
        gc_cli()  # this process is still attached: nothing of it may go
        assert leftovers(name) == before
        if kind == "queue":
            assert len(before) > 1  # the chunks are there, and stay
            assert read_all(kind, attached) == N
        attached.close()  # the last user out: it removes everything
        assert leftovers(name) == []


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", KINDS)
def test_gc_cleans_up_after_every_user_crashed(kind: str, new_name: Callable[[], str]) -> None:
    name = new_name()
    with crashing_user(kind, name) as proc:
        crash(proc)
    left = leftovers(name)
    assert name in left and (kind != "queue" or len(left) > 1)
    out = gc_cli()
    assert f"removed {name} (no process is attached to it)" in out
    assert leftovers(name) == []


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + WAIT
    while _core.process_alive(pid, 0) and time.monotonic() < deadline:  # (a zombie counts as gone)
        time.sleep(0.01)


# -- queue items outlive their creator's handle and process; a handle of a removed object --


def item(i: int) -> bytes:
    """Item i of the reproductions: 10 kB, numbered."""
    return b"%05d" % i + bytes([i % 251]) * (10_000 - 5)


def _drain(q: shmring.Queue, report: Any) -> None:
    n = 0
    for got in iter(lambda: q.get(timeout=WAIT), None):
        assert got == item(n), f"item {n} differs"
        n += 1
    report.send((n, q.qsize()))


def _start_consumer_put_and_return(ctx: Any, report: Any) -> Any:
    q = shmring.Queue()
    consumer = ctx.Process(target=_drain, args=(q, report))
    consumer.start()
    for i in range(300):
        q.put(item(i))  # 3 MB: past the 1 MiB ring, into overflow chunks
    q.put(None)
    return consumer  # the creator's handle is collected here


@pytest.mark.timeout(90)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_queue_items_outlive_the_creators_collected_handle(method: str, kids: Kids) -> None:
    """Issue 9, item 1: the creator's handle was collected (its finalizer
    unlinked the chunks) while its child drained: the child got 104 items,
    then Empty with qsize() stuck at 197."""
    ctx = mp.get_context(method)
    report_r, report_w = ctx.Pipe(duplex=False)
    consumer = _start_consumer_put_and_return(ctx, report_w)
    kids.items.append(consumer)
    gc.collect()
    assert report_r.poll(WAIT + 10), "the consumer reported nothing"
    assert report_r.recv() == (300, 0)
    consumer.join(WAIT)
    assert consumer.exitcode == 0


EXITING_CREATOR = """
import multiprocessing as mp, sys
sys.path.insert(0, sys.argv[2])
import test_lifetime as t

if __name__ == "__main__":
    ctx = mp.get_context(sys.argv[1])
    report_r, report_w = ctx.Pipe(duplex=False)
    consumer = t._start_consumer_put_and_return(ctx, report_w)
    # The consumer's report is printed by a relay process; the script ends
    # here, while the consumer may still be draining.
    relay = ctx.Process(target=t._relay, args=(report_r,))
    relay.start()
"""


def _relay(report: Any) -> None:
    assert report.poll(WAIT + 10)
    print("drained %d left %d" % report.recv(), flush=True)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_queue_items_outlive_the_creators_normal_exit(method: str) -> None:
    """Issue 9, item 1: the creating process exited normally while another
    process was still draining: its exit unlinked the chunks."""
    here = str(Path(__file__).parent)
    proc = subprocess.run([sys.executable, "-c", EXITING_CREATOR, method, here],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "drained 300 left 0", proc.stdout + proc.stderr


UNPICKLE_LATE = """
import pickle, sys, shmring
q = shmring.Queue()
q.put("x")
sys.stdout.buffer.write(pickle.dumps(q))
"""


def test_unpickling_after_every_user_left_says_why(kids: Kids) -> None:
    """Issue 9, item 7: unpickling a Queue after its creator exited gave a
    bare FileNotFoundError.  The queue is gone (its last user left), and the
    error says so."""
    data = subprocess.run([sys.executable, "-c", UNPICKLE_LATE], capture_output=True, timeout=60).stdout
    with pytest.raises(FileNotFoundError, match="every process using it has left"):
        pickle.loads(data)


# -- hand-off to a child, threads, close while a call runs, persistence ---------------------


def _check_handoff(ch: shmring.Channel, seg: shmring.Segment, report: Any) -> None:
    import fcntl

    fds = {ch.segment._mapping.lease_fd, seg._mapping.lease_fd}
    cloexec = all(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC for fd in fds)
    report.send((len(fds), cloexec, ch.recv(timeout=WAIT), bytes(seg.buf[:8])))  # (the channel's capacity field)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_handle_and_its_segment_handed_to_one_child(method: str, new_name: Callable[[], str], kids: Kids) -> None:
    """The same attachment pickled twice into one child's arguments is handed
    over once (multiprocessing refuses a descriptor listed twice); each
    handle in the child owns a descriptor of its own, close-on-exec."""
    ctx = mp.get_context(method)
    ch = shmring.Channel.create(new_name(), 4096)
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_check_handoff, args=(ch, ch.segment, w))
    kids.items.append(p)
    p.start()
    ch.send(b"x")
    assert r.poll(WAIT)
    assert r.recv() == (2, True, b"x", (4096).to_bytes(8, "little"))
    p.join(WAIT)
    ch.close()


def _thread_outlives_run(q: shmring.Queue, report: Any) -> None:
    import threading

    def late_reader() -> None:
        time.sleep(0.5)  # after run() returned, and after the parent closed its handle
        report.send(q.get_bytes(timeout=WAIT) == b"x" * (2 << 20))

    threading.Thread(target=late_reader).start()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", METHODS)
def test_a_childs_threads_keep_its_attachments_until_they_end(method: str, new_name: Callable[[], str],
                                                               kids: Kids) -> None:
    """A multiprocessing child leaves only once its non-daemon threads have
    ended (as an ordinary exit waits for them before atexit), even though
    its exit finalizers run right after its target returns."""
    ctx = mp.get_context(method)
    q = shmring.Queue(name=new_name())
    q.put_bytes(b"x" * (2 << 20))  # larger than the ring: an overflow chunk
    r, w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_thread_outlives_run, args=(q, w))
    kids.items.append(p)
    p.start()
    time.sleep(0.2)
    q.close()  # the child is the last user from now on
    assert r.poll(WAIT), "the child's thread reported nothing"
    assert r.recv() is True
    p.join(WAIT)
    assert p.exitcode == 0
    assert leftovers(q.name) == []


def test_leaving_from_two_threads_at_once_closes_nothing_twice(new_name: Callable[[], str]) -> None:
    import threading

    keep_r, keep_w = os.pipe()  # descriptors a double close could hit
    try:
        for _ in range(50):
            seg = shmring.Segment.create(new_name(), 64)
            other = shmring.Segment.open(seg.name)
            barrier = threading.Barrier(2)

            def leave() -> None:
                barrier.wait()
                other._mapping.leave()

            threads = [threading.Thread(target=leave) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not other._mapping.attached
            other.close()
            seg.close()
            assert not (SHM / seg.name).exists()
        os.fstat(keep_r)
        os.fstat(keep_w)  # still ours
    finally:
        os.close(keep_r)
        os.close(keep_w)


def test_closing_a_queue_inside_its_own_put_leaves_after_the_put(new_name: Callable[[], str]) -> None:
    """close() while a call of the handle runs (here: from the serializer the
    put calls) ends the attachment when that call ends, so that nothing the
    call makes (an overflow chunk) outlives the queue."""
    name = new_name()
    holder: list[shmring.Queue] = []

    def dumps(obj: Any) -> bytes:
        holder[0].close()
        return bytes(2 << 20)  # larger than the ring: a chunk, if the put goes on

    q = shmring.Queue(name=name, dumps=dumps)
    holder.append(q)
    try:
        q.put("anything")
    except ValueError:
        pass  # closed under it: the put may refuse
    assert leftovers(name) == []
    holder.clear()


def test_a_persistent_segment_whose_name_was_unlinked_goes_with_its_last_user(new_name: Callable[[], str]) -> None:
    seg = shmring.Segment.create(new_name(), 64, persistent=True)
    other = shmring.Segment.open(seg.name)
    seg.close()
    assert (SHM / seg.name).exists()  # persistent (and still attached)
    other.unlink()
    q = shmring.Queue(name=new_name(), persistent=True)
    q.put_bytes(b"y" * (2 << 20))
    q.unlink()
    chunks = leftovers(q.name)
    assert chunks  # the chunk, under its name, for the attached handle
    other.close()
    q.close()  # unlinked: persistent no longer keeps it; its chunks go with it
    assert leftovers(q.name) == []


@pytest.mark.parametrize("leftover", [b"", bytes(8192), bytes(8) + b"\x02" + bytes(8183)],
                         ids=["empty", "zeroed", "half-written-header"])
def test_a_chunk_its_maker_left_unfinished_is_replaced(leftover: bytes, new_name: Callable[[], str]) -> None:
    """A producer killed anywhere between shm_open and publishing a chunk
    leaves it behind under the next chunk's name: the next put replaces it
    (it is in the queue's own chunk namespace and was never published),
    instead of failing for ever with FileExistsError."""
    name = new_name()
    q = shmring.Queue(name=name)
    fd = os.open(SHM / chunk_name(name, 0), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.write(fd, leftover)
    finally:
        os.close(fd)
    q.put_bytes(b"c" * (2 << 20))  # larger than the ring: needs chunk 0
    assert q.get_bytes(timeout=WAIT) == b"c" * (2 << 20)
    q.close()
    assert leftovers(name) == []
