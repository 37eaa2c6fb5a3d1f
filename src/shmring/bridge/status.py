"""A running bridge's state, published in shared memory for ``shmring ls``
and ``shmring inspect`` (docs/BRIDGE.md "Status", docs/PROTOCOL.md 9).

Each bridge process keeps one raw segment named ``shmring-bridge-<pid>-<hex>``
holding a JSON document rewritten every half second under a sequence
counter: odd while the document is being rewritten, even when it is whole.
The read-only tools map it without attaching (as they map every object),
copy the document, and take it only if the counter was even and unchanged
around the copy and the document's CRC-32 matches; otherwise they try
again, and after a few tries show why they could not read it.

The segment's lifetime is the library's: the bridge is its only attached
process, so it goes when the bridge closes, and a killed bridge's segment
is removed by ``shmring gc`` like any other.  Nothing here needs Zenoh."""

from __future__ import annotations

import json
import logging
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .. import _core
from .._errors import SegmentError
from ..segment import Segment, SegmentInfo, unique_name, validate_name
from ..sync import AtomicInt64

PREFIX = "shmring-bridge-"
MAGIC = b"SRBS"
LAYOUT = 1
FORMAT = 1  # of the JSON document
# Payload layout: magic (4 bytes), layout (u32), seq (u64), length (u32),
# crc32 (u32), then the document.  Little-endian.
_FIXED = struct.Struct("<4sIQII")
SEQ_OFFSET = 8
DOC_OFFSET = _FIXED.size  # 24
STALE_AFTER_S = 5.0  # a document older than this is shown as stale
_ERROR_CHARS = 200
_TRIES = 20


def status_size(objects: int) -> int:
    """Payload bytes of the status segment of a bridge of ``objects`` objects."""
    return DOC_OFFSET + 4096 + 2048 * objects


class StatusWriter:
    """The bridge's side: one status segment, rewritten by :meth:`write`
    (from one thread only)."""

    def __init__(self, objects: int) -> None:
        self.segment = Segment.create(unique_name(PREFIX.rstrip("-")), status_size(objects))
        self.capacity = self.segment.size - DOC_OFFSET
        self._seq = AtomicInt64(self.segment, SEQ_OFFSET)
        self._count = 0
        self.segment.buf[0:8] = _FIXED.pack(MAGIC, LAYOUT, 0, 0, 0)[0:8]

    @property
    def name(self) -> str:
        return self.segment.name

    def write(self, document: dict[str, Any]) -> None:
        data = json.dumps(document, sort_keys=True).encode()
        if len(data) > self.capacity:  # never expected (see status_size): say so rather than cut JSON
            data = json.dumps({"format": FORMAT, "pid": document.get("pid"), "error": "status too large",
                               "objects": []}).encode()
        buf = self.segment.buf
        # [BS1] odd: a reader that loads this (or a later odd value) retries.
        # A store orders only what comes before it: the full fence after it
        # keeps the bytes below from being written first (pairs with the
        # reader's fence between its copy and its second load of seq).
        self._seq.store(self._count + 1)
        _core.fence()
        buf[DOC_OFFSET:DOC_OFFSET + len(data)] = data
        buf[16:24] = struct.pack("<II", len(data), zlib.crc32(data))
        # [BS2] even again: pairs with the reader's load after its copy; the
        # document and its length and CRC are written before it.
        self._count += 2
        self._seq.store(self._count)

    def close(self) -> None:
        self.segment.close()  # the only attachment: this removes it


@dataclass(frozen=True)
class BridgeStatus:
    """One status segment as read: its document, or why it could not be used."""

    segment: str
    pid: int  # the segment's creator: the bridge process
    alive: bool
    document: dict[str, Any] | None
    problem: str | None  # "stale: ...", "damaged: ..." or "busy: ..."

    def objects(self) -> list[dict[str, Any]]:
        if self.document is None:
            return []
        objects = self.document.get("objects")
        return [o for o in objects if isinstance(o, dict)] if isinstance(objects, list) else []


def _copy(payload: memoryview) -> tuple[int, bytes | None, str | None]:
    """One attempt: (seq seen, the document's bytes or None, why not)."""
    magic, layout, seq, length, crc = _FIXED.unpack(payload[0:DOC_OFFSET])
    if magic == bytes(4):
        return seq, None, "starting: no status written yet"
    if magic != MAGIC or layout != LAYOUT:
        return seq, None, f"damaged: not a bridge status segment of layout {LAYOUT}"
    if seq % 2:
        return seq, None, "busy: being rewritten"
    if length > len(payload) - DOC_OFFSET:
        return seq, None, f"damaged: a document of {length} bytes does not fit"
    # The loads of seq are plain 8-byte copies from a read-only mapping
    # (where no atomic of the library can be placed), ordered around the
    # copy by full fences: this one after the first load (pairs with the
    # writer's even store [BS2]), the next before the second load (pairs
    # with the writer's fence after its odd store [BS1]); the CRC is what
    # catches a copy torn however the loads went.
    _core.fence()
    data = bytes(payload[DOC_OFFSET:DOC_OFFSET + length])
    _core.fence()
    if struct.unpack("<Q", payload[SEQ_OFFSET:SEQ_OFFSET + 8])[0] != seq:
        return seq, None, "busy: rewritten while read"
    if zlib.crc32(data) != crc:
        return seq, None, "damaged: the document's CRC-32 does not match"
    return seq, data, None


def parse_status(payload: memoryview, pause: Callable[[float], None] = time.sleep) -> tuple[dict[str, Any] | None, str | None]:
    """The document in a status segment's payload, or why there is none.
    A read that sees the document being rewritten is tried again after
    ``pause``; a damaged one too (a torn copy looks damaged), a few times."""
    why: str | None = "busy"
    for attempt in range(_TRIES):
        seq, data, why = _copy(payload)
        if data is not None:
            if seq == 0:
                return None, "starting: no status written yet"
            try:
                document = json.loads(data)
            except ValueError as e:
                return None, f"damaged: not JSON ({e})"
            if not isinstance(document, dict):
                return None, "damaged: not a JSON object"
            return document, None
        if why is not None and why.startswith(("damaged: not a bridge", "starting")):
            break
        pause(0.001 * (attempt + 1))
    return None, why


def read_status(name: str, now: float | None = None) -> BridgeStatus:
    """Status segment ``name``, mapped read-only without attaching.  Raises
    ``OSError`` if it cannot be opened (gone, not readable) and
    :class:`shmring.SegmentError` if its segment header is not sound."""
    mapping = _core.open(validate_name(name), True, True, False)
    try:
        info = SegmentInfo.from_mapping(mapping)
        document: dict[str, Any] | None
        problem: str | None
        with memoryview(mapping) as view, view[_core.HEADER_SIZE:] as payload:
            if info.kind != "segment" or len(payload) < DOC_OFFSET:
                document, problem = None, "damaged: not a bridge status segment"
            else:
                document, problem = parse_status(payload)
    finally:
        mapping.close()
    if not info.alive:
        problem = f"stale: bridge process {info.creator_pid} is gone"
    elif problem is None and document is not None:
        updated = document.get("updated")
        age = (time.time() if now is None else now) - updated if isinstance(updated, (int, float)) else None
        if age is None or age > STALE_AFTER_S:
            problem = "stale: not updated for " + ("ever" if age is None else f"{age:.0f} s")
    return BridgeStatus(name, info.creator_pid, info.alive, document, problem)


def bridges(names: Iterable[str]) -> list[BridgeStatus]:
    """Every bridge status segment among ``names`` (entries of /dev/shm);
    those that cannot be opened are left out, damaged ones are kept."""
    found = []
    for name in names:
        if not name.startswith(PREFIX):
            continue
        try:
            found.append(read_status(name))
        except SegmentError as e:
            found.append(BridgeStatus(name, 0, False, None, f"damaged: {e}"))
        except (OSError, ValueError):
            continue  # gone meanwhile, another program's, or not readable
    return found


def bridged(statuses: Iterable[BridgeStatus]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(kind, name) -> what each bridge says of that object, with the
    bridge's pid, its segment and its problem (if any) added."""
    result: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for status in statuses:
        for obj in status.objects():
            kind, name = obj.get("kind"), obj.get("name")
            if isinstance(kind, str) and isinstance(name, str):
                entry = dict(obj, pid=status.pid, status_segment=status.segment, problem=status.problem,
                             listen=(status.document or {}).get("listen"),
                             connect=(status.document or {}).get("connect"))
                result.setdefault((kind, name), []).append(entry)
    return result


def marker(entries: list[dict[str, Any]]) -> str:
    """A short text for a listing: "bridged out", "bridged in", "bridged
    out, stale"..."""
    parts = []
    for e in entries:
        text = "bridged " + ("out" if e.get("direction") == "export" else "in")
        if e.get("problem"):
            text += ", " + str(e["problem"]).split(":")[0]
        elif e.get("link") not in (None, "up"):
            text += f", link {e['link']}"
        parts.append(text)
    return "; ".join(parts)


class LastErrors(logging.Handler):
    """Keeps the last warning or error the bridge logged about each object
    (its messages start with "KIND NAME: ")."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: dict[tuple[str, str], dict[str, Any]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad log call must not break the bridge
            return
        head, sep, rest = message.partition(": ")
        kind, _, name = head.partition(" ")
        if sep and name:
            self.last[(kind, name)] = {"message": rest[:_ERROR_CHARS], "time": record.created,
                                       "level": record.levelname.lower()}


def link_state(status: dict[str, Any], idle_s: float | None) -> tuple[str, str]:
    """(state, how it is known) of one bridged object: Zenoh's matching
    status where the object has a publisher, whether requests are answered
    for an imported queue, else when traffic last moved."""
    if "matched" in status:
        return ("up" if status["matched"] else "down"), "zenoh matching"
    if "connected" in status:
        return ("up" if status["connected"] else "down"), "replies"
    if idle_s is None:
        return "unknown", "no traffic yet"
    return ("up" if idle_s <= STALE_AFTER_S else "idle"), f"traffic {idle_s:.0f} s ago"


def counters_of(status: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in status.items() if isinstance(v, int) and not isinstance(v, bool)}


class StatusPublisher:
    """A thread that rewrites the status segment from ``collect()`` (the
    bridge's per-object status) every ``interval`` seconds, and logs every
    change of an object's link state with how many there were."""

    def __init__(self, collect: Callable[[], dict[str, dict[str, Any]]], header: dict[str, Any], objects: int,
                 interval: float = 0.5) -> None:
        self.collect, self.header, self.interval = collect, header, interval
        self.writer = StatusWriter(objects)
        self.errors = LastErrors()
        self._traffic: dict[str, tuple[dict[str, int], float | None]] = {}
        self._links: dict[str, str] = {}
        self.link_changes: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bridge status", daemon=True)
        self._started = time.time()

    def start(self) -> None:
        logging.getLogger("shmring.bridge").addHandler(self.errors)
        self._round()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._round()

    def _round(self) -> None:
        try:
            self.publish()
        except Exception as e:  # e.g. a counter table changing as it is read: the next round retries
            logging.getLogger("shmring.bridge").debug("bridge: status not written this round: %r", e)

    def _idle(self, key: str, counters: dict[str, int], now: float) -> float | None:
        """Seconds since the object's counters last moved (None: not since
        the bridge started)."""
        before = self._traffic.get(key)
        if before is None:
            self._traffic[key] = (counters, None)
        elif before[0] != counters:
            self._traffic[key] = (counters, now)
        moved = self._traffic[key][1]
        return None if moved is None else now - moved

    def _object(self, key: str, status: dict[str, Any], now: float) -> dict[str, Any]:
        kind, _, name = key.partition(":")
        counters = counters_of(status)
        link, how = link_state(status, self._idle(key, counters, now))
        previous = self._links.get(key)
        if previous is not None and previous != link:
            self.link_changes[key] = self.link_changes.get(key, 0) + 1
            logging.getLogger("shmring.bridge").info("%s %s: link %s (was %s; %d changes)", kind, name, link,
                                                     previous, self.link_changes[key])
        self._links[key] = link
        detail = {k: v for k, v in status.items() if k not in counters and k not in ("direction", "matched", "connected")}
        return {"kind": kind, "name": name, "direction": status.get("direction"), "link": link, "link_by": how,
                "link_changes": self.link_changes.get(key, 0), "counters": counters, "detail": detail,
                "last_error": self.errors.last.get((kind, name))}

    def document(self) -> dict[str, Any]:
        now = time.monotonic()
        objects = [self._object(key, status, now) for key, status in sorted(self.collect().items())]
        return dict(self.header, format=FORMAT, started=self._started, updated=time.time(), objects=objects)

    def publish(self) -> None:
        self.writer.write(self.document())

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        logging.getLogger("shmring.bridge").removeHandler(self.errors)
        self.writer.close()
