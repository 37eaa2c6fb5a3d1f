"""The checker: what a kill storm's logs prove, per group (object).

Queue and Channel (exactly once, FIFO): every item whose put/send returned
(an ``R`` line) is delivered exactly once (one ``G`` line in all the
consumers' logs, the final drain's included), with the payload its
producer logged, and never after an item that was put after it returned.
An item whose put was in flight when its producer was killed may arrive or
not, once at most; an item whose put failed (``X``) never arrives.  A
committed item that no log shows delivered is *lost*; it is *explained*
when a consumer was killed during a get that may have taken it: the get
began (``W``) before the first delivery of any item put after the lost one
returned, and the consumer was killed after the lost item's put began, and
the get had not logged all it returned.  Each such get explains at most as
many items as it asked for; the checker matches lost items to gets
(a maximum bipartite matching), and what is left unmatched is a failure.

Topic (policy "block"; one publisher at a time, so the publisher's log
order is the topic's order): each subscription (a subscriber's
incarnation) receives every published message from its first one on,
exactly once and in order, with no gap: nothing published after
``subscribe()`` returned is missing before its first message, nothing
between two of its messages is missing, and a subscription that lived to
the end received everything up to the end.  Nothing it received was
published before ``subscribe()`` was called.  What a subscriber missed
while it was dead or not yet subscribed is not a loss.  A message in
flight when the publisher was killed is published to every subscriber or
to none.
"""

from __future__ import annotations

import bisect
import json
import os
from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .logformat import FINAL_STATS, SUPERVISOR, read_lines, slot_path

INF = 1 << 62
IN_FLIGHT, COMMITTED, REFUSED = 0, 1, 2

FAILURES = ("lost_unexplained", "duplicated", "corrupted", "phantom", "reordered", "stale", "errors", "wedges",
            "leaked", "miscounted")
COUNTS = ("committed", "in_flight", "in_flight_delivered", "refused", "delivered", "lost", "lost_explained",
          "killed_in_get", "killed_in_put", "peer_gone") + FAILURES


class ProducerRun:
    """The items of one producer incarnation, indexed by their number."""

    __slots__ = ("t_begin", "t_return", "length", "crc", "state", "seen", "end")

    def __init__(self) -> None:
        self.t_begin, self.t_return = array("q"), array("q")
        self.length, self.crc = array("q"), array("q")
        self.state, self.seen = bytearray(), bytearray()
        self.end = INF  # when it was killed: its items in flight were put by then, if at all

    def begin(self, n: int, length: int, crc: int, t: int) -> None:
        while len(self.state) < n:  # lines lost to a torn write: never put
            self._add(-1, -1, INF, REFUSED)
        if n == len(self.state):
            self._add(length, crc, t, IN_FLIGHT)

    def _add(self, length: int, crc: int, t: int, state: int) -> None:
        self.length.append(length)
        self.crc.append(crc)
        self.t_begin.append(t)
        self.t_return.append(INF)
        self.state.append(state)
        self.seen.append(0)

    def settle(self, n: int, count: int, state: int, t: int) -> None:
        for i in range(n, min(n + count, len(self.state))):
            self.state[i] = state
            self.t_return[i] = t

    def put_by(self, i: int) -> int:
        """A time by which item i was in the object, if it ever was."""
        return self.t_return[i] if self.state[i] == COMMITTED else self.end


@dataclass(slots=True)
class Delivery:
    key: tuple[str, int, int]  # producer slot, its incarnation, item number
    length: int
    crc: int
    t_wait: int  # the get began
    t_got: int  # it returned


@dataclass
class ConsumerRun:
    slot: str
    incarnation: int
    deliveries: list[Delivery] = field(default_factory=list)
    subscribed: tuple[int, int] | None = None  # a topic's subscribe(): called, returned
    open_get: tuple[int, int] | None = None  # (items it may still have taken, t_wait) when its log ends
    quit: bool = False
    killed: int | None = None
    corrupt: int = 0
    peer_gone: int = 0  # gets that found the other end's process dead (a channel)


@dataclass
class Logs:
    kind: str
    groups: dict[str, dict[str, list[str]]]  # group -> {"producers": slots, "consumers": slots}
    producers: dict[tuple[str, int], ProducerRun]
    consumers: list[ConsumerRun]
    killed: dict[tuple[str, int], int]  # (slot, incarnation) -> when the supervisor killed it
    errors: list[tuple[str, str]]  # (group, what happened)
    wedges: list[tuple[str, str]]
    leaks: list[tuple[str, str]]
    final: dict[str, dict[str, Any]]  # group -> its stats() after the final drain (none after a wedge)


def group_of(slot: str) -> str:
    return slot.split(".")[0]


def read_logs(directory: str) -> Logs:
    with open(os.path.join(directory, "scenario.json")) as f:
        scenario = json.load(f)
    killed: dict[tuple[str, int], int] = {}
    errors: list[tuple[str, str]] = []
    wedges: list[tuple[str, str]] = []
    leaks: list[tuple[str, str]] = []
    for fields in _lines(directory, SUPERVISOR):
        if fields[0] == "K":
            killed[(fields[2], int(fields[3]))] = int(fields[5])
        elif fields[0] == "Z":
            errors.append((group_of(fields[2]), f"{fields[2]}#{fields[3]} ended with status {fields[5]}"))
        elif fields[0] == "H":
            wedges.append((fields[2], f"wedge: {fields[2]}: {' '.join(fields[4:])}"))
        elif fields[0] == "L":
            leaks.append((fields[2], f"leaked: {fields[4]} stayed in /dev/shm after its last user left"))
    producers: dict[tuple[str, int], ProducerRun] = {}
    consumers: list[ConsumerRun] = []
    for group in scenario["groups"].values():
        for slot in group["producers"]:
            _read_producer(directory, slot, producers, killed, errors)
        for slot in group["consumers"]:
            consumers.extend(_read_consumer(directory, slot, killed, errors))
    final: dict[str, dict[str, Any]] = {}
    if os.path.exists(os.path.join(directory, FINAL_STATS)):
        with open(os.path.join(directory, FINAL_STATS)) as f:
            final = json.load(f)
    return Logs(scenario["kind"], scenario["groups"], producers, consumers, killed, errors, wedges, leaks, final)


def _lines(directory: str, slot: str) -> Iterable[list[str]]:
    path = slot_path(directory, slot)
    return read_lines(path) if os.path.exists(path) else ()


def _read_producer(directory: str, slot: str, runs: dict[tuple[str, int], ProducerRun],
                   killed: dict[tuple[str, int], int], errors: list[tuple[str, str]]) -> None:
    run = ProducerRun()
    for f in _lines(directory, slot):
        kind, inc = f[0], int(f[1])
        if kind == "S":
            run = runs.setdefault((slot, inc), ProducerRun())
            run.end = killed.get((slot, inc), INF)
        elif kind == "B":
            run.begin(int(f[2]), int(f[3]), int(f[4]), int(f[5]))
        elif kind in "RX":
            run.settle(int(f[2]), int(f[3]), COMMITTED if kind == "R" else REFUSED, int(f[4]))
        elif kind == "E":
            errors.append((group_of(slot), f"{slot}#{inc}: {' '.join(f[3:])}"))


def _read_consumer(directory: str, slot: str, killed: dict[tuple[str, int], int],
                   errors: list[tuple[str, str]]) -> list[ConsumerRun]:
    runs: list[ConsumerRun] = []
    run = ConsumerRun(slot, 0)
    t_wait, asked, taken, batch = 0, 0, 0, 0  # the last get: when it began, how many it asked for, got, logged
    for f in _lines(directory, slot):
        kind = f[0]
        if kind == "G":
            run.deliveries.append(Delivery((f[2], int(f[3]), int(f[4])), int(f[5]), int(f[6]), t_wait, int(f[8])))
            taken, batch = taken + 1, int(f[7])
        elif kind == "W":
            asked, taken, batch, t_wait = int(f[2]), 0, 0, int(f[3])
        elif kind == "N":
            asked = 0
            run.peer_gone += f[3] == "peer-gone"
        elif kind == "S":
            run.open_get = _open_get(asked, batch, taken, t_wait)
            run = ConsumerRun(slot, int(f[1]), killed=killed.get((slot, int(f[1]))))
            runs.append(run)
            asked = 0
        elif kind == "U":
            run.subscribed = (int(f[2]), int(f[3]))
        elif kind == "C":
            run.corrupt += 1
            taken += 1
        elif kind == "Q":
            run.quit = True
        elif kind == "E":
            errors.append((group_of(slot), f"{slot}#{f[1]}: {' '.join(f[3:])}"))
    run.open_get = _open_get(asked, batch, taken, t_wait)
    return runs


def _open_get(asked: int, batch: int, taken: int, t_wait: int) -> tuple[int, int] | None:
    """(how many items it may have taken unlogged, when it began) of a get
    whose log is incomplete: it asked for some and logged fewer lines than
    it asked for (or than it got, once a line says how many)."""
    left = (batch or asked) - taken if asked else 0
    return (left, t_wait) if left > 0 else None


# -- the checks -----------------------------------------------------------------------


def _check_queue_counters(counts: dict[str, Any], stats: dict[str, Any]) -> None:
    """An emptied queue holds nothing, has given out every item put, and was
    put every committed item and at most the items in flight besides."""
    problems = [f"{k} = {stats[k]} once empty" for k in ("items", "bytes") if stats[k]]
    if stats["gets"] != stats["puts"]:
        problems.append(f"gets = {stats['gets']} but puts = {stats['puts']} once empty")
    if not counts["committed"] <= stats["puts"] <= counts["committed"] + counts["in_flight"]:
        problems.append(f"puts = {stats['puts']}, outside the {counts['committed']} items committed plus "
                        f"{counts['in_flight']} in flight")
    counts["miscounted"] += len(problems)
    for text in problems:
        _example(counts, f"miscounted: {text}")


def new_counts() -> dict[str, Any]:
    counts: dict[str, Any] = {name: 0 for name in COUNTS}
    counts["examples"] = []
    return counts


def _example(counts: dict[str, Any], text: str) -> None:
    if len(counts["examples"]) < 20:
        counts["examples"].append(text)


def _deliver(counts: dict[str, Any], logs: Logs, group_producers: set[str], d: Delivery,
             run: ConsumerRun) -> ProducerRun | None:
    """Account for one delivery: the producer's run if it is a known item of
    this group whose put did not fail, after checking its payload."""
    counts["delivered"] += 1
    producer = logs.producers.get(d.key[:2]) if d.key[0] in group_producers else None
    n = d.key[2]
    if producer is None or n >= len(producer.state) or producer.state[n] == REFUSED:
        counts["phantom"] += 1
        _example(counts, f"phantom: {run.slot}#{run.incarnation} got {d.key}, never put or put refused")
        return None
    if (producer.length[n], producer.crc[n]) != (d.length, d.crc):
        counts["corrupted"] += 1
        _example(counts, f"corrupted: {run.slot}#{run.incarnation} got {d.key} with length {d.length} crc "
                 f"{d.crc}, put with {producer.length[n]} {producer.crc[n]}")
    return producer


def check(directory: str) -> dict[str, dict[str, Any]]:
    """The counts of every group of the storm logged in ``directory``."""
    logs = read_logs(directory)
    result = {}
    for name, group in logs.groups.items():
        consumers = [r for r in logs.consumers if group_of(r.slot) == name]
        checker = check_broadcast if logs.kind == "topic" else check_fifo
        counts = checker(logs, set(group["producers"]), consumers)
        for run in consumers:
            counts["corrupted"] += run.corrupt
            counts["peer_gone"] += run.peer_gone
        if logs.kind == "queue" and name in logs.final:
            _check_queue_counters(counts, logs.final[name])
        for field_name, events in (("errors", logs.errors), ("wedges", logs.wedges), ("leaked", logs.leaks)):
            for where, text in events:
                if where == name:
                    counts[field_name] += 1
                    _example(counts, text)
        counts["kills"] = sum(1 for slot, _ in logs.killed if group_of(slot) == name)
        result[name] = counts
    return result


def _committed(logs: Logs, producers: set[str], counts: dict[str, Any]) -> None:
    for (slot, _), run in logs.producers.items():
        if slot in producers:
            counts["committed"] += run.state.count(COMMITTED)
            counts["refused"] += run.state.count(REFUSED)
            in_flight = run.state.count(IN_FLIGHT)
            counts["in_flight"] += in_flight
            counts["killed_in_put"] += in_flight > 0


class FifoOrder:
    """The first delivery of every item, ordered by when its put began: which
    gets returned items put after a given moment, and how early."""

    def __init__(self, first: list[tuple[int, int]]) -> None:  # (put began, get returned)
        first.sort()
        self.begins = [t for t, _ in first]
        self.later_got = _suffix_min([got for _, got in first])

    def first_later_delivery(self, put_by: int) -> int:
        """The earliest return of a get that took an item whose put began after ``put_by``."""
        return self.later_got[bisect.bisect_right(self.begins, put_by)]


def killed_gets(consumers: list[ConsumerRun]) -> list[tuple[int, int, int]]:
    """(began, killed, items it may have taken) of each get whose consumer was
    killed before it logged everything the get returned."""
    return [(run.open_get[1], run.killed, run.open_get[0]) for run in consumers
            if run.open_get is not None and run.killed is not None]


def check_fifo(logs: Logs, producers: set[str], consumers: list[ConsumerRun]) -> dict[str, Any]:
    counts = new_counts()
    _committed(logs, producers, counts)
    first: list[tuple[int, int]] = []
    for run in consumers:
        for d in run.deliveries:
            producer = _deliver(counts, logs, producers, d, run)
            if producer is None:
                continue
            n = d.key[2]
            producer.seen[n] = min(producer.seen[n] + 1, 255)
            if producer.seen[n] > 1:
                counts["duplicated"] += 1
                _example(counts, f"duplicated: {d.key} delivered again to {run.slot}#{run.incarnation}")
                continue
            counts["in_flight_delivered"] += producer.state[n] == IN_FLIGHT
            first.append((producer.t_begin[n], d.t_got))
    order = FifoOrder(first)
    for run in consumers:
        for d in run.deliveries:
            producer = logs.producers.get(d.key[:2]) if d.key[0] in producers else None
            if producer is not None and d.key[2] < len(producer.state) and producer.state[d.key[2]] != REFUSED:
                if order.first_later_delivery(producer.put_by(d.key[2])) < d.t_wait:
                    counts["reordered"] += 1
                    _example(counts, f"reordered: {d.key} taken by {run.slot}#{run.incarnation} in a get that "
                             "began after an item put after it had been delivered")
    lost = [(producer.t_begin[n], order.first_later_delivery(producer.t_return[n]), (slot, inc, n))
            for (slot, inc), producer in logs.producers.items() if slot in producers
            for n in range(len(producer.state)) if producer.state[n] == COMMITTED and not producer.seen[n]]
    counts["lost"] = len(lost)
    credits = killed_gets(consumers)
    counts["killed_in_get"] = len(credits)
    explained = explain(lost, credits)
    counts["lost_explained"] = len(explained)
    counts["lost_unexplained"] = len(lost) - len(explained)
    for i, (_, _, key) in enumerate(lost):
        if i not in explained:
            _example(counts, f"lost: {key} committed, never delivered, and no killed get can have taken it")
    return counts


def _suffix_min(values: list[int]) -> list[int]:
    out = [INF] * (len(values) + 1)
    for i in range(len(values) - 1, -1, -1):
        out[i] = min(values[i], out[i + 1])
    return out


def explain(lost: list[tuple[int, int, Any]], credits: list[tuple[int, int, int]]) -> set[int]:
    """Which lost items (put began, first later delivery, key) killed gets
    (began, killed, how many items they may have taken) can account for,
    each get for as many as it may have taken: a maximum matching.  A get
    can have taken an item if it began before any later item was delivered
    and was killed after the item's put began."""
    order = sorted(range(len(credits)), key=lambda c: credits[c][0])
    starts = [credits[c][0] for c in order]
    span = max((k - w for w, k, _ in credits), default=0)
    candidates = []
    for t_put, window_end, _ in lost:
        hi = bisect.bisect_left(starts, window_end)
        lo = bisect.bisect_left(starts, t_put - span)
        candidates.append([order[j] for j in range(lo, hi) if credits[order[j]][1] > t_put])
    return _max_matching(candidates, [c for _, _, c in credits])


def _max_matching(candidates: list[list[int]], capacity: list[int]) -> set[int]:
    """Items matched to credits of the given capacities (augmenting paths, breadth first)."""
    holders: list[list[int]] = [[] for _ in capacity]
    matched: set[int] = set()
    for item in range(len(candidates)):
        reached_from: dict[int, int] = {}  # credit -> the item that reached it
        held_by: dict[int, int | None] = {item: None}  # item -> the credit holding it now
        todo: deque[int] = deque([item])
        free: int | None = None
        while todo and free is None:
            it = todo.popleft()
            for c in candidates[it]:
                if c in reached_from:
                    continue
                reached_from[c] = it
                if len(holders[c]) < capacity[c]:
                    free = c
                    break
                for other in holders[c]:
                    if other not in held_by:
                        held_by[other] = c
                        todo.append(other)
        step = free
        while step is not None:  # shift each item on the path to the credit that reached it
            it = reached_from[step]
            holders[step].append(it)
            step = held_by[it]
            if step is not None:
                holders[step].remove(it)
        if free is not None:
            matched.add(item)
    return matched


def check_broadcast(logs: Logs, producers: set[str], consumers: list[ConsumerRun]) -> dict[str, Any]:
    counts = new_counts()
    _committed(logs, producers, counts)
    valid_deliveries: set[tuple[str, int, int]] = set()
    for run in consumers:
        valid_deliveries.update(d.key for d in run.deliveries)
    # The topic's order: one publisher at a time, so its incarnations one after the other.
    stream: list[tuple[str, int, int]] = []
    begins: list[int] = []
    for (slot, inc), run_of_items in sorted(logs.producers.items(), key=lambda kv: kv[0][1]):
        if slot not in producers:
            continue
        for n, state in enumerate(run_of_items.state):
            if state == COMMITTED or (state == IN_FLIGHT and (slot, inc, n) in valid_deliveries):
                stream.append((slot, inc, n))
                begins.append(run_of_items.t_begin[n])
                counts["in_flight_delivered"] += state == IN_FLIGHT
    position = {key: i for i, key in enumerate(stream)}
    for run in consumers:
        if run.subscribed is None:
            continue
        subscribing, subscribed = run.subscribed
        seen: list[int] = []
        for d in run.deliveries:
            producer = _deliver(counts, logs, producers, d, run)
            if producer is None:
                continue
            pos = position[d.key]
            if producer.put_by(d.key[2]) < subscribing:
                counts["stale"] += 1
                _example(counts, f"stale: {run.slot}#{run.incarnation} got {d.key}, published before it subscribed")
            if seen and pos <= seen[-1]:
                which = "duplicated" if pos in seen else "reordered"
                counts[which] += 1
                _example(counts, f"{which}: {run.slot}#{run.incarnation} got {d.key} after {stream[seen[-1]]}")
                continue
            seen.append(pos)
        owed = bisect.bisect_right(begins, subscribed)  # the first message it must see
        missed = 0
        if seen:
            missed += max(0, seen[0] - owed) + (seen[-1] - seen[0] + 1 - len(seen))
            owed = seen[-1] + 1
        if run.quit:  # it lived to the end: it owed everything after its last message
            missed += max(0, len(stream) - owed)
        if missed:
            counts["lost"] += missed
            _example(counts, f"lost: {run.slot}#{run.incarnation} missed {missed} messages published while "
                     "it was subscribed")
    counts["lost_unexplained"] = counts["lost"]
    counts["killed_in_get"] = len(killed_gets(consumers))
    return counts
