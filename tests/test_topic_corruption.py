"""Garbage in a topic's shared control block, subscriber table and records:
every reading and publishing call raises a clean shmring exception (never a
crash, a hang, or garbage handed out as a message), topic.latest() included.
The offsets used here are the header's (test_layout_matches_header).
"""

from __future__ import annotations

import pickle
import random
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import shmring
from shmring import Topic

from _topic_helpers import (
    CTRL, HANG_S, HDR, OP_TIMEOUT, SUBS, SUB_ENTRY, TAG_BYTES, TAG_GAP, TAG_OBJECT, TAG_PAD, hangs, header,
)
from conftest import FORK, Kids, u64


def test_layout_matches_header() -> None:
    text = "".join(p.read_text() for p in sorted(Path(shmring.get_include()).rglob("*.h")))  # shmring.h and shmring/*.h
    asserted = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"offsetof\(shmring_topic_ctrl,\s*(\w+)\)\s*==\s*(\d+)", text)
    }
    for field in ("tail", "head", "last_pos"):
        assert asserted[field] == CTRL[field], f"{field}: header says {asserted[field]}, tests use {CTRL[field]}"
    assert re.search(r"#define SHMRING_TOPIC_CTRL_SIZE %du" % SUBS, text)
    assert "sizeof(shmring_topic_sub) == %d" % SUB_ENTRY in text
    assert "sizeof(shmring_topic_record) == %d" % HDR in text
    for tag, value in (("PAD", TAG_PAD), ("OBJECT", TAG_OBJECT), ("BYTES", TAG_BYTES), ("GAP", TAG_GAP)):
        assert re.search(r"#define SHMRING_REC_%s 0x%Xu" % (tag, value), text), tag


def _corrupt(buf: memoryview, case: str) -> None:
    d = u64(buf, CTRL["data_offset"])
    tail = u64(buf, CTRL["tail"])
    put = {
        "tail_huge": ("<Q", CTRL["tail"], 0xDEADBEEF0),
        "tail_unaligned": ("<Q", CTRL["tail"], tail + 8),
        "tail_ahead": ("<Q", CTRL["tail"], tail + 48),
        "head_huge": ("<Q", CTRL["head"], 0xDEADBEEF0),
        "head_past_tail_max": ("<Q", CTRL["head"], 2**64 - 16),
        "head_unaligned": ("<Q", CTRL["head"], 8),
        "head_mid_record": ("<Q", CTRL["head"], 16),
        "len_huge": ("<I", d, 0xFFFFFFFF),
        "len_big": ("<I", d, 1000),
        "tag_bad": ("<I", d + 4, 0x5A),
        "tag_pad": ("<I", d + 4, TAG_PAD),
        "tag_gap_len": ("<I", d + 4, TAG_GAP),  # a gap marker's tag on a 20-byte record: not its 8 bytes
    }
    if case == "records_garbage":
        buf[d : d + 240] = b"\xa5" * 240
    elif case == "tag_gap_zero":  # a gap marker of the right size, counting no message
        struct.pack_into("<IIQQ", buf, d, 8, TAG_GAP, 0, 0)
    else:
        fmt, off, value = put[case]
        struct.pack_into(fmt, buf, off, value)


def _corruption_child(names: list[str], case: str, conn: Any) -> None:
    """For each op, on its own topic: subscribe, publish 5 messages, write the
    garbage, then try the op three times.  Expected shmring exceptions are
    reported; anything else propagates (exit code 1); a crash is a signal."""
    report: dict[str, list[str]] = {}
    for op, name in zip(("recv", "peek", "sub_latest", "send"), names):
        t = Topic.open(name)
        sub = t.subscribe()
        pub = t.publisher()
        for i in range(5):
            pub.send(bytes([i]) * 20)  # 48-byte records at 0, 48, ... 192
        seg = shmring.Segment.open(name)
        _corrupt(seg.buf, case)
        out = report.setdefault(op, [])
        for _ in range(3):
            try:
                if op == "recv":
                    m = sub.recv(timeout=0.02)
                elif op == "peek":
                    with sub.peek(timeout=0.02) as mv:
                        m = bytes(mv)
                elif op == "sub_latest":
                    m = sub.latest(timeout=0.02)
                else:
                    pub.send(b"z" * 20, timeout=0.02)
                    m = b"sent"
                out.append("sent" if m == b"sent" else f"msg{m[0]}" if m == bytes([m[0]]) * 20 else f"BAD {m!r}")
            except (shmring.CorruptedError, shmring.Lagged, shmring.Timeout) as e:
                out.append(type(e).__name__)
        seg.close()
    conn.send(report)


# What the first receive (recv and peek) and the first publish must give.
CORRUPTION_CASES = {
    "tail_huge": ("CorruptedError", "CorruptedError"),
    "tail_unaligned": ("msg0", "CorruptedError"),
    "tail_ahead": ("CorruptedError", "CorruptedError"),
    # A reclaim point past tail, unaligned or inside a record: a clean error
    # either way (the resume point is checked; a plausible one reads as lag).
    "head_huge": ("Lagged|CorruptedError", "CorruptedError"),
    "head_past_tail_max": ("Lagged|CorruptedError", None),
    "head_unaligned": ("Lagged|CorruptedError", None),
    "head_mid_record": ("Lagged|CorruptedError", None),
    "len_huge": ("CorruptedError", None),
    "len_big": ("CorruptedError", None),
    "tag_bad": ("CorruptedError", None),
    "tag_pad": ("CorruptedError", None),
    "tag_gap_len": ("CorruptedError", None),
    "tag_gap_zero": ("CorruptedError", None),
    "records_garbage": ("CorruptedError", None),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("policy", ["block", "overwrite"])
@pytest.mark.parametrize("case", sorted(CORRUPTION_CASES))
def test_corruption_is_a_clean_error(
    new_name: Callable[[], str], kids: Kids, case: str, policy: str
) -> None:
    names = [new_name() for _ in range(4)]
    topics = [Topic.create(n, 256, policy) for n in names]  # type: ignore[arg-type]
    try:
        a, b = FORK.Pipe()
        p = kids.process(FORK, _corruption_child, names, case, b)
        p.join(OP_TIMEOUT)
        if p.is_alive():
            p.kill()
            p.join(5)
            raise AssertionError(f"{case}: the child hung")
        assert p.exitcode >= 0, f"{case}: the child was killed by signal {-p.exitcode} (a crash)"
        assert p.exitcode == 0, f"{case}: the child raised an unexpected exception (see its stderr)"
        report = a.recv()
    finally:
        for t in topics:
            t.close()
    first_read, first_send = CORRUPTION_CASES[case]
    allowed = {"CorruptedError", "Lagged", "Timeout", "sent"} | {f"msg{i}" for i in range(6)}
    for op, outcomes in report.items():
        assert set(outcomes) <= allowed, f"{op}: {outcomes}: garbage handed out as a message"
    assert report["recv"][0] in first_read.split("|") and report["peek"][0] in first_read.split("|"), report
    if first_send is not None:
        assert report["send"][0] == first_send, report
    if case.startswith(("tail", "len", "tag", "records")) and first_read == "CorruptedError":
        assert report["recv"] == ["CorruptedError"] * 3  # it stays an error, never garbage


# What pickle.loads may raise on random bytes.
UNPICKLING_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    ImportError,
    OverflowError,
    MemoryError,
    UnicodeDecodeError,
)


def _fuzz_child(name: str, seed: int, rounds: int, conn: Any) -> None:
    rng = random.Random(seed)
    t = Topic.open(name)
    seg = shmring.Segment.open(name)
    buf = seg.buf
    d = u64(buf, CTRL["data_offset"])
    counts: dict[str, int] = {}
    for r in range(rounds):
        if r % 10 == 0:  # start from a sane ring now and then
            struct.pack_into("<QQ", buf, CTRL["tail"], 0, 0)
        sub = t.subscribe()
        pub = t.publisher()
        for _ in range(rng.randrange(1, 8)):
            try:
                pub.send(rng.randbytes(rng.randrange(0, 100)), timeout=0)
            except (shmring.CorruptedError, shmring.Timeout):
                pass
        where = rng.choice(["tail", "head", "next_seq", "last_pos", "header", "ring", "subscriber"])
        if where == "subscriber":
            entry = [rng.choice([0, 1, 16, 2**64 - 16, rng.getrandbits(64)]) for _ in range(4)]
            struct.pack_into("<QQQQ", buf, SUBS + SUB_ENTRY * rng.randrange(0, 4), *entry)
        elif where in ("tail", "head", "next_seq", "last_pos"):
            value = rng.choice([0, 8, 16, 2**63, 2**64 - 16, rng.getrandbits(64), rng.randrange(0, 2048) * 16])
            struct.pack_into("<Q", buf, CTRL[where], value)
        elif where == "header":
            off = d + rng.randrange(0, 512 // 16) * 16
            tag = rng.choice([TAG_BYTES, TAG_OBJECT, TAG_PAD, TAG_GAP, 0, rng.getrandbits(32)])
            struct.pack_into("<IIQ", buf, off, rng.getrandbits(32), tag, rng.getrandbits(64))
        else:
            off = d + rng.randrange(0, 512 - 8)
            buf[off : off + 8] = rng.randbytes(8)
        for _ in range(3):
            op = rng.choice(["recv", "recv_bytes", "peek", "latest", "send", "send_gap"])
            try:
                if op == "recv":
                    sub.recv(timeout=0)
                elif op == "recv_bytes":
                    sub.recv_bytes(timeout=0)
                elif op == "peek":
                    with sub.peek(timeout=0):
                        pass
                elif op == "latest":
                    sub.latest(timeout=0)
                elif op == "send_gap":
                    try:
                        pub.send_gap(rng.randrange(1, 5), timeout=0)
                    except shmring.CorruptedError:
                        raise
                    except ValueError as e:  # a garbage next_seq near 2**64: no numbers left for the gap
                        assert "2**64" in str(e), e
                else:
                    pub.send(b"x" * rng.randrange(0, 64), timeout=0)
                counts["ok"] = counts.get("ok", 0) + 1
            except (shmring.CorruptedError, shmring.Lagged, shmring.Timeout) as e:
                counts[type(e).__name__] = counts.get(type(e).__name__, 0) + 1
            except UNPICKLING_ERRORS:
                if op not in ("recv", "latest"):
                    raise
                counts["unpickle"] = counts.get("unpickle", 0) + 1  # a garbage 'O' record
        sub.close()
        pub.close()
    seg.close()
    conn.send(counts)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("policy", ["block", "overwrite"])
def test_corruption_fuzz_never_crashes(topic: Callable[..., Topic], kids: Kids, policy: str) -> None:
    """Random garbage in tail, head, next_seq, last_pos, the subscriber
    table, record headers and payloads, then every reading and publishing
    call of a subscription and a publisher: shmring exceptions only, never
    a crash or a hang (topic.latest() is left out: see
    test_topic_latest_with_garbage_does_not_hang)."""
    t = topic(512, policy)
    a, b = FORK.Pipe()
    p = kids.process(FORK, _fuzz_child, t.name, 1234, 1500, b)
    p.join(20)
    if p.is_alive():
        p.kill()
        p.join(5)
        raise AssertionError("the fuzzing child hung")
    assert p.exitcode >= 0, f"the fuzzing child was killed by signal {-p.exitcode} (a crash)"
    assert p.exitcode == 0, "the fuzzing child raised an unexpected exception (see its stderr)"
    counts = a.recv()
    assert counts.get("CorruptedError", 0) > 0 and counts.get("ok", 0) > 0, counts


def _corrupt_latest_child(name: str, case: str, conn: Any) -> None:
    t = Topic.open(name)
    pub = t.publisher()
    for i in range(5):
        pub.send(bytes([i]) * 20)
    seg = shmring.Segment.open(name)
    buf = seg.buf
    tail = u64(buf, CTRL["tail"])
    if case == "last_pos_past_tail":
        struct.pack_into("<Q", buf, CTRL["last_pos"], tail + 0x1000)
    elif case == "tail_zero":
        struct.pack_into("<Q", buf, CTRL["tail"], 0)
    else:
        _corrupt(buf, case)
    try:
        conn.send(repr(t.latest()))
    except (shmring.CorruptedError, shmring.Lagged) as e:
        conn.send(type(e).__name__)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", ["head_huge", "last_pos_past_tail", "tail_huge"])
def test_topic_latest_with_garbage_does_not_hang(topic: Callable[..., Topic], kids: Kids, case: str) -> None:
    t = topic(256, "overwrite")
    a, b = FORK.Pipe()
    p = kids.process(FORK, _corrupt_latest_child, t.name, case, b)
    hung = hangs(p, HANG_S)
    assert not hung, f"{case}: topic.latest() spins forever (uninterruptibly) instead of raising CorruptedError"
    assert p.exitcode == 0, f"{case}: exit code {p.exitcode}"
    assert a.recv() in ("CorruptedError", "Lagged", "None", repr(bytes([4]) * 20))


def test_garbage_object_payload_is_a_clean_exception(topic: Callable[..., Topic]) -> None:
    """A send_obj record whose pickle was overwritten: recv raises (the
    unpickling error), recv_bytes still returns the raw bytes."""
    t = topic(256)
    sub = t.subscribe()
    t.publisher().send_obj({"a": 1})
    seg = shmring.Segment.open(t.name)
    try:
        d = u64(seg.buf, CTRL["data_offset"])
        assert header(seg.buf, 0, 256)[1] == TAG_OBJECT
        seg.buf[d + HDR : d + HDR + 4] = b"\xff\xfe\xfd\xfc"
    finally:
        seg.close()
    with pytest.raises(Exception) as info:
        sub.recv(timeout=0)
    assert not isinstance(info.value, (shmring.Timeout, shmring.Lagged))
    with pytest.raises(shmring.Timeout):
        sub.recv(timeout=0)  # the bad record was consumed


def test_overwrite_publisher_refuses_a_misaligned_reclaim_point(name: str) -> None:
    with shmring.Topic.create(name, 256, "overwrite") as t:
        pub = t.publisher()
        for i in range(20):
            pub.send(b"m%d" % i)
        seg = shmring.Segment.open(name)
        head = struct.unpack_from("<Q", seg.buf, 136)[0]  # head: docs/PROTOCOL.md 6.1
        struct.pack_into("<Q", seg.buf, 136, head + 8)
        with pytest.raises(shmring.CorruptedError):
            for i in range(20):
                pub.send(b"n" * 100)
        seg.close()
        pub.close()
