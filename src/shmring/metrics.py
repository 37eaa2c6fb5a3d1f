"""The counters of every shmring object as Prometheus/OpenMetrics metrics,
for ``shmring stats --prometheus`` and ``shmring stats --serve PORT``.

Built on ``prometheus-client`` (the optional extra ``shmring[metrics]``): a
collector that takes a fresh :func:`shmring.observe.snapshot` at every
scrape, so a scrape reads shared memory only (no lock, no attachment, not a
byte written) and the observed processes pay nothing.  The metric names and
labels are listed in docs/OBSERVE.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from . import observe

_LABELS = ["name", "kind"]
_COUNTERS = {
    "messages_in": "Messages written in by producers or publishers",
    "messages_out": "Messages taken out by consumers (a queue's gets, a channel's receives)",
    "bytes_in": "Payload bytes written in (a topic: ring bytes, record headers included)",
    "bytes_out": "Payload bytes taken out",
}


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=_LABELS if labels is None else labels)


class ShmringCollector(Collector):
    """Every readable shmring object of this user, looked at on each scrape."""

    def __init__(self, take: Callable[[], observe.Snapshot] = observe.snapshot) -> None:
        self._take = take

    def collect(self) -> Iterator[Metric]:
        snap = self._take()
        families = _families()
        for view in snap.objects:
            _add_object(families, view)
        yield from families.values()


def _families() -> dict[str, Any]:
    families: dict[str, Any] = {
        "up": _gauge("shmring_object_damaged", "1 for a segment of ours whose header or layout fails a check",
                     ["name"]),
        "size": _gauge("shmring_size_bytes", "Bytes of the segment, header included"),
        "fill": _gauge("shmring_fill_ratio", "How full the ring is, 0 to 1 (a topic: its slowest subscriber)"),
        "items": _gauge("shmring_queue_items", "Items a queue holds", ["name"]),
        "procs": _gauge("shmring_attached_processes", "Processes attached to the object, alive"),
        "dead": _gauge("shmring_dead_processes", "Roster entries of processes that died attached"),
        "waiting": _gauge("shmring_waiting", "Processes or threads asleep on the object now", _LABELS + ["side"]),
        "held": _gauge("shmring_lock_held", "1 while the object's lock is held"),
        "died": _gauge("shmring_lock_owner_died", "1 while the lock is held by a dead process (OwnerDied pending)"),
        "value": _gauge("shmring_primitive_value", "A named semaphore's or atomic's value, an event's or flag's "
                        "state (1 set)", _LABELS + ["primitive"]),
        # By table slot, bounded by the topic's max_subscribers (a pid label
        # would make a new series for every subscriber process ever).
        "behind": _gauge("shmring_topic_subscriber_behind_messages", "Messages a subscriber has still to read",
                         ["name", "slot"]),
        "lagged": CounterMetricFamily("shmring_topic_subscriber_lagged", "Messages a subscriber missed (overwrite)",
                                      labels=["name", "slot"]),
        "subpid": _gauge("shmring_topic_subscriber_pid", "The process of a topic's subscription slot",
                         ["name", "slot"]),
    }
    for counter, doc in _COUNTERS.items():
        families[counter] = CounterMetricFamily(f"shmring_{counter}", doc, labels=_LABELS)
    return families


def _add_object(families: dict[str, Any], view: observe.ObjectView) -> None:
    if view.problem is not None:
        families["up"].add_metric([view.name], 1)
        return
    families["up"].add_metric([view.name], 0)
    labels = [view.name, view.kind]
    families["size"].add_metric(labels, view.size)
    if view.fill is not None:
        families["fill"].add_metric(labels, view.fill)
    if view.items is not None:
        families["items"].add_metric([view.name], view.items)
    families["procs"].add_metric(labels, len(view.processes) - view.dead_processes)
    families["dead"].add_metric(labels, view.dead_processes)
    for counter, value in view.counters.items():
        families[counter].add_metric(labels, value)
    for side, count in view.waiting.items():
        families["waiting"].add_metric(labels + [side], count)
    if view.lock is not None:
        families["held"].add_metric(labels, int(view.lock.holder_pid != 0))
        families["died"].add_metric(labels, int(view.lock.owner_died_pending))
    if view.primitive is not None:
        _add_primitive(families["value"], labels, view.primitive)
    for sub in view.subscribers:
        sub_labels = [view.name, str(sub.slot)]
        families["behind"].add_metric(sub_labels, sub.behind_messages)
        families["lagged"].add_metric(sub_labels, sub.lagged)
        families["subpid"].add_metric(sub_labels, sub.pid)


def _add_primitive(family: GaugeMetricFamily, labels: list[str], state: dict[str, Any]) -> None:
    primitive = state.get("primitive", "unknown")
    if "value" in state:
        family.add_metric(labels + [primitive], state["value"])
    elif "set" in state:
        family.add_metric(labels + [primitive], int(state["set"]))


def registry() -> CollectorRegistry:
    """A registry holding only shmring's collector (no process metrics of
    the exporter itself: they would describe the exporter, not the objects)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ShmringCollector())
    return reg


def exposition(reg: CollectorRegistry | None = None) -> str:
    """Every object's metrics, now, in the OpenMetrics text format."""
    from prometheus_client.openmetrics.exposition import generate_latest

    text: bytes = generate_latest(registry() if reg is None else reg)  # type: ignore[no-untyped-call]
    return text.decode()
