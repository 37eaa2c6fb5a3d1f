"""Channel: a lock-free single-producer/single-consumer ring in shared memory.

The ring and every operation on it live in ``include/shmring/channel.h``; the
methods of :class:`Channel` are the C methods of ``shmring._core.Channel``
themselves (one C call per send or receive), and this module adds the
Pythonic parts: construction by name, pickling, iteration.  Each handle is
one attachment to the channel's segment (see :mod:`shmring.segment`): the
channel lives while any process is attached to it.

Messages are copied in (``send``) and out (``recv``), or lent in place for
the length of a ``with`` block (``reserve``/``peek``).  Each end belongs to
one process, claimed at its first operation; see docs/PROTOCOL.md.  A handle
may be shared by the threads of that process (see :class:`Channel`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from . import _core, arrays
from ._errors import Closed
from .segment import NamedObject, Segment, adopt, check_create, finish_create, handoff, reattach, unique_name, validate_name

__all__ = ["Channel", "WAIT_STRATEGIES"]

WaitStrategy = Literal["spin", "yield", "block", "adaptive", "semaphore"]

WAIT_STRATEGIES: dict[str, int] = {
    "spin": _core.WAIT_SPIN,
    "yield": _core.WAIT_YIELD,
    "block": _core.WAIT_BLOCK,
    "adaptive": _core.WAIT_ADAPTIVE,
    "semaphore": _core.WAIT_SEMAPHORE,
}
"""The names of the wait strategies (``wait=`` of :meth:`shmring.Channel.create`
and :meth:`shmring.Channel.open`), each with the code stored in the channel."""
_WAIT_NAMES = {code: name for name, code in WAIT_STRATEGIES.items()}

DEFAULT_CAPACITY = 1 << 20


def _wait_code(wait: str | None) -> int:
    if wait is None:
        return 0  # the strategy stored in the channel
    try:
        return WAIT_STRATEGIES[wait]
    except (KeyError, TypeError):
        raise ValueError(f"wait must be one of {sorted(WAIT_STRATEGIES)}, not {wait!r}") from None


def _spin(spin_ns: int | None) -> int:
    if spin_ns is None:
        return -1
    if not isinstance(spin_ns, int) or isinstance(spin_ns, bool) or not 0 <= spin_ns <= 100_000_000:
        raise ValueError(f"spin_ns must be an int between 0 and 100_000_000, not {spin_ns!r}")
    return spin_ns


class Channel(NamedObject, _core.Channel):
    """One-way message channel between two processes.

    Create it in one process with :meth:`create`, attach in another with
    :meth:`open` (or pass the object to a ``multiprocessing.Process``: it
    pickles by name).  Any bytes-like object is a message; the largest is
    ``capacity - 8`` bytes.

    - ``send(data, timeout=None)`` blocks while the ring is full;
      ``try_send(data) -> bool`` never blocks.
    - ``recv(timeout=None) -> bytes`` blocks while it is empty;
      ``try_recv() -> bytes | None``; ``recv_into(buffer, timeout=None) -> int``.
    - ``send_many(buffers, timeout=None) -> int`` and
      ``recv_many(max_messages, timeout=None) -> list[bytes]``: batches,
      published and released with one atomic store each.  ``send_many``
      checks the whole batch first (a bad item sends nothing); a batch whose
      records fit in the ring waits for room for all of them, so a
      ``Timeout`` means nothing was sent (``exc.sent == 0``); a larger batch
      goes in parts and a ``Timeout`` says in ``exc.sent`` how many went.
    - ``with ch.reserve(n) as buf:`` writes a message in place: ``buf`` (a
      :class:`shmring._core.Loan`) is a writable buffer over ``n`` bytes of
      the ring, zero-filled, with the memoryview API; the message is
      committed on normal exit (all ``n`` bytes, or the first ``k`` after
      ``buf.commit(k)``), discarded on an exception.  ``with ch.peek() as
      buf:`` reads one in place, read-only (released on exit).  A view that
      outlives its block is refused: leaving the block raises
      ``BufferInUseError`` and keeps the message until the view is released.
    - A timeout raises :class:`shmring.Timeout`.  After the writer's
      ``close()`` (the handle that has sent), the reader drains what is left, then gets
      :class:`shmring.Closed`; if the writer process died instead,
      :class:`shmring.PeerGone`.  Only ``close()`` ends a stream: a handle
      garbage-collected without it gives its ends back and ends nothing.
    - Threads: a handle may be shared by threads.  Calls on one end are
      serialised (a second sender waits for the first, for its own timeout;
      Ctrl-C still works; ``try_send``/``try_recv`` never wait and return
      False/None instead); the two ends run in parallel.  A
      ``reserve()``/``peek()`` block belongs to the thread that opened it:
      other threads' calls on that end wait until it ends, its own thread's
      raise ``RuntimeError``.  ``close()`` from another thread wakes the
      calls blocked on the handle (they raise :class:`shmring.Closed`) and
      returns once none is left.
    """

    _segment: Segment
    _wait_override: str | None
    _spin_override: int | None

    def __init__(self, *_: object, **__: object) -> None:
        raise TypeError("use Channel.create(...) or Channel.open(name)")

    @classmethod
    def _attach(cls, segment: Segment, wait: str | None, spin_ns: int | None) -> Channel:
        self = cls.__new__(cls)
        _core.Channel.__init__(self, segment._mapping, _wait_code(wait), _spin(spin_ns))
        self._segment = segment
        self._wait_override = wait
        self._spin_override = spin_ns
        return self

    @classmethod
    def create(
        cls,
        name: str | None = None,
        capacity: int = DEFAULT_CAPACITY,
        wait: WaitStrategy = "adaptive",
        *,
        spin_ns: int | None = None,
        mode: int = 0o600,
        persistent: bool = False,
    ) -> Channel:
        """Create a channel whose ring holds ``capacity`` bytes (a power of
        two, 64 bytes to 4 GiB).  ``wait`` is the strategy blocking calls
        use (each process may override it in :meth:`open`): "spin",
        "yield", "block" (futex), "adaptive" (spin, then futex), or
        "semaphore" (the producer posts a semaphore after every write and
        the consumer waits on it; the other side likewise for room; only a
        channel created so can be waited on so); ``spin_ns`` the
        adaptive strategy's spin before sleeping (default 20 µs, about the
        cost of waking a sleeping process on common VMs).  The channel lives
        while any process is attached to it (the last to leave removes it,
        unless ``persistent``).  For large messages, room for 2-4 of them
        is faster than more: a ring that stays in the CPU cache keeps the
        copies there."""
        if not isinstance(capacity, int) or isinstance(capacity, bool):
            raise TypeError(f"capacity must be int, not {type(capacity).__name__}")
        code = _wait_code(wait)
        if code == 0:
            raise ValueError("wait must name a strategy")
        spin = _spin(spin_ns)
        bare = unique_name() if name is None else validate_name(name)
        check_create(mode, persistent)
        mapping = finish_create(
            _core.create_channel(bare, capacity, code, _core.CHANNEL_DEFAULT_SPIN_NS if spin < 0 else spin, mode),
            persistent,
        )
        segment = Segment._wrap(bare, mapping, owner=True, allow_other_owner=False)
        return cls._attach(segment, None, None)

    @classmethod
    def open(
        cls,
        name: str,
        wait: WaitStrategy | None = None,
        *,
        spin_ns: int | None = None,
        allow_other_owner: bool = False,
        timeout: float | None = 0.0,
    ) -> Channel:
        """Attach to an existing channel.  ``wait``/``spin_ns`` override the
        channel's strategy for this handle (and for copies of it pickled to
        other processes); other handles keep the channel's default.
        ``timeout``: how long to wait for a channel another process has not
        made yet (0, the default: not at all; None: no limit; see
        :meth:`Segment.open`)."""
        _wait_code(wait)  # validate before touching anything
        _spin(spin_ns)
        segment = Segment.open(name, allow_other_owner=allow_other_owner, timeout=timeout)
        return cls._from_segment(segment, wait, spin_ns)

    @classmethod
    def _from_segment(cls, segment: Segment, wait: str | None, spin_ns: int | None) -> Channel:
        return adopt(segment, "channel", lambda seg: cls._attach(seg, wait, spin_ns))

    # -- properties ---------------------------------------------------------

    @property
    def segment(self) -> Segment:
        """The underlying segment."""
        return self._segment

    @property
    def wait(self) -> str:
        """The wait strategy this handle uses."""
        return _WAIT_NAMES[self.wait_code]

    # -- lifetime -----------------------------------------------------------

    def close(self) -> None:
        """Give up this handle and the ends it holds (an end is claimed by
        the first operation on it).  The close of the handle that has sent
        ends the stream: the reader drains what is left, then gets
        :class:`shmring.Closed`.  The close of the handle that has received
        makes the writer's next send raise :class:`shmring.Closed`.  A
        handle that never sent nor received ends nothing; neither does a
        handle that is garbage-collected without ``close()``.

        From another thread, ``close()`` wakes the calls blocked on this
        handle (they raise :class:`shmring.Closed`) and returns once none is
        left; an open ``reserve()`` block is dropped (its exit raises
        ``Closed``).  From inside a call on this handle in the same thread
        (a signal handler) it raises ``RuntimeError``.  While views of a
        ``reserve()``/``peek()`` block are alive it raises
        ``BufferInUseError`` (the handle is closed for calls already; call
        it again once they are released)."""
        _core.Channel.close(self)
        self._segment.close()

    def send_array(self, a: Any, timeout: float | None = None) -> None:
        """Send a numpy array (anything ``numpy.asarray`` takes): its dtype,
        shape and memory order in a small header, then its bytes, written
        straight into the ring (shmring.arrays; docs/PROTOCOL.md "Array
        messages").  Blocks as :meth:`send` does."""
        arrays.send_array(self, a, timeout)

    def recv_array(self, timeout: float | None = None) -> Any:
        """Receive a message sent by :meth:`send_array` (or a C peer that
        writes the same header) as a new, writable numpy array, copied once
        out of the ring.  ``ValueError`` for a message that is not an array
        (it is consumed).  Blocks as :meth:`recv` does."""
        return arrays.recv_array(self, timeout)

    def reserve_array(self, shape: int | tuple[int, ...], dtype: Any, order: Literal["C", "F"] = "C",
                      timeout: float | None = None, *, on_escape: arrays.OnEscape = "raise",
                      zero: bool = True) -> arrays.ArrayLoan:
        """``with ch.reserve_array(shape, dtype) as a:`` writes an array
        message in place: ``a`` is a writable, zero-filled ndarray of that
        shape, dtype and order lying in the ring, under the header (already
        written); leaving the block sends it, an exception inside the block
        drops it (as :meth:`reserve`).  Blocks as :meth:`send` does (at the
        ``with``).  The dtype and shape are checked here, a size the ring
        can never hold at the ``with``: nothing is reserved then.

        The array's memory is the ring's: ``del a`` before the block ends.
        If the array (or a view of it) is still alive then, ``on_escape``
        decides: ``"raise"`` raises ``BufferInUseError`` naming the array
        and sends nothing (the message is dropped once the array is gone);
        ``"copy"`` sends the message and leaves the names bound to the array
        a private copy of it (a view of it still alive is ``"raise"``).

        ``zero=False`` skips the zeroing, a pass over the frame's memory, for
        a producer that writes every element: the elements start with what
        the ring held there (bytes of this channel's earlier messages)."""
        return arrays.reserve_array(self, shape, dtype, order, timeout, on_escape, zero)

    def peek_array(self, timeout: float | None = None, *, on_escape: arrays.OnEscape = "raise") -> arrays.ArrayLoan:
        """``with ch.peek_array() as a:`` reads the next message in place:
        ``a`` is a read-only ndarray lying in the ring (its header checked
        as :meth:`recv_array` checks it; ``ValueError`` for a message that is
        not an array, which is consumed); leaving the block consumes the
        message.  Blocks as :meth:`recv` does (at the ``with``).

        The array's memory is the ring's: ``del a`` before the block ends.
        If the array (or a view of it) is still alive then, ``on_escape``
        decides: ``"raise"`` raises ``BufferInUseError`` naming the array
        and keeps the message unread (the next call on this end reads it
        again once the array is gone); ``"copy"`` consumes the message and
        leaves the names bound to the array a private copy of it (a view of
        it still alive is ``"raise"``)."""
        return arrays.peek_array(self, timeout, on_escape)

    def __iter__(self) -> Iterator[bytes]:
        """Messages until the writer closes the channel."""
        while True:
            try:
                yield self.recv()
            except Closed:
                return

    def __reduce__(self) -> tuple[Any, ...]:
        if self.closed:
            raise ValueError(f"cannot pickle closed channel {self.name!r}")
        allow = self._segment._allow_other_owner
        fd = handoff(self._segment._mapping)
        return (_reopen, (self.name, self._wait_override, self._spin_override, allow, fd))

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"capacity={self.capacity} wait={self.wait!r}"
        return f"<shmring.Channel {self.name!r} {state}{' owner' if self.owner else ''}>"


def _reopen(name: str, wait: str | None, spin_ns: int | None, allow_other_owner: bool, fd: Any = None) -> Channel:
    return Channel._from_segment(reattach(name, False, allow_other_owner, fd), wait, spin_ns)
