"""The worker processes of bench_topic.py: what a publisher, a subscriber
or a latest() reader attaches to (``Spec``, ``Endpoint`` and one opener per
family: shmring, pyzmq, iceoryx2), the measuring loops, and ``worker_main``.

Messages are struct "<Q{n}sQ": the sequence number in the first and last 8
bytes, a fixed body in between; every loop that receives checks them
(raising ``Mismatch``).

Protocol over each worker's control Pipe:
  worker -> parent  ("ready",)              once, after start-up
  parent -> worker  ("open",)               attach: publisher first, then subscribers
  worker -> parent  ("opened",)
  parent -> worker  ("sync", n)             pyzmq / iceoryx2 publisher: wait for n subscribers
  worker -> parent  ("synced",)
  parent -> worker  ("run", params)         barrier, then one measured run
  worker -> parent  ("done", result)
  parent -> worker  ("stop",)
  worker -> parent  ("error", traceback_text, is_mismatch)
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from _harness import KiB, Mismatch, child_setup, orders, send_error

ZMQ_HWM = 2_000_000  # SNDHWM/RCVHWM: more than any run's messages, so that PUB never drops
IOX2_POLL_TIMEOUT = 30.0  # an iceoryx2 subscriber that sees nothing for this long gives up
SUB_ROLES = ("sub", "slow", "eager")  # fast subscriber; slow one; slow one that reads again at once after Lagged


def msg_struct(size: int) -> struct.Struct:
    return struct.Struct(f"<Q{size - 16}sQ")


def msg_body(size: int) -> bytes:
    return bytes((j * 7 + 3) & 0xFF for j in range(size - 16))


@dataclass
class Spec:
    """What a worker attaches to; pickled into every child of a group."""

    family: str
    topic: Any = None  # shmring.Topic (pickles by name)
    addr: str = ""  # pyzmq endpoint
    iox2_name: str = ""
    iox2_buffer: int = 0
    n_subs: int = 0
    max_size: int = KiB
    events: dict[str, Any] = field(default_factory=dict)  # multiprocessing Events
    pin: dict[str, int] = field(default_factory=dict)  # role -> CPU to pin that worker to
    sub_batch: int = 0  # shmring: the publisher's send_many and the subscribers' recv_many batches (0: one call each)


class Endpoint:
    """A worker's attached end: publish(count, size, base) / receive loops."""

    def __init__(self) -> None:
        self.closers: list[Callable[[], Any]] = []

    def close(self) -> None:
        for fn in reversed(self.closers):
            try:
                fn()
            except Exception:
                pass
        self.closers.clear()


def open_shmring(spec: Spec, role: str) -> Endpoint:
    ep = Endpoint()
    topic = spec.topic
    ep.topic = topic  # type: ignore[attr-defined]
    if role == "pub":
        pub = topic.publisher()
        ep.closers.append(pub.close)
        ep.send = pub.send  # type: ignore[attr-defined]
        if spec.sub_batch:
            ep.send_many, ep.batch = pub.send_many, spec.sub_batch  # type: ignore[attr-defined]
    elif role in SUB_ROLES:
        sub = topic.subscribe()
        ep.closers.append(sub.close)
        ep.recv = sub.recv_bytes  # type: ignore[attr-defined]
        if spec.sub_batch:
            ep.recv_many, ep.batch = sub.recv_many, spec.sub_batch  # type: ignore[attr-defined]
    ep.closers.append(topic.close)
    return ep


def open_pyzmq(spec: Spec, role: str) -> Endpoint:
    import zmq

    ep = Endpoint()
    ctx = zmq.Context()
    if role == "pub":
        # XPUB: a PUB socket that also hands the subscriptions to the
        # application; XPUB_VERBOSE passes every one up (not only the first
        # of each topic), which is the slow-joiner handshake: once the
        # publisher has read n subscriptions, all n subscribers get every
        # message sent after.
        sock = ctx.socket(zmq.XPUB)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        sock.setsockopt(zmq.SNDHWM, ZMQ_HWM)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(spec.addr)
        ep.send = sock.send  # type: ignore[attr-defined]

        def sync(n: int, timeout: float = 30.0) -> None:
            sock.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
            for _ in range(n):
                frame = sock.recv()
                if frame[:1] != b"\x01":
                    raise RuntimeError(f"pyzmq: unexpected frame on XPUB: {frame[:20]!r}")

        ep.sync = sync  # type: ignore[attr-defined]
    else:
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, ZMQ_HWM)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(spec.addr)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        ep.recv = sock.recv  # type: ignore[attr-defined]
        ep.sock = sock  # type: ignore[attr-defined]
    def close() -> None:
        sock.close(linger=0)
        ctx.term()

    ep.closers.append(close)
    return ep


def open_iceoryx2(spec: Spec, role: str) -> Endpoint:
    import ctypes

    import iceoryx2 as iox2  # type: ignore[import-untyped]

    iox2.set_log_level(iox2.LogLevel.Error)
    ep = Endpoint()
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    svc = (
        node.service_builder(iox2.ServiceName.new(spec.iox2_name))
        .publish_subscribe(iox2.Slice[ctypes.c_uint8])
        .enable_safe_overflow(False)
        .subscriber_max_buffer_size(spec.iox2_buffer)
        .subscriber_max_borrowed_samples(4)
        .max_publishers(1)
        .max_subscribers(max(1, spec.n_subs))
        .open_or_create()
    )
    ep.closers.append(lambda: (svc, node))  # keep both alive until the ports are gone
    if role == "pub":
        pub = (
            svc.publisher_builder()
            .initial_max_slice_len(spec.max_size)
            .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
            .create()
        )
        ep.closers.append(pub.delete)
        loan, memmove = pub.loan_slice_uninit, ctypes.memmove

        def send(data: bytes) -> None:
            n = len(data)
            sample = loan(n)
            memmove(sample.payload_ptr, data, n)
            sample.assume_init().send()

        def sync(n: int, timeout: float = 30.0) -> None:
            deadline = time.monotonic() + timeout
            while svc.dynamic_config.number_of_subscribers < n:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"iceoryx2: {svc.dynamic_config.number_of_subscribers} of {n} subscribers")
                time.sleep(0.001)
            pub.update_connections()

        ep.send, ep.sync = send, sync  # type: ignore[attr-defined]
    else:
        # Created after the publisher (the parent opens it first): iceoryx2
        # drops samples for a subscriber that connected before the publisher.
        sub = svc.subscriber_builder().buffer_size(spec.iox2_buffer).create()
        ep.closers.append(sub.delete)
        receive, string_at, monotonic = sub.receive, ctypes.string_at, time.monotonic

        def recv() -> bytes:
            # Non-blocking receive only: busy-poll (a full core per subscriber).
            sample = receive()
            if sample is None:
                deadline = monotonic() + IOX2_POLL_TIMEOUT
                spins = 0
                while sample is None:
                    sample = receive()
                    spins += 1
                    if not spins & 0xFFFF and monotonic() > deadline:
                        raise TimeoutError(f"iceoryx2: nothing received for {IOX2_POLL_TIMEOUT:.0f} s")
            return string_at(sample.payload_ptr, sample.header.number_of_elements)

        def poll_empty() -> bool:
            return receive() is None

        ep.recv, ep.poll_empty = recv, poll_empty  # type: ignore[attr-defined]
    return ep


OPENERS = {"shmring": open_shmring, "shmring-many": open_shmring, "pyzmq": open_pyzmq, "iceoryx2": open_iceoryx2}


def publish(ep: Endpoint, p: dict[str, Any]) -> dict[str, Any]:
    size, base, count = p["size"], p["base"], p["count"]
    S, body = msg_struct(size), msg_body(size)
    send, pack = ep.send, S.pack  # type: ignore[attr-defined]
    batch = getattr(ep, "batch", 0)
    t0 = time.monotonic()
    if batch:
        send_many, end = ep.send_many, base + count  # type: ignore[attr-defined]
        for start in range(base, end, batch):
            send_many([pack(seq, body, seq) for seq in range(start, min(end, start + batch))])
    else:
        for seq in range(base, base + count):
            send(pack(seq, body, seq))
    t1 = time.monotonic()
    return {"t0": t0, "t1": t1, "sent": count}


def stream(ep: Endpoint, p: dict[str, Any], stop: Any) -> dict[str, Any]:
    """Publish until `stop` is set (latest section); p["stream"] False: one message only."""
    size, seq = p["size"], p["base"]
    S, body = msg_struct(size), msg_body(size)
    send, pack, is_set = ep.send, S.pack, stop.is_set  # type: ignore[attr-defined]
    t0 = time.monotonic()
    send(pack(seq, body, seq))
    seq += 1
    if p["stream"]:
        while not is_set():
            for s in range(seq, seq + 256):
                send(pack(s, body, s))
            seq += 256
    else:
        stop.wait(120)
    t1 = time.monotonic()
    return {"t0": t0, "t1": t1, "sent": seq - p["base"]}


def receive_strict(ep: Endpoint, p: dict[str, Any], family: str) -> dict[str, Any]:
    """Every message, in order, none missing (shmring "block", iceoryx2).

    A shmring-many subscriber takes batches with ``recv_many`` and checks
    each message of a batch exactly as the other rows check theirs."""
    size, base, count = p["size"], p["base"], p["count"]
    S, body = msg_struct(size), msg_body(size)
    unpack = S.unpack
    expect, end = base, base + count
    m = b""
    batch = getattr(ep, "batch", 0)
    try:
        t0 = time.monotonic()
        if batch:
            recv_many = ep.recv_many  # type: ignore[attr-defined]
            while expect < end:
                for m in recv_many(min(batch, end - expect)):
                    a, b_, z = unpack(m)
                    if a != expect or z != expect or b_ != body:
                        raise Mismatch(_strict_mismatch(expect, a, z, b_ == body))
                    expect += 1
        else:
            recv = ep.recv  # type: ignore[attr-defined]
            while expect < end:
                m = recv()
                a, b_, z = unpack(m)
                if a != expect or z != expect or b_ != body:
                    raise Mismatch(_strict_mismatch(expect, a, z, b_ == body))
                expect += 1
        t1 = time.monotonic()
    except struct.error:
        raise Mismatch(f"expected seq {expect}: got {len(m)} bytes instead of {size}") from None
    # Nothing more may come.
    if family.startswith("shmring"):
        _check_nothing_more(ep)
    elif family == "iceoryx2" and not ep.poll_empty():  # type: ignore[attr-defined]
        raise Mismatch("a sample after the last one")
    return {"t0": t0, "t1": t1, "received": count, "missed": 0, "lag_events": 0}


def _strict_mismatch(expect: int, first: int, last: int, body_ok: bool) -> str:
    return f"expected seq {expect}, got a message with seq {first}/{last}" + ("" if body_ok else " and a corrupted body")


def _check_nothing_more(ep: Endpoint) -> None:
    """A shmring subscription got the last message of the run: nothing more may come."""
    import shmring

    try:
        extra = ep.recv(0)  # type: ignore[attr-defined]
    except shmring.Timeout:
        pass
    else:
        raise Mismatch(f"a message after the last one: {extra[:16]!r}...")


def receive_zmq(ep: Endpoint, p: dict[str, Any], idle_timeout: float) -> dict[str, Any]:
    """Like receive_strict, but a gap is a drop (PUB drops at the high-water
    mark), counted and reported; a reordered or repeated seq fails."""
    import zmq

    size, base, count = p["size"], p["base"], p["count"]
    S, body = msg_struct(size), msg_body(size)
    sock = ep.sock  # type: ignore[attr-defined]
    sock.setsockopt(zmq.RCVTIMEO, int(idle_timeout * 1000))
    recv, unpack = sock.recv, S.unpack
    expect, end, received, drops, stalled = base, base + count, 0, 0, False
    m = b""
    t0 = time.monotonic()
    try:
        while expect < end:
            m = recv()
            a, b_, z = unpack(m)
            if a != expect:
                if a < expect or a >= end or z != a:
                    raise Mismatch(f"expected seq {expect} or later, got a message with seq {a}/{z}")
                drops += a - expect
                expect = a
            if z != expect or b_ != body:
                raise Mismatch(f"seq {expect}: trailing seq {z}" + ("" if b_ == body else ", corrupted body"))
            expect += 1
            received += 1
    except struct.error:
        raise Mismatch(f"expected seq {expect}: got {len(m)} bytes instead of {size}") from None
    except zmq.Again:
        stalled = True  # the tail of the run was dropped: nothing came for idle_timeout
        drops += end - expect
    t1 = time.monotonic()
    if not stalled and sock.poll(0):
        raise Mismatch("a message after the last one")
    return {"t0": t0, "t1": t1, "received": received, "missed": drops, "lag_events": 0, "stalled": stalled}


def receive_lagging(ep: Endpoint, p: dict[str, Any], slow: float, sleep_after_lag: bool,
                    pub_done: Any) -> dict[str, Any]:
    """Policy "overwrite": until the last message; after Lagged(missed) the
    next seq must be the expected one + missed.  slow > 0: sleep that long
    after each message while the publisher has not finished, and after each
    Lagged too with sleep_after_lag (else read again at once)."""
    import shmring

    size, base, count = p["size"], p["base"], p["count"]
    S, body = msg_struct(size), msg_body(size)
    recv, unpack, Lagged = ep.recv, S.unpack, shmring.Lagged  # type: ignore[attr-defined]
    sleep, done = time.sleep, pub_done.is_set
    expect, end, received, missed, lags, slow_reads = base, base + count, 0, 0, 0, 0
    m = b""
    t0 = time.monotonic()
    try:
        while expect < end:
            try:
                m = recv()
            except Lagged as e:
                if e.missed <= 0:
                    raise Mismatch(f"Lagged with missed={e.missed}") from None
                missed += e.missed
                lags += 1
                expect += e.missed
                if expect >= end:
                    raise Mismatch(f"Lagged({e.missed}) skips past the last message") from None
                if sleep_after_lag and slow and not done():
                    sleep(slow)
                continue
            a, b_, z = unpack(m)
            if a != expect or z != expect or b_ != body:
                raise Mismatch(f"expected seq {expect} (missed so far {missed}), got a message with seq {a}/{z}"
                               + ("" if b_ == body else " and a corrupted body"))
            expect += 1
            received += 1
            if slow and not done():
                slow_reads += 1
                sleep(slow)
    except struct.error:
        raise Mismatch(f"expected seq {expect}: got {len(m)} bytes instead of {size}") from None
    t1 = time.monotonic()
    _check_nothing_more(ep)
    return {"t0": t0, "t1": t1, "received": received, "missed": missed, "lag_events": lags, "slow_reads": slow_reads}


def read_latest(ep: Endpoint, p: dict[str, Any], stop: Any) -> dict[str, Any]:
    """p["calls"] timed Topic.latest() calls; each result is checked
    (length, seq at both ends, body) and seq may never go back."""
    from array import array

    size, base, calls = p["size"], p["base"], p["calls"]
    S, body = msg_struct(size), msg_body(size)
    latest, unpack, clock = ep.topic.latest, S.unpack, time.perf_counter_ns  # type: ignore[attr-defined]
    ns = array("q", bytes(8 * calls))
    # Wait for this run's first message (the previous run's last one may be there).
    deadline = time.monotonic() + 30
    while True:
        m = latest()
        if m is not None and len(m) == size and unpack(m)[0] >= base:
            break
        if time.monotonic() > deadline:
            raise TimeoutError("latest(): no message of this run after 30 s")
    last, distinct = base, 1
    t0 = time.monotonic()
    try:
        for i in range(calls):
            a = clock()
            m = latest()
            ns[i] = clock() - a
            s, b_, z = unpack(m)
            if s != z or s < last or b_ != body:
                raise Mismatch(f"latest() call {i}: seq {s}/{z} after {last}" + ("" if b_ == body else ", corrupted body"))
            if s != last:
                distinct += 1
                last = s
    except (struct.error, TypeError):
        raise Mismatch(f"latest() returned {type(m).__name__} of {len(m) if m is not None else 0} bytes") from None
    t1 = time.monotonic()
    stop.set()
    return {"t0": t0, "t1": t1, "ns": ns.tobytes(), "distinct": distinct, "last_seq": last}


def worker_main(spec: Spec, role: str, idx: int, barrier: Any, conn: Any, opts: dict[str, Any]) -> None:
    child_setup(stacks_on_sigusr1=True)  # dies with the parent; ^C is the parent's; stacks on a hang
    ep: Endpoint | None = None
    try:
        if spec.family.startswith("shmring"):
            import shmring  # noqa: F401  (before "ready": import time is not run time)
        elif spec.family == "pyzmq":
            import zmq  # noqa: F401
        else:
            import iceoryx2  # noqa: F401
        conn.send(("ready",))
        for msg in orders(conn):
            if msg[0] == "open":
                if role in spec.pin:
                    os.sched_setaffinity(0, {spec.pin[role]})
                ep = OPENERS[spec.family](spec, role)
                conn.send(("opened",))
                continue
            if msg[0] == "sync":
                ep.sync(msg[1])  # type: ignore[union-attr]
                conn.send(("synced",))
                continue
            p = msg[1]
            assert ep is not None
            barrier.wait(opts["run_timeout"])
            if role == "pub" and p["section"] == "latest":
                res = stream(ep, p, spec.events["stop"])
            elif role == "pub":
                res = publish(ep, p)
                if "pub_done" in spec.events:
                    spec.events["pub_done"].set()
            elif role == "latest":
                res = read_latest(ep, p, spec.events["stop"])
            elif p["section"] == "overwrite":
                res = receive_lagging(ep, p, p["slow"] if role in ("slow", "eager") else 0.0, role == "slow",
                                      spec.events["pub_done"])
            elif spec.family == "pyzmq":
                res = receive_zmq(ep, p, opts["zmq_idle"])
            else:
                res = receive_strict(ep, p, spec.family)
            conn.send(("done", res))
    except BaseException as e:
        send_error(conn, f"{role} {idx}", isinstance(e, Mismatch))
    finally:
        if ep is not None:
            ep.close()
        conn.close()
