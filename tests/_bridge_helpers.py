"""Helpers of the bridge's tests without a network (tests/test_cli_bridge.py,
tests/test_bridge_*.py): stand-ins for what Zenoh hands a subscriber."""

from __future__ import annotations

from typing import Any


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
