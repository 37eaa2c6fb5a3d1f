"""asyncio over shmring: ``await ch.recv()``, ``await q.get()``, ``await sub.recv()``.

The classes here are async views of the ordinary handles: ``shmring.aio.Channel(ch)``
wraps a :class:`shmring.Channel` (or use ``shmring.aio.wrap(obj)``), and the
other end may be a plain synchronous program, in Python or C.  Every call
first tries the operation at once, in the loop's thread (the fast path: no
thread hop when data or room is already there).  When it would wait, the
coroutine sleeps on an asyncio future; one waiter thread per event loop
sleeps in the kernel on the futex words of everything that loop waits for
(``futex_waitv``, Linux 5.16; without it, one thread per object waited on),
and wakes the loop through ``call_soon_threadsafe`` when one of them moves.
Nothing polls: an idle wait costs one wake-up every 100 ms (to notice a
peer that died or a handle closed elsewhere), and a waiter thread with
nothing to wait for exits after a second.

Cancellation is safe: the operation itself only ever runs in the coroutine,
so a cancelled ``await q.get()`` has taken nothing, a cancelled
``await ch.send(b)`` sent all of ``b`` or nothing, and a wake-up the
cancelled coroutine had been given is passed on (to the next coroutine of
the loop waiting on that object, or to another process).  ``timeout=``
behaves like the synchronous call's (``shmring.Timeout``, ``queue.Empty``,
``queue.Full``, or False for ``Semaphore.acquire``/``Event.wait``);
``asyncio.timeout()`` and ``asyncio.wait_for`` work too.  Any event loop
that implements ``call_soon_threadsafe`` works (uvloop included).

A handle is used by one event loop at a time; its synchronous methods stay
usable beside the async ones (a Queue handle from other threads too).  The
protocol of the waits is include/shmring/watch.h (docs/PROTOCOL.md section 8).
"""

from __future__ import annotations

import asyncio
import os
import queue as _queue
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Generic, TypeVar

from . import _core
from ._errors import Closed, QueueClosed, Timeout
from ._generic import T

__all__ = ["Channel", "Queue", "Publisher", "Subscription", "Semaphore", "Event", "wrap"]


_RECV, _SEND = 0, 1
_SLICE = 0.1  # seconds: how often a waiting object is looked at although nothing woke it
_UNFENCED_SLICE = 0.001  # SHMRING_UNFENCED_SLEEP_NS: a channel announced without membarrier
_IDLE_EXIT = 1.0  # seconds a waiter thread with nothing to wait for lives on
_AGAIN: Any = object()  # an attempt's "would block"
_USE_WAITV = _core.futex_waitv_available() and os.environ.get("SHMRING_AIO_WAITV", "1") != "0"


class _Expired(Exception):
    """The ``timeout=`` of an async call ran out (turned into the sync call's outcome)."""


class _Key:
    """One side of one handle that coroutines of a loop wait on."""

    __slots__ = ("handle", "side", "users", "sleepers", "active", "expected", "unfenced", "fired", "unused_wake",
                 "sleeper")

    def __init__(self, handle: Any, side: int) -> None:
        self.handle = handle
        self.side = side
        self.users = 0  # coroutines inside _Waiters.run on it
        self.sleepers: deque[asyncio.Future[None]] = deque()  # waiting for their turn, in order
        self.active = 0  # coroutines trying now (woken, or just arrived)
        self.expected = 0  # the word's value read before the last failed attempt
        self.unfenced = False
        self.fired = False  # the waiter thread saw it move; the loop has not handled it yet
        self.unused_wake = False  # a turn was given and not used: pass the wake on when leaving
        self.sleeper: _Sleeper | None = None


class _Sleeper:
    """A waiter thread: it sleeps on the words of up to ``capacity`` keys."""

    def __init__(self, owner: _Waiters, capacity: int) -> None:
        self.owner = owner
        self.capacity = capacity
        self.keys: list[_Key] = []
        self.waitset = _core.WaitSet(use_waitv=_USE_WAITV)
        self.alive = True
        self.thread = threading.Thread(target=self._run, name="shmring-aio-waiter", daemon=True)
        self.thread.start()

    def _snapshot(self) -> tuple[list[tuple[Any, int, int]], list[_Key], float | None]:
        keys = [k for k in self.keys if k.sleepers and not k.active and not k.fired]
        entries = [(k.handle, k.side, k.expected) for k in keys]
        if not keys:  # nothing to sleep on: leave after a while, or look at the loop now and then
            return entries, keys, _IDLE_EXIT if not self.keys else _SLICE
        return entries, keys, _UNFENCED_SLICE if any(k.unfenced for k in keys) else _SLICE

    def _run(self) -> None:
        owner = self.owner
        while True:
            control = self.waitset.control
            with owner.lock:
                entries, keys, timeout = self._snapshot()
            woke = self.waitset.wait(entries, control, timeout)
            with owner.lock:
                loop = owner.loop_if_open()
                if loop is None or (not keys and not woke and not self.keys):
                    self._retire()  # the loop is gone, or nothing to wait for since a while
                    return
                if not keys:
                    continue
                fired = [k for k in keys if not woke or _moved(k)]
                for k in fired:
                    k.fired = True
            if fired:
                try:
                    loop.call_soon_threadsafe(owner.on_fired, fired)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    with owner.lock:
                        self._retire()
                    return
            loop = None  # not held while asleep

    def _retire(self) -> None:
        """Leave the loop's list of threads (the lock held)."""
        self.alive = False
        if self in self.owner.sleepers:
            self.owner.sleepers.remove(self)


def _moved(key: _Key) -> bool:
    try:
        return bool(_core.watch_value(key.handle, key.side) != key.expected)
    except Exception:  # closed meanwhile: let the coroutine's attempt say so
        return True


class _Waiters:
    """The waits of one event loop (in one process)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weak: _by_loop's key is the loop, and its threads must not keep
        # a loop nobody else holds.
        self._loop = weakref.ref(loop)
        self.lock = threading.Lock()
        self.keys: dict[tuple[int, int], _Key] = {}
        self.sleepers: list[_Sleeper] = []

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop (called from its own coroutines: it is alive)."""
        loop = self._loop()
        assert loop is not None
        return loop

    def loop_if_open(self) -> asyncio.AbstractEventLoop | None:
        loop = self._loop()
        return None if loop is None or loop.is_closed() else loop

    # -- the loop's side ------------------------------------------------------

    def _changed(self, key: _Key) -> None:
        """The key's state changed: let its sleeper thread look again."""
        s = key.sleeper
        if s is not None:
            s.waitset.interrupt()

    def _place(self, key: _Key) -> None:
        with self.lock:
            for s in self.sleepers:
                if s.alive and len(s.keys) < s.capacity:
                    break
            else:
                s = _Sleeper(self, 127 if _USE_WAITV else 1)
                self.sleepers.append(s)
            s.keys.append(key)
            key.sleeper = s
        s.waitset.interrupt()

    def _join(self, handle: Any, side: int) -> _Key:
        ident = (id(handle), side)
        key = self.keys.get(ident)
        if key is None:
            key = _Key(handle, side)
            key.unfenced = _core.watch_begin(handle, side)
            self.keys[ident] = key
            self._place(key)
        key.users += 1
        key.active += 1
        return key

    def _leave(self, key: _Key) -> None:
        key.users -= 1
        if key.users:
            return
        del self.keys[(id(key.handle), key.side)]
        with self.lock:
            s = key.sleeper
            if s is not None and key in s.keys:
                s.keys.remove(key)
        _core.watch_end(key.handle, key.side, key.unused_wake)
        # No interrupt: the thread sleeps on a key only while it has sleepers
        # and nobody trying, and the last user out was trying.  (Had a stale
        # look kept it, its next wake finds the key gone.)

    def _give_turn(self, key: _Key) -> None:
        """Wake the first coroutine still waiting on ``key`` to try."""
        while key.sleepers:
            fut = key.sleepers.popleft()
            if not fut.done():
                fut.set_result(None)
                key.active += 1
                return

    def on_fired(self, keys: list[_Key]) -> None:
        with self.lock:
            for key in keys:
                key.fired = False
        for key in keys:
            if not key.active:  # else the one trying sleeps again (telling the thread) or passes the turn
                key.unused_wake = True
                self._give_turn(key)

    async def run(self, handle: Any, side: int, attempt: Callable[[], Any], timeout: float | None) -> Any:
        """Try ``attempt`` until it returns something other than _AGAIN,
        sleeping on ``side`` of ``handle`` in between.  _Expired after
        ``timeout`` seconds."""
        deadline = None if timeout is None else self.loop.time() + timeout
        key = self._join(handle, side)
        trying, woken = True, False  # this coroutine counts in key.active while trying
        try:
            while True:
                value = _core.watch_value(handle, side)
                result = attempt()
                if result is not _AGAIN:
                    key.unused_wake = False
                    return result
                key.expected = value
                trying = False
                await self._sleep(key, deadline, front=woken)
                trying = woken = True
        finally:
            if trying:
                key.active -= 1
                if key.sleepers:  # done (or failed): the next one may find something too
                    self._give_turn(key)
            self._leave(key)

    async def _sleep(self, key: _Key, deadline: float | None, front: bool) -> None:
        """Wait for this coroutine's turn (a woken one that found nothing
        keeps its place at the front).  On return it counts in key.active;
        on an exception it does not, and a turn it was given is passed on."""
        fut: asyncio.Future[None] = self.loop.create_future()
        if front:
            key.sleepers.appendleft(fut)
        else:
            key.sleepers.append(fut)
        key.active -= 1
        self._changed(key)
        timer = None
        if deadline is not None:
            timer = self.loop.call_at(deadline, _expire, fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # Given the turn, then cancelled before using it: pass it on.
                key.active -= 1
                key.unused_wake = True
                self._give_turn(key)
            elif not fut.done():
                fut.cancel()
            try:
                key.sleepers.remove(fut)
            except ValueError:
                pass
            if not key.active:
                self._changed(key)
            raise
        finally:
            if timer is not None:
                timer.cancel()


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(_Expired())


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[int, _Waiters]] = weakref.WeakKeyDictionary()


def _waiters() -> _Waiters:
    loop = asyncio.get_running_loop()
    found = _by_loop.get(loop)
    if found is None or found[0] != os.getpid():  # a new loop, or one inherited through fork
        found = (os.getpid(), _Waiters(loop))
        _by_loop[loop] = found
    return found[1]


async def _wait(handle: Any, side: int, attempt: Callable[[], Any], timeout: float | None) -> Any:
    """The fast path, then the sleep: the value of ``attempt()``."""
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be non-negative or None, not {timeout!r}")
    result = attempt()
    if result is not _AGAIN:
        return result
    if timeout == 0:
        raise _Expired
    return await _waiters().run(handle, side, attempt, timeout)


async def _until(handle: Any, side: int, attempt: Callable[[], Any], timeout: float | None,
                 last_look: Callable[[], Any]) -> Any:
    """``_wait``; at the timeout, ``last_look()``: the sync call's
    non-blocking form, which returns what came at the deadline or raises
    (or returns) what the sync call gives on a timeout."""
    try:
        return await _wait(handle, side, attempt, timeout)
    except _Expired:
        pass
    return last_look()  # outside the except block: no "during handling" context


def _again_on(call: Callable[[], Any], *would_block: type[BaseException]) -> Callable[[], Any]:
    """An attempt: ``call()``, or _AGAIN when it raises ``would_block``
    (never for QueueClosed, which is also a ``queue.Empty``)."""

    def attempt() -> Any:
        try:
            return call()
        except QueueClosed:
            raise
        except would_block:
            return _AGAIN

    return attempt


def _once(attempt: Callable[[], Any], outcome: Any) -> Callable[[], Any]:
    """A last look that returns ``outcome`` when ``attempt`` finds nothing."""

    def last_look() -> Any:
        result = attempt()
        return outcome if result is _AGAIN else result

    return last_look


# -- the views ------------------------------------------------------------------


class _View:
    """What every async view shares: the wrapped handle as ``sync``; the
    views of the ends (Channel, Queue, topic ends) close it and are async
    context managers that do."""

    def __init__(self, handle: Any) -> None:
        self.sync = handle

    def __repr__(self) -> str:
        return f"<shmring.aio.{type(self).__name__} of {self.sync!r}>"


class _End(_View):
    def close(self) -> None:
        """Close the wrapped handle (see its ``close``)."""
        self.sync.close()

    async def __aenter__(self: V) -> V:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def _messages(self) -> AsyncIterator[Any]:
        while True:
            try:
                msg = await self.recv()  # type: ignore[attr-defined]
            except Closed:
                return
            yield msg


V = TypeVar("V", bound=_End)


class Channel(_End):
    """The async view of a :class:`shmring.Channel`: ``Channel(ch)``.
    ``async for msg in view`` receives until the writer closes."""

    async def send(self, data: Any, timeout: float | None = None) -> None:
        """Send ``data`` whole, or nothing if cancelled or timed out
        (:class:`shmring.Timeout`)."""
        ch = self.sync
        await _until(ch, _SEND, lambda: None if ch.try_send(data) else _AGAIN, timeout,
                     lambda: ch.send(data, timeout=0))

    async def recv(self, timeout: float | None = None) -> bytes:
        """The next message; :class:`shmring.Closed` at the end of the stream."""
        ch = self.sync

        def attempt() -> Any:
            data = ch.try_recv()
            return _AGAIN if data is None else data

        result: bytes = await _until(ch, _RECV, attempt, timeout, lambda: ch.recv(timeout=0))
        return result

    async def recv_many(self, max_messages: int, timeout: float | None = None) -> list[bytes]:
        """Between 1 and ``max_messages`` messages, as soon as there is one."""
        ch = self.sync
        last_look = lambda: ch.recv_many(max_messages, timeout=0)  # noqa: E731
        result: list[bytes] = await _until(ch, _RECV, _again_on(last_look, Timeout), timeout, last_look)
        return result

    async def recv_array(self, timeout: float | None = None) -> Any:
        """The next message as a new ndarray (see ``Channel.recv_array``)."""
        ch = self.sync
        last_look = lambda: ch.recv_array(timeout=0)  # noqa: E731
        return await _until(ch, _RECV, _again_on(last_look, Timeout), timeout, last_look)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._messages()


class Queue(_End, Generic[T]):
    """The async view of a :class:`shmring.Queue`: ``Queue(q)``.  A timeout
    raises ``queue.Empty`` / ``queue.Full`` as the sync calls do."""

    async def put(self, obj: T, timeout: float | None = None) -> None:
        q = self.sync
        last_look = lambda: q.put_nowait(obj)  # noqa: E731
        await _until(q, _SEND, _again_on(last_look, _queue.Full), timeout, last_look)

    async def put_many(self, items: Iterable[T], timeout: float | None = None) -> None:
        """Put the whole batch, or nothing if cancelled or timed out."""
        q, batch = self.sync, list(items)
        last_look = lambda: q.put_many_nowait(batch)  # noqa: E731
        await _until(q, _SEND, _again_on(last_look, _queue.Full), timeout, last_look)

    async def get(self, timeout: float | None = None) -> T:
        """The next item; :class:`shmring.QueueClosed` once this handle is closed."""
        q = self.sync
        result: T = await _until(q, _RECV, _again_on(q.get_nowait, _queue.Empty), timeout, q.get_nowait)
        return result

    async def get_many(self, max_messages_to_get: int = 1_000_000_000, timeout: float | None = None) -> list[T]:
        """Between 1 and ``max_messages_to_get`` items, as soon as there is one."""
        q = self.sync
        last_look = lambda: q.get_many_nowait(max_messages_to_get)  # noqa: E731
        result: list[T] = await _until(q, _RECV, _again_on(last_look, _queue.Empty), timeout, last_look)
        return result


class Subscription(_End, Generic[T]):
    """The async view of a topic :class:`shmring.Subscription`; ``async for``
    receives until the subscription is closed."""

    async def _recv(self, method: Callable[..., Any], timeout: float | None) -> Any:
        last_look = lambda: method(timeout=0)  # noqa: E731
        return await _until(self.sync, _RECV, _again_on(last_look, Timeout), timeout, last_look)

    async def recv(self, timeout: float | None = None) -> T:
        """The next message (one sent with ``send_obj`` is unpickled);
        :class:`shmring.Lagged` when messages were overwritten first."""
        result: T = await self._recv(self.sync.recv, timeout)
        return result

    async def recv_many(self, max_messages: int, timeout: float | None = None) -> list[T]:
        """Between 1 and ``max_messages`` messages, as soon as there is one."""
        result: list[T] = await self._recv(lambda timeout: self.sync.recv_many(max_messages, timeout), timeout)
        return result

    async def recv_bytes(self, timeout: float | None = None) -> bytes:
        result: bytes = await self._recv(self.sync.recv_bytes, timeout)
        return result

    async def recv_array(self, timeout: float | None = None) -> Any:
        return await self._recv(self.sync.recv_array, timeout)

    def __aiter__(self) -> AsyncIterator[T]:
        return self._messages()


class Publisher(_End, Generic[T]):
    """The async view of a topic :class:`shmring.Publisher`: under policy
    "block" a send waits for the slowest subscriber without blocking the loop."""

    async def _send(self, method: Callable[..., Any], value: Any, timeout: float | None) -> None:
        last_look = lambda: method(value, timeout=0)  # noqa: E731
        await _until(self.sync, _SEND, _again_on(last_look, Timeout), timeout, last_look)

    async def send(self, data: Any, timeout: float | None = None) -> None:
        await self._send(self.sync.send, data, timeout)

    async def send_obj(self, obj: T, timeout: float | None = None) -> None:
        await self._send(self.sync.send_obj, obj, timeout)

    async def send_array(self, a: Any, timeout: float | None = None) -> None:
        await self._send(self.sync.send_array, a, timeout)


class Semaphore(_View):
    """The async view of a :class:`shmring.Semaphore`; ``async with`` takes
    and gives back a permit."""

    async def acquire(self, timeout: float | None = None) -> bool:
        """Take a permit; False after ``timeout`` seconds."""
        native = self.sync._native
        result: bool = await _until(native, _RECV, lambda: True if native.acquire(False) else _AGAIN, timeout,
                                    lambda: native.acquire(False))
        return result

    def release(self, n: int = 1) -> None:
        self.sync.release(n)

    async def __aenter__(self) -> Semaphore:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class Event(_View):
    """The async view of a :class:`shmring.Event`: ``wait`` returns True once
    the event was set after (or before) the call began, even if it was
    cleared again before the coroutine ran; False after ``timeout``."""

    async def wait(self, timeout: float | None = None) -> bool:
        native = self.sync._native
        if native.is_set():
            return True
        generation = _core.watch_value(native, _RECV)

        def attempt() -> Any:
            return True if native.is_set() or _core.watch_value(native, _RECV) != generation else _AGAIN

        result: bool = await _until(native, _RECV, attempt, timeout, _once(attempt, False))
        return result

    def set(self) -> None:
        self.sync.set()

    def clear(self) -> None:
        self.sync.clear()

    def is_set(self) -> bool:
        return bool(self.sync.is_set())


def wrap(obj: Any) -> Any:
    """The async view of a Channel, Queue, topic Publisher or Subscription,
    Semaphore or Event."""
    from . import channel, queue, sync, topic

    views: list[tuple[type, type]] = [
        (channel.Channel, Channel), (queue.Queue, Queue), (topic.Publisher, Publisher),
        (topic.Subscription, Subscription), (sync.Semaphore, Semaphore), (sync.Event, Event),
    ]
    for kind, view in views:
        if isinstance(obj, kind):
            return view(obj)
    raise TypeError(f"no async view of a {type(obj).__name__}")
