"""Child-process side of bench_arrays.py: the frames, their check, and each
transport's producer and consumer.

A frame is a C-ordered numpy array of a given shape and dtype.  Every
producer makes frame ``seq`` the same way (``FrameFormat.fill``), and every
consumer checks it the same way (``FrameFormat.check``), whatever the
transport, so that filling and checking cost the same for all of them:

- fill ("whole" mode, the default): every element is set to ``seq % 251``
  (``ndarray.fill``); "stamps" mode writes only the sampled elements below;
- then the frame number ``seq`` goes, as a little-endian uint64, into the
  frame's first 8 and last 8 bytes;
- check: the array's shape and dtype, the frame number at both ends (a lost,
  repeated, reordered or torn frame shows there), and 64 sampled elements,
  one in each 64th of the frame at an offset that moves with ``seq`` (so
  that a run's frames sample the whole frame), which must hold
  ``seq % 251`` (stale bytes of an older frame show there).

The producers of the copying transports fill one of ``POOL`` arrays of
their own in turn and hand it over; the in-place ones (shmring
``reserve_array``, iceoryx2's loan) fill the frame where it lies in shared
memory.  ``POOL`` is more than any transport holds in flight, so that
mp.Queue (which pickles in a feeder thread after ``put`` returned) and
pyzmq (which sends the array's own memory after ``send`` returned, and
says when it is done through a ``MessageTracker``) never see a frame
overwritten before it left.

Protocol over each worker's control Pipe:

    worker -> parent   ("ready",)                 imports done, buffers made
    parent -> worker   ("open",)                  the producer first (iceoryx2 drops
    worker -> parent   ("opened",)                samples for older subscribers)
    parent -> worker   ("connect",)               producer only: wait for the consumer
    worker -> parent   ("connected",)
    parent -> worker   ("run", count, base)       frames base .. base+count-1
    worker -> parent   ("armed",)                 just before the timed loop
    worker -> parent   ("done", result)
    parent -> worker   ("fin",)                   producer only: the consumer has every
                                                  frame; now read the CPU time
    parent -> worker   ("stop",)
    worker -> parent   ("error", text, is_mismatch)
"""

from __future__ import annotations

import ctypes
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from _harness import Mismatch, child_setup, is_mismatch, orders, send_error

DEPTH = 4  # frames in flight, where a transport lets it be set
POOL = 8  # producer-side arrays of the copying transports, used in turn (> DEPTH + 1)
SAMPLES = 64  # elements checked per frame, besides the frame number
MARGIN = 8  # elements kept clear of the frame number at each end of the frame
FILL_MODULUS = 251  # frame seq's elements hold seq % 251 (exact in every dtype measured)
OFFSET_STEP = 7919  # how far the sampled elements move from one frame to the next
RECV_TIMEOUT = 60.0  # a consumer that waits this long for a frame fails (the producer is stuck or gone)
SHM_HEADER = 128  # the hand-written ring's two counters, one cache line each, before its slots


@dataclass
class Spec:
    """What both workers of a measurement need (pickled to them): the
    transport's key, the frame's format, and the transport's handles."""

    transport: str
    shape: tuple[int, ...]
    dtype: str
    fill: str  # "whole" or "stamps"
    handles: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# frames


class FrameFormat:
    """How frame ``seq`` is written (``fill``) and checked (``check``); see the module's docstring."""

    def __init__(self, shape: tuple[int, ...], dtype: str, fill: str) -> None:
        import numpy as np

        self.np = np
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.count = 1
        for n in self.shape:
            self.count *= n
        self.nbytes = self.count * self.dtype.itemsize
        self.stride = (self.count - 2 * MARGIN) // SAMPLES
        if self.stride < 1 or self.nbytes < 16 + 2 * MARGIN * self.dtype.itemsize:
            raise ValueError(f"frames of {self.nbytes} bytes are too small to check")
        self.grid = MARGIN + np.arange(SAMPLES, dtype=np.intp) * self.stride
        self.whole = fill == "whole"

    def new_array(self) -> Any:
        """A frame-shaped array of the process's own, its pages touched."""
        return self.np.zeros(self.shape, self.dtype)

    def positions(self, seq: int) -> Any:
        return self.grid + (seq * OFFSET_STEP) % self.stride

    def fill(self, a: Any, seq: int) -> None:
        """Write frame ``seq`` into ``a`` (a C-contiguous frame-shaped array)."""
        flat = a.reshape(-1)  # a view: frames are contiguous
        value = seq % FILL_MODULUS
        if self.whole:
            flat.fill(value)
        else:
            flat[self.positions(seq)] = value
        raw = flat.view(self.np.uint8)
        number = self.np.frombuffer(seq.to_bytes(8, "little"), self.np.uint8)
        raw[:8] = number
        raw[-8:] = number

    def check(self, a: Any, seq: int) -> None:
        """Raise Mismatch unless ``a`` is frame ``seq`` (shape, dtype, frame number at both ends, samples)."""
        if a.shape != self.shape or a.dtype != self.dtype:
            raise Mismatch(f"frame {seq}: got shape {a.shape} dtype {a.dtype}, expected {self.shape} {self.dtype}")
        flat = a.reshape(-1)
        raw = flat.view(self.np.uint8)
        first = int.from_bytes(raw[:8].tobytes(), "little")
        last = int.from_bytes(raw[-8:].tobytes(), "little")
        if first != seq or last != seq:
            raise Mismatch(f"frame {seq}: its first/last 8 bytes carry frame numbers {first}/{last}")
        value = seq % FILL_MODULUS
        got = flat[self.positions(seq)]
        if not (got == value).all():
            bad = int(self.np.flatnonzero(got != value)[0])
            raise Mismatch(f"frame {seq}: element {int(self.positions(seq)[bad])} holds {got[bad].item()!r}, "
                           f"expected {value}")


def _view_at(address: int, fmt: FrameFormat, byte_array_type: Any) -> Any:
    """A frame-shaped ndarray over ``fmt.nbytes`` bytes at ``address`` (memory the caller keeps alive)."""
    return fmt.np.frombuffer(byte_array_type.from_address(address), fmt.dtype).reshape(fmt.shape)


# ---------------------------------------------------------------------------
# transports: each a producer and a consumer side, made by open_end()


class End:
    """One side of one transport in a worker: ``open`` makes the port where
    the order matters (the producer's first), ``connect`` (producer) waits
    for the consumer where the transport needs it, ``produce(count, base)``
    or ``consume(count, base)`` moves frames base .. base+count-1, ``close``
    lets go of everything."""

    def __init__(self, spec: Spec, fmt: FrameFormat, role: str) -> None:
        self.spec, self.fmt, self.role = spec, fmt, role
        self.h = spec.handles
        self.pool = [fmt.new_array() for _ in range(POOL)] if role == "producer" and self.copies else []

    copies = True  # the producer fills arrays of its own (False: in place)

    def open(self) -> None:
        pass

    def connect(self, timeout: float) -> None:
        pass

    def produce(self, count: int, base: int) -> None:
        raise NotImplementedError

    def consume(self, count: int, base: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SendArrayEnd(End):
    """shmring Channel ``send_array`` / ``recv_array``: one copy each way."""

    def __init__(self, spec: Spec, fmt: FrameFormat, role: str) -> None:
        super().__init__(spec, fmt, role)
        import shmring

        self.ch = shmring.Channel.open(self.h["channel"])

    def produce(self, count: int, base: int) -> None:
        send, fill, pool = self.ch.send_array, self.fmt.fill, self.pool
        for seq in range(base, base + count):
            a = pool[seq % POOL]
            fill(a, seq)
            send(a)

    def consume(self, count: int, base: int) -> None:
        recv, check = self.ch.recv_array, self.fmt.check
        for seq in range(base, base + count):
            check(recv(RECV_TIMEOUT), seq)

    def close(self) -> None:
        self.ch.close()


class ReserveArrayEnd(SendArrayEnd):
    """shmring Channel ``reserve_array`` / ``peek_array``: the frame is filled
    and checked where it lies in the ring (no copy)."""

    copies = False

    def produce(self, count: int, base: int) -> None:
        reserve, fill = self.ch.reserve_array, self.fmt.fill
        shape, dtype = self.fmt.shape, self.fmt.dtype
        for seq in range(base, base + count):
            with reserve(shape, dtype, zero=not self.fmt.whole) as a:  # every element written: no zeroing first
                fill(a, seq)
                del a  # nothing may hold the ring's memory when the block ends

    def consume(self, count: int, base: int) -> None:
        peek, check = self.ch.peek_array, self.fmt.check
        for seq in range(base, base + count):
            with peek(RECV_TIMEOUT) as a:
                check(a, seq)
                del a


class ShmringQueueEnd(End):
    """shmring ``Queue.put(array)`` / ``get()``: whatever the Queue does with an ndarray."""

    def produce(self, count: int, base: int) -> None:
        put, fill, pool = self.h["queue"].put, self.fmt.fill, self.pool
        for seq in range(base, base + count):
            a = pool[seq % POOL]
            fill(a, seq)
            put(a)

    def consume(self, count: int, base: int) -> None:
        get, check = self.h["queue"].get, self.fmt.check
        for seq in range(base, base + count):
            check(get(True, RECV_TIMEOUT), seq)

    def close(self) -> None:
        self.h["queue"].close()


class MpQueueEnd(ShmringQueueEnd):
    """``multiprocessing.Queue`` of the ndarray (pickled by its feeder thread, through a pipe)."""

    def close(self) -> None:
        q = self.h["queue"]
        q.close()
        if self.role == "producer":
            q.join_thread()


class SharedMemoryRingEnd(End):
    """A hand-written single-producer/single-consumer ring of DEPTH frame
    slots in a ``multiprocessing.shared_memory.SharedMemory`` block: two
    counters (frames written, frames read, each on its own cache line) say
    which slot is next, and two ``multiprocessing.Semaphore`` count the free
    and the filled slots (a post/wait pair is a full memory barrier, so the
    slot's bytes are seen before the counter moves on, on any CPU).  The
    producer copies its frame into the slot (``np.copyto``), the consumer
    copies it out into an array of its own."""

    def __init__(self, spec: Spec, fmt: FrameFormat, role: str) -> None:
        super().__init__(spec, fmt, role)
        from multiprocessing import shared_memory

        np = fmt.np
        self.shm = shared_memory.SharedMemory(self.h["shm"])
        self.counters = np.ndarray((SHM_HEADER // 8,), np.uint64, self.shm.buf)
        raw = np.ndarray((DEPTH, fmt.nbytes), np.uint8, self.shm.buf, SHM_HEADER)
        self.slots = [raw[i].view(fmt.dtype).reshape(fmt.shape) for i in range(DEPTH)]
        self.free, self.filled = self.h["free"], self.h["filled"]
        self.out = fmt.new_array() if role == "consumer" else None

    def produce(self, count: int, base: int) -> None:
        np, fill, pool, slots, counters = self.fmt.np, self.fmt.fill, self.pool, self.slots, self.counters
        free, filled = self.free.acquire, self.filled.release
        for seq in range(base, base + count):
            a = pool[seq % POOL]
            fill(a, seq)
            if not free(True, RECV_TIMEOUT):
                raise TimeoutError(f"no free slot for {RECV_TIMEOUT:g} s")
            written = int(counters[0])  # only the producer moves it
            np.copyto(slots[written % DEPTH], a)
            counters[0] = written + 1
            filled()

    def consume(self, count: int, base: int) -> None:
        np, check, slots, counters, out = self.fmt.np, self.fmt.check, self.slots, self.counters, self.out
        filled, free = self.filled.acquire, self.free.release
        for seq in range(base, base + count):
            if not filled(True, RECV_TIMEOUT):
                raise TimeoutError(f"no frame for {RECV_TIMEOUT:g} s")
            read, written = int(counters[8]), int(counters[0])
            if not read < written <= read + DEPTH:
                raise Mismatch(f"frame {seq}: ring counters read {read}, written {written}")
            np.copyto(out, slots[read % DEPTH])
            counters[8] = read + 1
            free()
            check(out, seq)

    def close(self) -> None:
        self.slots, self.counters = [], None  # views of the block go before it closes
        self.shm.close()


class PyzmqEnd(End):
    """pyzmq PUSH/PULL over ipc://, ``copy=False`` both ways: the producer
    sends its array's memory (``track=True``: an array is filled again only
    once zmq is done with it), the consumer checks the received frame
    through ``np.frombuffer`` of its buffer."""

    def __init__(self, spec: Spec, fmt: FrameFormat, role: str) -> None:
        super().__init__(spec, fmt, role)
        import zmq

        self.ctx = zmq.Context()
        if role == "producer":
            self.sock = self.ctx.socket(zmq.PUSH)
            self.sock.setsockopt(zmq.SNDHWM, self.h["hwm"])
            self.sock.bind(self.h["addr"])
        else:
            self.sock = self.ctx.socket(zmq.PULL)
            self.sock.setsockopt(zmq.RCVHWM, self.h["hwm"])
            self.sock.setsockopt(zmq.RCVTIMEO, int(RECV_TIMEOUT * 1000))
            self.sock.connect(self.h["addr"])
        self.trackers: list[Any] = [None] * POOL

    def produce(self, count: int, base: int) -> None:
        send, fill, pool, trackers = self.sock.send, self.fmt.fill, self.pool, self.trackers
        for seq in range(base, base + count):
            i = seq % POOL
            if trackers[i] is not None:
                trackers[i].wait(RECV_TIMEOUT)  # zmq is done with this array's last frame
            a = pool[i]
            fill(a, seq)
            trackers[i] = send(a, copy=False, track=True)

    def consume(self, count: int, base: int) -> None:
        recv, check, frombuffer = self.sock.recv, self.fmt.check, self.fmt.np.frombuffer
        dtype, shape, nbytes = self.fmt.dtype, self.fmt.shape, self.fmt.nbytes
        for seq in range(base, base + count):
            buf = recv(copy=False).buffer
            if buf.nbytes != nbytes:
                raise Mismatch(f"frame {seq}: {buf.nbytes} bytes, expected {nbytes}")
            check(frombuffer(buf, dtype).reshape(shape), seq)

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


class Iceoryx2End(End):
    """iceoryx2 publish/subscribe of a u8 slice, in place both ways: the
    producer fills a loaned sample (``loan_slice_uninit``) through an ndarray
    over it and sends it; the consumer checks the received sample through an
    ndarray over it (no copy).  RetryUntilDelivered backpressure, no safe
    overflow; the subscriber, whose Python receive does not block, polls."""

    copies = False

    def __init__(self, spec: Spec, fmt: FrameFormat, role: str) -> None:
        super().__init__(spec, fmt, role)
        import iceoryx2 as iox2

        iox2.set_log_level(iox2.LogLevel.Error)
        self.iox2 = iox2
        self.node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        self.byte_array_type = ctypes.c_ubyte * fmt.nbytes
        self.port: Any = None

    def open(self) -> None:
        iox2, fmt = self.iox2, self.fmt
        self.service = (
            self.node.service_builder(iox2.ServiceName.new(self.h["service"]))
            .publish_subscribe(iox2.Slice[ctypes.c_uint8])
            .enable_safe_overflow(False)
            .subscriber_max_buffer_size(DEPTH)
            .subscriber_max_borrowed_samples(2)
            .max_publishers(1)
            .max_subscribers(1)
            .payload_alignment(iox2.Alignment.new(64))
            .open_or_create()
        )
        if self.role == "producer":
            self.port = (self.service.publisher_builder()
                         .initial_max_slice_len(fmt.nbytes)
                         .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
                         .create())
        else:
            self.port = self.service.subscriber_builder().buffer_size(DEPTH).create()

    def connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.service.dynamic_config.number_of_subscribers < 1:
            if time.monotonic() > deadline:
                raise TimeoutError("iceoryx2: no subscriber connected")
            time.sleep(0.001)
        self.port.update_connections()

    def produce(self, count: int, base: int) -> None:
        loan, fmt, byte_array_type = self.port.loan_slice_uninit, self.fmt, self.byte_array_type
        fill, nbytes = fmt.fill, fmt.nbytes
        for seq in range(base, base + count):
            sample = loan(nbytes)
            a = _view_at(sample.payload_ptr, fmt, byte_array_type)
            fill(a, seq)
            del a  # no view of the sample outlives it
            sample.assume_init().send()

    def consume(self, count: int, base: int) -> None:
        receive, fmt, byte_array_type = self.port.receive, self.fmt, self.byte_array_type
        check, nbytes, monotonic = fmt.check, fmt.nbytes, time.monotonic
        for seq in range(base, base + count):
            sample = receive()
            if sample is None:
                deadline, polls = monotonic() + RECV_TIMEOUT, 0
                while sample is None:
                    sample = receive()
                    polls += 1
                    if not polls & 0xFFFF and monotonic() > deadline:
                        raise TimeoutError(f"iceoryx2: no frame for {RECV_TIMEOUT:g} s")
            n = sample.header.number_of_elements
            if n != nbytes:
                raise Mismatch(f"frame {seq}: {n} bytes, expected {nbytes}")
            a = _view_at(sample.payload_ptr, fmt, byte_array_type)
            check(a, seq)
            del a  # before the sample goes back
            sample.delete()

    def close(self) -> None:
        if self.port is not None:
            self.port.delete()
        self.port = self.service = self.node = None


END_TYPES: dict[str, type[End]] = {
    "send_array": SendArrayEnd,
    "reserve_array": ReserveArrayEnd,
    "shmring.Queue": ShmringQueueEnd,
    "mp.Queue": MpQueueEnd,
    "shared_memory": SharedMemoryRingEnd,
    "pyzmq": PyzmqEnd,
    "iceoryx2": Iceoryx2End,
}


# ---------------------------------------------------------------------------
# the worker process


def worker_main(spec: Spec, role: str, conn: Any) -> None:
    """Entry point of the producer and the consumer process of one measurement."""
    child_setup(stacks_on_sigusr1=True)
    end: End | None = None
    try:
        fmt = FrameFormat(spec.shape, spec.dtype, spec.fill)
        end = END_TYPES[spec.transport](spec, fmt, role)
        conn.send(("ready",))
        for msg in orders(conn):
            if msg[0] == "open":
                end.open()
                conn.send(("opened",))
            elif msg[0] == "connect":
                end.connect(RECV_TIMEOUT)
                conn.send(("connected",))
            elif msg[0] == "run":
                conn.send(("done", _timed_run(end, role, msg[1], msg[2], conn)))
            else:
                raise RuntimeError(f"unexpected order {msg!r}")
    except BaseException as e:
        send_error(conn, role, is_mismatch(e))
    finally:
        if end is not None:
            try:
                end.close()
            except Exception:
                pass
        try:
            conn.close()
        except Exception:
            pass
        sys.stdout.flush()


def _timed_run(end: End, role: str, count: int, base: int, conn: Any) -> dict[str, float]:
    cpu, clock = time.process_time, time.perf_counter
    conn.send(("armed",))
    c0, t0 = cpu(), clock()
    if role == "producer":
        end.produce(count, base)
        t1 = clock()
        # Background threads (mp.Queue's feeder, zmq's I/O thread) may still be
        # working: read the CPU time once the consumer has every frame.
        msg = conn.recv()
        if msg[0] != "fin":
            raise RuntimeError(f"expected 'fin', got {msg!r}")
        return {"t0": t0, "t1": t1, "t_cpu": clock(), "cpu": cpu() - c0}
    end.consume(count, base)
    t1 = clock()
    return {"t0": t0, "t1": t1, "cpu": cpu() - c0}
