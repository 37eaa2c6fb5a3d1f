"""Shared fixtures: unique segment names, a check that no test leaks one, and
``kids``: the child processes of a test, never left behind."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
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


def _ours() -> set[str]:
    return {p.name for p in SHM.iterdir() if p.name.startswith((TEST_PREFIX, UNIQUE_PREFIX))}


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


@pytest.fixture
def kids() -> Iterator[Kids]:
    k = Kids()
    try:
        yield k
    finally:
        k.reap()
