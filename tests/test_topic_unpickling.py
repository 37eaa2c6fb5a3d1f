"""A message that fails to unpickle in ``Subscription.recv_many``: the
messages before it are returned, it and those after it stay unread (the
cursor moves only past what was delivered); when it is the first of the
batch its error is raised and only it is consumed, as ``recv`` would.  Every
message a publisher in another process sends is accounted for by its
sequence number: returned once, raised once, or reported missed by
``Lagged`` ("overwrite" topics), in order.

Helpers at module level run in child processes ("spawn" re-imports this
module by name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import shmring
from shmring import Topic

from _topic_helpers import OP_TIMEOUT
from conftest import FORK, SPAWN, Kids


def _refuse(n: int) -> Any:
    raise RuntimeError(f"message {n} cannot be rebuilt")


class Unloadable:
    """Pickles fine; unpickling it raises (a class this process lacks)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse, (self.n,))


def _publish(t: Topic, first: int, count: int, bad: frozenset[int]) -> int:
    """Messages first..first+count-1: an unpicklable one for each number in
    ``bad``, else bytes or an object that carries its number."""
    pub = t.publisher()
    for i in range(first, first + count):
        if i in bad:
            pub.send_obj(Unloadable(i), timeout=OP_TIMEOUT)
        elif i % 3 == 0:
            pub.send(b"%d" % i, timeout=OP_TIMEOUT)
        else:
            pub.send_obj(("m", i), timeout=OP_TIMEOUT)
    return count


def _number(msg: Any) -> int:
    return int(msg) if isinstance(msg, bytes) else int(msg[1])


class Ledger:
    """What a subscriber got, checked as it comes: each message number is
    the next expected one, or comes right after a Lagged that reported the
    gap."""

    def __init__(self) -> None:
        self.expected = 0
        self.good: list[int] = []
        self.bad: list[int] = []
        self.missed = 0

    def take(self, n: int, into: list[int]) -> None:
        assert n == self.expected, f"message {n} came when {self.expected} was next"
        into.append(n)
        self.expected = n + 1

    def call(self, sub: shmring.Subscription[Any], most: int, timeout: float) -> None:
        try:
            for msg in sub.recv_many(most, timeout=timeout):
                self.take(_number(msg), self.good)
        except RuntimeError as exc:
            self.take(int(str(exc).split()[1]), self.bad)
        except shmring.Lagged as lag:
            self.missed += lag.missed
            self.expected += lag.missed


@pytest.mark.parametrize("ctx", [FORK, SPAWN], ids=["fork", "spawn"])
def test_block_every_message_arrives_once_in_order(topic: Callable[..., Topic], kids: Kids, ctx: Any) -> None:
    # A ring far smaller than the stream: the publisher waits for this
    # subscriber's cursor, so a message left unread after a bad one is
    # still there when the next call comes.
    t = topic(2048, "block")
    sub = t.subscribe()
    n = 600
    bad = frozenset({0, 7, 8, 50, 51, 52, 299, 598, 599})
    publisher = kids.start(ctx, _publish, t, 0, n, bad)
    ledger = Ledger()
    k = 0
    while ledger.expected < n:
        ledger.call(sub, 1 + k % 7, OP_TIMEOUT)  # batches across the bad messages
        k += 1
    assert publisher.result() == n
    assert ledger.missed == 0
    assert ledger.good == [i for i in range(n) if i not in bad]
    assert ledger.bad == sorted(bad)
    with pytest.raises(shmring.Timeout):
        sub.recv(timeout=0.01)


def test_overwrite_messages_left_unread_and_then_overwritten_are_reported_lagged(
    topic: Callable[..., Topic], kids: Kids
) -> None:
    t = topic(4096, "overwrite")
    sub = t.subscribe()
    ledger = Ledger()
    assert kids.start(FORK, _publish, t, 0, 6, frozenset({2})).result() == 6
    ledger.call(sub, 6, OP_TIMEOUT)
    assert ledger.good == [0, 1]  # 2 and after: left unread
    # Another process laps the ring: 2..5 are overwritten before this
    # subscriber comes back for them.
    assert kids.start(FORK, _publish, t, 6, 400, frozenset({399})).result() == 400
    while ledger.expected < 406:
        ledger.call(sub, 50, OP_TIMEOUT)
    assert ledger.missed > 0 and 2 not in ledger.good + ledger.bad
    assert len(ledger.good) + len(ledger.bad) + ledger.missed == 406
    assert ledger.bad == [399]  # the last one: raised once it came first in a batch


def test_overwrite_messages_left_unread_are_read_when_still_held(topic: Callable[..., Topic], kids: Kids) -> None:
    t = topic(1 << 16, "overwrite")
    sub = t.subscribe()
    n = 300
    bad = frozenset({3, 4, 100, 299})
    assert kids.start(SPAWN, _publish, t, 0, n, bad).result() == n  # fits: nothing overwritten
    ledger = Ledger()
    k = 0
    while ledger.expected < n:
        ledger.call(sub, 1 + k % 11, 0)
        k += 1
    assert ledger.missed == 0
    assert ledger.good == [i for i in range(n) if i not in bad] and ledger.bad == sorted(bad)
