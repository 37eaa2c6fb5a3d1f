"""The storms: which objects, how many producers and consumers, which calls.

Each scenario is one storm over one or more objects of one kind (a
*group* per object); the kind's kill budget is shared among its scenarios
by their ``share``.  Every group mixes the calls of its kind per
operation, with the weights below, so that a kill lands inside any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import shmring
from shmring.channel import WaitStrategy

from .items import custom_dumps, custom_loads

Sizes = tuple[tuple[float, int, int], ...]  # (weight, smallest, largest) payload lengths
Weights = dict[str, float]  # call -> how often

SMALL: Sizes = ((80, 0, 300), (20, 300, 3000))
SPILLING: Sizes = ((70, 0, 300), (25, 1000, 8000), (5, 20_000, 60_000))  # fills a 1 MiB ring fast

QUEUE_PUTS: Weights = {"put": 40, "put_bytes": 20, "put_many": 40}
QUEUE_GETS: Weights = {"get": 40, "get_bytes": 20, "get_many": 40}
CHANNEL_SENDS: Weights = {"send": 30, "try_send": 10, "send_many": 30, "reserve": 30}
CHANNEL_RECVS: Weights = {"recv": 30, "recv_many": 30, "recv_into": 15, "peek": 25}
TOPIC_SENDS: Weights = {"send": 40, "send_obj": 20, "reserve": 40}
TOPIC_RECVS: Weights = {"recv": 40, "recv_bytes": 20, "peek": 40}


@dataclass(frozen=True)
class Group:
    """One object and its participants: ``producers`` producer (publisher)
    slots and ``consumers`` consumer (subscriber) slots."""

    name: str
    make: Callable[[], Any]
    producers: int
    consumers: int
    puts: Weights
    gets: Weights
    sizes: Sizes = SMALL
    batch: int = 8
    huge: int = 0  # a payload larger than the ring, for 1% of the single puts

    def slots(self) -> list[tuple[str, str]]:
        """(slot name, role) of each participant."""
        return [(f"{self.name}.p{i}", "producer") for i in range(self.producers)] + [
            (f"{self.name}.c{i}", "consumer") for i in range(self.consumers)
        ]


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "queue", "channel" or "topic"
    groups: tuple[Group, ...]
    share: float = 1.0  # of its kind's kills

    def producer_slots(self) -> list[str]:
        return [s for g in self.groups for s, role in g.slots() if role == "producer"]


def _queue(name: str, make: Callable[[], Any], p: int, c: int, sizes: Sizes, batch: int, huge: int) -> Group:
    return Group(name, make, p, c, QUEUE_PUTS, QUEUE_GETS, sizes, batch, huge)


def _channel(name: str, capacity: int, wait: WaitStrategy) -> Group:
    return Group(name, lambda: shmring.Channel.create(capacity=capacity, wait=wait), 1, 1, CHANNEL_SENDS,
                 CHANNEL_RECVS, ((80, 0, 200), (20, 200, capacity // 8)))


def _topic(name: str, capacity: int, subscribers: int) -> Group:
    return Group(name, lambda: shmring.Topic.create(capacity=capacity, policy="block", max_subscribers=8), 1,
                 subscribers, TOPIC_SENDS, TOPIC_RECVS, ((80, 0, 200), (20, 200, capacity // 8)))


SCENARIOS: tuple[Scenario, ...] = (
    # Unbounded: a full 1 MiB ring spills into overflow chunks; 1.2 MiB items always do.
    Scenario("queue-unbounded-2x2", "queue",
             (_queue("q", lambda: shmring.Queue(1000), 2, 2, SPILLING, 16, 1_200_000),), 0.3),
    # Bounded (max_size_bytes): producers wait for room; a 100 kB item gets a chunk of its own.
    Scenario("queue-bounded-3x1", "queue",
             (_queue("q", lambda: shmring.Queue(max_size_bytes=65536), 3, 1, SMALL, 8, 100_000),), 0.3),
    # The user's dumps=/loads= (put_bytes/get_bytes still skip them).
    Scenario("queue-custom-1x3", "queue",
             (_queue("q", lambda: shmring.Queue(300, dumps=custom_dumps, loads=custom_loads), 1, 3, SPILLING,
                     16, 1_100_000),), 0.2),
    Scenario("queue-bounded-custom-2x2", "queue",
             (_queue("q", lambda: shmring.Queue(max_size_bytes=16384, dumps=custom_dumps, loads=custom_loads),
                     2, 2, ((80, 0, 300), (20, 300, 1000)), 4, 20_000),), 0.2),
    # One producer and one consumer per channel; every wait strategy that sleeps.
    Scenario("channel-3x(1x1)", "channel",
             (_channel("ch0", 4096, "adaptive"), _channel("ch1", 65536, "block"),
              _channel("ch2", 16384, "semaphore"))),
    # One publisher, policy "block"; a small ring keeps the publisher waiting for subscribers.
    Scenario("topic-1x3", "topic", (_topic("t", 16384, 3),), 0.6),
    Scenario("topic-1x4-small", "topic", (_topic("t", 2048, 4),), 0.4),
)

KINDS = ("queue", "channel", "topic")
