"""What every shmring object of this machine is doing, read from shared
memory alone: for ``shmring top``, ``shmring inspect --watch``, ``shmring
stats`` and scripts.

Reading never takes a lock, never attaches and never writes a byte: each
segment is mapped read-only (``Mapping`` without an attachment), its
counters are loaded relaxed, and it is unmapped again.  A snapshot is
therefore a little blurred (the counters of one object are not read at one
instant), which a monitor can afford; the observed processes pay nothing.

Rates come from two snapshots: :func:`rates` divides the counters' deltas by
the time between them.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import _core
from ._errors import ForeignSegmentError, SegmentError, SegmentNotReadyError
from .bridge.status import PREFIX as BRIDGE_PREFIX
from .bridge.status import bridged, bridges
from .segment import SegmentInfo, validate_name

SHM_DIR = "/dev/shm"

# The counters a rate is computed from, per object: (messages in, messages
# out, bytes in, bytes out).  "in" is what producers/publishers wrote, "out"
# what consumers/subscribers took.
COUNTERS = ("messages_in", "messages_out", "bytes_in", "bytes_out")


@dataclass(frozen=True)
class Process:
    """A process attached to an object (one of its roster entries)."""

    pid: int
    alive: bool
    command: str  # its command name, "" if it is gone or not ours to read
    attached_ns: int


@dataclass(frozen=True)
class Subscriber:
    """A subscription of a topic and how far behind the newest message it is."""

    slot: int  # its entry in the topic's table
    pid: int
    alive: bool
    command: str
    received: int  # number of the next message it will read (its own count: for rates)
    read_bytes: int  # its cursor in the ring's byte stream (for rates)
    behind_messages: int
    behind_bytes: int
    lagged: int  # messages it missed, ever (an overwrite topic)
    consistent: bool  # False: its numbers in shared memory are impossible (shown, never used)


@dataclass(frozen=True)
class Lock:
    """Who holds an object's lock (a queue's, a topic's, a named lock)."""

    holder_pid: int  # 0: free
    holder_alive: bool
    owner_died_pending: bool  # held by a dead process: the next acquirer repairs it


@dataclass(frozen=True)
class ObjectView:
    """One object, as a monitor shows it."""

    name: str
    kind: str  # channel, queue, topic, sync, segment, queue-chunk, or "damaged"
    size: int  # bytes of the segment (header included)
    created_ns: int
    creator_pid: int
    persistent: bool
    processes: tuple[Process, ...]
    fill: float | None  # 0..1: how full the ring (or the bounded queue) is
    items: int | None  # messages held (queue: items; channel/topic: None)
    counters: dict[str, int]  # cumulative, see COUNTERS; only those the kind has
    waiting: dict[str, int]  # who sleeps now: producers, consumers (, joiners)
    subscribers: tuple[Subscriber, ...] = ()
    lock: Lock | None = None
    primitive: dict[str, Any] | None = None  # a named primitive: which one and its state
    detail: dict[str, Any] = field(default_factory=dict)  # the kind's raw counters
    problem: str | None = None  # why it could not be read (damaged)
    bridge: list[dict[str, Any]] | None = None  # what running bridges say of it (docs/BRIDGE.md "Status")

    @property
    def key(self) -> tuple[str, int]:
        """Identity across snapshots: a name reused by a new object is another object."""
        return (self.name, self.created_ns)

    @property
    def dead_processes(self) -> int:
        return sum(1 for p in self.processes if not p.alive)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Snapshot:
    """Every object readable by this user, at ``time`` (CLOCK_MONOTONIC seconds)."""

    time: float
    objects: tuple[ObjectView, ...]

    def by_key(self) -> dict[tuple[str, int], ObjectView]:
        return {o.key: o for o in self.objects}


def command_of(pid: int) -> str:
    """The command name of ``pid`` (``/proc/PID/comm``), or "" if unknown."""
    if pid <= 0:
        return ""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _processes(info: SegmentInfo) -> tuple[Process, ...]:
    return tuple(Process(u.pid, u.alive, command_of(u.pid) if u.alive else "", u.attached_ns) for u in info.users)


def _channel(info: dict[str, Any]) -> dict[str, Any]:
    capacity = info["capacity"]
    return {
        "fill": min(1.0, info["fill_bytes"] / capacity) if capacity else None,
        "counters": {
            "messages_in": info["sent_messages"], "messages_out": info["received_messages"],
            "bytes_in": info["sent_bytes"], "bytes_out": info["received_bytes"],
        },
        "waiting": {"producers": int(info["producer_waiting"]), "consumers": int(info["consumer_waiting"])},
    }


def _queue(info: dict[str, Any]) -> dict[str, Any]:
    if info["bounded"] and info["maxsize"]:
        fill = min(1.0, info["items"] / info["maxsize"])
    else:
        fill = min(1.0, info["used_bytes"] / info["capacity"]) if info["capacity"] else None
    return {
        "fill": fill,
        "items": info["items"],
        "counters": {
            "messages_in": info["puts"], "messages_out": info["gets"],
            "bytes_in": info["bytes_put"], "bytes_out": info["bytes_got"],
        },
        "waiting": {
            "producers": info["putters_waiting"], "consumers": info["getters_waiting"],
            "joiners": info["joiners_waiting"],
        },
        "lock": _lock(info["holder"], info["holder_alive"]),
    }


def _topic(info: dict[str, Any]) -> dict[str, Any]:
    subs = tuple(
        Subscriber(s["slot"], s["pid"], s["alive"], command_of(s["pid"]) if s["alive"] else "", s["next_seq"],
                   s["cursor"], s["behind_messages"], s["behind_bytes"], s["lagged"], s["consistent"])
        for s in info["subscriber_list"]
    )
    capacity = info["capacity"]
    # "out" is summed over the subscribers that stayed between two
    # snapshots (rates()): a cumulative sum would jump as they come and go.
    return {
        "fill": min(1.0, info["slowest_behind_bytes"] / capacity) if capacity else None,
        "counters": {"messages_in": info["published"], "bytes_in": info["published_bytes"]},
        "waiting": {"producers": info["publishers_waiting"], "consumers": info["subscribers_waiting"]},
        "subscribers": subs,
        "lock": _lock(info["lock_holder_pid"], info["lock_holder_alive"]),
    }


def _sync(info: dict[str, Any]) -> dict[str, Any]:
    parts: dict[str, Any] = {"primitive": info, "counters": {}, "waiting": {}}
    if "holder_pid" in info:
        parts["lock"] = Lock(info["holder_pid"], info["holder_alive"], info["owner_died_pending"])
    if "waiters" in info:
        parts["waiting"] = {"consumers": info["waiters"]}
    return parts


def _lock(holder_pid: int, holder_alive: bool) -> Lock:
    """A queue's or topic's lock: a holder that died holding it leaves it to
    the next process that takes it, which repairs the object first."""
    return Lock(holder_pid, holder_alive, holder_pid != 0 and not holder_alive)


_READERS = {
    "channel": (_core.channel_info, _channel),
    "queue": (_core.queue_info, _queue),
    "topic": (_core.topic_info, _topic),
    "sync": (_core.sync_info, _sync),
}


def map_read_only(name: str) -> _core.Mapping:
    """Map segment ``name`` read-only to look at it: no attachment, nothing
    kept alive, nobody disturbed."""
    return _core.open(validate_name(name), True, True, False)


def read_details(name: str) -> tuple[SegmentInfo, dict[str, Any]]:
    """The header of segment ``name`` and, for a channel, a queue, a topic or
    a named primitive, what its reader in the extension says of it (the
    same errors as :func:`look`)."""
    mapping = map_read_only(name)
    try:
        info = SegmentInfo.from_mapping(mapping)
        reader = _READERS.get(info.kind)
        return info, (reader[0](mapping) if reader is not None else {})
    finally:
        mapping.close()


def look(name: str) -> ObjectView:
    """One object, read from shared memory now (see the module's docstring).

    Raises ``FileNotFoundError`` if there is no such segment,
    :class:`shmring.ForeignSegmentError` / :class:`shmring.SegmentNotReadyError` for a
    segment that is not (yet) a shmring object, and :class:`shmring.SegmentError` for
    a damaged one."""
    info, detail = read_details(name)
    reader = _READERS.get(info.kind)
    parts: dict[str, Any] = reader[1](detail) if reader is not None else {"counters": {}, "waiting": {}}
    parts.setdefault("fill", None)
    parts.setdefault("items", None)
    return ObjectView(
        name=info.name, kind=info.kind, size=info.total_size, created_ns=info.created_ns,
        creator_pid=info.creator_pid, persistent=info.persistent, processes=_processes(info), detail=detail, **parts,
    )


def segment_files() -> Iterator[tuple[os.DirEntry[str], os.stat_result]]:
    """Every regular file under /dev/shm with a valid segment name, in name
    order, with its ``lstat`` (none when /dev/shm cannot be read)."""
    try:
        entries = sorted(os.scandir(SHM_DIR), key=lambda e: e.name)
    except OSError:  # no /dev/shm, or not readable: nothing to show
        return
    for entry in entries:
        try:
            validate_name(entry.name)
            st = entry.stat(follow_symlinks=False)
        except (ValueError, OSError):
            continue
        if stat.S_ISREG(st.st_mode):
            yield entry, st


def _names() -> list[str]:
    return [entry.name for entry, _ in segment_files()]


def bridge_status_names() -> list[str]:
    """The bridge status segments under /dev/shm (docs/BRIDGE.md "Status")."""
    return [n for n in _names() if n.startswith(BRIDGE_PREFIX)]


def snapshot(names: Iterable[str] | None = None) -> Snapshot:
    """Every shmring object this user can read (or those of ``names``),
    now.  Damaged ones are listed with their ``problem``; segments of other
    programs, unreadable ones and those still being created are left out."""
    views = []
    for name in _names() if names is None else names:
        try:
            views.append(look(name))
        except (ForeignSegmentError, SegmentNotReadyError):
            continue  # another program's, or still being made
        except SegmentError as exc:  # ours, damaged (before ValueError: some of them are ValueErrors too)
            views.append(ObjectView(name, "damaged", 0, 0, 0, False, (), None, None, {}, {}, problem=str(exc)))
        except (OSError, ValueError):
            continue  # gone meanwhile, not readable by this user, or not a valid name
    views = _with_bridges(views, bridge_status_names() if names is not None else
                          [v.name for v in views if v.name.startswith(BRIDGE_PREFIX)])
    # The time of the look: its end (a scan of many objects takes a while;
    # the rates are divided by the time between two ends).
    return Snapshot(time.monotonic(), tuple(views))


def _with_bridges(views: list[ObjectView], status_segments: list[str]) -> list[ObjectView]:
    """``views`` with what the bridges' status segments say of each."""
    if not status_segments:
        return views
    marks = bridged(bridges(status_segments))
    return [replace(v, bridge=marks[(v.kind, v.name)]) if (v.kind, v.name) in marks else v for v in views]


def rates(before: Snapshot, after: Snapshot) -> dict[tuple[str, int], dict[str, float]]:
    """Per object of ``after`` also in ``before``: each counter's change
    per second (``messages_in/s``...).  A counter that went backwards (a
    hostile or restarted writer) gives no rate rather than a negative one."""
    elapsed = after.time - before.time
    if elapsed <= 0:
        return {}
    old = before.by_key()
    result: dict[tuple[str, int], dict[str, float]] = {}
    for view in after.objects:
        prev = old.get(view.key)
        if prev is None:
            continue
        per_second = {}
        for counter, value in view.counters.items():
            start = prev.counters.get(counter)
            if start is not None and value >= start:
                per_second[counter] = (value - start) / elapsed
        if view.kind == "topic":
            per_second.update(_delivery_rates(prev.subscribers, view.subscribers, elapsed))
        result[view.key] = per_second
    return result


def _delivery_rates(before: tuple[Subscriber, ...], after: tuple[Subscriber, ...], elapsed: float) -> dict[str, float]:
    """A topic's messages and bytes read per second, by the subscriptions
    present in both snapshots (the same table slot and process); the
    messages a subscriber missed (overwritten before it read them) are not
    counted as read."""
    old = {(s.slot, s.pid): s for s in before}
    messages = read = 0
    for sub in after:
        prev = old.get((sub.slot, sub.pid))
        if prev is not None and sub.received >= prev.received and sub.read_bytes >= prev.read_bytes:
            messages += max(0, (sub.received - prev.received) - max(0, sub.lagged - prev.lagged))
            read += sub.read_bytes - prev.read_bytes
    return {"messages_out": messages / elapsed, "bytes_out": read / elapsed}


REPORT_VERSION = 1


def report(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """The document ``shmring top --once --json`` prints: every object of
    ``after`` with its rates over the time since ``before`` (objects new
    since then have no rates yet).  Its shape is the JSON schema
    ``shmring/top.schema.json`` (docs/OBSERVE.md)."""
    per_second = rates(before, after)
    objects = []
    for view in after.objects:
        entry = view.to_json()
        entry["rates"] = per_second.get(view.key)
        objects.append(entry)
    return {
        "version": REPORT_VERSION,
        "time": time.time(),
        "interval": after.time - before.time,
        "objects": objects,
    }
