"""Process-shared synchronisation primitives that live inside a Segment.

Each primitive occupies a few bytes at an offset of a :class:`shmring.Segment` the
user owns, next to the data it guards (the layouts are in
``include/shmring/sync.h`` and docs/PROTOCOL.md, so C and C++ processes can
share them):

============== ====== =========================================================
primitive      bytes  what
============== ====== =========================================================
AtomicInt64    8      64-bit signed atomic integer, futex wait/notify
AtomicInt32    4      32-bit signed atomic integer, futex wait/notify
AtomicFlag     4      a boolean flag (0/1), futex wait/notify
Semaphore      8      counting semaphore over a futex
SpinLock       16     test-and-test-and-set lock recording its holder
Mutex          24     sleeping, robust lock (OwnerDied / mark_consistent)
Event          16     like threading.Event
Condition      16     like threading.Condition, over a Mutex
============== ====== =========================================================

``Semaphore.create(name, value)`` and the like make a small named segment
holding just that primitive; ``Semaphore.open(name)`` attaches to it.

Every blocking call takes a timeout (but Condition.wait re-takes its Mutex
without one, as threading does), releases the GIL, measures time on
CLOCK_MONOTONIC, and reacts to Ctrl-C within 50 ms; only SpinLock burns CPU
while it waits, by design.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar, Literal, TypeVar

from . import _core
from ._errors import OwnerDied
from .segment import Segment, SegmentProperties, adopt, handoff, reattach

__all__ = [
    "AtomicFlag",
    "AtomicInt32",
    "AtomicInt64",
    "Condition",
    "Event",
    "Mutex",
    "Semaphore",
    "SpinLock",
    "fence",
]

MemoryOrder = Literal["relaxed", "acquire", "release", "acq_rel", "seq_cst"]
_ORDERS = {"relaxed": 0, "acquire": 1, "release": 2, "acq_rel": 3, "seq_cst": 4}

P = TypeVar("P", bound="_Primitive")

_SEM_MAX = 2**31 - 1


def _order(order: str) -> int:
    try:
        return _ORDERS[order]
    except (KeyError, TypeError):
        raise ValueError(f"order must be one of {list(_ORDERS)}, not {order!r}") from None


def fence() -> None:
    """A sequentially consistent memory barrier (``atomic_thread_fence``)."""
    _core.fence()


class _Primitive(SegmentProperties):
    """Something of SIZE bytes at an offset of a segment's payload, worked by
    the C type _NATIVE (which checks again that its SIZE bytes fit there)."""

    SIZE: ClassVar[int]
    ALIGN: ClassVar[int] = 8
    _NATIVE: ClassVar[type[Any]]
    _OBJECT_TYPE: ClassVar[int]  # recorded in a named one's header, for `shmring inspect`

    def __init__(self, segment: Segment, offset: int = 0) -> None:
        if not isinstance(segment, Segment):
            raise TypeError(f"segment must be a shmring.Segment, not {type(segment).__name__}")
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise TypeError(f"offset must be int, not {type(offset).__name__}")
        if offset < 0 or offset + self.SIZE > segment.size:
            raise ValueError(
                f"offset {offset} is out of range: {type(self).__name__} needs {self.SIZE} bytes "
                f"within the segment's {segment.size}"
            )
        if offset % self.ALIGN:
            raise ValueError(f"offset {offset} is not {self.ALIGN}-byte aligned")
        self._segment = segment
        self._offset = offset
        self._native = self._make_native(segment._mapping, _core.HEADER_SIZE + offset)
        self._owns_segment = False
        self._closed = False

    def _make_native(self, mapping: _core.Mapping, offset: int) -> Any:
        return self._NATIVE(mapping, offset)

    @property
    def segment(self) -> Segment:
        return self._segment

    @property
    def offset(self) -> int:
        return self._offset

    def _init(self) -> None:
        """Put the primitive in its initial state (for a fresh segment that
        is zero-filled already, this does nothing that matters)."""

    # -- named primitives: a small segment of their own ----------------------

    @classmethod
    def create(cls: type[P], name: str | None = None, *args: Any, mode: int = 0o600, persistent: bool = False) -> P:
        """Create a named segment holding one primitive.  It lives while any
        process is attached to it (each handle is an attachment); the last
        one to leave removes it, unless ``persistent``."""
        segment = Segment._create(name, max(cls.SIZE, 8), mode, _core.KIND_SYNC, persistent, cls._OBJECT_TYPE)
        try:
            self = cls(segment, 0)
            self._owns_segment = True
            self._init_named(*args)
            return self
        except BaseException:
            segment.persistent = False
            segment.close()  # the only user: this removes it
            raise

    def _init_named(self, *args: Any) -> None:
        if args:
            raise TypeError(f"{type(self).__name__}.create() takes no initial value")

    @classmethod
    def open(cls: type[P], name: str, *, allow_other_owner: bool = False, timeout: float | None = 0.0) -> P:
        """Attach to a named primitive made by :meth:`create`.  ``timeout``:
        how long to wait for it to be made (0, the default: not at all; None:
        no limit; see :meth:`Segment.open`)."""
        return cls._from_segment(Segment.open(name, allow_other_owner=allow_other_owner, timeout=timeout))

    @classmethod
    def _from_segment(cls: type[P], segment: Segment) -> P:
        def build(seg: Segment) -> P:
            self = cls(seg, 0)
            self._owns_segment = True
            return self

        return adopt(segment, "sync", build)

    def close(self) -> None:
        """Drop this handle.  A named primitive's attachment ends (the last
        process to leave removes it, unless persistent).  A primitive inside
        a segment of yours needs no closing: it stops working when the
        segment closes."""
        self._closed = True
        if self._owns_segment:
            self._segment.close()

    def unlink(self) -> None:
        """Remove a named primitive's name now (attached processes keep it)."""
        if not self._owns_segment:
            raise TypeError(f"this {type(self).__name__} lives in a segment of yours: unlink the segment")
        self._segment.unlink()

    def __reduce__(self) -> tuple[Any, ...]:
        if self._closed or self._segment.closed:
            raise ValueError(f"cannot pickle a closed {type(self).__name__}")
        if self._owns_segment:
            segment = self._segment
            return (_reopen_named, (type(self), segment.name, segment._allow_other_owner, handoff(segment._mapping)))
        return (type(self), (self._segment, self._offset))

    def __repr__(self) -> str:
        return f"<shmring.{type(self).__name__} in {self._segment.name!r} at {self._offset}>"


def _reopen_named(cls: type[P], name: str, allow_other_owner: bool, fd: Any = None) -> P:
    return cls._from_segment(reattach(name, False, allow_other_owner, fd))


class _Atomic(_Primitive):
    _native: _core.Atomic

    def _make_native(self, mapping: _core.Mapping, offset: int) -> _core.Atomic:
        return _core.Atomic(mapping, offset, self.SIZE)

    def load(self, order: MemoryOrder = "seq_cst") -> int:
        return self._native.load(_order(order))

    def store(self, value: int, order: MemoryOrder = "seq_cst") -> None:
        self._native.store(value, _order(order))

    def exchange(self, value: int, order: MemoryOrder = "seq_cst") -> int:
        return self._native.exchange(value, _order(order))

    def compare_exchange(self, expected: int, desired: int, order: MemoryOrder = "seq_cst") -> tuple[bool, int]:
        """Store ``desired`` if the value is ``expected``.  Returns (swapped,
        the value found)."""
        return self._native.compare_exchange(expected, desired, _order(order))

    def fetch_add(self, value: int, order: MemoryOrder = "seq_cst") -> int:
        return self._native.fetch_add(value, _order(order))

    def fetch_sub(self, value: int, order: MemoryOrder = "seq_cst") -> int:
        return self._native.fetch_sub(value, _order(order))

    def fetch_and(self, value: int, order: MemoryOrder = "seq_cst") -> int:
        return self._native.fetch_and(value, _order(order))

    def fetch_or(self, value: int, order: MemoryOrder = "seq_cst") -> int:
        return self._native.fetch_or(value, _order(order))

    def fetch_xor(self, value: int, order: MemoryOrder = "seq_cst") -> int:
        return self._native.fetch_xor(value, _order(order))

    def wait(self, expected: int, timeout: float | None = None) -> bool:
        """Sleep while the value equals ``expected`` (futex).  True once it
        differs, False on timeout.  Writers call :meth:`notify`."""
        return self._native.wait(expected, timeout)

    def notify(self, n: int | None = None) -> int:
        """Wake up to ``n`` waiters (all by default); returns how many woke."""
        return self._native.notify() if n is None else self._native.notify(n)

    def _init_named(self, *args: Any) -> None:
        if len(args) > 1:
            raise TypeError("create() takes at most one initial value")
        if args:
            self.store(args[0])


class AtomicInt64(_Atomic):
    """A signed 64-bit integer with atomic operations (8 bytes, 8-aligned).
    Arithmetic wraps around like C's; the default order is seq_cst."""

    SIZE = 8
    _OBJECT_TYPE = _core.SYNC_ATOMIC64


class AtomicInt32(_Atomic):
    """A signed 32-bit integer with atomic operations (4 bytes, 4-aligned)."""

    SIZE = 4
    _OBJECT_TYPE = _core.SYNC_ATOMIC32
    ALIGN = 4


class AtomicFlag(_Atomic):
    """A flag for "data ready" signalling (4 bytes, 4-aligned): ``set()``
    publishes with release order and wakes waiters; ``is_set()`` reads with
    acquire order, so data written before ``set()`` is visible after."""

    SIZE = 4
    _OBJECT_TYPE = _core.SYNC_FLAG
    ALIGN = 4

    def set(self) -> None:
        self._native.store(1, 2)  # release: pairs with is_set()/wait_set()'s acquire
        self._native.notify()

    def clear(self) -> None:
        self._native.store(0, 0)  # relaxed: clearing publishes nothing

    def is_set(self) -> bool:
        return self._native.load(1) != 0  # acquire: pairs with set()'s release

    def wait_set(self, timeout: float | None = None) -> bool:
        """Sleep until the flag is set; False on timeout (or if it was set
        and cleared again before this waiter looked)."""
        return self.is_set() or (self._native.wait(0, timeout) and self.is_set())


class Semaphore(_Primitive):
    """A counting semaphore shared by processes, with ``threading.Semaphore``'s
    signatures.  Built on a futex (not a POSIX ``sem_t``): its layout is
    ours and documented, so C, C++ and Python agree on it, and an
    uncontended ``release`` makes no system call."""

    SIZE = 8
    _OBJECT_TYPE = _core.SYNC_SEMAPHORE
    _NATIVE = _core.Semaphore
    _native: _core.Semaphore

    def __init__(self, segment: Segment, offset: int = 0, value: int | None = None) -> None:
        super().__init__(segment, offset)
        # The hot calls go straight to C (no Python frame in between).
        self.acquire = self._native.acquire  # type: ignore[method-assign]
        self.release = self._native.release  # type: ignore[method-assign]
        if value is not None:
            self._set_value(value)

    def _set_value(self, value: int) -> None:
        if not isinstance(value, int) or not 0 <= value <= _SEM_MAX:
            raise ValueError(f"semaphore initial value must be between 0 and {_SEM_MAX}, not {value!r}")
        self._native.init(value)

    def _init_named(self, *args: Any) -> None:
        if len(args) > 1:
            raise TypeError("create() takes at most one initial value")
        self._set_value(args[0] if args else 1)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a permit; False on timeout (bound to the C method per instance)."""
        return self._native.acquire(blocking, timeout)

    def release(self, n: int = 1) -> None:
        """Add n permits (1 to 2**31 - 1); bound to the C method per instance."""
        self._native.release(n)

    @property
    def value(self) -> int:
        return self._native.value()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


L = TypeVar("L", bound="_Lock")


class _Lock(_Primitive):
    """A lock that records its holder: when the holder dies holding it, the
    next acquirer gets it with :class:`shmring.OwnerDied` and repairs the
    data it guards.

    ``with lock:`` never leaves the lock held after an owner died: with an
    ``on_owner_died`` callable (a constructor argument), ``__enter__`` calls
    it holding the lock, then marks the lock consistent and enters the
    block; if the callable raises, the lock is given up still marked
    "owner died" (the next holder repairs) and the exception propagates.
    Without one, ``__enter__`` gives the lock up the same way and raises
    OwnerDied.  ``with lock.recovering() as previous_owner_died:`` lets the
    block itself repair.  The callable travels with the lock when it is
    pickled (so it must be picklable, e.g. a module-level function)."""

    _on_owner_died: Callable[[], object] | None = None
    _native: _core.SpinLock | _core.Mutex

    def __init__(self, segment: Segment, offset: int = 0, *,
                 on_owner_died: Callable[[], object] | None = None) -> None:
        super().__init__(segment, offset)
        if on_owner_died is not None and not callable(on_owner_died):
            raise TypeError(f"on_owner_died must be callable or None, not {type(on_owner_died).__name__}")
        if on_owner_died is not None:
            self._on_owner_died = on_owner_died
        # The hot calls go straight to C (no Python frame in between).
        self.acquire = self._native.acquire  # type: ignore[method-assign]
        self.release = self._native.release  # type: ignore[method-assign]

    @classmethod
    def create(cls: type[L], name: str | None = None, *args: Any,
               on_owner_died: Callable[[], object] | None = None, **kwargs: Any) -> L:
        """Create a named segment holding one lock (see ``on_owner_died`` above)."""
        self = super().create(name, *args, **kwargs)
        self._set_repair(on_owner_died)
        return self

    @classmethod
    def open(cls: type[L], name: str, *, on_owner_died: Callable[[], object] | None = None,
             **kwargs: Any) -> L:
        self = super().open(name, **kwargs)
        self._set_repair(on_owner_died)
        return self

    def _set_repair(self, on_owner_died: Callable[[], object] | None) -> None:
        if on_owner_died is not None and not callable(on_owner_died):
            self.close()
            raise TypeError(f"on_owner_died must be callable or None, not {type(on_owner_died).__name__}")
        if on_owner_died is not None:
            self._on_owner_died = on_owner_died

    def __reduce__(self) -> tuple[Any, ...]:
        reduced = super().__reduce__()
        if self._on_owner_died is None:
            return reduced
        return (*reduced, {"_on_owner_died": self._on_owner_died})

    def __enter__(self) -> bool:
        try:
            return self.acquire()
        except OwnerDied:
            repair = self._on_owner_died
            if repair is None:
                self._abandon()
                raise OwnerDied(
                    "the previous holder died holding the lock; `with` gave it back unrepaired (the next "
                    "holder is told again): pass on_owner_died= to repair, or use `with lock.recovering()`"
                ) from None
            try:
                repair()
            except BaseException:
                self._abandon()
                raise
            self._repaired()
            return True

    def __exit__(self, *exc: object) -> None:
        self.release()

    def recovering(self) -> _Recovering:
        """``with lock.recovering() as previous_owner_died:``: take the lock;
        the value is True when its previous holder died holding it, and the
        block must then repair the data.  Leaving the block normally marks
        the lock consistent (if needed) and releases it; an exception gives
        it up still marked "owner died" if it was (the next holder repairs),
        else releases it, and propagates."""
        return _Recovering(self)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock; False on timeout (bound to the C method per instance)."""
        return self._native.acquire(blocking, timeout)

    def release(self) -> None:
        self._native.release()

    def _abandon(self) -> None:
        """After OwnerDied: give the lock up unrepaired."""
        self._native.abandon()

    def _repaired(self) -> None:
        """After OwnerDied and a repair: the lock may be used normally again."""

    def holder(self) -> tuple[int, bool] | None:
        """(pid, alive) of the process holding the lock, or None if free."""
        return self._native.holder()

    def locked(self) -> bool:
        return self.holder() is not None


class _Recovering:
    """The context manager of :meth:`_Lock.recovering`."""

    __slots__ = ("_lock", "_died")

    def __init__(self, lock: _Lock) -> None:
        self._lock = lock
        self._died = False

    def __enter__(self) -> bool:
        try:
            self._lock.acquire()
            self._died = False
        except OwnerDied:
            self._died = True
        return self._died

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            if self._died:
                self._lock._repaired()
            self._lock.release()
        elif self._died:
            self._lock._abandon()
        else:
            self._lock.release()


class SpinLock(_Lock):
    """A test-and-test-and-set spin lock with the CPU pause instruction and
    bounded exponential backoff, for critical sections of a few
    microseconds.  It records its holder: a waiter that finds the holder
    dead takes the lock over and raises :class:`shmring.OwnerDied` (holding
    the lock) so that it can repair the data.  ``with`` and
    :meth:`recovering` handle that as for :class:`Mutex`
    (``SpinLock(segment, offset, on_owner_died=repair)``).  A spin lock given
    up unrepaired is held by a token that names no process (``holder()``
    shows pid 4294967295, not alive) until the next acquirer takes it over
    and is told OwnerDied.  Waiting burns CPU."""

    SIZE = 16
    _OBJECT_TYPE = _core.SYNC_SPINLOCK
    _NATIVE = _core.SpinLock
    _native: _core.SpinLock

    def _repaired(self) -> None:
        """A spin lock keeps no "owner died" state: nothing to mark."""


class Mutex(_Lock):
    """A futex-based lock that sleeps instead of spinning, and is robust:
    when its holder dies, the next ``acquire`` raises
    :class:`shmring.OwnerDied` while granting the lock; the new holder
    repairs the data and calls :meth:`mark_consistent`.  Released without
    that, the lock becomes unusable (:class:`shmring.LockNotRecoverable`),
    as POSIX robust mutexes do.

    ``with mutex:`` never leaves the lock held after an owner died:
    ``Mutex(segment, offset, on_owner_died=repair)`` calls ``repair()``
    holding the lock, marks it consistent and enters the block (if
    ``repair`` raises, the lock is released still marked "owner died" for
    the next holder, and the exception propagates); without
    ``on_owner_died`` it is released that way and OwnerDied is raised.
    ``with mutex.recovering() as previous_owner_died:`` lets the block
    repair instead.

    Waiters spin about 2 us, then sleep on a futex word that they mark
    "locked, with waiters" (a 0/1/2 lock whose lock bit is the owner's
    token, docs/PROTOCOL.md section 4): a long wait costs no CPU but a look
    at the holder's liveness every 10 ms, and an uncontended release makes
    no system call.  ``acquire(blocking=False)`` is one try and
    ``acquire(timeout=t)`` gives up after ``t`` even while the holder is
    alive but stopped (SIGSTOP, a debugger)."""

    SIZE = 24
    _OBJECT_TYPE = _core.SYNC_MUTEX
    _NATIVE = _core.Mutex
    _native: _core.Mutex

    def mark_consistent(self) -> None:
        """After OwnerDied: the data is repaired, the lock may be used again."""
        self._native.mark_consistent()

    _repaired = mark_consistent


class Event(_Primitive):
    """Like ``threading.Event``, across processes: a ``wait`` in progress when
    ``set()`` is called returns True even if ``clear()`` follows at once."""

    SIZE = 16
    _OBJECT_TYPE = _core.SYNC_EVENT
    _NATIVE = _core.Event
    _native: _core.Event

    def set(self) -> None:
        self._native.set()

    def clear(self) -> None:
        self._native.clear()

    def is_set(self) -> bool:
        return self._native.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._native.wait(timeout)


class Condition(_Primitive):
    """Like ``threading.Condition``, over a :class:`Mutex` (the lock must be
    held around ``wait`` and ``notify``).  ``notify(n)`` wakes at most ``n``
    of the processes (or threads) waiting at that moment.  Check your
    predicate in a loop (or use :meth:`wait_for`), as with any condition."""

    SIZE = 16
    _NATIVE = _core.Condition
    _native: _core.Condition

    def __init__(self, segment: Segment, offset: int = 0, lock: Mutex | None = None) -> None:
        super().__init__(segment, offset)
        if lock is None:
            raise TypeError("Condition needs the Mutex it works with: Condition(segment, offset, lock=mutex)")
        self._lock = lock

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._segment, self._offset, self._lock))

    @classmethod
    def create(cls, name: str | None = None, *args: Any, mode: int = 0o600, persistent: bool = False) -> Condition:
        raise TypeError("a Condition lives beside its Mutex: Condition(segment, offset, lock=mutex)")

    @classmethod
    def open(cls, name: str, *, allow_other_owner: bool = False, timeout: float | None = 0.0) -> Condition:
        raise TypeError("a Condition lives beside its Mutex: Condition(segment, offset, lock=mutex)")

    def __enter__(self) -> bool:
        return self._lock.__enter__()  # the Mutex's owner-died handling too

    def __exit__(self, *exc: object) -> None:
        self._lock.__exit__(*exc)

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, sleep until notified (or the timeout), take the
        lock again.  Returns False if the timeout passed."""
        holder = self._lock.holder()
        if holder is None or holder[0] != os.getpid():
            raise RuntimeError("cannot wait on un-acquired lock")
        generation = self._native.prepare()
        self._lock.release()
        try:
            return self._native.sleep(generation, timeout)
        finally:
            self._lock.acquire()

    def wait_for(self, predicate: Any, timeout: float | None = None) -> Any:
        import time

        end = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            remaining = None if end is None else end - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            self.wait(remaining)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, not {n!r}")
        n = min(n, 2**31 - 1)
        holder = self._lock.holder()
        if holder is None or holder[0] != os.getpid():
            raise RuntimeError("cannot notify on un-acquired lock")
        self._native.notify(n)

    def notify_all(self) -> None:
        self.notify(2**31 - 1)
