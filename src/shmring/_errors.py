"""Exception classes of shmring.

Every exception shmring raises on purpose is a subclass of :class:`Error`,
and also of the standard exception a caller would catch for the same
situation (``ValueError`` for bad data, ``PermissionError`` for a foreign
owner, ``BufferError`` for a mapping still in use, ...).

The C extension raises these by code: ``ERROR_BY_CODE`` maps the
``SHMRING_ERR_*`` codes of ``include/shmring/base.h`` to classes.
"""

from __future__ import annotations

import queue


class Error(Exception):
    """Base class of every shmring error."""


class SegmentError(Error):
    """An existing segment cannot be used; ``name`` says which."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class ForeignSegmentError(SegmentError, ValueError):
    """The object is not a shmring segment: its magic number is wrong."""


class SegmentNotReadyError(SegmentError):
    """The segment is empty, or its creator has not finished initialising it."""


class TruncatedSegmentError(SegmentError, ValueError):
    """The segment is smaller than its header says: it was truncated."""


class IncompatibleSegmentError(SegmentError):
    """The segment was made by another layout version or another ABI."""


class CorruptedError(SegmentError, ValueError):
    """Shared data failed a consistency check: a header checksum, a length,
    an index.  Raised instead of reading out of bounds."""


class ForeignOwnerError(SegmentError, PermissionError):
    """The segment belongs to another user (pass ``allow_other_owner=True``
    to accept it)."""


class SegmentBusyError(SegmentError, BlockingIOError):
    """Attaching waited too long for another process holding the segment
    exclusively: its last user was removing it, or a tool held it."""


class BufferInUseError(Error, BufferError):
    """A mapping cannot be closed while memoryviews exported from it live."""


# Codes of enum shmring_result in include/shmring/base.h.
ERROR_BY_CODE: dict[int, type[SegmentError]] = {
    2: ForeignSegmentError,
    3: SegmentNotReadyError,
    4: TruncatedSegmentError,
    5: IncompatibleSegmentError,
    6: IncompatibleSegmentError,
    7: CorruptedError,
    8: CorruptedError,
    9: ForeignOwnerError,
    11: SegmentBusyError,
}


class Timeout(Error, TimeoutError):
    """A blocking call reached its timeout."""


class Closed(Error, EOFError):
    """The channel is closed: the writer ended the stream (after the reader
    drained it), the reader went away, or this handle was closed."""


class PeerGone(Error, ConnectionError):
    """The process at the other end died without closing: a reader gets every
    committed message first, then this."""


class RoleTaken(Error, RuntimeError):
    """Another live process (or another handle in this process) already holds
    that end of the channel."""


class OwnerDied(Error, RuntimeError):
    """The lock was granted, but its previous holder died holding it: the
    data it guards may be half-updated.  Repair it, then (for a Mutex) call
    ``mark_consistent()`` before releasing."""


class LockNotRecoverable(Error, RuntimeError):
    """A holder died and the next one released the lock without calling
    ``mark_consistent()``: the lock can no longer be used."""


class QueueClosed(Error, ValueError, queue.Empty):
    """This handle of a :class:`~shmring.Queue` was closed (by ``close()`` in
    this process): its calls raise this.  A ``ValueError``, as
    ``multiprocessing.Queue`` raises, and a ``queue.Empty``, so that a
    faster-fifo style consumer thread looping on ``get_many(timeout=...)``
    and catching ``Empty`` sees it too; such a loop must look at
    ``is_closed()`` before it retries, or it retries for ever."""


class Lagged(Error):
    """A topic subscriber missed messages.  ``missed`` says how many.
    Either it fell so far behind that publishers overwrote messages it had
    not read (``policy="overwrite"``; it resumes at the oldest message still
    held), or it read a gap marker (``upstream`` is True): ``missed``
    messages were lost before they reached the topic, a loss that a
    publisher reported with ``Publisher.send_gap`` (a bridge's importer
    does, docs/BRIDGE.md); it reads on past the marker."""

    def __init__(self, missed: int, upstream: bool = False) -> None:
        if upstream:
            text = f"{missed} message(s) were lost before they reached the topic (a gap marker)"
        else:
            text = f"subscriber fell behind: {missed} message(s) were overwritten before it read them"
        super().__init__(text)
        self.missed = missed
        self.upstream = upstream

    def __reduce__(self) -> tuple[type[Lagged], tuple[int, bool]]:
        return (type(self), (self.missed, self.upstream))
