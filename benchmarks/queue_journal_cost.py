"""What the queue exporter's lease journal costs (docs/BRIDGE.md "Queues"):
the exporter's own work per item, without the network, with the journal and
with a stand-in that does nothing, side by side in one run.

Each round takes a window of items from a local queue the way a take
request does (``_items_for``) and acknowledges them the way the next request
does (``acknowledge``); no Zenoh reply is sent (that cost is the same either
way and is most of the exporter's time: compare with the end-to-end rate in
BRIDGE.md). It also reports the time from the take's start to the journal's commit,
the window in which a killed exporter loses items (detected, reported as
``maybe_lost``), as a share of the exporter's time: an upper bound, as
the items leave the queue only at the end of the take.

    python benchmarks/queue_journal_cost.py [--items 200000] [--size 64] [--window 256]
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import zenoh

from shmring import Queue
from shmring.bridge import zenoh_config
from shmring.bridge.queue import QueueExporter
from shmring.bridge.topic import ObjectSpec


class NoJournal:
    """The journal's interface, doing nothing: the exporter as it was."""

    files: list[Any] = []

    def begin_take(self, count: int, gets: int) -> None: ...
    def record(self, taken: Any, first_id: int) -> None: ...
    def end_take(self) -> None: ...
    def release(self, item_ids: Any) -> None: ...
    def discard(self) -> None: ...
    def __len__(self) -> int:
        return 0


class TimedJournal:
    """The real journal, timing each take from its start to its commit."""

    def __init__(self, journal: Any) -> None:
        self.journal, self.in_window, self._begun = journal, 0.0, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.journal, name)

    def __len__(self) -> int:
        return len(self.journal)

    def begin_take(self, count: int, gets: int) -> None:
        self.journal.begin_take(count, gets)
        # From here: the take, then the journal's record (the window opens
        # somewhere in the take: this is an upper bound).
        self._got = time.perf_counter()

    def end_take(self) -> None:
        self.journal.end_take()
        if hasattr(self, "_got"):
            self.in_window += time.perf_counter() - self._got
            del self._got


def run(items: int, size: int, window: int, journaled: bool) -> tuple[float, float]:
    """(items/s, share of the time in the take-to-commit window)."""
    name = f"jcost-{uuid.uuid4().hex[:8]}"
    queue: Queue[bytes] = Queue(name=name)
    session = zenoh.open(zenoh_config([], []))
    exporter = QueueExporter(session, ObjectSpec("queue", name), lease_timeout=60)
    real = exporter.journal
    timed = TimedJournal(real)
    if not journaled:
        exporter.journal = NoJournal()  # type: ignore[assignment]
    else:
        exporter.journal = timed  # type: ignore[assignment]
    payload = bytes(size)
    try:
        for first in range(0, items, 10_000):
            queue.put_many([payload] * min(10_000, items - first))
        started = time.perf_counter()
        done = 0
        while done < items:
            sent = exporter._items_for(importer=1, credit=window, now=0.0)
            exporter.acknowledge([lease.item_id for lease in sent])
            done += len(sent)
        elapsed = time.perf_counter() - started
    finally:
        exporter.journal = real
        exporter.close()
        session.close()
        queue.close()
    return items / elapsed, timed.in_window / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    opts = ap.parse_args()
    best: dict[bool, float] = {False: 0.0, True: 0.0}
    share = 0.0
    for _ in range(opts.repeat):
        for journaled in (False, True):
            rate, in_window = run(opts.items, opts.size, opts.window, journaled)
            if rate > best[journaled]:
                best[journaled] = rate
                share = in_window if journaled else share
    cost = 1 / best[True] - 1 / best[False]
    print(f"{opts.size}-byte items, window {opts.window}, best of {opts.repeat}:")
    print(f"  exporter without a journal: {best[False]:,.0f} items/s")
    print(f"  exporter with the journal:  {best[True]:,.0f} items/s ({cost * 1e6:.2f} us more per item)")
    print(f"  take-to-commit window: {share:.1%} of the journaled exporter's time")


if __name__ == "__main__":
    main()
