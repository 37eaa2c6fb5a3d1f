"""Helpers of the Topic tests (tests/test_topic_*.py).

Layout (include/shmring.h, "Broadcast topic"): the control block at payload
offset 0, the subscriber table (32-byte entries) at 384, the ring at
data_offset; records are a 16-byte header {u32 len, u32 tag, u64 seq} plus
the payload, rounded up to 16 bytes, and never wrap.  The offsets are checked
against the header by test_topic_corruption.py::test_layout_matches_header.

Messages check themselves (publisher, sequence number and a CRC-32), and
module-level functions here run in child processes ("spawn" re-imports this
module by name).
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable
from typing import Any

from shmring import Topic

from conftest import u64

# Bound on any single blocking call made by a test: a lost wake-up fails
# with Timeout instead of hanging until pytest-timeout.
OP_TIMEOUT = 10.0

# topic.latest() answers in microseconds; a child still in it after this long
# spins forever.
HANG_S = 2.0

# -- layout (include/shmring.h) ----------------------------------------------

CTRL = {
    "capacity": 0,
    "data_offset": 8,
    "policy": 16,
    "max_subscribers": 20,
    "spin_ns": 24,
    "lock": 64,
    "tail": 128,
    "head": 136,
    "next_seq": 144,
    "last_pos": 152,
}
SUBS = 384  # SHMRING_TOPIC_CTRL_SIZE: the subscriber table starts here
SUB_ENTRY = 32  # {token, cursor, next_seq, lagged}
HDR = 16
TAG_PAD, TAG_OBJECT, TAG_BYTES, TAG_GAP = 0x50, 0x4F, 0x42, 0x47


def rec_size(n: int) -> int:
    return HDR + (n + 15) // 16 * 16


def data_offset(max_subscribers: int) -> int:
    return (SUBS + SUB_ENTRY * max_subscribers + 127) // 128 * 128


def header(buf: memoryview, pos: int, capacity: int) -> tuple[int, int, int]:
    """(len, tag, seq) of the record at ring position ``pos``."""
    base = u64(buf, CTRL["data_offset"])
    ln, tag, seq = struct.unpack_from("<IIQ", buf, base + pos % capacity)
    return ln, tag, seq


# -- messages that check themselves --------------------------------------------

_NOISE = random.Random(0x70B1C).randbytes(1 << 16)


def make_msg(pub: int, seq: int, size: int) -> bytes:
    """Message ``seq`` of publisher ``pub``: {u32 pub, u64 seq}, filler, CRC-32
    of everything before it.  ``size`` >= 16."""
    off = (seq * 2654435761 + pub * 97) % (len(_NOISE) - size)
    body = struct.pack("<IQ", pub, seq) + _NOISE[off : off + size - 16]
    return body + zlib.crc32(body).to_bytes(4, "little")


def check_msg(data: bytes) -> tuple[int, int]:
    """Verify a message's checksum; returns (pub, seq)."""
    assert len(data) >= 16, f"message of {len(data)} bytes is too short"
    if zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
        raise AssertionError(f"checksum mismatch in a {len(data)}-byte message: torn or corrupted")
    pub, seq = struct.unpack_from("<IQ", data)
    assert data == make_msg(pub, seq, len(data)), "content differs from what was sent"
    return pub, seq


def msg_size(pub: int, seq: int, largest: int) -> int:
    return 16 + (seq * 7919 + pub * 31) % (largest - 15)


def full_block_topic(topic: Callable[..., Topic]) -> tuple[Topic, Any, Any]:
    """A 256-byte "block" topic of the ``topic`` fixture, a subscriber that has
    read nothing and a publisher, after messages b"0" to b"7": 8 x 32-byte
    records, the ring is full."""
    t = topic(256, "block")
    sub = t.subscribe()
    pub = t.publisher()
    for i in range(8):
        pub.send(b"%d" % i, timeout=0)
    return t, sub, pub


def hangs(p: Any, timeout: float) -> bool:
    """Join child ``p`` for ``timeout`` seconds; if it is still running, kill
    and reap it and say so (True: it hung)."""
    p.join(timeout)
    hung: bool = p.is_alive()
    if hung:
        p.kill()
        p.join(5)
    return hung


# -- child processes ------------------------------------------------------------


def join_ok(p: Any, timeout: float, what: str) -> None:
    """Join a child that must exit cleanly within ``timeout`` seconds."""
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join(5)
        raise AssertionError(f"{what}: still running after {timeout} s (hung); killed")
    assert p.exitcode == 0, f"{what}: exit code {p.exitcode} (negative = killed by that signal)"


def _mp_publisher(t: Topic, pub_id: int, n: int, largest: int) -> None:
    pub = t.publisher()
    for seq in range(n):
        m = make_msg(pub_id, seq, msg_size(pub_id, seq, largest))
        if pub_id % 2 == 0:
            if seq % 3 == 0:
                with pub.reserve(len(m), timeout=OP_TIMEOUT) as mv:
                    mv[:] = m
            else:
                pub.send(m, timeout=OP_TIMEOUT)
        else:
            pub.send_obj((pub_id, seq, m), timeout=OP_TIMEOUT)
