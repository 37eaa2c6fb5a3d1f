"""open(..., timeout=): waiting for an object another process has not made yet."""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from collections.abc import Callable
from typing import Any

import pytest

import shmring

OPENERS: dict[str, tuple[Callable[[str], Any], Callable[..., Any]]] = {
    "channel": (lambda n: shmring.Channel.create(n, 4096), shmring.Channel.open),
    "queue": (lambda n: shmring.Queue(name=n), shmring.Queue.open),
    "topic": (lambda n: shmring.Topic.create(n, 4096), shmring.Topic.open),
    "semaphore": (lambda n: shmring.Semaphore.create(n, 0), shmring.Semaphore.open),
    "segment": (lambda n: shmring.Segment.create(n, 64), shmring.Segment.open),
}


def _make_later(kind: str, name: str, delay: float, made: Any, done: Any) -> None:
    time.sleep(delay)
    obj = OPENERS[kind][0](name)
    made.set()
    done.wait(30)  # keep it alive until the opener is through
    obj.close()


@pytest.mark.parametrize("kind", sorted(OPENERS))
def test_open_waits_for_an_object_made_later_by_another_process(kind: str, name: str) -> None:
    ctx = mp.get_context("spawn")
    made, done = ctx.Event(), ctx.Event()
    maker = ctx.Process(target=_make_later, args=(kind, name, 0.5, made, done))
    maker.start()
    try:
        with pytest.raises(FileNotFoundError):
            OPENERS[kind][1](name)  # the default: one try
        t0 = time.monotonic()
        obj = OPENERS[kind][1](name, timeout=20)
        waited = time.monotonic() - t0
        assert made.is_set(), "open returned before the object was made"
        assert waited < 15
        obj.close()
    finally:
        done.set()
        maker.join(30)
    assert maker.exitcode == 0


@pytest.mark.parametrize("kind", ["channel", "topic"])
def test_open_gives_up_at_its_timeout_with_the_missing_name(kind: str, name: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError, match=name):
        OPENERS[kind][1](name, timeout=0.3)
    assert 0.25 <= time.monotonic() - t0 < 5


def test_open_does_not_wait_through_an_object_of_another_kind(name: str) -> None:
    with shmring.Channel.create(name, 4096):
        t0 = time.monotonic()
        with pytest.raises(ValueError, match="is a channel, not a topic"):
            shmring.Topic.open(name, timeout=30)
        assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (math.nan, ValueError), ("1", TypeError), (True, TypeError)])
def test_a_bad_timeout_is_refused_before_anything_is_opened(bad: Any, error: type[Exception], name: str) -> None:
    with pytest.raises(error, match="timeout"):
        shmring.Queue.open(name, timeout=bad)
