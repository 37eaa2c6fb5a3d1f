"""POSIX shared-memory segments with a validated header.

A :class:`Segment` is one ``shm_open`` object, mapped whole: a 128-byte
header (magic, layout version, ABI, kind, true size, creator identity,
checksum; see docs/PROTOCOL.md) followed by the payload, which ``buf``
exposes as a writable memoryview.

The segment's lifetime belongs to its creator: the handle returned by
:meth:`Segment.create` unlinks the name when its ``with`` block ends; every
other handle only unmaps.  shmring never registers segments with
``multiprocessing.resource_tracker``, so no other process unlinks them
behind the creator's back and no "leaked shared_memory" warning appears.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from . import _core
from ._errors import BufferInUseError, SegmentNotReadyError

__all__ = ["Segment", "SegmentInfo", "KIND_NAMES", "validate_name", "unique_name"]

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
    alive: bool

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> SegmentInfo:
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
        )


class Segment:
    """One POSIX shared-memory segment: header + payload.

    Make one with :meth:`create` or :meth:`open`, not with the constructor.
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
    def create(cls, name: str | None, size: int, mode: int = 0o600) -> Segment:
        """Create a new segment with ``size`` payload bytes.

        ``O_CREAT | O_EXCL``: an existing name raises ``FileExistsError``.
        The pages are reserved at once, so a full /dev/shm raises ``OSError``
        (ENOSPC) here rather than SIGBUS later.  ``name=None`` picks a unique
        name.  The returned handle owns the segment: leaving its ``with``
        block (or calling :meth:`unlink`) removes the name.
        """
        return cls._create(name, size, mode, _core.KIND_RAW)

    @classmethod
    def _create(cls, name: str | None, size: int, mode: int, kind: int) -> Segment:
        bare = unique_name() if name is None else validate_name(name)
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"size must be int, not {type(size).__name__}")
        if size < 1:
            raise ValueError(f"size must be at least 1 byte, got {size}")
        if not isinstance(mode, int) or not 0 <= mode <= 0o777:
            raise ValueError(f"mode must be permission bits between 0 and 0o777, got {mode!r}")
        mapping = _core.create(bare, size, kind, mode)
        return cls._wrap(bare, mapping, owner=True, allow_other_owner=False)

    @classmethod
    def open(cls, name: str, *, readonly: bool = False, allow_other_owner: bool = False) -> Segment:
        """Attach to an existing segment after checking that it is ours.

        Raises ``FileNotFoundError`` for a missing name and a subclass of
        :class:`shmring.SegmentError` for a segment that is foreign,
        truncated, of another version or ABI, corrupted, or owned by
        another user (unless ``allow_other_owner``).
        """
        bare = validate_name(name)
        deadline = time.monotonic() + _READY_WAIT_S
        while True:
            try:
                mapping = _core.open(bare, readonly, allow_other_owner)
                break
            except SegmentNotReadyError:
                # The creator may be between shm_open and publishing the header.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.002)
        return cls._wrap(bare, mapping, owner=False, allow_other_owner=allow_other_owner)

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
    def owner(self) -> bool:
        """True in the creating process for the handle that created it."""
        return self._owner_pid == os.getpid()

    def info(self) -> SegmentInfo:
        """The header fields and whether the creator is still alive."""
        return SegmentInfo.from_header(self._mapping.header())

    # -- lifetime -----------------------------------------------------------

    def close(self) -> None:
        """Unmap.  Raises :class:`shmring.BufferInUseError` while
        memoryviews taken from :attr:`buf` are still alive; release them
        (``mv.release()`` or ``with buf[...] as mv``) first."""
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
        """Remove the segment's name.  Processes that have it mapped keep
        their mappings; no new process can open it."""
        _core.unlink(self._name)
        self._owner_pid = None

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.close()
        finally:
            if self.owner:
                try:
                    self.unlink()
                except FileNotFoundError:
                    pass

    # -- pickling: by name, re-attached in the receiving process ------------

    def __reduce__(self) -> tuple[Any, ...]:
        if self._mapping.closed:
            raise ValueError(f"cannot pickle closed segment {self._name!r}")
        return (_reopen, (self._name, self._mapping.readonly, self._allow_other_owner))

    def __repr__(self) -> str:
        state = "closed" if self._mapping.closed else f"size={self.size}"
        return f"<shmring.Segment {self._name!r} {state}{' owner' if self.owner else ''}>"


def _reopen(name: str, readonly: bool, allow_other_owner: bool) -> Segment:
    return Segment.open(name, readonly=readonly, allow_other_owner=allow_other_owner)
