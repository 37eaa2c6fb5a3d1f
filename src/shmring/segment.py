"""POSIX shared-memory segments with a validated header.

A :class:`Segment` is one ``shm_open`` object, mapped whole: a header page
(magic, layout version, ABI, kind, true size, creator identity, checksum,
the roster of attached processes; see docs/PROTOCOL.md) followed by the
payload, which ``buf`` exposes as a writable memoryview.

Lifetime: a segment lives while any live process is attached to it.  Every
handle (a created one, an opened one, an unpickled one, a forked child's
copy) is an attachment, held until :meth:`shmring.Segment.close`, until the handle
is garbage collected, or until its process ends, however it ends; the last
one to leave removes the segment, unless it was made ``persistent``.
shmring never registers segments with ``multiprocessing.resource_tracker``,
so no other process unlinks them behind their users' backs and no "leaked
shared_memory" warning appears.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from . import _core
from ._errors import BufferInUseError, SegmentNotReadyError

__all__ = ["Segment", "SegmentInfo", "Attachment", "KIND_NAMES", "NamedObject", "validate_name", "unique_name"]

H = TypeVar("H")

KIND_NAMES = {
    _core.KIND_RAW: "segment",
    _core.KIND_CHANNEL: "channel",
    _core.KIND_SYNC: "sync",
    _core.KIND_QUEUE: "queue",
    _core.KIND_TOPIC: "topic",
    _core.KIND_QUEUE_CHUNK: "queue-chunk",
}

_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_NAME_MAX = 254  # NAME_MAX (255) less the leading '/'

# How long open() waits for a creator that is between shm_open and publishing
# the header before it calls the segment not ready.
_READY_WAIT_S = 0.2


def validate_name(name: str) -> str:
    """Return ``name`` without a leading '/', or raise ``ValueError``.

    Names are 1 to 254 characters from ``[A-Za-z0-9._-]``, not starting with
    '.', so that they are portable file names under /dev/shm.
    """
    if not isinstance(name, str):
        raise TypeError(f"segment name must be str, not {type(name).__name__}")
    bare = name[1:] if name.startswith("/") else name
    if not bare or len(bare) > _NAME_MAX or not _NAME_RE.fullmatch(bare):
        raise ValueError(
            f"invalid segment name {name!r}: 1 to {_NAME_MAX} characters from "
            "letters, digits, '.', '_' and '-', not starting with '.'"
        )
    return bare


def unique_name(prefix: str = "shmring") -> str:
    """A fresh name, unlikely to collide: ``prefix-<pid>-<random hex>``."""
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class Attachment:
    """One entry of a segment's roster: a process attached to it."""

    pid: int
    alive: bool
    attached_ns: int  # CLOCK_REALTIME nanoseconds


@dataclass(frozen=True)
class SegmentInfo:
    """The header of a segment, as the CLI shows it."""

    name: str
    kind: str
    size: int  # payload bytes
    total_size: int  # header + payload
    version: int
    creator_pid: int
    creator_start: int
    creator_uid: int
    created_ns: int
    alive: bool  # the creator
    persistent: bool = False
    users: tuple[Attachment, ...] = ()  # the roster (live and dead entries)
    unlisted_users: int = 0  # attachments that found the roster full

    @classmethod
    def from_mapping(cls, mapping: _core.Mapping) -> SegmentInfo:
        header = mapping.header()
        return cls(
            name=header["name"],
            kind=KIND_NAMES.get(header["kind"], str(header["kind"])),
            size=header["total_size"] - header["header_size"],
            total_size=header["total_size"],
            version=header["version"],
            creator_pid=header["creator_pid"],
            creator_start=header["creator_start"],
            creator_uid=header["creator_uid"],
            created_ns=header["created_ns"],
            alive=_core.process_alive(header["creator_pid"], header["creator_start"]),
            persistent=header["persistent"],
            users=tuple(Attachment(pid, alive, since) for pid, alive, since in mapping.users()),
            unlisted_users=header["roster_overflow"],
        )

    @property
    def live_users(self) -> list[int]:
        """Pids of the listed processes that are still running."""
        return sorted({u.pid for u in self.users if u.alive})


class Segment:
    """One POSIX shared-memory segment: header + payload.

    Make one with :meth:`create` or :meth:`open`, not with the constructor.
    Each handle is one attachment (see the module doc).
    """

    __slots__ = ("_name", "_mapping", "_buf", "_owner_pid", "_allow_other_owner", "__weakref__")

    _name: str
    _mapping: _core.Mapping
    _buf: memoryview
    _owner_pid: int | None
    _allow_other_owner: bool

    def __init__(self, *_: object, **__: object) -> None:
        raise TypeError("use Segment.create(name, size) or Segment.open(name)")

    @classmethod
    def _wrap(cls, name: str, mapping: _core.Mapping, owner: bool, allow_other_owner: bool) -> Segment:
        self = object.__new__(cls)
        self._name = name
        self._mapping = mapping
        self._buf = memoryview(mapping)[_core.HEADER_SIZE :]
        self._owner_pid = os.getpid() if owner else None
        self._allow_other_owner = allow_other_owner
        return self

    @classmethod
    def create(cls, name: str | None, size: int, mode: int = 0o600, *, persistent: bool = False) -> Segment:
        """Create a new segment with ``size`` payload bytes.

        ``O_CREAT | O_EXCL``: an existing name raises ``FileExistsError``.
        The pages are reserved at once, so a full /dev/shm raises ``OSError``
        (ENOSPC) here rather than SIGBUS later.  ``name=None`` picks a unique
        name.  The segment lives while any process is attached to it; the
        last one to leave removes it, unless ``persistent`` (then only
        :meth:`unlink`, ``shmring rm`` or a reboot remove it).
        """
        return cls._create(name, size, mode, _core.KIND_RAW, persistent)

    @classmethod
    def _create(
        cls, name: str | None, size: int, mode: int, kind: int, persistent: bool = False, object_type: int = 0
    ) -> Segment:
        bare = unique_name() if name is None else validate_name(name)
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"size must be int, not {type(size).__name__}")
        if size < 1:
            raise ValueError(f"size must be at least 1 byte, got {size}")
        check_create(mode, persistent)
        mapping = _core.create(bare, size, kind, mode, object_type)
        return cls._wrap(bare, finish_create(mapping, persistent), True, False)

    @classmethod
    def open(
        cls, name: str, *, readonly: bool = False, allow_other_owner: bool = False, timeout: float | None = 0.0
    ) -> Segment:
        """Attach to an existing segment after checking that it is ours.

        Raises ``FileNotFoundError`` for a missing name (or a segment whose
        last user removed it) and a subclass of :class:`shmring.SegmentError`
        for a segment that is foreign, truncated, of another version or ABI,
        corrupted, or owned by another user (unless ``allow_other_owner``).

        ``timeout``: how long to wait for a segment that does not exist yet,
        or is still being made by another process (``SegmentNotReadyError``):
        0 (the default) tries once, a number of seconds waits up to that
        long, ``None`` waits as long as it takes; at the end the error of the
        last try is raised.  Nothing can be slept on before the segment
        exists, so the wait looks again after 1 ms, then at growing intervals
        up to 50 ms (Ctrl-C interrupts it).  Any other error is raised at
        once.
        """
        bare = validate_name(name)
        return cls._wrap(bare, attach_when_made(bare, readonly, allow_other_owner, timeout), False, allow_other_owner)

    # -- properties ---------------------------------------------------------

    @property
    def name(self) -> str:
        """The segment's name, without the leading '/'."""
        return self._name

    @property
    def buf(self) -> memoryview:
        """The payload as a memoryview (read-only if opened ``readonly``)."""
        if self._mapping.closed:
            raise ValueError(f"segment {self._name!r} is closed")
        return self._buf

    @property
    def size(self) -> int:
        """Payload size in bytes (the header is not counted)."""
        return self._mapping.size - _core.HEADER_SIZE

    @property
    def closed(self) -> bool:
        return self._mapping.closed

    @property
    def kind(self) -> str:
        """What the segment holds: "segment", "channel", "queue", "topic", "sync"..."""
        kind = self._mapping.header()["kind"]
        return KIND_NAMES.get(kind, str(kind))

    @property
    def owner(self) -> bool:
        """True in the creating process for the handle that created it."""
        return self._owner_pid == os.getpid()

    @property
    def persistent(self) -> bool:
        """True: the last process to leave does not remove the segment.
        Settable (by any attached process with write access)."""
        return self._mapping.persistent

    @persistent.setter
    def persistent(self, value: bool) -> None:
        self._mapping.persistent = value

    def info(self) -> SegmentInfo:
        """The header fields, whether the creator is alive, and who is attached."""
        return SegmentInfo.from_mapping(self._mapping)

    # -- lifetime -----------------------------------------------------------

    def close(self) -> None:
        """Leave and unmap: this handle's attachment ends, and if it was the
        last one anywhere the segment is removed (unless persistent).
        Raises :class:`shmring.BufferInUseError` while memoryviews taken
        from :attr:`buf` are still alive; release them (``mv.release()`` or
        ``with buf[...] as mv``) first."""
        if self._mapping.closed:
            return
        # Our own view of the payload counts as an export: drop it first, and
        # take it back if the mapping turns out to be in use elsewhere.
        try:
            self._buf.release()
        except BufferError:
            raise BufferInUseError(
                f"cannot close segment {self._name!r}: buffers taken from its memoryview "
                "(ndarray, memoryview(...)) are still alive; release them first"
            ) from None
        try:
            self._mapping.close()
        except BaseException:
            self._buf = memoryview(self._mapping)[_core.HEADER_SIZE :]
            raise

    def unlink(self) -> None:
        """Remove the segment's name now.  Processes attached keep using it
        (POSIX semantics); no new process can open it by name."""
        _core.unlink(self._name)

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pickling: re-attached in the receiving process ------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        if self._mapping.closed:
            raise ValueError(f"cannot pickle closed segment {self._name!r}")
        return (reattach, (self._name, self._mapping.readonly, self._allow_other_owner, handoff(self._mapping)))

    def __repr__(self) -> str:
        state = "closed" if self._mapping.closed else f"size={self.size}"
        return f"<shmring.Segment {self._name!r} {state}{' owner' if self.owner else ''}>"


class SegmentProperties:
    """What every handle over a segment shows of it: its name and whether it
    is persistent."""

    _segment: Segment

    @property
    def name(self) -> str:
        """The object's name (its segment's), without the leading '/'."""
        return self._segment.name

    @property
    def persistent(self) -> bool:
        """True: the last process to leave does not remove the object.
        Settable (by any attached process with write access)."""
        return self._segment.persistent

    @persistent.setter
    def persistent(self, value: bool) -> None:
        self._segment.persistent = value


class NamedObject(SegmentProperties):
    """The lifetime plumbing a channel, a queue and a topic share: who made
    it, removing its name, and ``with`` as a way to close the handle."""

    @property
    def owner(self) -> bool:
        """True for the handle that created the object, in its process."""
        return self._segment.owner

    def unlink(self) -> None:
        """Remove the object's name now: no new process can attach by name;
        processes attached keep using it, and the last of them to leave
        removes what is left (a queue's overflow chunks)."""
        self._segment.unlink()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: H) -> H:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reattach(name: str, readonly: bool, allow_other_owner: bool, fd: Any = None) -> Segment:
    """A pickled handle's new attachment (see :func:`attach`)."""
    return Segment._wrap(name, attach(name, readonly, allow_other_owner, fd), False, allow_other_owner)


def adopt(segment: Segment, kind: str, build: Callable[[Segment], H]) -> H:
    """``build(segment)`` for a segment that must hold a ``kind``; the
    segment is closed if it does not, or if ``build`` fails."""
    try:
        found = segment.kind
        if found != kind:
            raise ValueError(f"segment {segment.name!r} is a {found}, not a {kind}")
        return build(segment)
    except BaseException:
        segment.close()
        raise


# -- the plumbing every kind of object shares ---------------------------------------


def check_create(mode: object, persistent: object = False) -> None:
    """Validate the arguments every kind's create() shares."""
    if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o777:
        raise ValueError(f"mode must be permission bits between 0 and 0o777, got {mode!r}")
    if not isinstance(persistent, bool):
        raise TypeError(f"persistent must be a bool, not {type(persistent).__name__}")


def finish_create(mapping: _core.Mapping, persistent: bool) -> _core.Mapping:
    """Mark a freshly created segment persistent if asked (its creator is
    attached, so nobody can remove it in between)."""
    if persistent:
        mapping.persistent = True
    return mapping


def attach(name: str, readonly: bool, allow_other_owner: bool, fd: _Handoff | None = None) -> _core.Mapping:
    """A new attachment to segment ``name``: through ``fd`` (a descriptor
    handed over by the process that started this one, see :func:`handoff`),
    else by name."""
    if fd is not None:
        return _core.open_fd(fd.take(), name, readonly, allow_other_owner)
    deadline = time.monotonic() + _READY_WAIT_S
    while True:
        try:
            return _core.open(name, readonly, allow_other_owner)
        except SegmentNotReadyError:
            # The creator may be between shm_open and publishing the header.
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.002)
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                exc.errno,
                f"no shmring segment {name!r}: it was never made, or every process using it has left "
                "(the last one removes it; pass persistent=True to keep it)",
                exc.filename,
            ) from None


def open_timeout(timeout: float | None) -> float | None:
    """``timeout`` of an ``open``, checked: seconds (0: one try), or None (no limit)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if not timeout >= 0:  # (NaN too)
        raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
    return float(timeout)


def attach_when_made(bare: str, readonly: bool, allow_other_owner: bool, timeout: float | None) -> _core.Mapping:
    """attach(), looked for again until ``timeout`` while the segment is
    missing or still being made (Segment.open says how)."""
    limit = open_timeout(timeout)
    deadline = None if limit is None else time.monotonic() + limit
    pause = 0.001
    while True:
        try:
            return attach(bare, readonly, allow_other_owner)
        except (FileNotFoundError, SegmentNotReadyError):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise
            time.sleep(pause if left is None else min(pause, left))
            pause = min(pause * 2, 0.05)


class _Handoff:
    """An attachment's descriptor handed to a child being started.  The
    child's first handle of that attachment takes it over; another handle
    of the same attachment in the same arguments (pickled once: the same
    object) gets a duplicate."""

    def __init__(self, dupfd: Any) -> None:
        self._dupfd = dupfd
        self._fd: int | None = None

    def take(self) -> int:
        if self._fd is None:
            self._fd = int(self._dupfd.detach())
            return self._fd
        return os.dup(self._fd)


# The descriptors handed to each child being started, one per attachment:
# multiprocessing refuses a descriptor listed twice.
_handoffs: weakref.WeakKeyDictionary[Any, dict[int, _Handoff]] = weakref.WeakKeyDictionary()


def handoff(mapping: _core.Mapping) -> _Handoff | None:
    """While ``multiprocessing`` starts a child (spawn, forkserver) and
    pickles its arguments: a descriptor of our attachment for the child, so
    that the segment stays alive until the child has attached, whatever this
    process does meanwhile.  Otherwise None: the handle re-attaches by name,
    which needs the segment to still exist when it is unpickled."""
    from multiprocessing import context, reduction

    popen = context.get_spawning_popen()
    if popen is None or mapping.lease_fd < 0:
        return None
    per_child = _handoffs.setdefault(popen, {})
    if mapping.lease_fd not in per_child:
        per_child[mapping.lease_fd] = _Handoff(reduction.DupFd(mapping.lease_fd))
    return per_child[mapping.lease_fd]


# -- process exit: every attachment ends --------------------------------------------


class _ExitHook:
    """Anchor for multiprocessing's after-fork registry (it keeps weak references)."""


_exit_hook = _ExitHook()


def _leave_at_mp_exit() -> None:
    # A multiprocessing child runs its exit finalizers right after its
    # target returns, before the interpreter would wait for its other
    # threads: wait for them first, as an ordinary exit does before atexit.
    me = threading.current_thread()
    for t in threading.enumerate():
        if t is not me and not t.daemon:
            t.join()
    _core._leave_all()


def _install_mp_exit_hook(_: object = None) -> None:
    # multiprocessing's children end with os._exit(), which skips atexit:
    # its own exit finalizers are what they run.  The registry is emptied in
    # every new child, hence the after-fork re-registration.  Priority 0: a
    # process that is ending leaves before it waits for its children (which
    # hold attachments of their own).
    from multiprocessing import util

    util.Finalize(None, _leave_at_mp_exit, exitpriority=0)


def _install_exit_hooks() -> None:
    from multiprocessing import util

    atexit.register(_core._leave_all)
    _install_mp_exit_hook()
    util.register_after_fork(_exit_hook, _install_mp_exit_hook)
    os.register_at_fork(after_in_child=_core._after_fork_child)


_install_exit_hooks()
