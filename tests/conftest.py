"""Shared fixtures and helpers of the tests.

- Segments: unique names (``name``, ``new_name``), a check that no test
  leaks one, and ``segment``.
- ``kids``: the child processes of a test, never left behind.
- Constants and helpers several components share (start-method contexts,
  record sizes, raw words, threads sharing one handle).
- The fixtures of the components (``ch``/``channel``/``raw``, ``topic``,
  ``sq``/``collector``, ``named``, ``fresh_name``/``live_segment``); their
  other helpers are in tests/_<component>_helpers.py.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing as mp
import os
import signal
import struct
import subprocess
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

import shmring

SHM = Path("/dev/shm")
# Every name a test makes starts with one of these, so leaks can be told
# apart from whatever else the machine keeps in /dev/shm.
TEST_PREFIX = f"t{os.getpid()}-"
UNIQUE_PREFIX = f"shmring-{os.getpid()}-"  # Segment.create(None, ...) names


# A bridge importer's cursor is named after its object (persistent: removed
# only by the importer's close).
_CURSORS = tuple(f"shmring-cursor-{kind}-{prefix}" for kind in ("topic", "channel")
                 for prefix in (TEST_PREFIX, UNIQUE_PREFIX))


def _ours() -> set[str]:
    return {p.name for p in SHM.iterdir() if p.name.startswith((TEST_PREFIX, UNIQUE_PREFIX, *_CURSORS))}


@pytest.fixture(autouse=True)
def no_leaked_segments() -> Iterator[None]:
    """Fail a test that leaves one of its segments behind in /dev/shm."""
    before = _ours()
    yield
    # Handles kept alive only by reference cycles (an exception's traceback
    # holds the frame that holds it) leave when the collector frees them.
    gc.collect()
    leaked = _ours() - before
    for name in leaked:
        (SHM / name).unlink(missing_ok=True)
    assert not leaked, f"test leaked segments: {sorted(leaked)}"


@pytest.fixture
def new_name() -> Callable[[], str]:
    """Factory of fresh segment names owned by this test run."""

    def make() -> str:
        return f"{TEST_PREFIX}{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture
def name(new_name: Callable[[], str]) -> str:
    return new_name()


@pytest.fixture
def segment(name: str) -> Iterator[shmring.Segment]:
    with shmring.Segment.create(name, 4096) as seg:
        yield seg


# -- child processes --------------------------------------------------------------


class Reapable(Protocol):
    """A test's own kind of child (an ``Agent``, a ``Kid``) that knows how to stop itself."""

    def reap(self) -> None: ...


R = TypeVar("R", bound=Reapable)


def _child_main(conn: Any, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Body of a ``Kids.start`` child: sends back what ``target`` returns, or
    the traceback of what it raised."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        reply: tuple[str, Any] = ("ok", target(*args))
    except BaseException as e:  # noqa: BLE001 - reported to the test
        reply = ("err", f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
    try:
        conn.send(reply)
    except Exception as e:  # noqa: BLE001
        conn.send(("err", f"unpicklable result: {e!r}"))
    conn.close()


class Kid:
    """A child started by ``Kids.start``: ``result()`` is what its target returned."""

    def __init__(self, proc: Any, conn: Any) -> None:
        self.proc = proc
        self.conn = conn
        self.pid: int = proc.pid

    def result(self, timeout: float = 20.0) -> Any:  # 20 s: test_sync's STEP
        if not self.conn.poll(timeout):
            raise AssertionError(f"child {self.pid} gave no result within {timeout} s: it hangs")
        try:
            status, value = self.conn.recv()
        except EOFError:
            self.proc.join(5)
            raise AssertionError(f"child {self.pid} died (exit code {self.proc.exitcode})") from None
        if status != "ok":
            raise AssertionError(f"child {self.pid} raised:\n{value}")
        self.proc.join(10)
        return value

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def reap(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(10)
        self.conn.close()


class Kids:
    """Every child a test starts; all are killed and joined at teardown
    (the ``kids`` fixture), the last started first.

    ``process`` starts a plain multiprocessing child, ``start`` one whose
    target's result comes back (a ``Kid``), ``popen`` a program; a test's own
    kind of child registers itself with ``adopt``."""

    def __init__(self) -> None:
        self.items: list[BaseProcess | subprocess.Popen[str] | Reapable] = []

    @property
    def procs(self) -> list[Any]:
        """The children started by ``process``, in start order."""
        return [p for p in self.items if isinstance(p, BaseProcess)]

    def process(self, ctx: Any, target: Callable[..., Any], *args: Any) -> Any:
        p = ctx.Process(target=target, args=args, daemon=True)
        self.items.append(p)
        p.start()
        return p

    def start(self, ctx: Any, target: Callable[..., Any], *args: Any) -> Kid:
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child_main, args=(child_end, target, args), daemon=True)
        kid = Kid(proc, parent_end)
        self.items.append(kid)
        proc.start()
        kid.pid = proc.pid
        child_end.close()
        return kid

    def popen(self, cmd: list[str]) -> subprocess.Popen[str]:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.items.append(p)
        return p

    def adopt(self, child: R) -> R:
        self.items.append(child)
        return child

    def join(self, procs: Iterable[Any], timeout: float, pump: Callable[[float], None] | None = None) -> None:
        """Wait until every one of ``procs`` has exited, ``timeout`` seconds
        for all of them; ``pump(seconds)`` runs while waiting (to read the
        children's reports, so that none blocks on a full pipe)."""
        deadline = time.monotonic() + timeout
        for p in procs:
            if pump is not None:
                while p.is_alive() and time.monotonic() < deadline:
                    pump(0.02)
                    p.join(0)
            p.join(max(0.0, deadline - time.monotonic()))
            assert not p.is_alive(), f"child {p.pid} still running after {timeout} s"

    def reap(self) -> None:
        for item in reversed(self.items):
            try:
                if isinstance(item, BaseProcess):
                    if item.is_alive():
                        item.kill()
                    item.join(10)
                elif isinstance(item, subprocess.Popen):
                    if item.poll() is None:
                        item.kill()
                    item.communicate(timeout=10)
                else:
                    item.reap()
            except Exception:  # noqa: BLE001 - keep reaping the others
                pass


# Children no test may leave behind.  A child still running when its test
# ends would outlive the run: multiprocessing's exit handler joins every
# non-daemon child for ever, and any child holds the runner's output pipe
# open, so one hung child (a fork that deadlocked, a worker waiting on a
# queue nobody feeds) would hang the whole run instead of failing one test.
STRAY_CHILD_GRACE = 5.0  # s: a child that is ending by itself finishes within this


def _live_children() -> set[int]:
    """The pids of this process's children (those of multiprocessing and any
    other, but multiprocessing's own helpers), from /proc."""
    me = str(os.getpid())
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which may itself hold spaces and ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[1] == me and fields[0] != "Z" and not _multiprocessing_helper(entry):
            pids.add(int(entry.name))
    return pids


def _multiprocessing_helper(proc: Path) -> bool:
    """Is this child one of the helpers multiprocessing keeps for the whole
    run (the fork server, the resource tracker)?  They end with the run."""
    try:
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    return b"multiprocessing.forkserver" in cmdline or b"multiprocessing.resource_tracker" in cmdline


def _kill_and_reap(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in mp.active_children():  # multiprocessing's own, reaped by it
        p.join(10)
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # reaped by multiprocessing or subprocess
            pass


@pytest.fixture(autouse=True)
def no_stray_children() -> Iterator[None]:
    """Fail a test that leaves a child process running (and kill it)."""
    before = _live_children()
    yield
    deadline = time.monotonic() + STRAY_CHILD_GRACE
    stray = _live_children() - before
    while stray and time.monotonic() < deadline:
        mp.active_children()  # reaps the multiprocessing children that ended
        time.sleep(0.05)
        stray = _live_children() - before
    if stray:
        _kill_and_reap(stray)
        pytest.fail(f"test left child processes running (killed): {sorted(stray)}", pytrace=False)


def pytest_sessionstart(session: pytest.Session) -> None:
    # Orphans of the tests (a child's own children) are re-parented to this
    # process, so that pytest_sessionfinish finds and kills them too.
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _kill_and_reap(_live_children())
    # The orphans re-parented here that ended meanwhile: nothing else waits for them.
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break


@pytest.fixture
def kids() -> Iterator[Kids]:
    k = Kids()
    try:
        yield k
    finally:
        k.reap()


# -- shared by the tests of several components --------------------------------------

FORK = mp.get_context("fork")
SPAWN = mp.get_context("spawn")
FORKSERVER = mp.get_context("forkserver")
CONTEXTS: dict[str, Any] = {"fork": FORK, "spawn": SPAWN, "forkserver": FORKSERVER}

# Bound on one step of a test (the channel and topic tests of issue 9): a hang
# fails instead of waiting for pytest-timeout.
STEP = 10.0


def record_size(n: int) -> int:
    """Ring bytes taken by a record of ``n`` payload bytes in a channel's or a
    queue's ring (8-byte header, padded to 8)."""
    return 8 + (n + 7) // 8 * 8


# Raw little-endian words of a mapping (the queue and topic layouts).
def u64(buf: Any, off: int) -> int:
    return int(struct.unpack_from("<Q", buf, off)[0])


def set_u64(buf: Any, off: int, value: int) -> None:
    struct.pack_into("<Q", buf, off, value & (2**64 - 1))


def eventually(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)
    return True


# -- threads sharing one handle -------------------------------------------------------


class Worker(threading.Thread):
    """A thread running ``fn``; ``outcome`` is what it returned or raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.outcome: Any = None
        self.entered = threading.Event()

    def run(self) -> None:
        self.entered.set()
        try:
            self.outcome = ("returned", self.fn())
        except BaseException as exc:  # noqa: BLE001 - examined by the test
            self.outcome = ("raised", exc)

    def finish(self) -> Any:
        self.join(STEP)
        assert not self.is_alive(), "the thread is still blocked"
        return self.outcome


def started(workers: list[Worker]) -> list[Worker]:
    for w in workers:
        w.start()
    return workers


def check_each_threads_order(recv: Callable[[], bytes], workers: list[Worker], per_thread: int) -> None:
    """Start ``workers``, threads sending ``per_thread`` messages
    ``struct.pack("<II", thread_id, seq)`` on one handle, and receive them
    all with ``recv``: each thread's arrive in the order it sent them, and
    every thread returns."""
    started(workers)
    last = [-1] * len(workers)
    for _ in range(len(workers) * per_thread):
        tid, seq = struct.unpack("<II", recv())
        assert seq == last[tid] + 1, f"thread {tid}: message {seq} after {last[tid]}"
        last[tid] = seq
    assert [w.finish() for w in workers] == [("returned", None)] * len(workers)


def numbers_until_end(recv: Callable[[], bytes]) -> list[int]:
    """A receiving thread's loop: the numbers it receives (b"%d"), in order, until b"end"."""
    got = []
    while True:
        m = recv()
        if m == b"end":
            return got
        got.append(int(m))


def wait_inside(probe: Callable[[], Any], what: str) -> None:
    """Poll ``probe`` (a zero-timeout call on the same end) until it times out
    because another thread's call is inside that end."""
    deadline = time.monotonic() + STEP
    while True:
        try:
            probe()
        except shmring.Timeout as exc:
            if "another thread" in str(exc):
                return
        assert time.monotonic() < deadline, f"the thread never entered {what}"
        time.sleep(0.005)


# -- fixtures of the components ---------------------------------------------------------


@pytest.fixture
def ch(name: str) -> Iterator[shmring.Channel]:
    """A 1024-byte channel, closed (and so removed) after the test."""
    with shmring.Channel.create(name, 1024) as channel:
        yield channel


C = TypeVar("C", bound="Closeable")


class Closeable(Protocol):
    def close(self) -> None: ...


def _closed_after_the_test(make: Callable[..., C]) -> Iterator[Callable[..., C]]:
    """A factory fixture's body: ``make``, and every object it made closed at
    teardown (for a channel, topic or named primitive its last handle out
    removes it)."""
    made: list[C] = []

    def tracked(*args: Any, **kw: Any) -> C:
        obj = make(*args, **kw)
        made.append(obj)
        return obj

    try:
        yield tracked
    finally:
        for obj in made:
            obj.close()


def _created_under_new_names(cls: Any, new_name: Callable[[], str]) -> Iterator[Callable[..., Any]]:
    """A factory fixture's body: ``cls.create`` under a new name, with a
    4096-byte ring unless told otherwise (the other arguments as
    ``cls.create`` takes them); each object is closed after the test."""

    def make(capacity: int = 4096, *args: Any, **kw: Any) -> Any:
        return cls.create(new_name(), capacity, *args, **kw)

    yield from _closed_after_the_test(make)


@pytest.fixture
def channel(new_name: Callable[[], str]) -> Iterator[Callable[..., shmring.Channel]]:
    """Factory of channels owned by the test (closed and unlinked after it);
    the wait strategy is "adaptive" unless told otherwise."""
    yield from _created_under_new_names(shmring.Channel, new_name)


@pytest.fixture
def raw() -> Iterator[Callable[[str], Any]]:
    """Factory of ``Hostile`` mappings of a channel (tests/_channel_helpers.py), closed after the test."""
    from _channel_helpers import Hostile

    yield from _closed_after_the_test(Hostile)


@pytest.fixture
def topic(new_name: Callable[[], str]) -> Iterator[Callable[..., shmring.Topic]]:
    """Factory of topics owned by the test (closed and unlinked after it);
    the policy is "block" unless told otherwise."""
    yield from _created_under_new_names(shmring.Topic, new_name)


@pytest.fixture
def sq(name: str) -> Iterator[shmring.Queue]:
    """A queue with the default (1 MiB, unbounded) ring, closed after the test."""
    with shmring.Queue(name=name) as q:
        yield q


@pytest.fixture
def collector(kids: Kids) -> Any:
    """The queue consumers of one test and their reports (tests/_queue_helpers.py)."""
    from _queue_helpers import Collector

    return Collector(kids)


@pytest.fixture
def named(new_name: Callable[[], str]) -> Iterator[Callable[..., Any]]:
    """Factory of named primitives owned by the test (closed at teardown)."""
    yield from _closed_after_the_test(lambda cls, *args: cls.create(new_name(), *args))


def names_removed_after_the_test(prefix: str) -> Iterator[Callable[[], str]]:
    """A factory fixture's body: fresh names starting with ``prefix``; each
    one is removed from /dev/shm (whatever is behind it) when the test ends,
    and the test fails if that did not work."""
    names: list[str] = []

    def make() -> str:
        name = f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        names.append(name)
        return name

    yield make
    for name in names:
        try:
            (SHM / name).unlink()
        except FileNotFoundError:
            pass
    leftovers = [n for n in names if (SHM / n).exists()]
    assert not leftovers, f"left behind in /dev/shm: {leftovers}"


@pytest.fixture
def fresh_name() -> Iterator[Callable[[], str]]:
    """Factory of fresh names, each removed from /dev/shm after the test (``names_removed_after_the_test``)."""
    yield from names_removed_after_the_test("t-cli-")


@pytest.fixture
def live_segment(fresh_name: Callable[[], str]) -> Iterator[shmring.Segment]:
    """A 4096-byte segment created (and so kept alive) by this test process."""
    seg = shmring.Segment.create(fresh_name(), 4096)
    try:
        yield seg
    finally:
        seg.close()
        try:
            seg.unlink()
        except FileNotFoundError:
            pass


# -- event loops ---------------------------------------------------------------------


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """Every asyncio test runs on asyncio's own loop and on uvloop's."""
    import asyncio

    import uvloop

    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
