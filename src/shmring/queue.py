"""Queue: a multi-producer/multi-consumer queue of Python objects in shared memory.

A drop-in for :class:`multiprocessing.Queue` (and for ``faster_fifo.Queue``):
``from shmring import Queue`` instead of ``from multiprocessing import Queue``.

Every ``put``/``get`` is one C call: the item is serialized (value-encoded
when it is made only of None, bools, 64-bit ints, floats, bytes, str and
tuples of these, which is several times cheaper than pickling; otherwise
``pickle.dumps`` with protocol 5, its buffers of 8 KiB or more (an
ndarray's elements) out of band, or your ``dumps``), copied into a ring of
records in shared memory under the queue's robust lock, and taken out the
same way: an out-of-band buffer is copied once in and once out, into memory
that the item ``get`` returns owns.
There is no feeder thread: ``put`` returns once the item is in shared
memory, ``empty()`` sees it at once, and nothing can hang at exit.  The
algorithm, and why a process killed mid-``put`` or mid-``get`` cannot wedge
the queue, is in docs/PROTOCOL.md section 5.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic

if TYPE_CHECKING:
    from typing_extensions import Self

from . import _core
from ._generic import T
from .segment import NamedObject, Segment, adopt, check_create, finish_create, handoff, reattach, unique_name, validate_name

__all__ = ["Queue", "JoinableQueue", "SimpleQueue", "DEFAULT_CAPACITY", "DEFAULT_SPIN_NS"]

DEFAULT_CAPACITY = 1 << 20
"""Bytes in the ring of a queue made without ``max_size_bytes``."""

DEFAULT_SPIN_NS = 20_000
"""How long a waiting ``put``/``get`` polls before it sleeps on a futex."""

_MAX_BYTES = 2**32  # record lengths are 32-bit
_MAX_ITEMS = 2**63 - 1  # as multiprocessing: a larger maxsize overflows its semaphore



class Queue(NamedObject, _core.Queue, Generic[T]):
    """A process-shared FIFO queue with the API of :class:`multiprocessing.Queue`.

    ``Queue(maxsize=0)`` holds at most ``maxsize`` items (``0`` or less: no
    limit).  Items are any picklable objects, and a ``memoryview``; any size
    works.  An ndarray (and a large ``bytes``, ``bytearray`` or
    ``memoryview``, or a PyTorch CPU tensor) is copied once into the queue
    and once out, not pickled: the array ``get`` returns is writable and
    owns that copy (docs/PROTOCOL.md section 5.2).

    Capacity: the ring holds ``max_size_bytes`` bytes of records (default
    1 MiB; rounded up to a multiple of 8, and to at least 64 bytes).  Without ``max_size_bytes`` a ``put`` never waits for bytes,
    only for ``maxsize``: when the ring is full, or an item is larger than
    it, records go to overflow chunks (segments of their own, created and
    removed as needed, in order).  With ``max_size_bytes`` (faster-fifo's
    meaning) a ``put`` waits for room instead, and only an item larger than
    the whole ring takes a chunk of its own.

    Besides the ``multiprocessing.Queue`` methods: faster-fifo's
    ``put_many``/``get_many`` (one lock hold for a batch), ``data_size()``,
    ``is_closed()``, ``dumps``/``loads``, ``last_error`` (the message of
    this handle's last failed put or get other than ``Empty``/``Full``, or
    ``None``), and ``put_bytes``/``get_bytes`` (no pickling).  ``full()`` is
    also true, with ``max_size_bytes``, while the ring cannot take a 1-byte
    item or the item this handle's last ``put`` was refused (``Full``) for.  A ``put_many`` batch is put whole or not at all: every
    item is serialized before anything is written (an item that fails in
    the middle raises and puts nothing), and a batch that times out waiting
    for room for all of it raises ``queue.Full`` and puts nothing.  A
    ``get_many`` batch with an item that fails to unpickle gives what as
    many ``get()`` calls would: the items before it, then (at the next get
    of this handle) its error, then the items after it, which this handle
    holds for its next gets (``qsize()`` counts them); closing or dropping
    the handle puts those back into the queue (at its end, as a put does),
    and so does an ordinary exit of its process without either (the end of
    the program, ``sys.exit``, a ``multiprocessing`` child's return), before
    the process's attachments end.  A process killed, or ended by
    ``os._exit()``, loses them, as it loses an item it took and had not
    processed yet (docs/RELIABILITY.md).

    ``close()`` closes this handle, as in ``multiprocessing``: its calls
    raise :class:`shmring.QueueClosed` from then on (a ``ValueError``, as
    ``multiprocessing`` raises, and a ``queue.Empty``, as a faster-fifo
    consumer loop expects: one that catches ``Empty`` must look at
    ``is_closed()`` before it retries), and a thread blocked in its
    ``get``, ``put`` (waiting for room) or ``join`` is woken and raises it
    too (the way to stop a consumer thread at shutdown).  Other handles, in this
    process or others, keep working.  ``is_closed()`` reports this handle's
    state, the one that makes its calls raise; ``closed_anywhere()`` reports
    whether any handle in any process called ``close()`` (what faster-fifo's
    ``is_closed()`` means), a mark that stops nothing.

    Threads: a handle is safe to share between threads.  Every call takes
    the queue's lock, which admits one thread of one process at a time, and
    blocking calls wait with the GIL released.

    Non-blocking calls (``get_nowait``, ``get(block=False)``,
    ``get_many_nowait``, ``put_nowait``, ``put(block=False)``, ...) wait for
    the lock at most 1 ms when another process holds it (one that is
    stopped, by SIGSTOP or a debugger, holds it for as long as it stays
    stopped), then raise ``queue.Empty`` / ``queue.Full`` as
    ``multiprocessing.Queue`` does when its lock is taken: the queue may
    hold items or room that the call could not look at.  A timeout is
    honoured while waiting for the lock as while waiting for an item.

    Items are unpickled in the process that takes them, after they left
    the queue: if ``loads`` fails, ``get`` raises and that item is gone (as
    with ``multiprocessing.Queue``); in ``get_many``, so are the rest of
    that batch.

    Pass it to child processes as an argument (fork, spawn or forkserver):
    it pickles by name.  The queue lives while any process is attached to
    it: every handle, in any process, is an attachment until it is closed,
    garbage collected, or its process ends; the last one to leave removes
    the queue and its overflow chunks (unless ``persistent=True``), so no
    item is lost while some process still uses the queue.  A process that
    crashed as the last user leaves it to ``shmring gc``.
    """

    _segment: Segment
    _allow_other_owner: bool

    def __init__(
        self,
        maxsize: int = 0,
        *,
        max_size_bytes: int | None = None,
        name: str | None = None,
        dumps: Callable[[Any], bytes] | None = None,
        loads: Callable[[bytes], Any] | None = None,
        spin_ns: int | None = None,
        mode: int = 0o600,
        persistent: bool = False,
        ctx: Any = None,
    ) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool):
            raise TypeError(f"maxsize must be int, not {type(maxsize).__name__}")
        if maxsize > _MAX_ITEMS:
            raise OverflowError(f"maxsize {maxsize} is too large (at most {_MAX_ITEMS})")
        if max_size_bytes is None:
            capacity, flags = DEFAULT_CAPACITY, 0
        else:
            if not isinstance(max_size_bytes, int) or isinstance(max_size_bytes, bool):
                raise TypeError(f"max_size_bytes must be int, not {type(max_size_bytes).__name__}")
            if not 1 <= max_size_bytes <= _MAX_BYTES:
                raise ValueError(f"max_size_bytes must be at least 1 and at most {_MAX_BYTES}, got {max_size_bytes}")
            # The ring is never smaller than QUEUE_MIN_CAPACITY (64) bytes.
            capacity, flags = max(_core.QUEUE_MIN_CAPACITY, (max_size_bytes + 7) & ~7), _core.QUEUE_BOUNDED
        if spin_ns is None:
            spin_ns = DEFAULT_SPIN_NS
        if not isinstance(spin_ns, int) or isinstance(spin_ns, bool) or not 0 <= spin_ns <= 50_000_000:
            raise ValueError(f"spin_ns must be an int between 0 and 50_000_000, not {spin_ns!r}")
        check_create(mode, persistent)
        if not (dumps is None or callable(dumps)) or not (loads is None or callable(loads)):
            raise TypeError("dumps and loads must be callables or None")
        bare = unique_name() if name is None else validate_name(name)
        # QUEUE_VALUES: items of plain types go value-encoded (shmring/value.h);
        # QUEUE_OOB: large buffers (ndarrays...) go out of band (shmring/oob.h).
        # Processes of a release that does not know a flag refuse the queue.
        flags |= _core.QUEUE_VALUES | _core.QUEUE_OOB
        mapping = finish_create(_core.create_queue(bare, capacity, max(maxsize, 0), flags, spin_ns, mode), persistent)
        segment = Segment._wrap(bare, mapping, owner=True, allow_other_owner=False)
        self._setup(segment, dumps, loads, False)

    def _setup(self, segment: Segment, dumps: Any, loads: Any, allow_other_owner: bool) -> None:
        self._segment = segment
        self._allow_other_owner = allow_other_owner
        self._dumps_fn = dumps
        self._loads_fn = loads
        # A subclass that overrides dumps()/loads() (faster-fifo style) is used as such.
        if dumps is None and type(self).dumps is not Queue.dumps:
            dumps = self.dumps
        if loads is None and type(self).loads is not Queue.loads:
            loads = self.loads
        _core.Queue.__init__(self, segment._mapping, dumps, loads, allow_other_owner)
        self.maxsize = self._maxsize
        self.max_size_bytes = self.capacity
        self.max_bytes_to_read = self.capacity
        # faster-fifo's: the message of the last error of a put or get of
        # this handle (set by the extension; Empty and Full are not errors).
        self.last_error: str | None = None

    @classmethod
    def open(
        cls,
        name: str,
        *,
        dumps: Callable[[Any], bytes] | None = None,
        loads: Callable[[bytes], Any] | None = None,
        allow_other_owner: bool = False,
        timeout: float | None = 0.0,
    ) -> Self:
        """Attach to the queue called ``name`` (made by another process).
        ``timeout``: how long to wait for it to be made (0, the default: not
        at all; None: no limit; see :meth:`Segment.open`)."""
        segment = Segment.open(name, allow_other_owner=allow_other_owner, timeout=timeout)
        return cls._from_segment(segment, dumps, loads)

    @classmethod
    def _from_segment(cls, segment: Segment, dumps: Any, loads: Any) -> Self:
        self = cls.__new__(cls)

        def build(seg: Segment) -> None:
            self._setup(seg, dumps, loads, seg._allow_other_owner)

        adopt(segment, "queue", build)
        return self

    # -- multiprocessing.Queue --------------------------------------------------
    # put, get, put_nowait, get_nowait, qsize, empty, full and close are the
    # C methods of _core.Queue.

    if TYPE_CHECKING:  # the C methods, typed by the item type (``Queue[int]``)

        def put(self, obj: T, block: bool = True, timeout: float | None = None) -> None: ...
        def put_nowait(self, obj: T, /) -> None: ...
        def put_many(self, items: Iterable[T], block: bool = True, timeout: float | None = None) -> None: ...
        def put_many_nowait(self, items: Iterable[T], /) -> None: ...
        def get(self, block: bool = True, timeout: float | None = None) -> T: ...
        def get_nowait(self) -> T: ...
        def get_many(
            self, block: bool = True, timeout: float | None = None, max_messages_to_get: int = ...
        ) -> list[T]: ...
        def get_many_nowait(self, max_messages_to_get: int = ...) -> list[T]: ...

    def join_thread(self) -> None:
        """Nothing to join (there is no feeder thread); as in
        ``multiprocessing``, only valid after :meth:`close`."""
        if not self._closed:
            raise AssertionError(f"Queue {self!r} not closed")

    def cancel_join_thread(self) -> None:
        """Nothing to cancel: there is no feeder thread."""

    # -- faster-fifo ----------------------------------------------------------------


    def dumps(self, obj: Any) -> bytes:
        """Serialize ``obj`` as ``put`` does when it does not value-encode
        it: your ``dumps``, or a pickle (in band: ``put`` itself hands large
        buffers out of band) (faster-fifo's hook)."""
        if self._dumps_fn is not None:
            return bytes(self._dumps_fn(obj))
        import pickle

        return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        """Deserialize what :meth:`dumps` made."""
        if self._loads_fn is not None:
            return self._loads_fn(data)
        import pickle

        return pickle.loads(data)

    def reallocate_msg_buffer(self, new_size: int) -> None:
        """faster-fifo sizes its read buffer with this; here reads need no
        buffer, so it only records ``max_bytes_to_read``."""
        self.max_bytes_to_read = int(new_size)

    def parse_messages(self, num_messages: int, total_bytes: int, msg_buffer: Any) -> list[Any]:
        """Decode ``num_messages`` messages from faster-fifo's buffer format
        (a native ``size_t`` length before each message)."""
        import struct

        view = memoryview(msg_buffer).cast("B")[:total_bytes]
        out, pos, size = [], 0, struct.calcsize("N")
        for _ in range(num_messages):
            (n,) = struct.unpack_from("N", view, pos)
            pos += size
            out.append(self.loads(bytes(view[pos : pos + n])))
            pos += n
        return out

    # -- shmring --------------------------------------------------------------------

    def close(self) -> None:
        """As :meth:`multiprocessing.Queue.close`: this handle puts and gets
        no more (they raise ``ValueError``).  It also ends the handle's
        attachment: if no other handle, in any process, is attached, the
        queue and what it holds are removed.  Items already put stay for the
        processes still attached."""
        _core.Queue.close(self)  # (it also leaves, once no call of this handle is running)

    def __reduce__(self) -> tuple[Any, ...]:
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        for key in ("maxsize", "max_size_bytes", "max_bytes_to_read", "last_error"):
            state.pop(key, None)
        fd = handoff(self._segment._mapping)
        return (
            _reopen,
            (type(self), self.name, self._dumps_fn, self._loads_fn, self._allow_other_owner, fd),
            state or None,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        items = f"maxsize={self.maxsize}" if self.maxsize else "no item limit"
        if self.bounded:
            room = f"max_size_bytes={self.capacity}"
        else:
            room = f"ring of {self.capacity} bytes, overflow chunks beyond"
        closed = " (closed)" if self._closed else ""
        return f"<shmring.{type(self).__name__} {self.name!r}{closed}: {items}, {room}>"


def _reopen(
    cls: type[Queue[Any]], name: str, dumps: Any, loads: Any, allow_other_owner: bool, fd: Any = None
) -> Queue[Any]:
    return cls._from_segment(reattach(name, False, allow_other_owner, fd), dumps, loads)


class JoinableQueue(Queue[T]):
    """:class:`Queue` with ``task_done()`` and ``join()``, as
    :class:`multiprocessing.JoinableQueue`: every ``put`` adds an unfinished
    task, every ``task_done()`` finishes one, ``join()`` waits for none to be
    left.  The count lives in shared memory."""

    def task_done(self) -> None:
        """Mark one item taken with ``get`` as processed.  ``ValueError``
        when called more often than items were put."""
        self._task_done()

    def join(self, timeout: float | None = None) -> None:
        """Wait until every item put has been marked done; ``timeout``
        (seconds) raises :class:`shmring.Timeout`."""
        self._join(timeout)


class SimpleQueue(Queue[T]):
    """The :class:`multiprocessing.SimpleQueue` API (``put``, ``get``,
    ``empty``, ``close``) on the same shared-memory queue: unbounded."""

    def __init__(
        self,
        *,
        name: str | None = None,
        dumps: Callable[[Any], bytes] | None = None,
        loads: Callable[[bytes], Any] | None = None,
        ctx: Any = None,
    ) -> None:
        super().__init__(0, name=name, dumps=dumps, loads=loads)
