"""Topic: broadcast from any number of publishers to any number of subscribers.

Every subscriber sees every message published after it subscribed, with its
own cursor; publishers append under the topic's robust lock, subscribers
read without one.  What happens to a subscriber that falls behind is the
topic's policy, chosen at creation:

- ``"block"``: publishers wait for the slowest live subscriber (a dead one
  is dropped and never blocks them);
- ``"overwrite"``: publishers never wait; a subscriber that fell behind gets
  :class:`shmring.Lagged` (``.missed`` = how many messages it lost) and
  resumes at the oldest message still held.

``latest()`` reads only the newest message (conflation).  Layout and
algorithm: docs/PROTOCOL.md section 6.

Threads: a Publisher or a Subscription may be shared by threads.  Calls on
one are serialised (a second call waits for the first, for its own timeout;
Ctrl-C still works); a ``reserve()``/``peek()`` block belongs to the thread
that opened it, and other threads' calls on that handle wait until it ends.
``close()`` from another thread wakes a call blocked on the handle (it
raises :class:`shmring.Closed`) and returns once none is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Generic, Literal

if TYPE_CHECKING:
    from typing_extensions import Self

from . import _core, arrays
from ._errors import Closed, Timeout
from ._generic import T
from .segment import NamedObject, Segment, adopt, check_create, finish_create, handoff, reattach, unique_name, validate_name

__all__ = ["Topic", "Publisher", "Subscription", "DEFAULT_TOPIC_CAPACITY"]

Policy = Literal["block", "overwrite"]

DEFAULT_TOPIC_CAPACITY = 1 << 20
_POLICIES = {"block": _core.TOPIC_BLOCK, "overwrite": _core.TOPIC_OVERWRITE}
_DEFAULT_SPIN_NS = 20_000


class Topic(NamedObject, Generic[T]):
    """A named broadcast topic.  Make one with :meth:`create`, attach with
    :meth:`open` or by passing it to a child process (it pickles by name);
    then :meth:`publisher` and :meth:`subscribe`.

    The topic lives while any process is attached to it: the Topic handle,
    and each Publisher and Subscription, is an attachment of its own, held
    until it is closed, garbage collected, or its process ends; the last
    one to leave removes the topic (unless ``persistent=True``)."""

    _segment: Segment
    _observer: _core.TopicEnd

    def __init__(self, *_: object, **__: object) -> None:
        raise TypeError("use Topic.create(...) or Topic.open(name)")

    @classmethod
    def _wrap(cls, segment: Segment) -> Topic:
        self = object.__new__(cls)
        self._segment = segment
        self._observer = _core.TopicEnd(segment._mapping, _core.TOPIC_OBSERVER)
        return self

    @classmethod
    def create(
        cls,
        name: str | None = None,
        capacity: int = DEFAULT_TOPIC_CAPACITY,
        policy: Policy = "block",
        *,
        max_subscribers: int = 64,
        spin_ns: int = _DEFAULT_SPIN_NS,
        mode: int = 0o600,
        persistent: bool = False,
    ) -> Topic:
        """Create a topic whose ring holds ``capacity`` bytes (a multiple of
        16; each message takes a 16-byte header plus its size rounded up to
        16).  ``policy`` is "block" or "overwrite" (see the module doc);
        ``max_subscribers`` sizes the subscriber table; ``spin_ns`` is how
        long a waiting subscriber polls before it sleeps.  The topic lives
        while any process is attached to it (see the class doc)."""
        if policy not in _POLICIES:
            raise ValueError(f"policy must be 'block' or 'overwrite', not {policy!r}")
        for label, value in (("capacity", capacity), ("max_subscribers", max_subscribers), ("spin_ns", spin_ns)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{label} must be int, not {type(value).__name__}")
        if not 0 <= spin_ns <= 50_000_000:
            raise ValueError(f"spin_ns must be between 0 and 50_000_000, not {spin_ns}")
        check_create(mode, persistent)
        bare = unique_name() if name is None else validate_name(name)
        mapping = finish_create(
            _core.create_topic(bare, capacity, _POLICIES[policy], max_subscribers, spin_ns, mode), persistent
        )
        return cls._wrap(Segment._wrap(bare, mapping, owner=True, allow_other_owner=False))

    @classmethod
    def open(cls, name: str, *, allow_other_owner: bool = False, timeout: float | None = 0.0) -> Topic:
        """Attach to an existing topic.  ``timeout``: how long to wait for a
        topic another process has not made yet (0, the default: not at all;
        None: no limit; see :meth:`Segment.open`)."""
        return cls._from_segment(Segment.open(name, allow_other_owner=allow_other_owner, timeout=timeout))

    @classmethod
    def _from_segment(cls, segment: Segment) -> Topic:
        return adopt(segment, "topic", cls._wrap)

    def publisher(self) -> Publisher[T]:
        """A handle to publish with (any number, in any processes).  It is an
        attachment of its own: it keeps the topic alive until it is closed."""
        pub: Publisher[T] = Publisher(self._attachment(), _core.TOPIC_PUBLISHER)
        pub._topic_name = self.name
        return pub

    def subscribe(self, timeout: float | None = None, *, spin_ns: int | None = None) -> Subscription[T]:
        """A new subscription: it sees every message published from now on.
        It belongs to this process (it does not pickle) and is an attachment
        of its own: it keeps the topic alive until it is closed.  Taking a
        slot needs the topic lock: :class:`shmring.Timeout` if it is not free
        within ``timeout`` seconds (None = no limit; a holder that died, or a
        lock word no process could have written, is taken over within ~10 ms).
        ``spin_ns``: how long this subscription's waits poll before they
        sleep, instead of the topic's ``spin_ns`` (polling costs CPU; a
        message that comes within it costs no wake-up); also settable later
        as ``sub.spin_ns``."""
        if spin_ns is not None and (not isinstance(spin_ns, int) or isinstance(spin_ns, bool)
                                    or not 0 <= spin_ns <= 50_000_000):
            raise ValueError(f"spin_ns must be an int between 0 and 50_000_000, not {spin_ns!r}")
        mapping = self._attachment()
        try:
            sub: Subscription[T] = Subscription(mapping, _core.TOPIC_SUBSCRIBER, timeout)
        except BaseException:
            mapping.leave()
            raise
        if spin_ns is not None:
            sub.spin_ns = spin_ns
        sub._topic_name = self.name
        return sub

    def _attachment(self) -> _core.Mapping:
        if self._segment.closed:
            raise ValueError(f"topic {self.name!r} is closed")
        return self._segment._mapping.duplicate()

    def latest(self) -> T | None:
        """The newest message published (bytes, or the object for
        ``send_obj``), or None if there is none yet.  Needs no subscription
        and moves nothing."""
        result: T | None = self._observer._latest_any()
        return result

    @property
    def capacity(self) -> int:
        return self._observer.capacity

    @property
    def policy(self) -> str:
        return self._observer.policy

    def stats(self) -> dict[str, Any]:
        """Messages published, live subscribers, ring counters."""
        return self._observer.stats()

    def close(self) -> None:
        """End this handle's attachment (publishers and subscriptions made
        from it are attachments of their own and stay open)."""
        self._observer.close()
        self._segment._mapping.leave()

    def __reduce__(self) -> tuple[Any, ...]:
        if self._segment.closed:
            raise ValueError(f"cannot pickle closed topic {self.name!r}")
        allow = self._segment._allow_other_owner
        return (_reopen, (self.name, allow, handoff(self._segment._mapping)))

    def __repr__(self) -> str:
        return f"<shmring.Topic {self.name!r} capacity={self.capacity} policy={self.policy!r}>"


def _reopen(name: str, allow_other_owner: bool, fd: Any = None) -> Topic:
    return Topic._from_segment(reattach(name, False, allow_other_owner, fd))


class _OtherRole:
    """A method of the other role, absent from this one: a Publisher has no
    ``recv``, a Subscription no ``send`` (``hasattr`` says False, and a
    call says which role has it)."""

    def __init__(self, role: str) -> None:
        self.role = role

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> None:
        cls = owner.__name__ if owner is not None else type(obj).__name__
        raise AttributeError(f"{cls!r} object has no attribute {self.name!r} (a {self.role} has it)")


class _End(_core.TopicEnd):
    """What a Publisher and a Subscription share: each is an attachment of
    its own to the topic (see Topic._attachment), ended by ``close()`` and
    by leaving a ``with`` block; neither pickles (``_NOT_PICKLED`` says why)."""

    _NOT_PICKLED = ""

    def close(self) -> None:
        _core.TopicEnd.close(self)
        mapping = self._mapping
        if mapping is not None:
            mapping.leave()

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError(self._NOT_PICKLED)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    _topic_name = ""

    def __dir__(self) -> list[str]:
        hidden = {n for k in type(self).__mro__ for n, v in vars(k).items() if isinstance(v, _OtherRole)}
        return [n for n in super().__dir__() if n not in hidden]

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"capacity={self.capacity} policy={self.policy!r}"
        return f"<shmring.{type(self).__name__} of topic {self._topic_name!r} {state}>"


class Publisher(_End, Generic[T]):
    """Publishes to a topic: ``send(data)`` for bytes-like data,
    ``send_obj(obj)`` for any picklable object, ``send_many(buffers)`` for a
    batch (in order, up to 64 records per hold of the topic lock; each
    checked first, so one that can never fit sends nothing; a
    :class:`shmring.Timeout` says in ``exc.sent`` how many went; returns how
    many), ``reserve(n)`` to write in place, ``send_gap(missed)`` to tell
    every subscriber that ``missed`` messages were lost before they reached
    the topic (a gap marker: a subscriber that reads it raises
    :class:`shmring.Lagged` with ``missed`` and ``upstream=True``, then
    reads on; it takes ``missed`` message numbers, and ``latest()`` skips
    it; a bridge's importer sends one for each loss it detects).  Under
    policy "block" these wait (``timeout`` seconds, None = forever) for the
    slowest live subscriber and raise :class:`shmring.Timeout`.

    ``with pub.reserve(n) as buf:`` lends ``n`` zero-filled bytes of the
    ring (a :class:`shmring._core.Loan`: a writable buffer with the
    memoryview API); the message is published on normal exit, dropped on an
    exception.  ``buf.commit(k)`` publishes only the first ``k`` bytes.  The
    topic lock is held for the block: other publishers wait, so keep it
    short.  Dropping a Publisher without ``close()`` ends nothing."""

    _NOT_PICKLED = "a Publisher does not pickle: pass the Topic and call publisher() in the child"

    recv = _OtherRole("Subscription")  # type: ignore[assignment]
    recv_bytes = _OtherRole("Subscription")  # type: ignore[assignment]
    recv_many = _OtherRole("Subscription")  # type: ignore[assignment]
    peek = _OtherRole("Subscription")  # type: ignore[assignment]
    latest = _OtherRole("Subscription")
    recv_array = _OtherRole("Subscription")
    peek_array = _OtherRole("Subscription")
    lagged = _OtherRole("Subscription")  # type: ignore[assignment]

    if TYPE_CHECKING:  # the C method, typed by the item type (``Topic[Frame]``)

        def send_obj(self, obj: T, timeout: float | None = None) -> None: ...

    def send_array(self, a: Any, timeout: float | None = None) -> None:
        """Publish a numpy array as an array message (see
        :meth:`shmring.Channel.send_array`); waits as :meth:`send` does."""
        arrays.send_array(self, a, timeout)

    def reserve_array(self, shape: int | tuple[int, ...], dtype: Any, order: Literal["C", "F"] = "C",
                      timeout: float | None = None, *, on_escape: arrays.OnEscape = "raise",
                      zero: bool = True) -> arrays.ArrayLoan:
        """``with pub.reserve_array(shape, dtype) as a:`` writes an array
        message in place and publishes it when the block ends (see
        :meth:`shmring.Channel.reserve_array`, and ``on_escape`` there).
        The topic lock is held for the block, as for :meth:`reserve`; an
        array still alive after it keeps the lock until it is gone
        (``on_escape="raise"``): ``del a`` inside the block.  ``zero=False``
        as there: for a producer that writes every element."""
        return arrays.reserve_array(self, shape, dtype, order, timeout, on_escape, zero)

    def close(self) -> None:
        """Close this publisher; its attachment to the topic ends."""
        super().close()


class Subscription(_End, Generic[T]):
    """One subscriber's cursor on a topic.  ``recv(timeout=None)`` returns
    the next message (bytes, or the object for ``send_obj``);
    ``recv_bytes`` always the raw bytes; ``recv_many(max_messages)`` a
    batch (between 1 and ``max_messages``: it waits for the first, then takes
    those already published, moving the cursor once, past what it returns:
    if unpickling message k fails, the messages before k are returned and k
    and those after it stay unread, so the next call raises k's error (k
    is unpickled again) and then goes on, as ``Queue.get_many``'s next gets
    do; when the first message fails, its error is raised and only it is
    consumed, as ``recv``'s.  The subscription stays in the call while it
    unpickles: unpickling code that uses it again gets a RuntimeError.
    Under "overwrite", messages left unread may be overwritten before the
    next call, which then raises :class:`shmring.Lagged` for them);
    ``latest()`` skips to the newest;
    ``with sub.peek() as buf:`` lends the next one in place, read-only,
    released at the end of the block (under "overwrite", leaving the block
    raises :class:`shmring.Lagged` if a publisher overwrote it meanwhile:
    what was read may be torn).  Raises :class:`shmring.Lagged` when
    messages were overwritten before it read them ("overwrite" topics), then
    resumes at the oldest one held, and with ``upstream=True`` when it
    reads a gap marker (messages lost before they reached the topic:
    :meth:`Publisher.send_gap`), then reads on past it; ``recv_many``
    returns the messages before a loss and raises at the next call;
    :class:`shmring.Timeout` on a timeout.
    A Subscription dropped without ``close()`` frees its slot."""

    _NOT_PICKLED = "a Subscription belongs to its process: pass the Topic and subscribe() in the child"

    send = _OtherRole("Publisher")  # type: ignore[assignment]
    send_obj = _OtherRole("Publisher")  # type: ignore[assignment]
    send_many = _OtherRole("Publisher")  # type: ignore[assignment]
    send_gap = _OtherRole("Publisher")  # type: ignore[assignment]
    reserve = _OtherRole("Publisher")  # type: ignore[assignment]
    send_array = _OtherRole("Publisher")
    reserve_array = _OtherRole("Publisher")

    if TYPE_CHECKING:  # the C method, typed by the item type (``Topic[Frame]``)

        def recv(self, timeout: float | None = None) -> T: ...
        def recv_many(self, max_messages: int, timeout: float | None = None) -> list[T]: ...

    def recv_array(self, timeout: float | None = None) -> Any:
        """The next message, an array message, as a new writable numpy
        array (see :meth:`shmring.Channel.recv_array`).  Under "overwrite",
        :class:`shmring.Lagged` if a publisher overwrote it while it was
        being copied (nothing torn is returned)."""
        return arrays.recv_array(self, timeout)

    def peek_array(self, timeout: float | None = None, *, on_escape: arrays.OnEscape = "raise") -> arrays.ArrayLoan:
        """``with sub.peek_array() as a:`` reads the next message in place
        as a read-only ndarray, consumed when the block ends (see
        :meth:`shmring.Channel.peek_array`, and ``on_escape`` there).  Under
        "overwrite", leaving the block raises :class:`shmring.Lagged` if a
        publisher overwrote the message meanwhile: what the array showed may
        have been torn."""
        return arrays.peek_array(self, timeout, on_escape)

    def latest(self, timeout: float | None = None) -> T:
        """Wait for an unread message (like recv), then return the newest
        one and skip those before it (conflation)."""
        result: T = self._latest_unread(timeout)
        return result

    def __iter__(self) -> Iterator[T]:
        """Messages, forever (until the subscription is closed, from this
        thread or another)."""
        while not self.closed:
            try:
                yield self.recv(timeout=0.5)
            except Timeout:
                continue
            except Closed:
                return

    def close(self) -> None:
        """Unsubscribe; the subscription's attachment to the topic ends."""
        super().close()
