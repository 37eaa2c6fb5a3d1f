"""The framing of an out-of-band record (include/shmring/oob.h,
docs/PROTOCOL.md section 5.2): what the queue writes is what the document
says, byte for byte; the reader gives back exactly the pieces a record was
made of; and damaged counts and lengths, in a record or in a queue's ring,
are refused with CorruptedError (never a crash or a read outside the
record), the queue going on with the next item."""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmring
from _queue_helpers import DATA, HEAD, OP_TIMEOUT
from conftest import FORK, Kids, u64

encode, decode, frame = shmring._core.oob_encode, shmring._core.oob_decode, shmring._core.oob_frame
MIN = shmring._core.QUEUE_OOB_MIN
READONLY = 1


def framed(stream: bytes, buffers: list[tuple[bytes, int]]) -> bytes:
    """A record's payload as docs/PROTOCOL.md section 5.2 lays it out: u32
    nbuf, u32 stream_len, an entry {u32 len, u32 flags} per buffer, the
    stream, then each buffer at the next multiple of 64, zeros between."""
    out = bytearray(struct.pack("=II", len(buffers), len(stream)))
    for data, flags in buffers:
        out += struct.pack("=II", len(data), flags)
    out += stream
    for data, _ in buffers:
        out += bytes(-len(out) % 64)
        out += data
    return bytes(out)


def pickled(obj: Any) -> tuple[bytes, list[tuple[bytes, int]]]:
    """The stream and the out-of-band buffers of ``obj`` (those of MIN bytes
    or more), as the queue pickles it."""
    buffers: list[pickle.PickleBuffer] = []

    def collect(buffer: pickle.PickleBuffer) -> bool:
        if buffer.raw().nbytes < MIN:
            return True
        buffers.append(buffer)
        return False

    stream = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL, buffer_callback=collect)
    return stream, [(bytes(b.raw()), READONLY if b.raw().readonly else 0) for b in buffers]


PIECES = st.lists(st.tuples(st.binary(max_size=300), st.sampled_from([0, READONLY])), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(stream=st.binary(max_size=200), buffers=PIECES)
def test_the_reader_gives_back_exactly_the_pieces_of_a_record(stream: bytes, buffers: list[tuple[bytes, int]]) -> None:
    data = framed(stream, buffers)
    (at, length), pieces = frame(data)
    assert (at, length) == (8 + 8 * len(buffers), len(stream)) and data[at : at + length] == stream
    assert len(pieces) == len(buffers)
    for (offset, size, flags), (want, want_flags) in zip(pieces, buffers):
        assert offset % 64 == 0 and (size, flags) == (len(want), want_flags) and data[offset : offset + size] == want


def _array(dtype: str, n: int, fortran: bool, readonly: bool) -> Any:
    a = (np.arange(n) % 251).astype(dtype)
    if fortran:
        a = np.asfortranarray(a[: n - n % 2].reshape(-1, 2))
    a.flags.writeable = not readonly
    return a


ARRAYS = st.builds(_array, st.sampled_from(["<f4", ">i8", "|u1", "<c16", "|b1"]), st.integers(0, 3 * MIN),
                   st.booleans(), st.booleans())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrays=st.lists(ARRAYS, min_size=1, max_size=4), other=st.integers() | st.text(max_size=8))
def test_the_queue_writes_what_the_document_says_and_reads_it_back(arrays: list[Any], other: Any) -> None:
    item = arrays
    obj = {"arrays": item, "other": other}
    stream, buffers = pickled(obj)
    data = encode(obj)
    assert data == (framed(stream, buffers) if buffers else None)
    if data is not None:
        back = decode(data)
        assert back["other"] == other
        for a, b in zip(item, back["arrays"]):
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes("A") == b.tobytes("A")
            assert b.flags.writeable == a.flags.writeable and b.flags.f_contiguous == a.flags.f_contiguous


@settings(max_examples=400, deadline=None)
@given(stream=st.binary(max_size=40), buffers=PIECES,
       damage=st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.none() | st.integers(0, 700))
def test_damaged_counts_and_lengths_are_refused_never_read_past(stream: bytes, buffers: list[tuple[bytes, int]],
                                                                damage: list[tuple[int, int]], cut: int | None) -> None:
    data = bytearray(framed(stream, buffers))
    for at, value in damage:
        if at < len(data):
            data[at] = value
    if cut is not None:
        data = data[:cut]
    try:
        (at, length), pieces = frame(bytes(data))
    except shmring.CorruptedError:
        return
    assert at + length <= len(data)
    end = at + length
    for offset, size, _ in pieces:  # in order, aligned, inside, and the last one ends the record
        assert offset >= end and offset % 64 == 0 and offset + size <= len(data)
        end = offset + size
    assert end == len(data)


@pytest.mark.parametrize("payload", [b"", b"\x01\0\0\0", struct.pack("=II", 0, 0), struct.pack("=II", 2**32 - 1, 0),
                                     struct.pack("=IIII", 1, 2**32 - 1, 0, 0), struct.pack("=IIII", 1, 0, 2**32 - 1, 0),
                                     framed(b"s", [(b"x" * 10, 2)]), framed(b"s", [(b"x", 0)]) + b"\0"])
def test_a_damaged_record_is_corrupted_error_for_the_reader_too(payload: bytes) -> None:
    with pytest.raises(shmring.CorruptedError, match="out-of-band"):
        frame(payload)
    with pytest.raises(shmring.CorruptedError, match="out-of-band"):
        decode(payload)


# -- in a queue --------------------------------------------------------------------------


def _set_u32(offset_in_payload: int, value: int) -> Callable[[Any, int], None]:
    def mutate(buf: Any, payload: int) -> None:
        struct.pack_into("=I", buf, payload + offset_in_payload, value)

    return mutate


def _past_the_record(buf: Any, payload: int) -> None:
    length = struct.unpack_from("=I", buf, payload - 8)[0]
    struct.pack_into("=I", buf, payload + 8, length)  # buffer 0 as long as the whole record


DAMAGE: dict[str, Callable[[Any, int], None]] = {
    "no buffer": _set_u32(0, 0),
    "more buffers than the record holds": _set_u32(0, 2**32 - 1),
    "two buffers, one written": _set_u32(0, 2),
    "the stream past the end": _set_u32(4, 2**32 - 1),
    "a buffer past the end": _set_u32(8, 2**32 - 1),
    "a buffer as long as the record": _past_the_record,
    "an unknown flag": _set_u32(12, 0x80),
}


def _victim(name: str) -> list[str]:
    """Open the queue, get twice: what each get gave."""
    q = shmring.Queue.open(name)
    out = []
    for _ in range(2):
        try:
            got = q.get(timeout=OP_TIMEOUT)
            out.append(f"ok {got!r}"[:40])
        except shmring.CorruptedError as e:
            out.append(f"CorruptedError {e}")
        except BaseException as e:  # noqa: BLE001 - reported to the test
            out.append(f"{type(e).__name__} {e}")
    out.append(f"left {q.qsize()}")
    q.close()
    return out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_framing_in_the_ring_is_corrupted_error_and_the_queue_goes_on(kids: Kids, name: str,
                                                                               case: str) -> None:
    with shmring.Queue(name=name) as q:
        q.put(np.arange(MIN, dtype=np.float32))  # 32 KiB: out of band, in the main ring
        q.put("next")
        seg = shmring.Segment.open(name)
        try:
            DAMAGE[case](seg.buf, DATA + u64(seg.buf, HEAD) % q.capacity + 8)
        finally:
            seg.close()
        first, second, left = kids.start(FORK, _victim, name).result(timeout=50)  # (a crash would kill it)
    assert first.startswith("CorruptedError") and "out-of-band record" in first, first
    assert second == "ok 'next'" and left == "left 0"
