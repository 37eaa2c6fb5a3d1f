"""Helpers of the Channel tests (tests/test_channel_*.py).

Messages are a pure function of their sequence number: messages of 12 bytes
or more carry the sequence number in their first 8 bytes and a CRC-32 of
everything before it in their last 4, and their size is picked
deterministically from the sequence number out of a "size mix"; smaller ones
(0 to 11 bytes) are a fixed pattern derived from it.  Receivers check order,
content and the total count (the end of the stream must come exactly after
the last message).

``Agent`` is a child process that holds its own Channel handle and runs the
calls the test sends it over a pipe, so that a test can drive two or three
processes step by step, and a hung or crashed child shows up as a failed
assertion instead of a hung test.  ``Hostile`` is a raw second mapping of a
channel's segment, to write garbage into (the ``raw`` fixture).

Module-level functions here run in the children: spawn re-imports this
module by name, so they stay at module level.  The layout offsets come from
include/shmring.h and are checked against its _Static_asserts by
test_channel_corruption.py::test_layout_offsets_match_header.
"""

from __future__ import annotations

import gc
import math
import os
import pickle
import random
import signal
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest

import shmring
from shmring import Channel

from conftest import FORK, Kids, record_size

STRATEGIES = ("spin", "yield", "block", "adaptive", "semaphore")


def every_strategy_fork_and_spawn(test: Callable[..., None]) -> Callable[..., None]:
    """Run ``test(wait, ctx_name, ...)`` with every wait strategy, its peer
    process started by fork and by spawn."""
    return pytest.mark.parametrize("ctx_name", ["fork", "spawn"])(pytest.mark.parametrize("wait", STRATEGIES)(test))

CAPACITIES = (64, 256, 4096, 1 << 16)

# Bound on any single blocking operation in these tests: a lost wake-up or a
# deadlock fails with Timeout instead of hanging until pytest-timeout.
OP_TIMEOUT = 15.0

# -- Layout of a channel's payload (include/shmring.h, shmring_channel_ctrl) ------------

REC = 8  # record header: u32 length, u32 tag
CTRL = {
    "capacity": 0,
    "data_offset": 8,
    "wait": 16,
    "spin_ns": 20,
    "writer_closed": 24,
    "reader_closed": 28,
    "tail": 128,
    "producer": 136,
    "head": 256,
    "consumer": 264,
    "data_seq": 384,
    "consumer_waiting": 388,
    "space_seq": 512,
    "producer_waiting": 516,
}


DATA = 640  # SHMRING_CHANNEL_CTRL_SIZE: the ring starts here
REC_DATA = 0x52
REC_PAD = 0x50

# -- Messages --------------------------------------------------------------------------

_NOISE = random.Random(0x5EED).randbytes(1 << 17)
_MULT = 2654435761  # Knuth's multiplicative hash


def size_of(seq: int, sizes: Sequence[int]) -> int:
    """The size of message ``seq``, picked deterministically from ``sizes``."""
    return sizes[((seq * _MULT) >> 11) % len(sizes)]


def make_msg(seq: int, size: int) -> bytes:
    if size < 12:
        return bytes((seq * 37 + i * 11 + 1) & 0xFF for i in range(size))
    off = (seq * _MULT) % (len(_NOISE) - size + 1)
    body = seq.to_bytes(8, "little") + _NOISE[off : off + size - 12]
    return body + zlib.crc32(body).to_bytes(4, "little")


def msg(seq: int, sizes: Sequence[int]) -> bytes:
    return make_msg(seq, size_of(seq, sizes))


def check_msg(data: bytes, seq: int, sizes: Sequence[int]) -> None:
    """``data`` must be exactly message ``seq``."""
    assert isinstance(data, bytes), f"message #{seq}: got {type(data).__name__}, not bytes"
    size = size_of(seq, sizes)
    if len(data) >= 12:
        claimed = int.from_bytes(data[:8], "little")
        if zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
            raise AssertionError(
                f"message #{seq}: checksum mismatch ({len(data)} bytes, claims to be #{claimed}): torn or corrupted record"
            )
        if claimed != seq:
            raise AssertionError(f"expected message #{seq}, got #{claimed}: a message was lost, duplicated or reordered")
    if len(data) != size:
        raise AssertionError(f"message #{seq}: {len(data)} bytes, expected {size}")
    if data != make_msg(seq, size):
        raise AssertionError(f"message #{seq}: content differs from what was sent")


def size_mix(kind: str, capacity: int) -> tuple[int, ...]:
    """Message sizes for a ring of ``capacity`` bytes (all of them fit)."""
    c, largest = capacity, capacity - 8
    mixes = {
        # empty and 1-byte messages, and sizes just around one 8-byte word
        "tiny": [0, 1, 2, 3, 7, 9, 11, 12, 13],
        # exact multiples of 8: records with no alignment filler
        "aligned": [8, 16, 24, 32, 40, 56, 64, 120, c // 4 - 8, c // 2 - 8, largest],
        # the largest message: it needs the whole ring, so every one of them
        # waits until the consumer has drained everything before it
        "max": [largest, 0, largest, 1, largest, c // 2, largest - 7],
        # records that do not divide the ring, so that padding records appear
        # at its end
        "padding": [3 * c // 8 - 8, c // 2 + 1, 5 * c // 8 - 3, c // 4 + 5, 13, 3 * c // 4 - 8],
    }
    if kind == "mixed":
        sizes = [s for k in ("tiny", "aligned", "max", "padding") for s in mixes[k]]
    else:
        sizes = mixes[kind]
    return tuple(dict.fromkeys(s for s in sizes if 0 <= s <= largest))


def msg_count(sizes: Sequence[int], capacity: int, *waits: str | None) -> int:
    """Enough messages to go round the ring many times (thousands).  Fewer
    for "spin": when other work competes for the cores, a spinning waiter
    burns its whole time slice before its peer runs, so each hand-off can
    cost milliseconds."""
    avg = sum(record_size(s) for s in sizes) / len(sizes)
    least = 1000 if "spin" in waits else 2000
    return max(least, min(60000, math.ceil(12 * capacity / avg)))


# -- Sending and receiving sequences, with each API -------------------------------------


def _attach(target: Channel | str, wait: str | None = None) -> Channel:
    """A channel handle in this process: open it by name, or use the one
    that arrived as a Process argument (pickled by name, or inherited
    through fork)."""
    if isinstance(target, str):
        return Channel.open(target, wait)  # type: ignore[arg-type]
    return target


def _poll(fn: Callable[[], Any], done: Callable[[Any], bool], what: str) -> Any:
    """Call a non-blocking ``fn`` until ``done(result)``; fail after
    OP_TIMEOUT without progress."""
    deadline = time.monotonic() + OP_TIMEOUT
    tries = 0
    while True:
        r = fn()
        if done(r):
            return r
        tries += 1
        if tries % 64 == 0:
            os.sched_yield()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} made no progress for {OP_TIMEOUT} s")


def send_seq(ch: Channel, api: str, start: int, n: int, sizes: Sequence[int]) -> None:
    """Send messages ``start .. start+n-1`` with one sending API."""
    end = start + n
    if api == "send_many":
        seq, calls = start, 0
        while seq < end:
            k = min(1 + (calls * 7) % 16, end - seq)
            batch = [msg(s, sizes) for s in range(seq, seq + k)]
            # alternate lists and plain iterators
            sent = ch.send_many(batch if calls % 2 else iter(batch), timeout=OP_TIMEOUT)
            assert sent == k, f"send_many returned {sent}, expected {k}"
            seq += k
            calls += 1
        return
    for seq in range(start, end):
        m = msg(seq, sizes)
        if api == "send":
            ch.send(m, timeout=OP_TIMEOUT)
        elif api == "reserve":
            with ch.reserve(len(m), timeout=OP_TIMEOUT) as mv:
                assert mv.nbytes == len(m)
                mv[:] = m
        elif api == "try_send":
            _poll(lambda: ch.try_send(m), lambda ok: ok is True, "try_send")
        else:
            raise ValueError(api)


def recv_seq(ch: Channel, api: str, start: int, n: int, sizes: Sequence[int]) -> int:
    """Receive and check messages ``start .. start+n-1`` with one receiving
    API; returns the next expected sequence number."""
    seq, end, calls = start, start + n, 0
    buf = bytearray(ch.max_message)
    while seq < end:
        calls += 1
        if api == "recv":
            got = [ch.recv(timeout=OP_TIMEOUT)]
        elif api == "recv_many":
            most = 1 + calls % 23
            got = ch.recv_many(most, timeout=OP_TIMEOUT)
            assert 1 <= len(got) <= most, f"recv_many({most}) returned {len(got)} messages"
        elif api == "peek":
            with ch.peek(timeout=OP_TIMEOUT) as mv:
                got = [bytes(mv)]
        elif api == "recv_into":
            k = ch.recv_into(buf, timeout=OP_TIMEOUT)
            got = [bytes(buf[:k])]
        elif api == "try_recv":
            got = [_poll(ch.try_recv, lambda r: r is not None, "try_recv")]
        else:
            raise ValueError(api)
        for data in got:
            check_msg(data, seq, sizes)
            seq += 1
    return seq


def _producer(target: Channel | str, wait: str | None, api: str, start: int, n: int, sizes: Sequence[int]) -> None:
    """Child: send a sequence, then close (end of stream)."""
    ch = _attach(target, wait)
    try:
        send_seq(ch, api, start, n, sizes)
    finally:
        ch.close()


def _consumer(target: Channel | str, wait: str | None, api: str, n: int, sizes: Sequence[int], results: Any) -> None:
    """Child: receive and check a whole stream, then report."""
    ch = _attach(target, wait)
    try:
        got = recv_seq(ch, api, 0, n, sizes)
        try:
            ch.recv(timeout=OP_TIMEOUT)
            end = "a message past the end"
        except shmring.Closed:
            end = "closed"
        results.put((got, end, ch.stats()))
    finally:
        ch.close()


def _stream(target: Channel | str, wait: str | None, start: int, sizes: Sequence[int],
            count: int | None = None) -> None:
    """Child: send from ``start`` on, forever (until killed) or ``count``
    messages and then close."""
    ch = _attach(target, wait)
    try:
        seq = start
        while count is None or seq < start + count:
            ch.send(msg(seq, sizes), timeout=OP_TIMEOUT)
            seq += 1
    finally:
        ch.close()


def wait_for_claim(ch: Channel, role: str, pid: int, timeout: float = 20.0) -> None:
    """Wait until process ``pid`` holds an end.  (Not until its first send
    completes: that may need this process to skip a padding record first.)"""
    deadline = time.monotonic() + timeout
    while ch.stats()[f"{role}_pid"] != pid:
        assert time.monotonic() < deadline, f"process {pid} never claimed the {role} end"
        time.sleep(0.002)


def expect_end_of_stream(ch: Channel) -> None:
    with pytest.raises(shmring.Closed):
        ch.recv(timeout=OP_TIMEOUT)


# -- Agent: a child process driven step by step over a pipe ----------------------------


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else a stand-in."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _op_open(state: Any, target: str, wait: str | None = None) -> int:
    ch = _attach(target, wait)
    state.ch = ch
    return ch.capacity


def _op_send_list(state: Any, msgs: list[bytes], timeout: float = OP_TIMEOUT) -> int:
    for m in msgs:
        state.ch.send(m, timeout=timeout)
    return len(msgs)


def _op_send_seq(state: Any, api: str, start: int, n: int, sizes: Sequence[int]) -> int:
    send_seq(state.ch, api, start, n, sizes)
    return n


def _op_recv_seq(state: Any, api: str, start: int, n: int, sizes: Sequence[int]) -> int:
    return recv_seq(state.ch, api, start, n, sizes)


def _op_fill(state: Any, size: int) -> int:
    """try_send messages make_msg(i, size) until the ring is full."""
    n = 0
    while state.ch.try_send(make_msg(n, size)):
        n += 1
    return n


def _op_timed(state: Any, method: str, *args: Any, **kw: Any) -> tuple[str, Any, float]:
    t0 = time.monotonic()
    try:
        r = getattr(state.ch, method)(*args, **kw)
        return "returned", r, time.monotonic() - t0
    except Exception as e:  # noqa: BLE001 - reported to the test
        return "raised", _portable(e), time.monotonic() - t0


def _op_too_big(state: Any, capacity: int) -> list[tuple[str, str, str, float]]:
    """Every way of sending a message that can never fit; none may block
    (no timeout is given)."""
    ch = state.ch
    big = bytes(capacity - 7)
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("send", lambda: ch.send(big)),
        ("try_send", lambda: ch.try_send(big)),
        ("send_many", lambda: ch.send_many([big])),
        ("reserve", lambda: ch.reserve(capacity - 7)),
        ("reserve_huge", lambda: ch.reserve(1 << 40)),
        ("send_bytearray", lambda: ch.send(bytearray(capacity))),
    ]
    out = []
    for label, fn in calls:
        t0 = time.monotonic()
        try:
            fn()
            out.append((label, "no error", "", time.monotonic() - t0))
        except Exception as e:  # noqa: BLE001
            out.append((label, type(e).__name__, str(e), time.monotonic() - t0))
    return out


def _op_later(state: Any, delay: float, action: str) -> None:
    time.sleep(delay)
    if action == "close":
        state.ch.close()
    elif action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)
    else:
        raise ValueError(action)


def _op_reserve_and_die(state: Any, n: int, written: int) -> None:
    """Reserve n bytes, write part of them, and die by SIGKILL inside the block."""
    with state.ch.reserve(n, timeout=OP_TIMEOUT) as mv:
        mv[:written] = b"\xee" * written
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)


def _op_send_many_and_die(state: Any, start: int, k: int, sizes: Sequence[int]) -> None:
    """send_many over a generator that SIGKILLs the process after ``k``
    messages, in the middle of the batch."""

    def gen() -> Iterator[bytes]:
        for seq in range(start, start + k):
            yield msg(seq, sizes)
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)

    state.ch.send_many(gen(), timeout=OP_TIMEOUT)


def _op_interruptible(state: Any, method: str, *args: Any) -> tuple[str, float]:
    """Say "ready", then block in ``method``; report when it was interrupted."""
    state.conn.send(("ready", time.monotonic()))
    try:
        getattr(state.ch, method)(*args)
    except KeyboardInterrupt:
        return "interrupted", time.monotonic()
    return "returned", time.monotonic()


def _op_cpu_of(state: Any, method: str, *args: Any, **kw: Any) -> tuple[str, float, float]:
    """CPU time this process spends in one (blocking) call."""
    c0, w0 = time.process_time(), time.monotonic()
    try:
        getattr(state.ch, method)(*args, **kw)
        outcome = "returned"
    except shmring.Timeout:
        outcome = "timeout"
    return outcome, time.process_time() - c0, time.monotonic() - w0


def _op_fuzz(state: Any, name: str, actions: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    """Open a (corrupted) channel and run reads and writes on it: each must
    return normally or raise a shmring.Error.  Anything else is reported."""
    out: list[tuple[str, str]] = []
    try:
        ch = Channel.open(name, "block")
    except shmring.Error as e:
        return [("open", type(e).__name__)]
    try:
        buf = bytearray(ch.max_message)
        for act, arg in actions:
            try:
                if act == "try_recv":
                    r: Any = ch.try_recv()
                elif act == "recv":
                    r = ch.recv(timeout=0)
                elif act == "recv_many":
                    r = ch.recv_many(arg, timeout=0)
                elif act == "peek":
                    with ch.peek(timeout=0) as mv:
                        r = bytes(mv)
                elif act == "recv_into":
                    r = ch.recv_into(buf, timeout=0)
                elif act == "try_send":
                    r = ch.try_send(arg)
                elif act == "send":
                    ch.send(arg, timeout=0)
                    r = None
                elif act == "stats":
                    r = ch.stats()
                else:
                    raise AssertionError(act)
                if isinstance(r, bytes) and len(r) > ch.max_message:
                    out.append((act, f"BAD: {len(r)}-byte message from a {ch.capacity}-byte ring"))
                else:
                    out.append((act, "ok"))
            except shmring.Error as e:
                out.append((act, type(e).__name__))
            except Exception as e:  # noqa: BLE001 - the test fails on these
                out.append((act, f"BAD: {type(e).__name__}: {e}"))
    finally:
        ch.close()
    return out


def _op_give_back(state: Any) -> None:
    """Drop this agent's handle without closing it (garbage collection)."""
    state.ch = None
    gc.collect()


_OPS: dict[str, Callable[..., Any]] = {
    "give_back": _op_give_back,
    "open": _op_open,
    "send_list": _op_send_list,
    "send_seq": _op_send_seq,
    "recv_seq": _op_recv_seq,
    "fill": _op_fill,
    "timed": _op_timed,
    "too_big": _op_too_big,
    "later": _op_later,
    "reserve_and_die": _op_reserve_and_die,
    "send_many_and_die": _op_send_many_and_die,
    "interruptible": _op_interruptible,
    "cpu_of": _op_cpu_of,
    "fuzz": _op_fuzz,
}


def _agent_main(conn: Any, target: str | None, wait: str | None) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    state = SimpleNamespace(ch=None, conn=conn)
    try:
        if target is not None:
            state.ch = _attach(target, wait)
    except BaseException as e:  # noqa: BLE001
        conn.send(("err", _portable(e)))
        return
    conn.send(("ok", os.getpid()))
    while True:
        try:
            op, args, kw = conn.recv()
        except (EOFError, OSError):
            break
        if op == "__exit__":
            break
        try:
            fn = _OPS.get(op)
            value = fn(state, *args, **kw) if fn is not None else getattr(state.ch, op)(*args, **kw)
            reply: tuple[str, Any] = ("ok", value)
        except BaseException as e:  # noqa: BLE001 - reported to the test
            reply = ("err", _portable(e))
        try:
            conn.send(reply)
        except Exception as e:  # noqa: BLE001 - an unpicklable result
            conn.send(("err", RuntimeError(f"unpicklable result of {op}: {e}")))
    if state.ch is not None and not state.ch.closed:
        state.ch.close()


class Agent:
    """A child process with its own channel handle, running the calls it is
    sent: ``agent("send", b"x", timeout=1)`` calls ``ch.send`` there and
    returns its result or raises its exception here."""

    def __init__(self, kids: Kids, ctx: Any = FORK, target: str | None = None, wait: str | None = None) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_agent_main, args=(child, target, wait), daemon=True)
        kids.adopt(self)
        self.proc.start()
        child.close()
        self.pid: int = self.proc.pid
        self.reply(timeout=30)

    def start(self, op: str, *args: Any, **kw: Any) -> None:
        self.conn.send((op, args, kw))

    def _get(self, timeout: float) -> tuple[str, Any]:
        if not self.conn.poll(timeout):
            raise AssertionError(f"agent {self.pid} gave no answer within {timeout} s: it hangs")
        try:
            return self.conn.recv()  # type: ignore[no-any-return]
        except EOFError:
            self.proc.join(5)
            raise AssertionError(f"agent {self.pid} died (exit code {self.proc.exitcode})") from None

    def reply(self, timeout: float = 20.0) -> Any:
        status, value = self._get(timeout)
        if status == "err":
            if not isinstance(value, Exception):  # KeyboardInterrupt, SystemExit: never here
                raise AssertionError(f"agent {self.pid} raised {value!r}")
            raise value
        assert status == "ok", (status, value)
        return value

    def wait_ready(self, timeout: float = 20.0) -> float:
        status, value = self._get(timeout)
        assert status == "ready", (status, value)
        return float(value)

    def __call__(self, op: str, *args: Any, _timeout: float = 20.0, **kw: Any) -> Any:
        self.start(op, *args, **kw)
        return self.reply(_timeout)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.proc.join(10)
        assert self.proc.exitcode == -signal.SIGKILL

    def _ask_to_exit(self, timeout: float) -> None:
        """If it still runs: ask it to exit (closing its handle), and wait up to ``timeout`` s."""
        if self.proc.is_alive():
            try:
                self.conn.send(("__exit__", (), {}))
            except OSError:
                pass
            self.proc.join(timeout)

    def stop(self) -> int | None:
        """Ask it to exit (closing its handle); returns its exit code."""
        self._ask_to_exit(10)
        code: int | None = self.proc.exitcode
        return code

    def reap(self) -> None:
        self._ask_to_exit(2)
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(10)
        self.conn.close()


# -- Hostile: garbage written by a peer -------------------------------------------------


def _ctrl_word(field: str) -> Any:
    """A property of ``Hostile``: the 64-bit word ``field`` of the control block, read and written in place."""
    off = CTRL[field]
    return property(lambda h: h.u64(off), lambda h, v: h.put_u64(off, v))


class Hostile:
    """A raw second mapping of a channel's segment, to write garbage into."""

    def __init__(self, name: str) -> None:
        self.seg = shmring.Segment.open(name)
        self.buf = self.seg.buf
        self.capacity = self.u64(CTRL["capacity"])

    def u64(self, off: int) -> int:
        return int(struct.unpack_from("=Q", self.buf, off)[0])

    def put_u64(self, off: int, value: int) -> None:
        struct.pack_into("=Q", self.buf, off, value % (1 << 64))

    def u32(self, off: int) -> int:
        return int(struct.unpack_from("=I", self.buf, off)[0])

    def put_u32(self, off: int, value: int) -> None:
        struct.pack_into("=I", self.buf, off, value % (1 << 32))

    tail = _ctrl_word("tail")
    head = _ctrl_word("head")

    def record(self, counter: int) -> tuple[int, int]:
        pos = DATA + counter % self.capacity
        return self.u32(pos), self.u32(pos + 4)

    def put_record(self, counter: int, length: int, tag: int, payload: bytes = b"") -> None:
        pos = DATA + counter % self.capacity
        self.put_u32(pos, length)
        self.put_u32(pos + 4, tag)
        self.buf[pos + 8 : pos + 8 + len(payload)] = payload

    def write(self, off: int, data: bytes) -> None:
        self.buf[off : off + len(data)] = data

    def close(self) -> None:
        del self.buf
        self.seg.close()
