"""A batch with an item that fails to decode: ``get_many`` returns the items
before it, the next get raises its error, and the items after it follow,
as the same number of ``get()`` calls would have given them; nothing taken
from the ring is lost (src/shmring/_core/queue_pending.c): not when the
handle is closed or collected with items still held, nor when its process
exits normally without either (they go back into the queue), and a forked
child never hands out its parent's."""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import shmring

from conftest import FORK, SPAWN, Kids


def _refuse(n: int) -> Any:
    raise RuntimeError(f"item {n} cannot be rebuilt")


class Unloadable:
    """Pickles fine; unpickling it raises (as an item from a peer with a
    class this process does not have)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse, (self.n,))


@pytest.fixture
def q(name: str) -> Iterator[shmring.Queue[Any]]:
    with shmring.Queue(name=name) as queue:
        yield queue


def drain(q: shmring.Queue[Any]) -> list[Any]:
    """Every outcome of get_many until the queue is empty: lists, and the
    messages of the errors raised, in order."""
    seen: list[Any] = []
    while not q.empty():
        try:
            seen.append(q.get_many_nowait())
        except RuntimeError as exc:
            seen.append(str(exc))
    return seen


def test_a_bad_item_in_the_middle_keeps_the_rest(q: shmring.Queue[Any]) -> None:
    q.put_many([0, 1, Unloadable(2), 3, 4])
    assert q.get_many() == [0, 1]
    assert q.qsize() == 3 and not q.empty()  # held by this handle for its next gets
    with pytest.raises(RuntimeError, match="item 2 cannot be rebuilt"):
        q.get_many()
    assert q.get_many() == [3, 4]
    assert q.qsize() == 0 and q.empty()


@pytest.mark.parametrize(
    ("items", "outcomes"),
    [
        ([Unloadable(0), 1, 2], ["item 0 cannot be rebuilt", [1, 2]]),
        ([0, Unloadable(1), Unloadable(2), 3], [[0], "item 1 cannot be rebuilt", "item 2 cannot be rebuilt", [3]]),
        ([0, 1, Unloadable(2)], [[0, 1], "item 2 cannot be rebuilt"]),
        ([Unloadable(0)], ["item 0 cannot be rebuilt"]),
    ],
    ids=["first", "two-in-a-row", "last", "alone"],
)
def test_outcomes_are_those_of_single_gets(q: shmring.Queue[Any], items: list[Any], outcomes: list[Any]) -> None:
    q.put_many(items)
    assert drain(q) == outcomes


def test_later_batches_wait_behind_the_held_items(q: shmring.Queue[Any]) -> None:
    q.put_many([Unloadable(0), 1, 2, 3])
    with pytest.raises(RuntimeError):
        q.get_many()
    q.put_many([4, 5])
    assert q.get_many(max_messages_to_get=2) == [1, 2]
    assert q.get() == 3
    assert q.get_many() == [4, 5]


def test_get_bytes_of_a_held_item_is_its_pickle(q: shmring.Queue[Any]) -> None:
    q.put_many([Unloadable(0), {"k": 1}])
    with pytest.raises(RuntimeError):
        q.get_many()
    assert pickle.loads(q.get_bytes()) == {"k": 1}


def _take_all(name: str) -> list[Any]:
    with shmring.Queue.open(name) as other:
        return other.get_many(timeout=10)


def test_close_puts_the_held_items_back(q: shmring.Queue[Any], kids: Kids, monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_value))
    mine = shmring.Queue.open(q.name)
    mine.put_many([0, Unloadable(1), 2, Unloadable(3), 4])
    assert mine.get_many() == [0]
    mine.close()  # held: the error of 1, then 2, the error of 3, 4
    assert [str(e) for e in reported] == ["item 1 cannot be rebuilt", "item 3 cannot be rebuilt"]
    assert kids.start(FORK, _take_all, q.name).result() == [2, 4]


def test_a_collected_handle_puts_the_held_items_back(q: shmring.Queue[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "unraisablehook", lambda u: None)
    mine = shmring.Queue.open(q.name)
    mine.put_many([0, Unloadable(1), 2, 3])
    assert mine.get_many() == [0]
    del mine
    gc.collect()
    assert q.get_many_nowait() == [2, 3]


def test_a_handle_collected_in_a_reference_cycle_puts_the_held_items_back(
    q: shmring.Queue[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "unraisablehook", lambda u: None)
    mine = shmring.Queue.open(q.name)
    mine.put_many([0, Unloadable(1), 2, 3])
    assert mine.get_many() == [0]
    mine.myself = mine  # type: ignore[attr-defined]  # freed only by the cycle collector
    del mine
    gc.collect()
    assert q.get_many_nowait() == [2, 3]


def _what_the_child_gets(q: shmring.Queue[Any]) -> list[Any]:
    return q.get_many(timeout=10)


def test_a_forked_child_never_hands_out_its_parents_held_items(q: shmring.Queue[Any], kids: Kids) -> None:
    q.put_many([0, Unloadable(1), 2, 3])
    assert q.get_many() == [0]
    q.put(100)
    assert kids.start(FORK, _what_the_child_gets, q).result() == [100]
    with pytest.raises(RuntimeError):
        q.get_many()
    assert q.get_many() == [2, 3]


def test_every_item_of_many_batches_arrives_once(q: shmring.Queue[Any]) -> None:
    bad = {7, 19, 20, 63, 64, 99}
    q.put_many([Unloadable(i) if i in bad else i for i in range(100)])
    good: list[int] = []
    errors: list[str] = []
    k = 0
    while not q.empty():
        try:
            good.extend(q.get_many(max_messages_to_get=1 + k % 9))  # batches across the bad items
        except RuntimeError as exc:
            errors.append(str(exc))
        k += 1
    assert good == [i for i in range(100) if i not in bad]
    assert errors == [f"item {i} cannot be rebuilt" for i in sorted(bad)]


# A consumer that exits without closing its handle or dropping it: the
# handle stays referenced by a module global until the interpreter ends
# (whose finalization may free it, or, "never collected", not at all).
EXIT_SCRIPT = """
import ctypes
import sys
import shmring
held = shmring.Queue.open(sys.argv[1])
assert held.get_many(max_messages_to_get=5) == [0]
if sys.argv[2] == "never collected":
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(held))
if sys.argv[2] == "sys.exit":
    sys.exit(3)
"""


@pytest.mark.parametrize("how", ["end of script", "sys.exit", "never collected"])
def test_a_process_that_exits_without_close_puts_the_held_items_back(q: shmring.Queue[Any], how: str) -> None:
    q.put_many([0, Unloadable(1), 2, 3, 4, 5])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, q.name, how], capture_output=True, text=True, timeout=30, env=env
    )
    assert proc.returncode == (3 if how == "sys.exit" else 0), proc.stderr
    assert "item 1 cannot be rebuilt" in proc.stderr  # the held error, reported at exit
    # 5 was never taken; 2, 3, 4 went back behind it, in their order.
    assert q.get_many_nowait() == [5, 2, 3, 4]
    assert q.empty()


_held: list[shmring.Queue[Any]] = []


def _take_a_batch_and_keep_the_handle(name: str) -> None:
    handle = shmring.Queue.open(name)
    _held.append(handle)  # referenced until the process ends
    assert handle.get_many(max_messages_to_get=4) == [0, 1]


@pytest.mark.parametrize("ctx", [FORK, SPAWN], ids=["fork", "spawn"])
def test_a_multiprocessing_child_that_exits_without_close_puts_the_held_items_back(
    q: shmring.Queue[Any], kids: Kids, ctx: Any
) -> None:
    q.put_many([0, 1, Unloadable(2), 3, 10, 11])
    child = kids.process(ctx, _take_a_batch_and_keep_the_handle, q.name)
    kids.join([child], 30)
    assert child.exitcode == 0
    assert q.get_many_nowait() == [10, 11, 3]
    assert q.empty()


def _exit_at_once() -> None:
    pass  # the inherited handle is never used here: at exit, its items are the parent's


def test_a_forked_child_that_exits_never_puts_back_its_parents_held_items(q: shmring.Queue[Any], kids: Kids) -> None:
    q.put_many([0, Unloadable(1), 2, 3])
    assert q.get_many() == [0]
    child = kids.process(FORK, _exit_at_once)
    kids.join([child], 30)
    assert child.exitcode == 0
    with pytest.raises(RuntimeError, match="item 1 cannot be rebuilt"):
        q.get_many()
    assert q.get_many() == [2, 3]
    assert q.empty()  # nothing came back twice


class _Reentrant:
    """A handle's loads/dumps that call the same handle's get while the
    pending list is being built or taken from (what user code may do)."""

    def __init__(self) -> None:
        self.q: shmring.Queue[Any] | None = None
        self.inner: list[Any] = []

    def loads(self, data: bytes) -> Any:
        obj = pickle.loads(data)
        if obj == "get-inside-loads":
            assert self.q is not None
            self.inner.append(self.q.get(timeout=0))
        return obj

    def dumps(self, obj: Any) -> bytes:
        if obj == "get-inside-dumps":
            assert self.q is not None
            self.inner.append(self.q.get(timeout=0))
        return pickle.dumps(obj)


def test_user_code_that_gets_from_the_same_handle_while_items_are_kept(name: str) -> None:
    # Decoding the items after a bad one runs the handle's loads, which here
    # takes from the same handle: the list of items kept is not touched
    # meanwhile (it was freed under the keeper's feet before), and every
    # item is accounted for exactly once.
    user = _Reentrant()
    with shmring.Queue(name=name) as q, shmring.Queue.open(name, loads=user.loads, dumps=user.dumps) as h:
        user.q = h
        q.put_many([0, Unloadable(1), "get-inside-loads", 3, 4, 5, 6])
        assert h.get_many_nowait(max_messages_to_get=5) == [0]
        with pytest.raises(RuntimeError, match="item 1 cannot be rebuilt"):
            h.get_nowait()
        rest = []
        while not h.empty():
            rest.append(h.get_nowait())
        assert user.inner == [5]  # the inner get took the next item of the ring
        assert rest == ["get-inside-loads", 3, 4, 6]


def test_user_code_that_gets_from_the_same_handle_while_a_kept_item_is_taken_as_bytes(name: str) -> None:
    # get_bytes() of a kept item runs the handle's dumps, which here takes
    # the next kept item from the same handle: each is given out once.
    user = _Reentrant()
    with shmring.Queue(name=name) as q, shmring.Queue.open(name, loads=user.loads, dumps=user.dumps) as h:
        user.q = h
        q.put_many([0, Unloadable(1), "get-inside-dumps", 3, 4])
        assert h.get_many_nowait(max_messages_to_get=5) == [0]
        with pytest.raises(RuntimeError):
            h.get_nowait()
        assert pickle.loads(h.get_bytes(timeout=0)) == "get-inside-dumps"
        assert user.inner == [3]
        assert h.get_nowait() == 4
        assert h.empty()
