"""Garbage in a queue's shared memory (control block, records, overflow
chunks), written through ``Segment.open(name).buf``: a victim process gets a
clean shmring.CorruptedError, never a crash or a hang; impossible
configurations are refused at open.
"""

from __future__ import annotations

import queue
import random
import struct
from collections.abc import Callable
from typing import Any

import pytest

import shmring

from _queue_helpers import (
    BYTES, CAPACITY, CHUNK_CAPACITY, CHUNK_DATA_OFFSET, CHUNK_HEAD, CHUNK_INDEX, CHUNK_TAIL, COUNT, DATA, DATA_OFFSET,
    FLAGS, HEAD, OP_TIMEOUT, OVF_HEAD, OVF_TAIL, RING, TAG_PAD, TAIL, chunk_files,
)
from conftest import FORK, set_u64, u64


def _victim(names: list[str], ops: list[str], conn: Any, timeout: float) -> None:
    out = []
    for name in names:
        res = []
        try:
            q = shmring.Queue.open(name)
        except BaseException as e:  # noqa: BLE001
            conn.send(("ok", [[("open", type(e).__name__, isinstance(e, shmring.CorruptedError), str(e)[:200])]]))
            return
        for op in ops:
            r: Any
            try:
                if op == "get":
                    r = q.get_bytes(timeout=timeout)
                elif op == "get_obj":
                    r = q.get(timeout=timeout)
                elif op == "get_many":
                    r = q.get_many(timeout=timeout)
                elif op == "put":
                    r = q.put_bytes(b"v" * 24, timeout=timeout)  # type: ignore[func-returns-value]
                elif op == "put_many":
                    r = q.put_many([b"w", b"x"], timeout=timeout)  # type: ignore[func-returns-value]
                else:
                    raise ValueError(op)
                res.append((op, "ok", False, repr(r)[:80]))
            except BaseException as e:  # noqa: BLE001
                res.append((op, type(e).__name__, isinstance(e, shmring.CorruptedError), str(e)[:200]))
        out.append(res)
    conn.send(("ok", out))


def run_victim(names: list[str], ops: list[str], timeout: float = 0.1) -> list[list[tuple[str, str, bool, str]]]:
    r, w = FORK.Pipe(duplex=False)
    p = FORK.Process(target=_victim, args=(names, ops, w, timeout))
    p.start()
    w.close()
    assert r.poll(30), "the victim hangs"
    status, out = r.recv()
    p.join(OP_TIMEOUT)
    assert p.exitcode == 0, f"the victim died with {p.exitcode} (a crash on corrupted data)"
    result: list[list[tuple[str, str, bool, str]]] = out
    return result


def _filled(name: str, bounded: bool = True) -> shmring.Queue:
    q = shmring.Queue(max_size_bytes=256, name=name) if bounded else shmring.Queue(name=name)
    q.put_bytes(b"skip" * 10)
    q.get_bytes()  # head and tail away from 0
    q.put_bytes(b"a" * 10)
    q.put("obj")
    q.put_bytes(b"c" * 20)
    return q


def _first_record(buf: Any) -> int:
    return DATA + u64(buf, HEAD) % u64(buf, CAPACITY)


def _reverse_chain(b: Any) -> None:
    set_u64(b, OVF_HEAD, 9)
    set_u64(b, OVF_TAIL, 4)


CORRUPTIONS: dict[str, tuple[Callable[[Any], None], list[str], list[str]]] = {
    # name: (mutate the payload, ops of the victim, expected outcome of each: C = CorruptedError)
    "tail past capacity": (lambda b: set_u64(b, TAIL, u64(b, HEAD) + 256 + 8), ["get", "put", "get"], ["C", "C", "C"]),
    "tail misaligned": (lambda b: set_u64(b, TAIL, u64(b, TAIL) + 3), ["get", "put"], ["C", "C"]),
    "head after tail": (lambda b: set_u64(b, HEAD, u64(b, TAIL) + 8), ["get_many", "put_many"], ["C", "C"]),
    "head far ahead": (lambda b: set_u64(b, HEAD, 2**63), ["get", "put"], ["C", "C"]),
    "record length huge": (lambda b: struct.pack_into("<I", b, _first_record(b), 0xFFFFFFF0), ["get", "put"], ["C", "ok"]),
    "record length past tail": (
        lambda b: struct.pack_into("<I", b, _first_record(b), u64(b, TAIL) - u64(b, HEAD)),
        ["get_many", "get"],
        ["C", "C"],
    ),
    "record tag unknown": (lambda b: struct.pack_into("<I", b, _first_record(b) + 4, 0x41), ["get", "get_obj", "put"], ["C", "C", "ok"]),
    "padding of the wrong length": (lambda b: struct.pack_into("<II", b, _first_record(b), 8, TAG_PAD), ["get"], ["C"]),
    "count below items": (lambda b: set_u64(b, COUNT, 0), ["get"], ["C"]),
    "bytes below payload": (lambda b: set_u64(b, BYTES, 3), ["get_many"], ["C"]),
    "overflow chain too long": (lambda b: set_u64(b, OVF_TAIL, u64(b, OVF_HEAD) + 10**6), ["get", "put"], ["C", "C"]),
    "overflow chain reversed": (_reverse_chain, ["get", "put"], ["C", "C"]),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corruption_gives_corrupted_error(case: str, new_name: Callable[[], str]) -> None:
    mutate, ops, expected = CORRUPTIONS[case]
    name = new_name()
    with _filled(name):
        seg = shmring.Segment.open(name)
        mutate(seg.buf)
        seg.close()
        (res,) = run_victim([name], ops)
    outcome = ["C" if corrupted else ("ok" if kind == "ok" else kind) for _, kind, corrupted, _ in res]
    assert outcome == expected, res
    assert all("corrupted" in msg for _, _, corrupted, msg in res if corrupted)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "field, value", [(CAPACITY, 12345), (CAPACITY, 8), (CAPACITY, 2**40), (DATA_OFFSET, 0), (FLAGS, 0xFF)]
)
def test_corrupted_config_is_refused_on_open(field: int, value: int, new_name: Callable[[], str]) -> None:
    name = new_name()
    with _filled(name):
        seg = shmring.Segment.open(name)
        set_u64(seg.buf, field, value) if field != FLAGS else struct.pack_into("<I", seg.buf, field, value)
        seg.close()
        (res,) = run_victim([name], ["get"])
    assert [(op, corrupted) for op, _, corrupted, _ in res] == [("open", True)], res


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "field, value", [(CHUNK_INDEX, 7), (CHUNK_CAPACITY, 3), (CHUNK_DATA_OFFSET, 0), (CHUNK_TAIL, 2**40), (CHUNK_HEAD, 5)]
)
def test_corrupted_overflow_chunk(field: int, value: int, new_name: Callable[[], str]) -> None:
    name = new_name()
    with shmring.Queue(name=name) as q:
        q.put_bytes(b"m" * (RING - 100))
        q.put_bytes(b"k" * 5000)  # the ring is full: chunk 0
        (chunk,) = chunk_files(name)
        seg = shmring.Segment.open(chunk)
        set_u64(seg.buf, field, value)
        seg.close()
        (res,) = run_victim([name], ["get", "get", "put"])
    outcome = [("C" if corrupted else kind) for _, kind, corrupted, _ in res]
    assert outcome == ["ok", "C", "C"], res


@pytest.mark.timeout(30)
def test_random_garbage_never_crashes(new_name: Callable[[], str]) -> None:
    rng = random.Random(1234)
    names, queues = [], []
    try:
        for i in range(40):
            name = new_name()
            q = shmring.Queue(max_size_bytes=256, name=name)
            queues.append(q)
            names.append(name)
            for _ in range(rng.randint(0, 30)):  # move head and tail around the ring
                try:
                    q.put_bytes(bytes(rng.randint(0, 40)), block=False)
                except queue.Full:
                    pass
                if rng.random() < 0.6:
                    q.get_bytes(block=False)
            seg = shmring.Segment.open(name)
            buf = seg.buf
            for _ in range(rng.randint(1, 6)):
                where = rng.choice(["data", "data", "data", "ctrl"])
                if where == "data":
                    off = DATA + rng.randrange(0, 256 - 3) // 4 * 4
                    struct.pack_into("<I", buf, off, rng.choice([0, 1, 7, 8, 0x4F, 0x42, 0x50, 248, 2**31, rng.getrandbits(32)]))
                else:
                    off = rng.choice([HEAD, TAIL, COUNT, BYTES])
                    set_u64(buf, off, u64(buf, off) + rng.choice([-16, -8, -1, 1, 8, 16, 256, 2**63]))
            seg.close()
        results = run_victim(names, ["get", "get", "put", "get", "put_many", "get", "get"], timeout=0)
    finally:
        for q in queues:
            q.close()  # the last handle out removes it
    allowed = {"ok", "Empty", "Full"}
    for name, res in zip(names, results):
        for op, kind, corrupted, msg in res:
            assert corrupted or kind in allowed, f"{name}: {op} raised {kind}: {msg}"


def test_a_spin_window_over_50_ms_is_refused(name: str) -> None:
    with pytest.raises(ValueError):
        shmring.Queue(name=name, spin_ns=60_000_000)
    with shmring.Queue(name=name, spin_ns=50_000_000) as q:
        seg = shmring.Segment.open(name)
        struct.pack_into("<I", seg.buf, 28, 2_000_000_000)  # a hostile peer's 2 s poll
        with pytest.raises(shmring.CorruptedError):
            shmring.Queue.open(name)
        seg.close()
        q.put(1)
        assert q.get() == 1
