"""Channel ends: one producer and one consumer at a time.

A process claims an end with its first send or receive; while another live
process (or another handle of this process) holds it, a call that does not
wait is refused with RoleTaken, and a blocking one waits for the end up to
its timeout ([S11]).  An end held by a dead process can be taken; a handle
inherited through fork holds no end in the child.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest

import shmring
from shmring import Channel

from _channel_helpers import Agent
from conftest import CONTEXTS, FORK, Kids


def test_two_handles_in_one_process_cannot_share_an_end(ch: shmring.Channel) -> None:
    ch.send(b"mine")
    with shmring.Channel.open(ch.name) as other:
        with pytest.raises(shmring.RoleTaken, match="another handle in this process"):
            other.send(b"theirs")
        with pytest.raises(shmring.RoleTaken):
            with other.reserve(1):
                pass
        assert ch.recv() == b"mine"
        with pytest.raises(shmring.RoleTaken):
            other.recv(timeout=0)
    with shmring.Channel.open(ch.name) as third:
        ch.close()  # gives both ends back, and (as the reader) closes the stream
        with pytest.raises(shmring.Closed, match="reader closed"):
            third.send(b"too late")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ctx_name", ["fork", "spawn"])
def test_second_live_producer_gets_role_taken(ctx_name: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """While another live process holds the producer end, a call that does
    not wait is refused at once, and a blocking one waits for the end up to
    its timeout; either way nothing is sent."""
    ctx = CONTEXTS[ctx_name]
    ch = channel(4096, "block")
    a = Agent(kids, ctx, ch.name)
    b = Agent(kids, ctx, ch.name)
    a("send", b"from-a", timeout=5)
    for op, args, kw in (
        ("send", (b"b",), {"timeout": 0.1}),
        ("send", (b"b",), {"timeout": 0}),
        ("try_send", (b"b",), {}),
        ("send_many", ([b"b"],), {"timeout": 0.1}),
        ("reserve", (1,), {"timeout": 0.1}),
    ):
        with pytest.raises(shmring.RoleTaken, match=rf"producer end is held by live process {a.pid}") as ei:
            b(op, *args, **kw)
        assert isinstance(ei.value, RuntimeError)
    a("send", b"from-a-again", timeout=5)  # a keeps its end
    assert ch.recv(timeout=5) == b"from-a"
    assert ch.recv(timeout=5) == b"from-a-again"
    assert ch.try_recv() is None
    a.kill()
    b("send", b"from-b", timeout=5)  # a dead holder's end can be taken
    assert ch.stats()["producer_pid"] == b.pid
    assert ch.recv(timeout=5) == b"from-b"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ctx_name", ["fork", "spawn"])
def test_second_live_consumer_gets_role_taken(ctx_name: str, channel: Callable[..., Channel], kids: Kids) -> None:
    ctx = CONTEXTS[ctx_name]
    ch = channel(4096, "block")
    a = Agent(kids, ctx, ch.name)
    b = Agent(kids, ctx, ch.name)
    ch.send(b"one")
    assert a("recv", timeout=5) == b"one"
    ch.send(b"two")
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("recv", (), {"timeout": 0.1}),
        ("recv", (), {"timeout": 0}),
        ("try_recv", (), {}),
        ("recv_many", (4,), {"timeout": 0.1}),
        ("peek", (), {"timeout": 0.1}),
        ("recv_into", (bytearray(64),), {"timeout": 0.1}),
    ]
    for op, args, kw in calls:
        with pytest.raises(shmring.RoleTaken, match=rf"consumer end is held by live process {a.pid}"):
            b(op, *args, _timeout=5, **kw)
    assert a("recv", timeout=5) == b"two"  # the refused attempts took nothing
    assert a("try_recv") is None  # hands back what it consumed
    a.kill()
    ch.send(b"three")
    assert b("recv", timeout=5) == b"three"
    assert ch.stats()["consumer_pid"] == b.pid


def _inherited_probe(ch: Channel, results: Any) -> None:
    out: list[Any] = []
    try:
        ch.send(b"from-child", timeout=0.2)
        out.append("sent")
    except shmring.RoleTaken as e:
        out.append(("RoleTaken", str(e)))
    ch.close()  # closes only this process's copy: it holds no end
    results.put(out)


@pytest.mark.timeout(30)
def test_fork_child_does_not_inherit_claims(channel: Callable[..., Channel], kids: Kids) -> None:
    """A handle inherited through fork holds no end in the child: it is
    refused the parent's producer end, and its close does not end the
    parent's stream."""
    ch = channel(4096, "block")
    ch.send(b"parent-1")
    results = FORK.Queue()
    p = kids.process(FORK, _inherited_probe, ch, results)
    out = results.get(timeout=10)
    p.join(10)
    assert p.exitcode == 0
    assert out[0][0] == "RoleTaken" and f"live process {os.getpid()}" in out[0][1], out
    stats = ch.stats()
    assert not stats["writer_closed"] and stats["producer_pid"] == os.getpid(), stats
    ch.send(b"parent-2")
    consumer = Agent(kids, FORK, ch.name)
    assert consumer("recv", timeout=5) == b"parent-1"
    assert consumer("recv", timeout=5) == b"parent-2"
    assert consumer("try_recv") is None


def _send_when_free(name: str, results: Any) -> None:
    with shmring.Channel.open(name) as ch:
        results.put("waiting")
        ch.send(b"from-b")  # no timeout: waits until the producer end is given back
        results.put(time.monotonic())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["close", "drop", "kill"])
def test_blocked_send_waits_for_the_producer_end_and_takes_it_over(
    how: str, channel: Callable[..., Channel], kids: Kids
) -> None:
    """A second process's blocking send waits (asleep) while the first holds
    the producer end, and goes on as soon as that end is given back: closed
    (which also ends the stream: then Closed), dropped, or its process died."""
    ch = channel(4096, "block")
    a = Agent(kids, FORK, ch.name)
    a("send", b"from-a", timeout=5)
    results = FORK.Queue()
    kids.process(FORK, _send_when_free, ch.name, results)
    assert results.get(timeout=10) == "waiting"
    time.sleep(0.3)
    assert results.empty(), "the second producer did not wait for the end"
    released = time.monotonic()
    if how == "kill":
        a.kill()
    elif how == "drop":
        a("give_back")
    else:
        a("close")
    if how == "close":
        assert ch.recv(timeout=5) == b"from-a"
        with pytest.raises(shmring.Closed):
            ch.recv(timeout=5)  # a's close ended the stream: b's send was refused
        return
    took = results.get(timeout=10)
    assert took - released < 2.0  # woken by the release (or within a slice of the death)
    assert ch.recv(timeout=5) == b"from-a"
    assert ch.recv(timeout=5) == b"from-b"
