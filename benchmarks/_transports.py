"""Transport adapters for bench_channel.py.

Each transport has a parent side (``link``: create what the two processes
share, register its cleanup) and a child side (``open_tx`` / ``open_rx`` and
the ping-pong phases), which return an :class:`Endpoint`: the bound methods
the measuring loops in ``_workloads.py`` call.  The loops call these methods
directly (``send = ep.send``), so an adapter adds no Python frame per message
where the library's own call can be used as is.

Libraries are imported inside the methods: a missing peer only skips its own
rows, and a child imports only what it measures.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import os
import struct
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from _harness import Mismatch

U64 = struct.Struct("<Q")


class Endpoint:
    """The operations a worker loop needs; those a transport lacks stay None.

    - ``send(buf)``, ``recv() -> bytes`` (or a buffer when ``view`` is true:
      the loop then compares without copying it).
    - ``send_many(list_of_buffers)``, ``recv_many(max_messages) -> list``.
    - ``zc_send(n, seq)``: write a message of n bytes in place with seq in its
      first and last 8 bytes; ``zc_recv(n, seq)``: read the next one in place
      and check both (raises Mismatch).
    - ``wait_peer(timeout)``: block until the receiving side is connected.
    - ``idle(seconds) -> str``: block in a receive for that long (no sender).
    - ``large_send(buf)``: send a bytearray the sender stamped (the "large"
      workload); ``large_recv[mode](n, seq)``: receive the next message one
      way (``mode``, e.g. "recv", "recv_into", "peek") and check it with
      :func:`check_stamped`.
    """

    def __init__(self, *, send: Callable[[Any], Any] | None = None, recv: Callable[[], Any] | None = None,
                 send_many: Callable[[list[bytes]], Any] | None = None,
                 recv_many: Callable[[int], list[Any]] | None = None,
                 zc_send: Callable[[int, int], None] | None = None, zc_recv: Callable[[int, int], None] | None = None,
                 idle: Callable[[float], str] | None = None, closer: Callable[[], Any] | None = None) -> None:
        """An endpoint with the given operations (the others may be set later);
        ``closer``, when given, is registered as by ``on_close``."""
        self.send = send
        self.recv = recv
        self.send_many = send_many
        self.recv_many = recv_many
        self.zc_send = zc_send
        self.zc_recv = zc_recv
        self.wait_peer: Callable[[float], None] | None = None
        self.idle = idle
        self.view = False
        self.large_send: Callable[[bytearray], Any] | None = None
        self.large_recv: dict[str, Callable[[int, int], None]] = {}
        self._closers: list[Callable[[], Any]] = [] if closer is None else [closer]

    def on_close(self, fn: Callable[[], Any]) -> None:
        self._closers.append(fn)

    def merge(self, other: Endpoint) -> Endpoint:
        """Ping-pong: fill what this endpoint lacks from another one."""
        for attr in ("send", "recv", "send_many", "recv_many", "zc_send", "zc_recv", "wait_peer", "idle"):
            if getattr(self, attr) is None:
                setattr(self, attr, getattr(other, attr))
        self.view = self.view or other.view
        self._closers.extend(other._closers)
        other._closers = []
        return self

    def close(self) -> None:
        while self._closers:
            fn = self._closers.pop()
            try:
                fn()
            except Exception:
                pass


def check_stamped(view: Any, n: int, seq: int) -> None:
    """The "large" workload's check, the same for every transport and way of
    receiving: ``n`` bytes, ``seq`` in the first and last 8 bytes (the
    sender stamps both; a stale record from an earlier lap of a ring, a
    truncated or shifted one fails)."""
    m = len(view)
    if m != n:
        raise Mismatch(f"large message {seq}: {m} bytes, expected {n}")
    first, last = U64.unpack_from(view, 0)[0], U64.unpack_from(view, m - 8)[0]
    if first != seq or last != seq:
        raise Mismatch(f"large message {seq}: first/last 8 bytes hold {first}/{last}")


class Resources:
    """Parent-side resources of one measurement; everything is released on exit
    (shmring channels closed, hence removed, ipc sockets removed with their
    folder by the caller, queues closed)."""

    def __init__(self, tmpdir: str, ctx: Any) -> None:
        self.tmpdir = tmpdir
        self.ctx = ctx
        self.stack = ExitStack()
        self.shm_names: list[str] = []
        self._n = 0

    def unique(self, prefix: str) -> str:
        self._n += 1
        Resources._global_n += 1
        return f"{prefix}-{os.getpid()}-{Resources._global_n}"

    _global_n = 0

    def __enter__(self) -> Resources:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()


class Transport:
    name = "?"
    family = "?"
    aliases: tuple[str, ...] = ()
    module: str | None = None  # the import that decides availability
    dist: str | None = None  # the distribution whose version the report names
    workloads: frozenset[str] = frozenset({"throughput", "pingpong"})
    notes: dict[str, str] = {}

    # -- parent side --------------------------------------------------------

    def check(self) -> str | None:
        """None when usable, else why its rows are skipped."""
        if self.module is None:
            return None
        try:
            importlib.import_module(self.module)
        except Exception as e:  # ImportError, or a broken build
            return f"import {self.module} failed: {type(e).__name__}: {e}"
        return None

    def version(self) -> str | None:
        return _dist_version(self.dist) if self.dist else None

    def link(self, res: Resources, size: int, capacity: int) -> Any:
        raise NotImplementedError

    def pp_link(self, res: Resources, size: int, capacity: int) -> Any:
        return (self.link(res, size, capacity), self.link(res, size, capacity))

    # -- child side ---------------------------------------------------------

    def open_tx(self, spec: Any, size: int) -> Endpoint:
        raise NotImplementedError

    def open_rx(self, spec: Any, size: int) -> Endpoint:
        raise NotImplementedError

    def pp_phase1(self, spec: Any, side: str, size: int) -> Endpoint:
        """Side "a" sends on spec[0] and receives on spec[1]; "b" the other way.
        Phase 1 opens the sending ends (publishers before subscribers)."""
        return self.open_tx(spec[0] if side == "a" else spec[1], size)

    def pp_phase2(self, spec: Any, side: str, size: int, ep: Endpoint) -> Endpoint:
        return ep.merge(self.open_rx(spec[1] if side == "a" else spec[0], size))

    def open_idle(self, spec: Any) -> Endpoint:
        raise NotImplementedError


def _dist_version(dist: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


# ---------------------------------------------------------------------------
# shmring


class ShmringTransport(Transport):
    family = "shmring"
    module = "shmring"
    dist = "shmring"
    workloads = frozenset({"throughput", "batch", "zerocopy", "large", "pingpong", "idle"})

    def __init__(self, wait: str) -> None:
        self.wait = wait
        self.name = f"shmring-{wait}"
        self.aliases = ("shm", f"shm-{wait}")

    def check(self) -> str | None:
        try:
            import shmring
        except Exception as e:
            return f"import shmring failed: {type(e).__name__}: {e}"
        if not hasattr(shmring, "Channel"):
            return "shmring.Channel does not exist yet"
        return None

    def link(self, res: Resources, size: int, capacity: int) -> str:
        import shmring

        ch = shmring.Channel.create(None, capacity=capacity, wait=self.wait)
        res.shm_names.append(ch.name)
        res.stack.enter_context(ch)  # closed on exit: the last user to leave removes it
        return ch.name

    def _open(self, name: str) -> Any:
        import shmring

        return shmring.Channel.open(name, wait=self.wait)

    def open_tx(self, spec: str, size: int) -> Endpoint:
        ch = self._open(spec)
        reserve, pack = ch.reserve, U64.pack_into

        def zc_send(n: int, seq: int) -> None:
            with reserve(n) as mv:
                pack(mv, 0, seq)
                pack(mv, n - 8, seq)

        ep = Endpoint(send=ch.send, send_many=ch.send_many, zc_send=zc_send, closer=ch.close)
        ep.large_send = ch.send
        return ep

    def open_rx(self, spec: str, size: int) -> Endpoint:
        ch = self._open(spec)
        peek, unpack = ch.peek, U64.unpack_from

        def zc_recv(n: int, seq: int) -> None:
            with peek() as mv:
                m = len(mv)
                if m != n:
                    raise Mismatch(f"zero-copy message {seq}: {m} bytes, expected {n}")
                first, last = unpack(mv, 0)[0], unpack(mv, m - 8)[0]
                if first != seq or last != seq:
                    raise Mismatch(f"zero-copy message {seq}: first/last 8 bytes hold {first}/{last}")

        ep = Endpoint(recv=ch.recv, recv_many=ch.recv_many, zc_recv=zc_recv, closer=ch.close)
        ep.large_recv = self._large_receivers(ch, size)
        return ep

    @staticmethod
    def _large_receivers(ch: Any, size: int) -> dict[str, Callable[[int, int], None]]:
        """The three ways of the "large" workload: a fresh bytes per message
        (two copies), into the caller's buffer (two copies, no allocation),
        and in place through a loan (one copy, the sender's)."""
        recv, recv_into, peek, check = ch.recv, ch.recv_into, ch.peek, check_stamped
        into = bytearray(size)
        whole = memoryview(into)

        def by_recv(n: int, seq: int) -> None:
            check(recv(), n, seq)

        def by_recv_into(n: int, seq: int) -> None:
            got = recv_into(into)
            check(whole[:got] if got != size else whole, n, seq)

        def by_peek(n: int, seq: int) -> None:
            with peek() as mv:
                check(mv, n, seq)

        return {"recv": by_recv, "recv_into": by_recv_into, "peek": by_peek}

    def open_idle(self, spec: str) -> Endpoint:
        ch = self._open(spec)

        def idle(seconds: float) -> str:
            try:
                data = ch.recv(timeout=seconds)
            except TimeoutError:  # shmring.Timeout is one
                return "timeout"
            raise Mismatch(f"idle reader received {len(data)} bytes while no one sends")

        return Endpoint(idle=idle, closer=ch.close)


# ---------------------------------------------------------------------------
# multiprocessing


class MpQueueTransport(Transport):
    name = "mp.Queue"
    family = "mp"
    aliases = ("queue", "mp-queue", "mpqueue")

    def link(self, res: Resources, size: int, capacity: int) -> Any:
        q = res.ctx.Queue()
        res.stack.callback(q.close)
        return q

    def open_tx(self, q: Any, size: int) -> Endpoint:
        def close() -> None:
            q.close()
            q.join_thread()  # the feeder thread flushes what is buffered

        return Endpoint(send=q.put, closer=close)

    def open_rx(self, q: Any, size: int) -> Endpoint:
        return Endpoint(recv=q.get, closer=q.close)


class MpPipeTransport(Transport):
    name = "mp.Pipe"
    family = "mp"
    aliases = ("pipe", "mp-pipe", "mppipe")

    @staticmethod
    def _pipe(res: Resources, duplex: bool) -> tuple[Any, Any]:
        """(read end, write end), or two ends that do both; closed on exit."""
        a, b = res.ctx.Pipe(duplex=duplex)
        res.stack.callback(a.close)
        res.stack.callback(b.close)
        return (a, b)

    def link(self, res: Resources, size: int, capacity: int) -> Any:
        return self._pipe(res, duplex=False)

    def pp_link(self, res: Resources, size: int, capacity: int) -> Any:
        return self._pipe(res, duplex=True)

    def open_tx(self, spec: Any, size: int) -> Endpoint:
        return Endpoint(send=spec[1].send_bytes, closer=spec[1].close)

    def open_rx(self, spec: Any, size: int) -> Endpoint:
        return Endpoint(recv=spec[0].recv_bytes, closer=spec[0].close)

    def pp_phase1(self, spec: Any, side: str, size: int) -> Endpoint:
        conn = spec[0] if side == "a" else spec[1]
        return Endpoint(send=conn.send_bytes, recv=conn.recv_bytes, closer=conn.close)

    def pp_phase2(self, spec: Any, side: str, size: int, ep: Endpoint) -> Endpoint:
        return ep


# ---------------------------------------------------------------------------
# faster-fifo


class FasterFifoTransport(Transport):
    name = "faster-fifo"
    family = "faster-fifo"
    aliases = ("faster_fifo", "ff", "fasterfifo")
    module = "faster_fifo"
    dist = "faster-fifo"
    workloads = frozenset({"throughput", "batch", "pingpong"})
    GET_TIMEOUT = 10.0  # faster-fifo's own default for get/put

    def link(self, res: Resources, size: int, capacity: int) -> Any:
        import faster_fifo
        import faster_fifo_reduction  # noqa: F401  (makes the queue picklable for spawn)

        # The default max_size_bytes (1,000,000) cannot hold a 1 MiB message;
        # give it the same byte capacity as the shmring ring.
        q = faster_fifo.Queue(max_size_bytes=capacity)
        res.stack.callback(q.close)
        return q

    def open_tx(self, q: Any, size: int) -> Endpoint:
        # default timeout: 10 s, so a stuck peer cannot hang it
        return Endpoint(send=q.put, send_many=q.put_many)

    def open_rx(self, q: Any, size: int) -> Endpoint:
        get_many = q.get_many
        timeout = self.GET_TIMEOUT

        def recv_many(max_messages: int) -> list[Any]:
            return get_many(block=True, timeout=timeout, max_messages_to_get=max_messages)

        return Endpoint(recv=q.get, recv_many=recv_many)


# ---------------------------------------------------------------------------
# pyzmq


class PyzmqTransport(Transport):
    """PUSH/PULL for one-way traffic, PAIR for ping-pong, over ipc:// sockets
    in the run's temporary folder.  Messages of 64 KiB and more are sent with
    copy=False and received with copy=False (the check then reads the frame's
    buffer in place); smaller ones are copied, which is faster in pyzmq."""

    name = "pyzmq"
    family = "pyzmq"
    aliases = ("zmq", "zeromq")
    module = "zmq"
    workloads = frozenset({"throughput", "batch", "pingpong"})
    ZERO_COPY_MIN = 65536

    def version(self) -> str | None:
        try:
            import zmq

            return f"{zmq.__version__} (libzmq {zmq.zmq_version()})"
        except Exception:
            return None

    def link(self, res: Resources, size: int, capacity: int) -> str:
        return f"ipc://{res.tmpdir}/{res.unique('zmq')}.sock"

    def pp_link(self, res: Resources, size: int, capacity: int) -> str:
        return self.link(res, size, capacity)

    @staticmethod
    def _socket(ep: Endpoint, kind: str) -> Any:
        import zmq

        ctx = zmq.Context()
        sock = ctx.socket(getattr(zmq, kind))
        sock.setsockopt(zmq.LINGER, 1000)

        def close() -> None:
            sock.close(linger=0)
            ctx.term()

        ep.on_close(close)
        return sock

    def _fill(self, ep: Endpoint, sock: Any, size: int) -> None:
        if size >= self.ZERO_COPY_MIN:
            ep.send = functools.partial(sock.send, copy=False)
            recv = sock.recv

            def recv_view() -> Any:
                return recv(copy=False).buffer

            ep.recv = recv_view
            ep.view = True
        else:
            ep.send = sock.send
            ep.recv = sock.recv
        ep.send_many = sock.send_multipart
        recv_multipart = sock.recv_multipart
        ep.recv_many = lambda max_messages: recv_multipart()

    def _attach(self, ep: Endpoint, kind: str, addr: str, size: int, bind: bool) -> None:
        """Give ``ep`` a ``kind`` socket bound to ``addr`` (or connected to
        it) and the operations on it."""
        sock = self._socket(ep, kind)
        if bind:
            sock.bind(addr)
        else:
            sock.connect(addr)
        self._fill(ep, sock, size)

    def open_tx(self, addr: str, size: int) -> Endpoint:
        ep = Endpoint()
        self._attach(ep, "PUSH", addr, size, bind=True)
        ep.recv = ep.recv_many = None
        ep.view = False
        return ep

    def open_rx(self, addr: str, size: int) -> Endpoint:
        ep = Endpoint()
        self._attach(ep, "PULL", addr, size, bind=False)
        ep.send = ep.send_many = None
        return ep

    def pp_phase1(self, addr: str, side: str, size: int) -> Endpoint:
        ep = Endpoint()
        if side == "a":
            self._attach(ep, "PAIR", addr, size, bind=True)
        return ep

    def pp_phase2(self, addr: str, side: str, size: int, ep: Endpoint) -> Endpoint:
        if side == "b":
            self._attach(ep, "PAIR", addr, size, bind=False)
        return ep


# ---------------------------------------------------------------------------
# iceoryx2


class Iceoryx2Transport(Transport):
    """Publish/subscribe with a u8 slice payload, no safe overflow and the
    RetryUntilDelivered backpressure strategy (nothing may be lost).  The
    publisher is always created before the subscriber (iceoryx2 drops samples
    otherwise) and waits until the subscriber is connected.  Receiving is
    non-blocking in the Python API, so the subscriber busy-polls: expect a full
    core of CPU at the receiver.  Messages of 4 KiB and more are checked in
    place through a view of the sample; smaller ones are copied out."""

    name = "iceoryx2"
    family = "iceoryx2"
    aliases = ("iox2", "iceoryx")
    module = "iceoryx2"
    dist = "iceoryx2"
    workloads = frozenset({"throughput", "zerocopy", "large", "pingpong"})
    VIEW_MIN = 4096
    POLL_TIMEOUT = 30.0

    def link(self, res: Resources, size: int, capacity: int) -> Any:
        buffer = max(4, min(1024, capacity // max(size, 1)))
        return (f"shmring-bench/{res.unique('iox2')}", buffer)

    @staticmethod
    def _service(spec: Any, ep: Endpoint) -> tuple[Any, Any, Any]:
        import iceoryx2 as iox2

        iox2.set_log_level(iox2.LogLevel.Error)
        name, buffer = spec
        node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        svc = (
            node.service_builder(iox2.ServiceName.new(name))
            .publish_subscribe(iox2.Slice[ctypes.c_uint8])
            .enable_safe_overflow(False)
            .subscriber_max_buffer_size(buffer)
            .subscriber_max_borrowed_samples(4)
            .max_publishers(1)
            .max_subscribers(1)
            .open_or_create()
        )
        ep.on_close(lambda: (svc, node))  # keep both alive until the ports are gone
        return iox2, node, svc

    def open_tx(self, spec: Any, size: int) -> Endpoint:
        ep = Endpoint()
        iox2, node, svc = self._service(spec, ep)
        pub = (
            svc.publisher_builder()
            .initial_max_slice_len(max(size, 8))
            .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
            .create()
        )
        ep.on_close(pub.delete)
        loan, memmove, u64 = pub.loan_slice_uninit, ctypes.memmove, ctypes.c_uint64.from_address

        def send(data: bytes) -> None:
            n = len(data)
            sample = loan(n)
            memmove(sample.payload_ptr, data, n)
            sample.assume_init().send()

        def zc_send(n: int, seq: int) -> None:
            sample = loan(n)
            p = sample.payload_ptr
            u64(p).value = seq
            u64(p + n - 8).value = seq
            sample.assume_init().send()

        sources: dict[int, Any] = {}  # id of a sender's bytearray -> a ctypes view of it (kept alive)

        def large_send(buf: bytearray) -> None:
            n = len(buf)
            src = sources.get(id(buf))
            if src is None:
                src = sources[id(buf)] = (ctypes.c_char * n).from_buffer(buf)
            sample = loan(n)
            memmove(sample.payload_ptr, src, n)
            sample.assume_init().send()

        def wait_peer(timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while svc.dynamic_config.number_of_subscribers < 1:
                if time.monotonic() > deadline:
                    raise TimeoutError("iceoryx2: no subscriber connected")
                time.sleep(0.001)
            pub.update_connections()

        ep.send, ep.zc_send, ep.wait_peer, ep.large_send = send, zc_send, wait_peer, large_send
        return ep

    def open_rx(self, spec: Any, size: int) -> Endpoint:
        ep = Endpoint()
        iox2, node, svc = self._service(spec, ep)
        sub = svc.subscriber_builder().buffer_size(spec[1]).create()
        ep.on_close(sub.delete)
        receive, string_at, u64 = sub.receive, ctypes.string_at, ctypes.c_uint64.from_address
        ubyte, monotonic, limit = ctypes.c_ubyte, time.monotonic, self.POLL_TIMEOUT

        def poll() -> Any:
            sample = receive()
            if sample is not None:
                return sample
            deadline = monotonic() + limit
            spins = 0
            while True:
                sample = receive()
                if sample is not None:
                    return sample
                spins += 1
                if not spins & 0xFFFF and monotonic() > deadline:
                    raise TimeoutError("iceoryx2: nothing received for %.0f s" % limit)

        def recv_copy() -> bytes:
            sample = poll()
            return string_at(sample.payload_ptr, sample.header.number_of_elements)

        def recv_view() -> memoryview:
            sample = poll()
            arr = (ubyte * sample.header.number_of_elements).from_address(sample.payload_ptr)
            arr._sample = sample  # the sample stays loaned while the view lives
            return memoryview(arr)

        def zc_recv(n: int, seq: int) -> None:
            sample = poll()
            p, m = sample.payload_ptr, sample.header.number_of_elements
            if m != n:
                raise Mismatch(f"zero-copy message {seq}: {m} bytes, expected {n}")
            first, last = u64(p).value, u64(p + m - 8).value
            if first != seq or last != seq:
                raise Mismatch(f"zero-copy message {seq}: first/last 8 bytes hold {first}/{last}")

        def large_peek(n: int, seq: int) -> None:
            sample = poll()
            arr = (ubyte * sample.header.number_of_elements).from_address(sample.payload_ptr)
            check_stamped(memoryview(arr), n, seq)

        ep.large_recv = {"peek": large_peek}
        if size >= self.VIEW_MIN:
            ep.recv, ep.view = recv_view, True
        else:
            ep.recv = recv_copy
        ep.zc_recv = zc_recv
        return ep


def cleanup_iceoryx2() -> str | None:
    """Remove what iceoryx2 nodes killed by a timeout left behind."""
    try:
        import iceoryx2 as iox2

        iox2.set_log_level(iox2.LogLevel.Error)
        node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        state = node.try_cleanup_dead_nodes()
        del node
        return str(state)
    except Exception as e:
        return f"iceoryx2 cleanup failed: {e}"


# ---------------------------------------------------------------------------
# C futex / spin ping-pong (not a Python transport: run by the parent)


class CPingPong(Transport):
    family = "c"
    workloads = frozenset({"pingpong"})

    def __init__(self, mode: str, work_ns: int = 0) -> None:
        self.mode = mode
        self.work_ns = work_ns
        # "C futex, sleeping peer": 1 µs of work before each post, so that
        # every post wakes a peer that really went to sleep (see the C file).
        self.name = f"C {mode}" + (", sleeping peer" if work_ns else "")
        suffix = "-sleeping" if work_ns else ""
        self.aliases = (f"c-{mode}{suffix}", f"c_{mode}{suffix}", f"{mode}{suffix}", "c")

    def check(self) -> str | None:
        import shutil

        if shutil.which("gcc") is None:
            return "gcc not found"
        return None


def all_transports() -> list[Transport]:
    return [
        ShmringTransport("spin"),
        ShmringTransport("yield"),
        ShmringTransport("block"),
        ShmringTransport("adaptive"),
        ShmringTransport("semaphore"),
        MpQueueTransport(),
        MpPipeTransport(),
        FasterFifoTransport(),
        PyzmqTransport(),
        Iceoryx2Transport(),
        CPingPong("futex"),
        CPingPong("futex", work_ns=1000),
        CPingPong("spin"),
    ]
