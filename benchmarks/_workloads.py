"""Child-process side of bench_channel.py: payloads, the measuring loops and
the control protocol with the parent.

A worker has one role: "tx"/"rx" (one-way workloads), "a"/"b" (ping-pong:
"a" starts each round trip and times it, "b" echoes), or "idle".  It talks
to the parent over a control Pipe:

    worker -> parent   ("ok",)                       after each setup phase
    parent -> worker   ("phase2",) ("connect",)      setup: publishers first
    parent -> worker   ("run", kind, count, run_no, extra)  (kind "large":
                                                     extra is (mode, source))
    worker -> parent   ("armed",)                    just before the loop
    worker -> parent   ("done", result_dict)
    parent -> worker   ("fin",)                      tx only: the receiver has
                                                     everything; now read the CPU
    parent -> worker   ("stop",)
    worker -> parent   ("error", text, is_mismatch)

Every message is checked: the sender sends payloads[i % K] (K = 256 distinct
payloads of the size, each starting with its index), the receiver compares
what it got with the same payload, and counts.  Zero-copy messages carry a
sequence number in their first and last 8 bytes, and so do the messages of
the "large" workload, sent from bytearrays the sender stamps: one buffer
("hot" source: in the cache) or a rotation over COLD_SOURCE_BYTES of them
("cold": larger than the last-level cache, every message read from memory).
"""

from __future__ import annotations

import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from _harness import Mismatch, child_setup, is_mismatch, orders, send_error
from shmring.selfbench import make_payloads  # the payloads `shmring bench` checks too

COLD_SOURCE_BYTES = 96 << 20  # three times this machine's 32 MiB L3 cache
K = 256  # default number of distinct payloads per size (a power of two: i & (K - 1))
BATCH = 64
U64 = struct.Struct("<Q")


def _describe(got: Any, want: bytes) -> str:
    got = bytes(got)
    if len(got) != len(want):
        return f"got {len(got)} bytes, expected {len(want)} (first bytes {got[:16].hex()} vs {want[:16].hex()})"
    at = next(i for i in range(len(want)) if got[i] != want[i])
    return (f"{len(got)} bytes differ first at offset {at}: got {got[at:at + 16].hex()}, "
            f"expected {want[at:at + 16].hex()}")


# ---------------------------------------------------------------------------
# loops (each returns nothing; the caller times them)


def tx_stream(send: Any, count: int, payloads: list[bytes]) -> None:
    mask = len(payloads) - 1
    for i in range(count):
        send(payloads[i & mask])


def rx_stream(recv: Any, count: int, payloads: list[bytes], view: bool) -> None:
    mask = len(payloads) - 1
    if view:
        for i in range(count):
            m = recv()
            ref = payloads[i & mask]
            if len(m) != len(ref) or not ref.startswith(m):
                raise Mismatch(f"message {i}: {_describe(m, ref)}")
    else:
        for i in range(count):
            m = recv()
            if m != payloads[i & mask]:
                raise Mismatch(f"message {i}: {_describe(m, payloads[i & mask])}")


def tx_batch(send_many: Any, count: int, payloads: list[bytes]) -> None:
    # batch b holds messages b*64 .. b*64+63, i.e. payloads[(b*64 + x) % K]
    k = len(payloads)
    mask = k - 1
    batches = [[payloads[(j * BATCH + x) & mask] for x in range(BATCH)] for j in range(max(1, k // BATCH))]
    nb = len(batches)
    for b in range(count // BATCH):
        send_many(batches[b % nb])


def rx_batch(recv_many: Any, count: int, payloads: list[bytes]) -> None:
    k = len(payloads)
    mask = k - 1
    ext = [payloads[x & mask] for x in range(k + BATCH)]
    i = 0
    while i < count:
        msgs = recv_many(BATCH)
        n = len(msgs)
        o = i & mask
        if n == 0 or n > BATCH or msgs != ext[o : o + n]:
            for j, m in enumerate(msgs):
                if j >= BATCH or m != ext[o + j]:
                    raise Mismatch(f"batched message {i + j}: {_describe(m, ext[o + j] if j < BATCH else b'')}")
            raise Mismatch(f"batch at message {i}: {n} messages")
        i += n
    if i != count:
        raise Mismatch(f"received {i} batched messages, expected {count}")


def tx_zc(zc_send: Any, count: int, size: int, base: int) -> None:
    for i in range(count):
        zc_send(size, base + i)


def rx_zc(zc_recv: Any, count: int, size: int, base: int) -> None:
    for i in range(count):
        zc_recv(size, base + i)


_SOURCES: dict[tuple[int, str], list[bytearray]] = {}


def large_sources(size: int, source: str) -> list[bytearray]:
    """The sender's buffers of the "large" workload ("hot": one; "cold": a
    rotation over COLD_SOURCE_BYTES), written once so that every page is
    mapped before the measured loop; made once per process."""
    if (size, source) not in _SOURCES:
        count = 1 if source == "hot" else max(2, COLD_SOURCE_BYTES // size)
        _SOURCES[(size, source)] = [bytearray(bytes([(7 * i + 1) & 0xFF])) * size for i in range(count)]
    return _SOURCES[(size, source)]


def tx_large(large_send: Any, count: int, sources: list[bytearray], base: int) -> None:
    pack, nb = U64.pack_into, len(sources)
    for i in range(count):
        buf, seq = sources[i % nb], base + i
        pack(buf, 0, seq)
        pack(buf, len(buf) - 8, seq)
        large_send(buf)


def rx_large(large_recv: Any, count: int, size: int, base: int) -> None:
    for i in range(count):
        large_recv(size, base + i)


def pp_a(send: Any, recv: Any, n: int, warm: int, ping: list[bytes], pong: list[bytes], view: bool) -> list[int]:
    lat = [0] * n
    clock = time.perf_counter_ns
    mask = len(ping) - 1
    for i in range(warm + n):
        t0 = clock()
        send(ping[i & mask])
        m = recv()
        t1 = clock()
        ref = pong[i & mask]
        if (len(m) != len(ref) or not ref.startswith(m)) if view else m != ref:
            raise Mismatch(f"echo {i}: {_describe(m, ref)}")
        if i >= warm:
            lat[i - warm] = t1 - t0
    return lat


def pp_b(send: Any, recv: Any, total: int, ping: list[bytes], pong: list[bytes], view: bool) -> None:
    mask = len(ping) - 1
    for i in range(total):
        m = recv()
        ref = ping[i & mask]
        if (len(m) != len(ref) or not ref.startswith(m)) if view else m != ref:
            raise Mismatch(f"ping {i}: {_describe(m, ref)}")
        send(pong[i & mask])


# ---------------------------------------------------------------------------
# the worker process


def worker_main(transport: Any, role: str, spec: Any, size: int, ctrl: Any, connect_timeout: float,
                k: int = K) -> None:
    """Entry point of every child process."""
    child_setup()

    ep = None
    try:
        payloads = make_payloads(size, salt=1, k=k) if role != "idle" else []
        pong = make_payloads(size, salt=2, k=k) if role in ("a", "b") else []

        # phase 1: sending ends (publishers) first
        if role == "tx":
            ep = transport.open_tx(spec, size)
        elif role in ("a", "b"):
            ep = transport.pp_phase1(spec, role, size)
        ctrl.send(("ok",))
        _expect(ctrl, "phase2")
        if role == "rx":
            ep = transport.open_rx(spec, size)
        elif role in ("a", "b"):
            ep = transport.pp_phase2(spec, role, size, ep)
        elif role == "idle":
            ep = transport.open_idle(spec)
        ctrl.send(("ok",))
        _expect(ctrl, "connect")
        if ep.wait_peer is not None and role in ("tx", "a", "b"):
            ep.wait_peer(connect_timeout)
        ctrl.send(("ok",))

        for msg in orders(ctrl):
            assert msg[0] == "run", msg
            _, kind, count, run_no, extra = msg
            ctrl.send(("done", _run(ep, role, kind, count, run_no, extra, size, payloads, pong, ctrl)))
    except BaseException as e:
        send_error(ctrl, role, is_mismatch(e))
    finally:
        if ep is not None:
            ep.close()
        try:
            ctrl.close()
        except Exception:
            pass
        sys.stdout.flush()


def _expect(ctrl: Any, what: str) -> None:
    msg = ctrl.recv()
    if msg[0] != what:
        raise RuntimeError(f"expected {what!r} from the parent, got {msg!r}")


def _one_way_loop(ep: Any, role: str, kind: str, count: int, size: int, base: int,
                  payloads: list[bytes], extra: Any) -> Callable[[], None]:
    """The measured loop of a one-way run: ``role`` "tx" or "rx", ``kind``
    "stream", "batch", "zc" (zero-copy messages numbered from ``base``) or
    "large" (``extra``: the receiver's mode, the sender's source)."""
    if kind == "large":
        mode, source = extra
        if role == "tx":
            sources = large_sources(size, source)
            return lambda: tx_large(ep.large_send, count, sources, base)
        return lambda: rx_large(ep.large_recv[mode], count, size, base)
    loops: dict[tuple[str, str], Callable[[], None]] = {
        ("tx", "stream"): lambda: tx_stream(ep.send, count, payloads),
        ("tx", "batch"): lambda: tx_batch(ep.send_many, count, payloads),
        ("tx", "zc"): lambda: tx_zc(ep.zc_send, count, size, base),
        ("rx", "stream"): lambda: rx_stream(ep.recv, count, payloads, ep.view),
        ("rx", "batch"): lambda: rx_batch(ep.recv_many, count, payloads),
        ("rx", "zc"): lambda: rx_zc(ep.zc_recv, count, size, base),
    }
    if (role, kind) not in loops:
        raise ValueError(kind)
    return loops[(role, kind)]


def _run(ep: Any, role: str, kind: str, count: int, run_no: int, extra: Any,
         size: int, payloads: list[bytes], pong: list[bytes], ctrl: Any) -> dict[str, Any]:
    cpu, clock = time.process_time, time.perf_counter
    base = (run_no << 32) + 1
    loop = _one_way_loop(ep, role, kind, count, size, base, payloads, extra) if role in ("tx", "rx") else None
    ctrl.send(("armed",))
    c0, t0 = cpu(), clock()
    if role == "tx":
        loop()
        t1 = clock()
        # Background threads (mp.Queue's feeder, zmq's I/O thread) may still be
        # working: read the CPU time once the receiver has everything.
        _expect(ctrl, "fin")
        c1, t2 = cpu(), clock()
        return {"t0": t0, "t1": t1, "t_cpu": t2, "cpu": c1 - c0}
    if role == "rx":
        loop()
        t1 = clock()
        return {"t0": t0, "t1": t1, "cpu": cpu() - c0}
    if role == "a":
        lat = pp_a(ep.send, ep.recv, count, extra, payloads, pong, ep.view)
        t1 = clock()
        return {"lat": lat, "t0": t0, "t1": t1, "cpu": cpu() - c0}
    if role == "b":
        pp_b(ep.send, ep.recv, count + extra, payloads, pong, ep.view)
        t1 = clock()
        return {"t0": t0, "t1": t1, "cpu": cpu() - c0}
    if role == "idle":
        outcome = ep.idle(float(extra))
        t1 = clock()
        return {"t0": t0, "t1": t1, "cpu": cpu() - c0, "outcome": outcome}
    raise ValueError(role)
