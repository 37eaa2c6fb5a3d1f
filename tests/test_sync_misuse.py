"""Misuse of the primitives: bad offsets (out of range, misaligned, wrong
types) and segments, bad arguments, read-only and closed segments; and the
layout the white-box checks of the sync tests use, checked against the
header.
"""

from __future__ import annotations

import pickle
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shmring import AtomicFlag, AtomicInt32, AtomicInt64, Condition, Event, Mutex, Segment, Semaphore, SpinLock, _core

from _sync_helpers import (
    COND_SEQ, COND_WAITERS, EVENT_WAITERS, INCLUDE, MUTEX_STATE, MUTEX_WORD, SEM_WAITERS,
)


def test_layout_offsets_match_header() -> None:
    """The white-box offsets used here, and the Python sizes, are the header's."""
    text = "".join(p.read_text() for p in sorted(Path(INCLUDE).rglob("*.h")))  # shmring.h and shmring/*.h
    sizes = {m.group(1): int(m.group(2)) for m in re.finditer(r"sizeof\(shmring_(\w+)\) == (\d+)", text)}
    assert sizes["sem"] == Semaphore.SIZE
    assert sizes["spinlock"] == SpinLock.SIZE
    assert sizes["mutex"] == Mutex.SIZE
    assert sizes["event"] == Event.SIZE
    assert sizes["cond"] == Condition.SIZE
    offsets = {(m.group(1), m.group(2)): int(m.group(3))
               for m in re.finditer(r"offsetof\(shmring_(\w+),\s*(\w+)\)\s*==\s*(\d+)", text)}
    assert offsets[("sem", "waiters")] == SEM_WAITERS
    assert offsets[("mutex", "word")] == MUTEX_WORD
    assert offsets[("mutex", "state")] == MUTEX_STATE
    for struct_name, fields in (("event", ["flag", "waiters", "gen", "reserved"]),
                                ("cond", ["seq", "waiters", "wakeups", "reserved"])):
        body = re.search(r"typedef struct shmring_%s \{(.*?)\}" % struct_name, text, re.S)
        assert body is not None
        assert re.findall(r"uint32_t (\w+);", body.group(1)) == fields
    assert (EVENT_WAITERS, COND_SEQ, COND_WAITERS) == (4, 0, 4)


ALL_TYPES = [AtomicInt64, AtomicInt32, AtomicFlag, Semaphore, SpinLock, Mutex, Event]


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
def test_bad_offsets_and_segments(cls: Any, segment: Segment) -> None:
    size, align = cls.SIZE, cls.ALIGN
    cls(segment, 0)
    cls(segment, segment.size - size)
    for off in (-1, -align, -8):
        with pytest.raises(ValueError):
            cls(segment, off)
    for off in (segment.size - size + align, segment.size, segment.size + 8, 2**40):
        with pytest.raises(ValueError):
            cls(segment, off)
    for off in {1, 2, 3, align // 2 or 1, align + 1, 4 if align == 8 else 2}:
        with pytest.raises(ValueError):
            cls(segment, off)
    for bad_off in (1.0, "8", None, True):
        with pytest.raises(TypeError):
            cls(segment, bad_off)
    for bad_seg in (None, bytearray(4096), memoryview(bytearray(4096)), "name", segment._mapping):
        with pytest.raises(TypeError):
            cls(bad_seg, 0)


def test_misc_argument_errors(segment: Segment, new_name: Callable[[], str]) -> None:
    mutex = Mutex(segment, 0)
    with pytest.raises(TypeError):
        Condition(segment, 32)  # no lock
    with pytest.raises(ValueError):
        Condition(segment, 36, lock=mutex)
    with pytest.raises(TypeError):
        Condition.create(new_name())
    with pytest.raises(TypeError):
        Condition.open(new_name())
    cond = Condition(segment, 32, lock=mutex)
    with pytest.raises(RuntimeError):
        cond.wait(0.01)  # lock not held
    a = AtomicInt64(segment, 64)
    for bad in (0, -1):
        with pytest.raises(ValueError):
            a.notify(bad)
    for bad_order in ("consume", "SEQ_CST", None, 4, ""):
        with pytest.raises(ValueError):
            a.load(bad_order)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            a.fetch_add(1, bad_order)  # type: ignore[arg-type]
    for bad_value in (1.5, "1", None, b"\x01"):
        with pytest.raises(TypeError):
            a.store(bad_value)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            a.fetch_add(bad_value)  # type: ignore[arg-type]


def test_primitive_on_readonly_segment(segment: Segment) -> None:
    ro = Segment.open(segment.name, readonly=True)
    try:
        for cls in ALL_TYPES:
            with pytest.raises(ValueError):
                cls(ro, 0)
    finally:
        ro.close()


@pytest.mark.parametrize("cls", ALL_TYPES + [Condition], ids=lambda c: c.__name__)
def test_use_after_segment_closed(cls: Any, new_name: Callable[[], str]) -> None:
    seg = Segment.create(new_name(), 256)
    try:
        prim = cls(seg, 64, lock=Mutex(seg, 0)) if cls is Condition else cls(seg, 64)
        seg.close()
        calls: list[Callable[[], Any]] = {
            AtomicInt64: [lambda: prim.load(), lambda: prim.store(1), lambda: prim.fetch_add(1),
                          lambda: prim.compare_exchange(0, 1), lambda: prim.wait(0, 0.01), lambda: prim.notify()],
            AtomicInt32: [lambda: prim.load(), lambda: prim.exchange(1), lambda: prim.wait(0)],
            AtomicFlag: [lambda: prim.set(), lambda: prim.is_set(), lambda: prim.wait_set(0.01), lambda: prim.clear()],
            Semaphore: [lambda: prim.acquire(), lambda: prim.acquire(blocking=False), lambda: prim.release(),
                        lambda: prim.value],
            SpinLock: [lambda: prim.acquire(), lambda: prim.release(), lambda: prim.holder(), lambda: prim.locked()],
            Mutex: [lambda: prim.acquire(timeout=1), lambda: prim.release(), lambda: prim.mark_consistent(),
                    lambda: prim.holder()],
            Event: [lambda: prim.set(), lambda: prim.clear(), lambda: prim.is_set(), lambda: prim.wait()],
            Condition: [lambda: prim.wait(0.01), lambda: prim.notify(), lambda: prim.notify_all(),
                        lambda: prim.__enter__()],
        }[cls]
        for call in calls:
            with pytest.raises(ValueError):
                call()
        with pytest.raises(ValueError):
            cls(seg, 0) if cls is not Condition else cls(seg, 64, lock=prim._lock)
        with pytest.raises(ValueError):
            pickle.dumps(prim)
    finally:
        seg.close()  # the only user: this removes it


# The C type of each primitive and its size (include/shmring/sync.h).
NATIVE_SIZES = [(_core.Semaphore, 8), (_core.SpinLock, 16), (_core.Mutex, 24), (_core.Event, 16),
                (_core.Condition, 16)]


@pytest.mark.parametrize(("native", "size"), NATIVE_SIZES, ids=lambda x: getattr(x, "__name__", str(x)))
def test_native_primitive_checks_its_own_size_at_construction(native: Any, size: int,
                                                              new_name: Callable[[], str]) -> None:
    """Regression (issue 10): each primitive's C type checks at construction
    that its own size fits at that offset of the mapping, aligned.  The one
    C type of before took the size as an argument and no method checked it:
    SyncCell(m, HEADER_SIZE, 8).mutex_acquire() worked a 24-byte mutex 16
    bytes past the 8 validated bytes."""
    with Segment.create(new_name(), 8) as small, Segment.create(new_name(), 64) as big:
        start = _core.HEADER_SIZE
        if size <= 8:
            native(small._mapping, start)
        else:
            with pytest.raises(ValueError, match=f"the {size} bytes of a shmring._core.{native.__name__} do not fit"):
                native(small._mapping, start)
        native(big._mapping, start + 64 - size)  # an exact fit at the end
        with pytest.raises(ValueError, match="do not fit"):
            native(big._mapping, start + 64 - size + 8)
        with pytest.raises(ValueError, match="8-byte aligned"):
            native(big._mapping, start + 4)


def test_native_atomic_checks_its_width_and_alignment(new_name: Callable[[], str]) -> None:
    """The C Atomic is 4 or 8 bytes, aligned to its size, within the mapping."""
    with Segment.create(new_name(), 16) as seg:
        m, start = seg._mapping, _core.HEADER_SIZE
        _core.Atomic(m, start + 4, 4).store(-1)
        # The 4 bytes at +4 are the high half of the 8 at +0 on a little-endian machine.
        assert _core.Atomic(m, start, 8).load() == (-(1 << 32) if sys.byteorder == "little" else (1 << 32) - 1)
        with pytest.raises(ValueError, match="do not fit"):
            _core.Atomic(m, start + 16, 4)
        with pytest.raises(ValueError, match="do not fit"):
            _core.Atomic(m, start + 12, 8)
        with pytest.raises(ValueError, match="8-byte aligned"):
            _core.Atomic(m, start + 4, 8)
        with pytest.raises(ValueError, match="4-byte aligned"):
            _core.Atomic(m, start + 2, 4)
        for size in (1, 2, 16):
            with pytest.raises(ValueError, match="4 or 8 bytes"):
                _core.Atomic(m, start, size)
