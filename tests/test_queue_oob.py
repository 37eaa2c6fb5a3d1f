"""Out-of-band buffers in queue items (include/shmring/oob.h, record tag
'M'): an ndarray, or a large bytes, bytearray or memoryview item, is copied
once into the queue and once out of it, not pickled byte by byte; the
ndarray that comes out is writable and owns that one copy.  Small buffers,
and every item of a queue with a dumps/loads of the user's, are pickled in
band as before.  Real processes (fork and spawn) check every item; the
framing itself, and damaged framing, are in test_queue_oob_framing.py."""

from __future__ import annotations

import pickle
import queue
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import shmring
import shmring._out_of_band
from _array_helpers import DTYPES, sample
from _queue_helpers import DATA, HEAD, OP_TIMEOUT, TAG_OBJECT, chunk_files
from conftest import CONTEXTS, Kids, u64

TAG_OOB = 0x4D
MIN = shmring._core.QUEUE_OOB_MIN  # buffers from this size on go out of band
MiB = 1 << 20


def record_tags(q: shmring.Queue[Any], n: int) -> list[int]:
    """The tags of the first ``n`` records of the main ring (no padding among them)."""
    seg = shmring.Segment.open(q.name)
    try:
        off, tags = u64(seg.buf, HEAD) % q.capacity, []
        for _ in range(n):
            length, tag = struct.unpack_from("<II", seg.buf, DATA + off)
            tags.append(tag)
            off = (off + 8 + (length + 7) // 8 * 8) % q.capacity
        return tags
    finally:
        seg.close()


def owner(a: Any) -> Any:
    """The object whose memory an ndarray views (past the views between)."""
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a.obj if isinstance(a, memoryview) else a


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same type, all the way down (arrays: dtype, shape,
    elements, memory order and writability; memoryviews: format, shape,
    writability)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return bool(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
                    and a.flags.c_contiguous == b.flags.c_contiguous and a.flags.f_contiguous == b.flags.f_contiguous
                    and a.flags.writeable == b.flags.writeable)
    if isinstance(a, memoryview):
        return a.format == b.format and a.shape == b.shape and a.readonly == b.readonly and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def through_pickle(item: Any) -> Any:
    """What the item is once pickled in band and unpickled (the queue's
    reference: it copies a non-contiguous array into C order, as pickle
    does, and so on)."""
    return pickle.loads(shmring._out_of_band.dumps(item, None))


def arrives_intact(item: Any, got: Any) -> bool:
    return same(through_pickle(item), got)


def items(seed: int, big: int = 3 * MiB) -> list[Any]:
    """Items of every kind this path takes, a pure function of the seed:
    arrays of every dtype in C, F and non-contiguous order, small (in band)
    and large (out of band), raw buffers, items holding several arrays,
    and plain items between them.  No item of one seed equals an item of
    another: a reader of two producers tells whose each item is."""
    out: list[Any] = []
    for i, dtype in enumerate(DTYPES):
        a = sample(dtype, (64, 48), seed + i)  # 3-24 KiB: some in band, some out
        out += [a, np.asfortranarray(a), a[::2, ::3], (i, "plain", seed)]
    large = sample("<f4", (big // 4,), seed)
    ro = sample("<i8", (4096,), seed + 1)
    ro.flags.writeable = False
    raw = bytes((seed * 7 + j) % 251 for j in range(MIN))
    out += [
        large, large.reshape(-1, 1024).T, ro, sample("<c16", (0, 6 + seed)), np.float64(seed),
        raw, raw[:4], bytearray(raw), bytearray(raw[:4]),
        memoryview(sample("<f8", (30, 40), seed)), memoryview(raw), memoryview(bytearray(raw[:3])),
        {"meta": {"seed": seed}, "frames": [large[: MIN // 2], large[MIN // 2 : MIN]], "tag": raw[:10]},
        [sample("<u2", (MIN,), seed), None, sample("|b1", (MIN * 2,), seed)],
    ]
    return out


# -- one process ------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["C", "F", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_arrays_of_every_dtype_and_order_come_back_the_same(sq: shmring.Queue[Any], dtype: str, order: str) -> None:
    a = sample(dtype, (40, 300))
    a = {"C": a, "F": np.asfortranarray(a), "strided": a[::3, 1::2]}[order]
    sq.put(a)
    b = sq.get(timeout=OP_TIMEOUT)
    assert arrives_intact(a, b)
    assert b.flags.writeable


def test_a_large_array_goes_out_of_band_and_comes_back_writable_over_one_copy(sq: shmring.Queue[Any]) -> None:
    a = sample("<f8", (256, 256))
    sq.put(a)
    sq.put(a[0, :4])  # 32 bytes: in band
    assert record_tags(sq, 2) == [TAG_OOB, TAG_OBJECT]
    b = sq.get()
    assert same(a, b) and b.flags.writeable and b.flags.aligned
    assert type(owner(b)) is bytearray and len(owner(b)) == a.nbytes  # the reader's one copy, its own
    b[0, 0] = -1.0  # writable, and nothing else sees it
    assert a[0, 0] != -1.0
    assert same(sq.get(), a[0, :4])


def test_a_read_only_array_comes_back_read_only(sq: shmring.Queue[Any]) -> None:
    a = sample("<i4", (MIN,))
    a.flags.writeable = False
    sq.put(a)
    b = sq.get()
    assert same(a, b) and not b.flags.writeable
    assert type(owner(b)) is bytes


@pytest.mark.parametrize("item", [
    b"B" * MIN, b"tiny", bytearray(b"A" * MIN), bytearray(b"tiny"), bytearray(),
    memoryview(bytearray(b"w" * MIN)), memoryview(b"r" * MIN), memoryview(b""), memoryview(b"small"),
    memoryview(np.arange(12.0).reshape(3, 4)), memoryview(np.arange(MIN, dtype=np.int32).reshape(4, -1)),
    memoryview(np.arange(MIN, dtype=np.int16))[::2], memoryview(np.asfortranarray(np.ones((3, 5)))),
])
def test_bytes_bytearray_and_memoryview_items_come_back_as_they_went(sq: shmring.Queue[Any], item: Any) -> None:
    sq.put(item)
    back = sq.get()
    assert arrives_intact(item, back)
    if not (isinstance(item, memoryview) and not item.c_contiguous):
        assert same(item, back)  # (a non-contiguous one is copied into C order)


def test_large_raw_items_are_the_readers_one_copy(sq: shmring.Queue[Any]) -> None:
    sq.put(bytearray(b"a" * MIN))
    sq.put(b"b" * MIN)
    sq.put(memoryview(bytearray(b"c" * MIN)))
    assert record_tags(sq, 3) == [TAG_OOB] * 3
    ba, by, mv = sq.get(), sq.get(), sq.get()
    ba[0] = ord("z")  # its own bytearray
    assert ba[:2] == b"za" and by == b"b" * MIN and not mv.readonly and type(mv.obj) is bytearray


def test_a_memoryview_that_pickle_could_not_make_back_is_refused_and_nothing_is_put(sq: shmring.Queue[Any]) -> None:
    with pytest.raises(TypeError, match="memoryview of format"):
        sq.put(memoryview(np.zeros(3, dtype=">i4")))
    with pytest.raises(TypeError, match="memoryview"):
        sq.put_many([1, memoryview(np.zeros((0, 2)))])  # no element to cast back to its format
    assert sq.qsize() == 0


def test_an_item_holding_many_arrays_and_other_objects(sq: shmring.Queue[Any]) -> None:
    for item in items(7, big=MIN * 4):
        sq.put(item)
        assert arrives_intact(item, sq.get(timeout=OP_TIMEOUT))


def test_a_queue_with_its_own_serializers_pickles_in_band_as_before(new_name: Callable[[], str]) -> None:
    seen: list[Any] = []

    def dumps(obj: Any) -> bytes:
        seen.append(obj)
        return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)

    a = sample("<f4", (MIN,))
    with shmring.Queue(name=new_name(), dumps=dumps, loads=pickle.loads) as q:
        q.put(a)
        assert record_tags(q, 1) == [TAG_OBJECT] and seen[0] is a
        b = q.get()
        assert same(a, b)


def test_get_bytes_and_a_reader_with_its_own_loads_see_the_items_in_band_pickle(sq: shmring.Queue[Any]) -> None:
    a, mv = sample("<f4", (MIN,)), memoryview(bytearray(b"m" * MIN))
    sq.put_many([a, mv])
    data = sq.get_bytes()
    assert same(pickle.loads(data), a)  # a plain pickle: no buffers to pass
    reader = shmring.Queue.open(sq.name, loads=lambda d: ("mine", pickle.loads(d)))
    try:
        kind, back = reader.get()
        assert kind == "mine" and same(back, mv)
    finally:
        reader.close()


def test_a_queue_made_without_the_oob_flag_gets_in_band_pickles(new_name: Callable[[], str]) -> None:
    # What an earlier release made: processes of this one pickle into it as before.
    name = new_name()
    mapping = shmring._core.create_queue(name, 1 << 20, 0, shmring._core.QUEUE_VALUES, 20000, 0o600)
    q = shmring.Queue.open(name)
    mapping.leave()  # q's attachment keeps the queue; the last to leave removes it
    mapping.close()
    try:
        a = sample("<f8", (MIN,))
        q.put(a)
        assert record_tags(q, 1) == [TAG_OBJECT]
        assert same(q.get(), a)
    finally:
        q.close()


def test_pytorch_cpu_tensors_travel_out_of_band(sq: shmring.Queue[Any]) -> None:
    torch = pytest.importorskip("torch")
    t = torch.arange(MIN * 2, dtype=torch.float32).reshape(-1, 64)
    item = {"t": t, "strided": t[:, ::2], "grad": t[:2].clone().requires_grad_(), "bf16": t.to(torch.bfloat16)}
    sq.put(item)
    assert record_tags(sq, 1) == [TAG_OOB]
    got = sq.get(timeout=OP_TIMEOUT)
    assert all(type(got[k]) is torch.Tensor and torch.equal(got[k].detach(), item[k].detach()) for k in item)
    assert got["t"].is_contiguous() and got["grad"].requires_grad and got["bf16"].dtype == torch.bfloat16
    got["t"][0, 0] = -1.0  # writable, over the reader's own copy
    assert t[0, 0] == 0.0


class PutsWhilePickled:
    """An object whose pickling puts into the queue, then fails."""

    def __init__(self, q: shmring.Queue[Any]) -> None:
        self.q = q

    def __reduce__(self) -> Any:
        self.q.put(sample("<f8", (MIN,)))  # out of band, inside the outer put's pickling
        raise pickle.PicklingError("failed after a nested put")


def test_a_put_inside_another_puts_pickling_then_its_failure(sq: shmring.Queue[Any]) -> None:
    with pytest.raises(pickle.PicklingError, match="nested put"):
        sq.put([sample("<f4", (MIN,)), PutsWhilePickled(sq)])
    assert sq.qsize() == 1 and same(sq.get(), sample("<f8", (MIN,)))
    for item in items(5, big=MIN * 2):  # and the puts after it are as ever
        sq.put(item)
        assert arrives_intact(item, sq.get(timeout=OP_TIMEOUT))


# -- batches ----------------------------------------------------------------------------


def test_get_many_takes_small_and_out_of_band_items_in_order(sq: shmring.Queue[Any]) -> None:
    batch = items(3, big=MIN * 2)
    sq.put_many(batch[:20])
    for item in batch[20:]:
        sq.put(item)
    got: list[Any] = []
    while len(got) < len(batch):
        got += sq.get_many(timeout=OP_TIMEOUT, max_messages_to_get=7)
    assert all(arrives_intact(a, b) for a, b in zip(batch, got))


class Unpicklable:
    def __reduce__(self) -> Any:
        raise pickle.PicklingError("not this one")


@pytest.mark.parametrize("bounded", [False, True])
def test_put_many_with_out_of_band_items_is_all_or_nothing(new_name: Callable[[], str], bounded: bool) -> None:
    big = sample("<f4", (2 * MiB // 4,))
    q = shmring.Queue(4, name=new_name(), max_size_bytes=8 * MiB if bounded else None)
    try:
        with pytest.raises(pickle.PicklingError):
            q.put_many([big, b"x" * MIN, big, Unpicklable()])
        assert q.qsize() == 0 and not chunk_files(q.name)
        q.put_many([big] * 3)  # 6 MiB: into the bounded ring; into chunks past the unbounded one
        with pytest.raises(queue.Full):
            q.put_many_nowait([big] * 2)  # a fifth item (and, bounded, 4 MiB more than the ring)
        assert q.qsize() == 3
        assert all(same(big, b) for b in q.get_many(timeout=OP_TIMEOUT))
        if bounded:
            with pytest.raises(ValueError, match="can never fit"):
                q.put_many([big] * 4)  # 8 MiB of records and their headers in an 8 MiB ring
        assert q.qsize() == 0 and not chunk_files(q.name)
    finally:
        q.close()


# -- overflow chunks --------------------------------------------------------------------


@pytest.mark.parametrize("bounded", [False, True])
def test_items_of_several_mib_go_straight_into_overflow_chunks(new_name: Callable[[], str], bounded: bool) -> None:
    q = shmring.Queue(name=new_name(), max_size_bytes=1 * MiB if bounded else None)
    try:
        arrays = [sample("<f8", (n * MiB // 8,), n) for n in (3, 5)]
        q.put(arrays[0])
        if not bounded:
            q.put(arrays[1])  # behind it, in a chunk of its own
        assert q.stats()["overflow_chunks"] >= 1 and chunk_files(q.name)
        b = q.get(timeout=OP_TIMEOUT)
        assert same(arrays[0], b) and b.flags.writeable
        if bounded:
            q.put(arrays[1])
        assert same(arrays[1], q.get(timeout=OP_TIMEOUT))
        assert q.qsize() == 0 and q.stats()["overflow_chunks"] == 0 and not chunk_files(q.name)
    finally:
        q.close()


# -- copies -----------------------------------------------------------------------------


def traced_peaks(q: shmring.Queue[Any], a: Any) -> tuple[int, Any, int]:
    """The peak of memory allocated (traced) by ``q.put(a)``, what ``q.get()``
    returns, and the peak of memory allocated by that get."""
    tracemalloc.start()
    try:
        q.put(a)
        put_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        b = q.get(timeout=OP_TIMEOUT)
        get_peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    return put_peak, b, get_peak


@pytest.mark.timeout(120)
def test_a_64_mib_array_is_copied_once_each_way_not_pickled(new_name: Callable[[], str]) -> None:
    a = np.arange(16 * MiB, dtype=np.float32)  # 64 MiB
    with shmring.Queue(name=new_name()) as q:
        put_peak, b, get_peak = traced_peaks(q, a)
        assert same(a, b)
        del b
    # Out of band: no pickle of the elements on the way in (straight from the
    # array into the overflow chunk), one buffer of 64 MiB on the way out.
    assert put_peak < MiB
    assert 64 * MiB <= get_peak < 65 * MiB
    with shmring.Queue(name=new_name(), dumps=lambda o: pickle.dumps(o, 5), loads=pickle.loads) as q:
        inband_put, b, inband_get = traced_peaks(q, a)
        assert same(a, b)
        del b
    # In band (as before): the pickle on the way in; the pickle and the array
    # made from it on the way out.
    assert inband_put >= 64 * MiB and inband_get >= 128 * MiB


# -- processes --------------------------------------------------------------------------


def _put_items(q: shmring.Queue[Any], seed: int, batch: int) -> int:
    """Put every item of ``items(seed)``, in batches of ``batch`` (a batch
    with an item of a MiB or more item by item: a bounded queue refuses a
    batch larger than its ring)."""
    todo = items(seed)
    for i in range(0, len(todo), batch):
        part = todo[i : i + batch]
        if batch > 1 and all(getattr(x, "nbytes", 0) < MiB for x in part):
            q.put_many(part, timeout=OP_TIMEOUT)
        else:
            for x in part:
                q.put(x, timeout=OP_TIMEOUT)
    return len(todo)


def _check_items(q: shmring.Queue[Any], seeds: list[int]) -> int:
    """Take every item of the producers of ``seeds`` (get_many), checking each in
    its producer's order; the number of items."""
    expected = {seed: [through_pickle(x) for x in items(seed)] for seed in seeds}
    seen = {seed: 0 for seed in seeds}
    total = sum(len(v) for v in expected.values())
    done = 0
    while done < total:
        for got in q.get_many(timeout=OP_TIMEOUT, max_messages_to_get=5):
            whose = [s for s in seeds if seen[s] < len(expected[s]) and same(expected[s][seen[s]], got)]
            if len(whose) != 1:  # nobody's next item (lost, reordered, damaged), or (a test error) two producers'
                raise AssertionError(f"item {done} is the next of {len(whose)} producers: {describe(got)}; expected: "
                                     + "; ".join(f"seed {s} #{seen[s]}: {describe(expected[s][seen[s]])}"
                                                 for s in seeds if seen[s] < len(expected[s])))
            seen[whose[0]] += 1
            done += 1
    return done


def describe(item: Any) -> str:
    """An item in a few words, for a failure message."""
    if isinstance(item, np.ndarray):
        flags = ("C" if item.flags.c_contiguous else "") + ("F" if item.flags.f_contiguous else "")
        return f"ndarray {item.dtype} {item.shape} {flags} crc {zlib.crc32(item.tobytes()):08x}"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"{type(item).__name__} of {len(bytes(item))} crc {zlib.crc32(bytes(item)):08x}"
    return repr(item)[:80]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("bounded", [False, True])
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_items_between_processes_every_one_checked(kids: Kids, new_name: Callable[[], str], method: str,
                                                   bounded: bool) -> None:
    ctx = CONTEXTS[method]
    q = shmring.Queue(name=new_name(), max_size_bytes=2 * MiB if bounded else None)
    try:
        producers = [kids.start(ctx, _put_items, q, seed, batch) for seed, batch in ((1, 1), (2, 4))]
        consumer = kids.start(ctx, _check_items, q, [1, 2])
        counts = [p.result(timeout=150) for p in producers]
        assert consumer.result(timeout=150) == sum(counts)
        assert q.qsize() == 0
    finally:
        q.close()


def _get_one(q: shmring.Queue[Any]) -> Any:
    return q.get(timeout=OP_TIMEOUT)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_child_gets_a_writable_array_of_its_own(kids: Kids, new_name: Callable[[], str], method: str) -> None:
    with shmring.Queue(name=new_name()) as q:
        a = sample("<f8", (64, 64))
        q.put(a)
        back = kids.start(CONTEXTS[method], _get_one, q).result(timeout=50)
        assert same(a, back)
