"""Helpers of the bridge's tests without a network (tests/test_cli_bridge.py,
tests/test_bridge_*.py): stand-ins for what Zenoh hands a subscriber, and
for the session and publisher an exporter or importer declares."""

from __future__ import annotations

import threading
from typing import Any

from shmring.bridge.wire import Header


class FakeBytes:
    """What a Zenoh sample's payload and attachment give: ``to_bytes()``."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def to_bytes(self) -> bytes:
        return self.raw


class FakeSample:
    """A Zenoh sample: its payload and attachment (None: it has none)."""

    def __init__(self, payload: bytes, attachment: bytes | None) -> None:
        self.payload = FakeBytes(payload)
        self.attachment = None if attachment is None else FakeBytes(attachment)


class FakePublisher:
    """Not a Zenoh publisher: the samples put, and always matched;
    ``put_twice`` is set at the second."""

    def __init__(self) -> None:
        self.puts: list[tuple[bytes, Header]] = []
        self.matching_status = True
        self.put_twice = threading.Event()

    def put(self, payload: bytes, attachment: bytes) -> None:
        self.puts.append((payload, Header.unpack(attachment)))
        if len(self.puts) >= 2:
            self.put_twice.set()

    def undeclare(self) -> None:
        pass


class FakeSession:
    """Not a Zenoh session: what the exporter and the importer declare."""

    def __init__(self) -> None:
        self.publisher = FakePublisher()

    def declare_publisher(self, *_: object, **__: object) -> FakePublisher:
        return self.publisher

    def declare_subscriber(self, *_: object) -> object:
        return object()


def drain(subscription: Any) -> tuple[list[Any], list[int]]:
    """Every message a subscription holds, in order, and the ``missed`` of
    each Lagged it raised on the way (a gap the importer marked)."""
    import shmring

    messages: list[Any] = []
    missed: list[int] = []
    while True:
        try:
            messages += subscription.recv_many(1000, timeout=0)
        except shmring.Lagged as e:
            missed.append(e.missed)
        except shmring.Timeout:
            return messages, missed


def close_importer(importer: Any) -> None:
    """A topic importer made in a test without its bridge: what it holds,
    its cursor included (persistent: removed only by a close)."""
    importer._publisher.close()
    importer.topic.close()
    importer.cursor.close()
