"""Named primitives (Semaphore.create/open and the others: a segment of their
own, removed by the creator's close) and pickling: a named primitive travels
by name, one inside a segment as (segment, offset).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import Any

import pytest

from shmring import AtomicFlag, AtomicInt32, AtomicInt64, Condition, Event, Mutex, Segment, Semaphore, SpinLock

from conftest import CONTEXTS, FORK, SHM, SPAWN, Kids


def _named_sem_user(name: str) -> tuple[int, int]:
    sem = Semaphore.open(name)
    try:
        before = sem.value
        assert sem.acquire(timeout=5) and sem.acquire(timeout=5)
        return before, sem.value
    finally:
        sem.close()


def _pickled_named_user(sem: Semaphore, mutex: Mutex, a: AtomicInt64) -> tuple[str, str, int, Any]:
    sem.release()
    assert mutex.acquire(timeout=5)
    holder = mutex.holder()
    mutex.release()
    a.fetch_add(10)
    names = (sem.segment.name, mutex.segment.name)
    sem.close()
    mutex.close()
    a.close()
    return names[0], names[1], os.getpid(), holder


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_named_semaphore_across_processes(ctx: str, new_name: Callable[[], str], kids: Kids) -> None:
    name = new_name()
    sem = Semaphore.create(name, 3)
    try:
        assert sem.value == 3
        assert sem.segment.info().kind == "sync"
        assert kids.start(CONTEXTS[ctx], _named_sem_user, name).result() == (3, 1)
        assert sem.value == 1
        assert (SHM / name).exists(), "an opener's close must not unlink"
        with pytest.raises(FileExistsError):
            Semaphore.create(name, 1)
    finally:
        sem.close()
    assert not (SHM / name).exists(), "the creator's close unlinks"
    with pytest.raises(FileNotFoundError):
        Semaphore.open(name)
    sem.close()  # twice: harmless


def test_named_primitives_pickle_by_name(new_name: Callable[[], str], kids: Kids, named: Any) -> None:
    sem = named(Semaphore, 0)
    mutex = named(Mutex)
    a = named(AtomicInt64, 5)
    assert a.load() == 5
    assert pickle.loads(pickle.dumps(sem)).value == 0, "unpickling must not re-initialise"
    s_name, m_name, pid, holder = kids.start(SPAWN, _pickled_named_user, sem, mutex, a).result()
    assert (s_name, m_name) == (sem.segment.name, mutex.segment.name)
    assert holder == (pid, True)
    assert sem.value == 1
    assert a.load() == 15
    assert (SHM / sem.segment.name).exists() and (SHM / mutex.segment.name).exists()


def test_named_primitive_creation_and_open_errors(new_name: Callable[[], str], named: Any) -> None:
    raw_name = new_name()
    with Segment.create(raw_name, 64):
        for cls in (Semaphore, Mutex, AtomicInt64):
            with pytest.raises(ValueError):
                cls.open(raw_name)
    ev = named(Event)
    assert not ev.is_set()
    ev.set()
    ev2 = Event.open(ev.segment.name)
    try:
        assert ev2.is_set()
        with pytest.raises(ValueError):
            Mutex.open(ev.segment.name)  # 8 bytes cannot hold a 24-byte mutex
    finally:
        ev2.close()
    assert (SHM / ev.segment.name).exists()
    for cls, args in [(AtomicInt64, (2**63,)), (AtomicInt32, (2**31,)), (Semaphore, (-1,)), (Semaphore, (1, 2)),
                      (Mutex, (1,)), (Event, (True,))]:
        name = new_name()
        with pytest.raises((ValueError, OverflowError, TypeError)):
            cls.create(name, *args)
        assert not (SHM / name).exists(), f"{cls.__name__}.create{args} left its segment behind"
    for cls, init, expected in [(AtomicInt32, (-7,), -7), (AtomicFlag, (), 0), (AtomicInt64, (), 0)]:
        prim = named(cls, *init)
        assert prim.load() == expected
    assert named(Semaphore).value == 1, "a named semaphore starts at 1 by default"
    assert named(SpinLock).holder() is None
    unnamed = Semaphore.create(None, 2)
    try:
        assert unnamed.value == 2 and (SHM / unnamed.segment.name).exists()
    finally:
        unnamed.close()
    assert not (SHM / unnamed.segment.name).exists()


def test_pickling_closed_named_primitive_raises(new_name: Callable[[], str]) -> None:
    sem = Semaphore.create(new_name(), 1)
    sem.close()
    with pytest.raises(ValueError):
        pickle.dumps(sem)


def _close_inherited(sem: Semaphore) -> bool:
    sem.close()
    return sem.segment.closed


def test_forked_child_closing_named_primitive_does_not_unlink(named: Any, kids: Kids) -> None:
    sem = named(Semaphore, 2)
    assert kids.start(FORK, _close_inherited, sem).result() is True
    assert (SHM / sem.segment.name).exists()
    assert sem.acquire(blocking=False)


# -- primitives inside a segment -----------------------------------------------------


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_pickle_inside_segment(ctx: str, segment: Segment, kids: Kids) -> None:
    prims = [AtomicInt64(segment, 0), AtomicInt32(segment, 12), AtomicFlag(segment, 8), Semaphore(segment, 16, value=4),
             SpinLock(segment, 32), Mutex(segment, 48), Event(segment, 72)]
    prims.append(Condition(segment, 88, lock=prims[5]))  # type: ignore[arg-type]
    for prim in prims:
        cls, args = prim.__reduce__()[:2]
        assert cls is type(prim)
        assert args[:2] == (segment, prim.offset)
    prims[0].store(-5)
    prims[6].set()  # type: ignore[attr-defined]
    seen = kids.start(CONTEXTS[ctx], _describe, prims).result()
    assert seen == [("AtomicInt64", segment.name, 0, -5), ("AtomicInt32", segment.name, 12, 0),
                    ("AtomicFlag", segment.name, 8, 0), ("Semaphore", segment.name, 16, 4),
                    ("SpinLock", segment.name, 32, None), ("Mutex", segment.name, 48, None),
                    ("Event", segment.name, 72, True), ("Condition", segment.name, 88, 48)]


def _describe(prims: list[Any]) -> list[tuple[str, str, int, Any]]:
    out = []
    for p in prims:
        state = {"AtomicInt64": lambda: p.load(), "AtomicInt32": lambda: p.load(), "AtomicFlag": lambda: p.load(),
                 "Semaphore": lambda: p.value, "SpinLock": lambda: p.holder(), "Mutex": lambda: p.holder(),
                 "Event": lambda: p.is_set(), "Condition": lambda: p._lock.offset}[type(p).__name__]()
        out.append((type(p).__name__, p.segment.name, p.offset, state))
    return out
