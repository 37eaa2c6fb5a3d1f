"""shmring: lock-free shared-memory IPC between processes on one machine.

The shared-memory layout and every lock-free operation live in the C header
``include/shmring.h`` (one header per part in ``include/shmring/``; see
:func:`get_include`); this package is a thin, idiomatic Python layer over it.
"""

from __future__ import annotations

from pathlib import Path

from ._errors import (
    BufferInUseError,
    Closed,
    CorruptedError,
    Error,
    ForeignOwnerError,
    ForeignSegmentError,
    IncompatibleSegmentError,
    Lagged,
    LockNotRecoverable,
    OwnerDied,
    PeerGone,
    QueueClosed,
    RoleTaken,
    SegmentError,
    SegmentNotReadyError,
    Timeout,
    TruncatedSegmentError,
)
from .channel import Channel
from .queue import JoinableQueue, Queue, SimpleQueue
from .segment import Segment, SegmentInfo
from .topic import Publisher, Subscription, Topic
from .sync import AtomicFlag, AtomicInt32, AtomicInt64, Condition, Event, Mutex, Semaphore, SpinLock, fence

__version__ = "0.1.0"

__all__ = [
    "AtomicFlag",
    "AtomicInt32",
    "AtomicInt64",
    "BufferInUseError",
    "Channel",
    "Closed",
    "Condition",
    "CorruptedError",
    "Error",
    "Event",
    "ForeignOwnerError",
    "ForeignSegmentError",
    "IncompatibleSegmentError",
    "JoinableQueue",
    "Lagged",
    "LockNotRecoverable",
    "Mutex",
    "OwnerDied",
    "PeerGone",
    "Publisher",
    "Queue",
    "QueueClosed",
    "RoleTaken",
    "Segment",
    "SegmentError",
    "SegmentInfo",
    "SegmentNotReadyError",
    "Semaphore",
    "SimpleQueue",
    "SpinLock",
    "Subscription",
    "Timeout",
    "Topic",
    "TruncatedSegmentError",
    "fence",
    "get_include",
]


def get_include() -> str:
    """The folder holding ``shmring.h`` (and the headers it includes, in
    ``shmring/``), for compiling C or C++ peers
    (``cc -I$(python -c 'import shmring; print(shmring.get_include())')``)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "include", here.parent.parent / "include"):
        if (candidate / "shmring.h").is_file() and (candidate / "shmring" / "base.h").is_file():
            return str(candidate)
    raise FileNotFoundError("shmring.h is not installed beside the shmring package")
