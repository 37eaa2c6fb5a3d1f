"""Multi-process stress and fault tests of shmring.Channel.

Everything here runs with real processes (multiprocessing "fork" and
"spawn").  Every message is a pure function of its sequence number: messages
of 12 bytes or more carry the sequence number in their first 8 bytes and a
CRC-32 of everything before it in their last 4, and their size is picked
deterministically from the sequence number out of a "size mix"; smaller ones
(0 to 11 bytes) are a fixed pattern derived from it.  Receivers check order,
content and the total count (the end of the stream must come exactly after
the last message).

Helpers at module level run in the children, so they must stay importable
(spawn re-imports this module).  ``Agent`` is a child process that holds its
own Channel handle and runs the calls the test sends it over a pipe, so that a
test can drive two or three processes step by step, and a hung or crashed
child shows up as a failed assertion instead of a hung test.

Layout offsets used by the corruption tests come from include/shmring.h and
are checked against its _Static_asserts by test_layout_offsets_match_header.
"""

from __future__ import annotations

import gc
import math
import multiprocessing as mp
import os
import pickle
import random
import re
import signal
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmring
from shmring import Channel

from conftest import Kids

pytestmark = pytest.mark.timeout(60)

FORK = mp.get_context("fork")
SPAWN = mp.get_context("spawn")
CONTEXTS = {"fork": FORK, "spawn": SPAWN}
STRATEGIES = ("spin", "yield", "block", "adaptive", "semaphore")
CAPACITIES = (64, 256, 4096, 1 << 16)

# Bound on any single blocking operation in these tests: a lost wake-up or a
# deadlock fails with Timeout instead of hanging until pytest-timeout.
OP_TIMEOUT = 15.0

# --------------------------------------------------------------------------
# Layout of a channel's payload (include/shmring.h, shmring_channel_ctrl)
# --------------------------------------------------------------------------

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


def align8(n: int) -> int:
    return (n + 7) & ~7


def record_size(length: int) -> int:
    return 8 + align8(length)


# --------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Sending and receiving sequences, with each API
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Agent: a child process driven step by step over a pipe
# --------------------------------------------------------------------------


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

    def stop(self) -> int | None:
        """Ask it to exit (closing its handle); returns its exit code."""
        if self.proc.is_alive():
            try:
                self.conn.send(("__exit__", (), {}))
            except OSError:
                pass
            self.proc.join(10)
        code: int | None = self.proc.exitcode
        return code

    def reap(self) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send(("__exit__", (), {}))
            except OSError:
                pass
            self.proc.join(2)
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(10)
        self.conn.close()


@pytest.fixture
def channel(new_name: Callable[[], str]) -> Iterator[Callable[..., Channel]]:
    """Factory of channels owned by the test (closed and unlinked after it)."""
    made: list[Channel] = []

    def make(capacity: int = 4096, wait: str = "adaptive", **kw: Any) -> Channel:
        ch = Channel.create(new_name(), capacity, wait, **kw)  # type: ignore[arg-type]
        made.append(ch)
        return ch

    try:
        yield make
    finally:
        for ch in made:
            ch.close()  # the last handle out removes it


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

    @property
    def tail(self) -> int:
        return self.u64(CTRL["tail"])

    @tail.setter
    def tail(self, v: int) -> None:
        self.put_u64(CTRL["tail"], v)

    @property
    def head(self) -> int:
        return self.u64(CTRL["head"])

    @head.setter
    def head(self, v: int) -> None:
        self.put_u64(CTRL["head"], v)

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


@pytest.fixture
def raw() -> Iterator[Callable[[str], Hostile]]:
    opened: list[Hostile] = []

    def make(name: str) -> Hostile:
        h = Hostile(name)
        opened.append(h)
        return h

    try:
        yield make
    finally:
        for h in opened:
            h.close()


# ==========================================================================
# 0. The offsets these tests poke at are the header's
# ==========================================================================


def test_layout_offsets_match_header() -> None:
    text = "".join(p.read_text() for p in sorted(Path(shmring.get_include()).rglob("*.h")))  # shmring.h and shmring/*.h
    asserted = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"offsetof\(shmring_channel_ctrl,\s*(\w+)\)\s*==\s*(\d+)", text)
    }
    for field, off in CTRL.items():
        assert asserted.get(field) == off, f"{field}: header says {asserted.get(field)}, tests use {off}"
    ctrl_size = re.search(r"#define SHMRING_CHANNEL_CTRL_SIZE (\d+)u", text)
    assert ctrl_size is not None and int(ctrl_size.group(1)) == DATA
    assert re.search(r"#define SHMRING_REC_DATA 0x52u", text)
    assert re.search(r"#define SHMRING_REC_PAD 0x50u", text)
    assert "sizeof(shmring_record) == 8" in text


# ==========================================================================
# 1. Stress across wrap-around
# ==========================================================================

API_PAIRS = {
    "send-recv": ("send", "recv"),
    "send_many-recv_many": ("send_many", "recv_many"),
    "reserve-peek": ("reserve", "peek"),
    "send-recv_into": ("send", "recv_into"),
    "try_send-try_recv": ("try_send", "try_recv"),
}


def _run_stream(ch: Channel, kids: Kids, ctx: Any, target: Channel | str, wait: str | None, send_api: str,
                recv_api: str, sizes: Sequence[int]) -> None:
    """A child produces a whole stream; this process consumes and checks it."""
    capacity = ch.capacity
    n = msg_count(sizes, capacity, wait, ch.wait)
    p = kids.process(ctx, _producer, target, wait, send_api, 0, n, sizes)
    assert recv_seq(ch, recv_api, 0, n, sizes) == n
    expect_end_of_stream(ch)
    p.join(OP_TIMEOUT)
    assert p.exitcode == 0, f"producer exit code {p.exitcode}"
    stats = ch.stats()
    total = sum(size_of(s, sizes) for s in range(n))
    assert stats["sent_messages"] == stats["received_messages"] == n, stats
    assert stats["sent_bytes"] == stats["received_bytes"] == total, stats
    assert stats["head"] == stats["tail"], stats
    assert stats["tail"] >= 10 * capacity, f"the ring wrapped only {stats['tail'] / capacity:.1f} times"
    assert stats["writer_closed"] and not stats["reader_closed"]


@pytest.mark.timeout(40)
@pytest.mark.parametrize("pair", list(API_PAIRS))
@pytest.mark.parametrize("capacity", CAPACITIES)
@pytest.mark.parametrize("wait", STRATEGIES)
def test_stress_wraparound(wait: str, capacity: int, pair: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """Thousands of messages of every size class through a small ring, each
    strategy, each API pair (fork child producer, this process consumer)."""
    send_api, recv_api = API_PAIRS[pair]
    ch = channel(capacity, wait)
    _run_stream(ch, kids, FORK, ch.name, wait, send_api, recv_api, size_mix("mixed", capacity))


MIXES = ("tiny", "aligned", "max", "padding")


@pytest.mark.timeout(40)
@pytest.mark.parametrize("mix", MIXES)
@pytest.mark.parametrize("capacity", CAPACITIES)
def test_stress_size_mix(capacity: int, mix: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """One size class at a time (0-byte and 1-byte messages, exact multiples
    of 8, the largest message, sizes that force padding records), with the
    strategy and API pair rotating over the matrix."""
    i = CAPACITIES.index(capacity) + MIXES.index(mix)
    wait = STRATEGIES[i % len(STRATEGIES)]
    send_api, recv_api = list(API_PAIRS.values())[i % len(API_PAIRS)]
    ch = channel(capacity, wait)
    _run_stream(ch, kids, FORK, ch.name, wait, send_api, recv_api, size_mix(mix, capacity))


@pytest.mark.timeout(40)
@pytest.mark.parametrize("wait", STRATEGIES)
def test_stress_inherited_handle_fork(wait: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """The producer uses the parent's own handle, inherited through fork
    (not re-opened): it must claim the producer end for itself."""
    ch = channel(256, wait)
    assert ch.try_recv() is None  # this process holds the consumer end before the fork
    _run_stream(ch, kids, FORK, ch, None, "send", "recv", size_mix("mixed", 256))


@pytest.mark.timeout(40)
@pytest.mark.parametrize("consumer_wait", STRATEGIES)
@pytest.mark.parametrize("producer_wait", STRATEGIES)
def test_stress_mixed_strategies(producer_wait: str, consumer_wait: str, channel: Callable[..., Channel],
                                 kids: Kids) -> None:
    """Each process picks its own strategy (Channel.open(name, wait)): every
    pairing must hand off without a lost wake-up.  Waiting on the semaphore
    needs a channel created with it (its producers post it)."""
    capacity = 256
    created = "semaphore" if "semaphore" in (producer_wait, consumer_wait) else "adaptive"
    ch = Channel.open(channel(capacity, created).name, consumer_wait)  # type: ignore[arg-type]
    try:
        assert ch.wait == consumer_wait
        _run_stream(ch, kids, FORK, ch.name, producer_wait, "send", "recv", size_mix("mixed", capacity))
    finally:
        ch.close()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("spin_ns", [0, 1_000, 200_000])
def test_stress_adaptive_spin_windows(spin_ns: int, channel: Callable[..., Channel], kids: Kids) -> None:
    """Adaptive with no spin at all, a short one, and a long one."""
    ch = channel(256, "adaptive", spin_ns=spin_ns)
    assert ch.spin_ns == spin_ns
    _run_stream(ch, kids, FORK, ch.name, None, "send_many", "recv_many", size_mix("mixed", 256))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("wait", STRATEGIES)
def test_stress_spawn_both_ends_in_children(wait: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """Producer and consumer both spawned, each getting the Channel object
    pickled by name; the creator only watches."""
    capacity = 4096
    ch = channel(capacity, wait)
    sizes = size_mix("mixed", capacity)
    n = msg_count(sizes, capacity, wait)
    results = SPAWN.Queue()
    consumer = kids.process(SPAWN, _consumer, ch, None, "recv_many", n, sizes, results)
    producer = kids.process(SPAWN, _producer, ch, None, "send_many", 0, n, sizes)
    got, end, stats = results.get(timeout=50)
    assert got == n and end == "closed"
    assert stats["sent_messages"] == stats["received_messages"] == n
    producer.join(OP_TIMEOUT)
    consumer.join(OP_TIMEOUT)
    assert producer.exitcode == 0 and consumer.exitcode == 0
    assert ch.stats()["producer_pid"] == 0  # the producer's close gave its end back


# ==========================================================================
# 2. Boundaries
# ==========================================================================


def fill_patterns(c: int) -> dict[str, tuple[int, list[int]]]:
    """(bytes of ring to consume first, message lengths that then fill the
    ring exactly)."""
    return {
        "one-largest": (0, [c - 8]),
        "halves": (0, [c // 2 - 8] * 2),
        "quarters-unaligned": (0, [c // 4 - 15] * 4),  # lengths not multiples of 8
        "zero-length": (0, [0] * (c // 8)),  # c/8 empty messages: 8-byte records
        "after-wrap": (3 * c // 8, [5 * c // 8 - 8, 3 * c // 8 - 8]),
        "with-padding": (6 * c // 8, [c // 2 - 8, c // 4 - 8]),  # pad c/4 + c/2 + c/4
    }


@pytest.mark.timeout(30)
@pytest.mark.parametrize("pattern", list(fill_patterns(64)))
@pytest.mark.parametrize("capacity", CAPACITIES)
def test_fill_exactly_then_drain(capacity: int, pattern: str, channel: Callable[..., Channel], kids: Kids) -> None:
    ch = channel(capacity, "adaptive")
    pre, lengths = fill_patterns(capacity)[pattern]
    producer = Agent(kids, FORK, ch.name)
    assert ch.try_recv() is None  # empty: None (and this process is the consumer)
    if pre:
        producer("send", b"p" * (pre - 8), timeout=5)
        assert ch.recv(timeout=5) == b"p" * (pre - 8)
        assert ch.try_recv() is None  # hands the bytes back at once
    msgs = [make_msg(i, n) for i, n in enumerate(lengths)]
    # Each send must go through without waiting: the ring has exactly room.
    assert producer("send_list", msgs, 2.0) == len(msgs)
    stats = ch.stats()
    assert stats["tail"] - stats["head"] == capacity and stats["fill_bytes"] == capacity, stats
    # Full: nothing more fits, not even an empty message.
    assert producer("try_send", b"") is False
    outcome, err, elapsed = producer("timed", "send", b"", timeout=0.05)
    assert outcome == "raised" and isinstance(err, shmring.Timeout) and isinstance(err, TimeoutError), err
    assert elapsed < 1.0
    # Too big never blocks, even on a full ring.
    for label, exc, text, took in producer("too_big", capacity):
        assert exc == "ValueError", f"{label}: {exc} {text}"
        assert took < 0.5, f"{label} took {took:.3f} s"
    # Drain: everything, in order, then empty.
    for i, m in enumerate(msgs):
        assert ch.recv(timeout=5) == m, f"message {i} of the fill"
    assert ch.try_recv() is None
    stats = ch.stats()
    assert stats["head"] == stats["tail"] == pre + capacity
    # Room again.
    assert producer("try_send", b"") is True
    assert ch.recv(timeout=5) == b""
    assert producer.stop() == 0  # its close ends the stream
    expect_end_of_stream(ch)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("capacity", [64, 4096])
def test_largest_message_after_wrap_waits_for_padding(capacity: int, channel: Callable[..., Channel],
                                                       kids: Kids) -> None:
    """At a non-zero position the largest message needs a padding record to
    the end of the ring AND the whole ring: the sender must wait until the
    consumer has skipped the padding, and then go through."""
    ch = channel(capacity, "block")
    producer = Agent(kids, FORK, ch.name)
    producer("send", b"q" * (capacity // 2 - 8), timeout=5)
    assert ch.recv(timeout=5) == b"q" * (capacity // 2 - 8)
    assert ch.try_recv() is None
    big = make_msg(7, capacity - 8)
    assert producer("try_send", big) is False  # writes (and publishes) the padding only
    producer.start("send", big, timeout=5)
    assert ch.recv(timeout=5) == big
    assert producer.reply() is None
    assert ch.try_recv() is None


@pytest.mark.timeout(30)
@pytest.mark.parametrize("wait", STRATEGIES)
def test_timeouts_on_empty_and_full(wait: str, channel: Callable[..., Channel], kids: Kids) -> None:
    ch = channel(256, wait)
    producer = Agent(kids, FORK, ch.name, wait)
    producer("send", b"x", timeout=5)  # a live producer holds its end
    assert ch.recv(timeout=5) == b"x"
    assert ch.try_recv() is None
    for call in (lambda: ch.recv(timeout=0.1), lambda: ch.recv_many(5, timeout=0.1),
                 lambda: ch.recv_into(bytearray(256), timeout=0.1), lambda: ch.peek(timeout=0.1)):
        t0 = time.monotonic()
        with pytest.raises(shmring.Timeout) as ei:
            call()
        elapsed = time.monotonic() - t0
        assert isinstance(ei.value, TimeoutError)
        assert 0.09 <= elapsed < 1.0, elapsed
    t0 = time.monotonic()
    with pytest.raises(shmring.Timeout):
        ch.recv(timeout=0)
    assert time.monotonic() - t0 < 0.5
    # Full ring on the producer's side.
    n = producer("fill", 24)
    assert n >= 256 // 32 - 1
    y = b"y" * 24  # a 32-byte record: more than is left
    for args in (("send", y), ("send_many", [y])):
        outcome, err, elapsed = producer("timed", *args, timeout=0.1)
        assert outcome == "raised" and isinstance(err, shmring.Timeout), (args, err)
        assert 0.09 <= elapsed < 1.0, (args, elapsed)
    outcome, err, _ = producer("timed", "send_many", [y, y], timeout=0.1)
    assert getattr(err, "sent", None) == 0, "a timed-out send_many says how much of the batch went out"
    for i in range(n):
        assert ch.recv(timeout=5) == make_msg(i, 24)
    assert ch.try_recv() is None  # nothing of the timed-out sends got in


@pytest.mark.timeout(30)
@pytest.mark.parametrize("side", ["reader", "writer"])
def test_adaptive_spin_window_respects_timeout(side: str, channel: Callable[..., Channel], kids: Kids) -> None:
    spin_ns = 100_000_000  # the largest window the API accepts
    ch = channel(256, "adaptive")
    peer = Agent(kids, FORK, ch.name)
    mine = Channel.open(ch.name, "adaptive", spin_ns=spin_ns)
    try:
        if side == "reader":
            peer("send", b"claim", timeout=5)  # a live producer holds its end
            assert mine.recv(timeout=5) == b"claim"
            call: Callable[[], Any] = lambda: mine.recv(timeout=0.005)  # noqa: E731
        else:
            assert peer("try_recv") is None  # a live consumer holds its end
            while mine.try_send(b"s" * 24):
                pass
            call = lambda: mine.send(b"s" * 24, timeout=0.005)  # noqa: E731
        for _ in range(3):
            t0 = time.monotonic()
            with pytest.raises(shmring.Timeout):
                call()
            elapsed = time.monotonic() - t0
            assert elapsed < 0.05, f"timeout=0.005 returned after {elapsed * 1000:.0f} ms"
    finally:
        mine.close()


@pytest.mark.timeout(30)
def test_send_many_timeout_reports_partial_batch(channel: Callable[..., Channel], kids: Kids) -> None:
    """A batch larger than the room left: Timeout says how many went out,
    and exactly those arrive (published before the error)."""
    ch = channel(256, "block")
    producer = Agent(kids, FORK, ch.name)
    assert ch.try_recv() is None
    batch = [make_msg(i, 56) for i in range(10)]  # 64-byte records: 4 fit
    outcome, err, elapsed = producer("timed", "send_many", batch, timeout=0.1)
    assert outcome == "raised" and isinstance(err, shmring.Timeout), err
    assert getattr(err, "sent", None) == 4
    for i in range(4):
        assert ch.recv(timeout=5) == batch[i]
    assert ch.try_recv() is None


@pytest.mark.timeout(30)
@pytest.mark.parametrize("state", ["empty", "full"])
@pytest.mark.parametrize("wait", STRATEGIES)
def test_too_big_raises_at_once(wait: str, state: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """capacity - 7 bytes can never fit: ValueError at once, without a
    timeout, whatever the ring holds (the agent would hang otherwise)."""
    capacity = 64
    ch = channel(capacity, wait)
    producer = Agent(kids, FORK, ch.name, wait)
    assert ch.try_recv() is None
    if state == "full":
        assert producer("fill", 0) == capacity // 8
    for label, exc, text, took in producer("too_big", capacity):
        assert exc == "ValueError", f"{label}: {exc} {text}"
        assert "never fit" in text, text
        assert took < 0.5, f"{label} took {took:.3f} s"
    assert producer("try_send", b"\x00" * 0) is (state == "empty")


# ==========================================================================
# 3. End of stream
# ==========================================================================


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ctx_name", ["fork", "spawn"])
@pytest.mark.parametrize("wait", STRATEGIES)
def test_writer_close_then_reader_drains(wait: str, ctx_name: str, channel: Callable[..., Channel],
                                         kids: Kids) -> None:
    """The writer sends everything that fits and closes before the reader
    starts: the reader gets every message, then Closed, every time."""
    capacity = 4096
    sizes = (0, 1, 13, 64, 200)
    ch = channel(capacity, wait)
    n = 0
    used = 0
    while used + record_size(size_of(n, sizes)) <= capacity:
        used += record_size(size_of(n, sizes))
        n += 1
    p = kids.process(CONTEXTS[ctx_name], _producer, ch, wait, "send", 0, n, sizes)
    p.join(OP_TIMEOUT)
    assert p.exitcode == 0
    assert ch.stats()["writer_closed"]
    assert recv_seq(ch, "recv", 0, n, sizes) == n
    for call in (ch.recv, lambda: ch.recv(timeout=1), ch.try_recv, lambda: ch.recv_many(3),
                 lambda: ch.recv_into(bytearray(10)), ch.peek):
        with pytest.raises(shmring.Closed) as ei:
            call()
        assert isinstance(ei.value, EOFError)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("wait", STRATEGIES)
def test_iteration_ends_at_writer_close(wait: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """``for msg in ch`` yields the whole stream (which goes round a small
    ring many times) and ends cleanly at the writer's close."""
    capacity = 256
    sizes = size_mix("mixed", capacity)
    n = 3000
    ch = channel(capacity, wait)
    kids.process(FORK, _producer, ch.name, wait, "send", 0, n, sizes)
    count = 0
    for data in ch:
        check_msg(data, count, sizes)
        count += 1
    assert count == n
    assert list(ch) == []
    # Closing is permanent: a later producer cannot reopen the stream.
    late = Agent(kids, FORK, ch.name)
    with pytest.raises(shmring.Closed, match="already ended"):
        late("send", b"too late", timeout=1)
    with pytest.raises(shmring.Closed):
        ch.recv(timeout=0.1)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("wait", STRATEGIES)
def test_writer_close_wakes_blocked_reader(wait: str, channel: Callable[..., Channel], kids: Kids) -> None:
    ch = channel(4096, wait)
    producer = Agent(kids, FORK, ch.name, wait)
    producer("send", b"one", timeout=5)
    assert ch.recv(timeout=5) == b"one"
    producer.start("later", 0.3, "close")
    t0 = time.monotonic()
    with pytest.raises(shmring.Closed):
        ch.recv()  # no timeout: the close must wake it
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 2.0, elapsed
    producer.reply()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ctx_name", ["fork", "spawn"])
@pytest.mark.parametrize("wait", STRATEGIES)
def test_reader_close_makes_send_raise_closed(wait: str, ctx_name: str, channel: Callable[..., Channel],
                                              kids: Kids) -> None:
    ch = channel(4096, wait)
    consumer = Agent(kids, CONTEXTS[ctx_name], ch.name, wait)
    ch.send(b"hello")
    assert consumer("recv", timeout=5) == b"hello"
    consumer("close")
    assert ch.stats()["reader_closed"]
    for call in (lambda: ch.send(b"x"), lambda: ch.send(b"x", timeout=1), lambda: ch.try_send(b"x"),
                 lambda: ch.send_many([b"x"]), lambda: ch.reserve(1)):
        with pytest.raises(shmring.Closed) as ei:
            call()
        assert isinstance(ei.value, EOFError)
    assert consumer.stop() == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("wait", STRATEGIES)
def test_reader_close_wakes_blocked_writer(wait: str, channel: Callable[..., Channel], kids: Kids) -> None:
    ch = channel(256, wait)
    consumer = Agent(kids, FORK, ch.name, wait)
    ch.send(b"claim")
    assert consumer("recv", timeout=5) == b"claim"
    assert consumer("try_recv") is None
    while ch.try_send(b"z" * 24):
        pass
    consumer.start("later", 0.3, "close")
    t0 = time.monotonic()
    with pytest.raises(shmring.Closed):
        ch.send(b"b" * 24)  # does not fit; no timeout: the reader's close must wake it
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 2.0, elapsed
    consumer.reply()


# ==========================================================================
# 4. kill -9
# ==========================================================================


def _drain_until_peer_gone(ch: Channel, seq: int, sizes: Sequence[int], limit: int) -> int:
    """Receive valid, contiguous messages until PeerGone; returns the next seq."""
    start = seq
    with pytest.raises(shmring.PeerGone) as ei:
        while True:
            check_msg(ch.recv(timeout=OP_TIMEOUT), seq, sizes)
            seq += 1
            assert seq - start <= limit, "more messages after the kill than the ring can hold"
    assert isinstance(ei.value, ConnectionError)
    assert "died" in str(ei.value)
    return seq


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ctx_name", ["fork", "spawn"])
@pytest.mark.parametrize("wait", STRATEGIES)
def test_producer_sigkill_midstream_then_new_producer(wait: str, ctx_name: str, channel: Callable[..., Channel],
                                                     kids: Kids) -> None:
    """A producer streaming non-stop is SIGKILLed: the reader gets only
    complete messages, contiguous from 0, then PeerGone within 2 s.  A new
    producer process then claims the end and the same reader carries on
    with its messages; several rounds of this (fork), then a clean end."""
    ctx = CONTEXTS[ctx_name]
    capacity = 4096
    sizes = size_mix("mixed", capacity)
    ch = channel(capacity, wait)
    rng = random.Random(f"{wait}-{ctx_name}")
    seq = 0
    rounds = 3 if ctx_name == "fork" else 1
    for _ in range(rounds):
        p = kids.process(ctx, _stream, ch.name, wait, seq, sizes)
        wait_for_claim(ch, "producer", p.pid)
        target = seq + rng.randrange(200, 1500)
        while seq < target:
            check_msg(ch.recv(timeout=OP_TIMEOUT), seq, sizes)
            seq += 1
        os.kill(p.pid, signal.SIGKILL)
        t_kill = time.monotonic()
        seq = _drain_until_peer_gone(ch, seq, sizes, capacity // 8)
        elapsed = time.monotonic() - t_kill
        assert elapsed < 2.0, f"PeerGone came {elapsed:.2f} s after the kill"
        p.join(5)
        assert p.exitcode == -signal.SIGKILL
        # Still no producer: a non-blocking receive says so at once.
        t0 = time.monotonic()
        with pytest.raises(shmring.PeerGone):
            ch.recv(timeout=0)
        assert time.monotonic() - t0 < 0.5
    # Last producer: a finite stream and a clean close.
    p = kids.process(ctx, _stream, ch.name, wait, seq, sizes, 500)
    wait_for_claim(ch, "producer", p.pid)
    seq = recv_seq(ch, "recv", seq, 500, sizes)
    expect_end_of_stream(ch)
    p.join(OP_TIMEOUT)
    assert p.exitcode == 0
    assert ch.stats()["received_messages"] == seq


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ctx_name", ["fork", "spawn"])
@pytest.mark.parametrize("wait", STRATEGIES)
def test_consumer_sigkill_unblocks_producer(wait: str, ctx_name: str, channel: Callable[..., Channel],
                                            kids: Kids) -> None:
    """The consumer dies by SIGKILL while the producer waits on a full ring:
    the producer's send raises PeerGone (bounded time), never hangs."""
    ch = channel(256, wait)
    consumer = Agent(kids, CONTEXTS[ctx_name], ch.name, wait)
    ch.send(b"claim")
    assert consumer("recv", timeout=5) == b"claim"
    while ch.try_send(b"f" * 40):
        pass
    consumer.start("later", 0.3, "kill")
    t0 = time.monotonic()
    with pytest.raises(shmring.PeerGone, match=rf"consumer process {consumer.pid} died") as ei:
        ch.send(b"b" * 40)  # does not fit; no timeout
    elapsed = time.monotonic() - t0
    assert isinstance(ei.value, ConnectionError)
    assert 0.25 <= elapsed < 2.3, elapsed
    consumer.proc.join(5)
    assert consumer.proc.exitcode == -signal.SIGKILL
    with pytest.raises(shmring.PeerGone):
        ch.send(b"b" * 40, timeout=1)


@pytest.mark.timeout(30)
def test_new_consumer_after_consumer_sigkill(channel: Callable[..., Channel], kids: Kids) -> None:
    """After a consumer dies, a new consumer process claims the end and
    resumes from the last head the dead one published: a contiguous run of
    messages, starting no later than right after what the dead one saw."""
    # The whole stream fits in the ring, so that the producer never waits
    # for room (it would rightly get PeerGone while no consumer lives).
    capacity = 1 << 17
    sizes = (12, 13, 20, 31, 40, 56)  # >= 12 bytes: each carries its seq
    n = 1500
    assert sum(record_size(size_of(s, sizes)) for s in range(n)) <= capacity
    ch = channel(capacity, "adaptive")
    first = Agent(kids, FORK, ch.name)
    producer = kids.process(FORK, _producer, ch.name, None, "send", 0, n, sizes)
    seen = first("recv_seq", "recv", 0, 700, sizes)
    first.kill()
    second = Agent(kids, FORK, ch.name)
    # The dead consumer may not have handed back its last messages: they
    # come again (at-least-once), but nothing may be skipped.
    data = second("recv", timeout=OP_TIMEOUT)
    resume = int.from_bytes(data[:8], "little")
    assert resume <= seen, f"resumed at #{resume}, but the dead consumer had only seen up to #{seen - 1}"
    check_msg(data, resume, sizes)
    assert second("recv_seq", "recv", resume + 1, n - resume - 1, sizes) == n
    with pytest.raises(shmring.Closed):
        second("recv", timeout=OP_TIMEOUT)
    producer.join(OP_TIMEOUT)
    assert producer.exitcode == 0


# ==========================================================================
# 5. Killed inside reserve() / send_many()
# ==========================================================================


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", ["plain", "needs-padding", "largest", "empty", "unwritten"])
def test_producer_killed_inside_reserve(case: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """A producer SIGKILLed inside a reserve() block, half-way through
    writing: the reader never sees the partial record (nor a stray padding
    record), gets PeerGone, and a new producer's messages come through
    clean."""
    capacity = 256
    sizes = (20,)  # 32-byte records
    ch = channel(capacity, "block")
    before = {"plain": 3, "needs-padding": 7, "largest": 2, "empty": 1, "unwritten": 5}[case]
    n = {"plain": 100, "needs-padding": 100, "largest": capacity - 8, "empty": 0, "unwritten": 64}[case]
    written = 0 if case == "unwritten" else n // 2
    producer = Agent(kids, FORK, ch.name)
    producer("send_seq", "send", 0, before, sizes)
    assert recv_seq(ch, "recv", 0, before, sizes) == before
    assert ch.try_recv() is None
    producer.start("reserve_and_die", n, written)
    # Poll while it works: the largest message must wait for us to skip
    # the padding in front of it; nothing of the partial record may show.
    deadline = time.monotonic() + OP_TIMEOUT
    while producer.proc.is_alive():
        assert ch.try_recv() is None, "a partial record became visible"
        assert time.monotonic() < deadline, "the producer never reached its reserve() block"
        time.sleep(0.001)
    producer.proc.join(5)
    assert producer.proc.exitcode == -signal.SIGKILL
    with pytest.raises(shmring.PeerGone):
        ch.recv(timeout=OP_TIMEOUT)
    stats = ch.stats()
    assert stats["tail"] == stats["head"], "the dead producer's partial record was published"
    successor = Agent(kids, FORK, ch.name)
    successor.start("send_seq", "reserve", before, 20, sizes)
    assert recv_seq(ch, "recv", before, 20, sizes) == before + 20
    assert successor.reply() == 20
    assert successor.stop() == 0
    expect_end_of_stream(ch)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("capacity", [256, 1 << 16])
def test_producer_killed_while_its_send_many_collects_the_batch(capacity: int, channel: Callable[..., Channel],
                                                                 kids: Kids) -> None:
    """SIGKILL from the batch's own iterator: send_many collects and checks
    the whole batch before it writes anything, so nothing of it arrives; the
    reader gets what was sent before, whole, then PeerGone."""
    sizes = size_mix("mixed", capacity)
    ch = channel(capacity, "adaptive")
    producer = Agent(kids, FORK, ch.name)
    assert ch.try_recv() is None
    producer("send_seq", "send", 0, 3, sizes)  # the producer holds its end
    producer.start("send_many_and_die", 3, 400, sizes)
    assert _drain_until_peer_gone(ch, 0, sizes, 400) == 3


@pytest.mark.timeout(30)
@pytest.mark.parametrize("capacity", [256, 1 << 16])
def test_producer_killed_inside_a_send_many_larger_than_the_ring(capacity: int, channel: Callable[..., Channel],
                                                                  kids: Kids) -> None:
    """SIGKILL while a batch larger than the ring waits for room (it goes in
    parts): the reader gets a prefix of the batch, whole and in order (every
    part was published before the producer waited), then PeerGone."""
    sizes = size_mix("mixed", capacity)
    k = 400
    batch = [msg(s, sizes) for s in range(k)]
    assert sum(record_size(len(m)) for m in batch) > capacity
    ch = channel(capacity, "adaptive")
    producer = Agent(kids, FORK, ch.name)
    assert ch.try_recv() is None  # the reader holds its end
    producer.start("send_many", batch, timeout=OP_TIMEOUT)
    deadline = time.monotonic() + OP_TIMEOUT
    while ch.stats()["sent_messages"] == 0:  # the first part is published when the ring fills up
        assert time.monotonic() < deadline, "the producer never published a part of its batch"
        time.sleep(0.002)
    producer.kill()
    seq = _drain_until_peer_gone(ch, 0, sizes, k)
    assert 0 < seq < k
    assert seq == ch.stats()["sent_messages"]  # everything published arrived


# ==========================================================================
# 6. Role claims
# ==========================================================================


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ctx_name", ["fork", "spawn"])
def test_second_live_producer_gets_role_taken(ctx_name: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """While another live process holds the producer end, a call that does
    not wait is refused at once, and a blocking one waits for the end up to
    its timeout; either way nothing is sent."""
    ctx = CONTEXTS[ctx_name]
    ch = channel(4096, "block")
    a = Agent(kids, ctx, ch.name)
    b = Agent(kids, ctx, ch.name)
    a("send", b"from-a", timeout=5)
    for op, args, kw in (
        ("send", (b"b",), {"timeout": 0.1}),
        ("send", (b"b",), {"timeout": 0}),
        ("try_send", (b"b",), {}),
        ("send_many", ([b"b"],), {"timeout": 0.1}),
        ("reserve", (1,), {"timeout": 0.1}),
    ):
        with pytest.raises(shmring.RoleTaken, match=rf"producer end is held by live process {a.pid}") as ei:
            b(op, *args, **kw)
        assert isinstance(ei.value, RuntimeError)
    a("send", b"from-a-again", timeout=5)  # a keeps its end
    assert ch.recv(timeout=5) == b"from-a"
    assert ch.recv(timeout=5) == b"from-a-again"
    assert ch.try_recv() is None
    a.kill()
    b("send", b"from-b", timeout=5)  # a dead holder's end can be taken
    assert ch.stats()["producer_pid"] == b.pid
    assert ch.recv(timeout=5) == b"from-b"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ctx_name", ["fork", "spawn"])
def test_second_live_consumer_gets_role_taken(ctx_name: str, channel: Callable[..., Channel], kids: Kids) -> None:
    ctx = CONTEXTS[ctx_name]
    ch = channel(4096, "block")
    a = Agent(kids, ctx, ch.name)
    b = Agent(kids, ctx, ch.name)
    ch.send(b"one")
    assert a("recv", timeout=5) == b"one"
    ch.send(b"two")
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("recv", (), {"timeout": 0.1}),
        ("recv", (), {"timeout": 0}),
        ("try_recv", (), {}),
        ("recv_many", (4,), {"timeout": 0.1}),
        ("peek", (), {"timeout": 0.1}),
        ("recv_into", (bytearray(64),), {"timeout": 0.1}),
    ]
    for op, args, kw in calls:
        with pytest.raises(shmring.RoleTaken, match=rf"consumer end is held by live process {a.pid}"):
            b(op, *args, _timeout=5, **kw)
    assert a("recv", timeout=5) == b"two"  # the refused attempts took nothing
    assert a("try_recv") is None  # hands back what it consumed
    a.kill()
    ch.send(b"three")
    assert b("recv", timeout=5) == b"three"
    assert ch.stats()["consumer_pid"] == b.pid


def _inherited_probe(ch: Channel, results: Any) -> None:
    out: list[Any] = []
    try:
        ch.send(b"from-child", timeout=0.2)
        out.append("sent")
    except shmring.RoleTaken as e:
        out.append(("RoleTaken", str(e)))
    ch.close()  # closes only this process's copy: it holds no end
    results.put(out)


@pytest.mark.timeout(30)
def test_fork_child_does_not_inherit_claims(channel: Callable[..., Channel], kids: Kids) -> None:
    """A handle inherited through fork holds no end in the child: it is
    refused the parent's producer end, and its close does not end the
    parent's stream."""
    ch = channel(4096, "block")
    ch.send(b"parent-1")
    results = FORK.Queue()
    p = kids.process(FORK, _inherited_probe, ch, results)
    out = results.get(timeout=10)
    p.join(10)
    assert p.exitcode == 0
    assert out[0][0] == "RoleTaken" and f"live process {os.getpid()}" in out[0][1], out
    stats = ch.stats()
    assert not stats["writer_closed"] and stats["producer_pid"] == os.getpid(), stats
    ch.send(b"parent-2")
    consumer = Agent(kids, FORK, ch.name)
    assert consumer("recv", timeout=5) == b"parent-1"
    assert consumer("recv", timeout=5) == b"parent-2"
    assert consumer("try_recv") is None


def _send_when_free(name: str, results: Any) -> None:
    with shmring.Channel.open(name) as ch:
        results.put("waiting")
        ch.send(b"from-b")  # no timeout: waits until the producer end is given back
        results.put(time.monotonic())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["close", "drop", "kill"])
def test_blocked_send_waits_for_the_producer_end_and_takes_it_over(
    how: str, channel: Callable[..., Channel], kids: Kids
) -> None:
    """A second process's blocking send waits (asleep) while the first holds
    the producer end, and goes on as soon as that end is given back: closed
    (which also ends the stream: then Closed), dropped, or its process died."""
    ch = channel(4096, "block")
    a = Agent(kids, FORK, ch.name)
    a("send", b"from-a", timeout=5)
    results = FORK.Queue()
    kids.process(FORK, _send_when_free, ch.name, results)
    assert results.get(timeout=10) == "waiting"
    time.sleep(0.3)
    assert results.empty(), "the second producer did not wait for the end"
    released = time.monotonic()
    if how == "kill":
        a.kill()
    elif how == "drop":
        a("give_back")
    else:
        a("close")
    if how == "close":
        assert ch.recv(timeout=5) == b"from-a"
        with pytest.raises(shmring.Closed):
            ch.recv(timeout=5)  # a's close ended the stream: b's send was refused
        return
    took = results.get(timeout=10)
    assert took - released < 2.0  # woken by the release (or within a slice of the death)
    assert ch.recv(timeout=5) == b"from-a"
    assert ch.recv(timeout=5) == b"from-b"


# ==========================================================================
# 7. SIGINT while blocked
# ==========================================================================


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ctx_name", ["fork", "spawn"])
@pytest.mark.parametrize("wait", STRATEGIES)
def test_sigint_interrupts_blocked_recv(wait: str, ctx_name: str, channel: Callable[..., Channel],
                                        kids: Kids) -> None:
    ch = channel(4096, wait)
    ch.send(b"first")
    consumer = Agent(kids, CONTEXTS[ctx_name], ch.name, wait)
    assert consumer("recv", timeout=5) == b"first"
    consumer.start("interruptible", "recv")  # no timeout
    consumer.wait_ready()
    time.sleep(0.25)  # well past every spin phase: deep in the wait
    t_signal = time.monotonic()  # CLOCK_MONOTONIC is the same clock in the child
    os.kill(consumer.pid, signal.SIGINT)
    outcome, t_raised = consumer.reply()
    assert outcome == "interrupted"
    latency = t_raised - t_signal
    assert latency < 0.1, f"KeyboardInterrupt came {latency * 1000:.0f} ms after SIGINT"
    # Still usable: a message sent afterwards arrives.
    ch.send(b"after")
    assert consumer("recv", timeout=5) == b"after"
    assert consumer("try_recv") is None


@pytest.mark.timeout(30)
@pytest.mark.parametrize("wait", STRATEGIES)
def test_sigint_interrupts_blocked_send(wait: str, channel: Callable[..., Channel], kids: Kids) -> None:
    capacity = 256
    ch = channel(capacity, wait)
    producer = Agent(kids, FORK, ch.name, wait)
    assert ch.try_recv() is None  # this process is the (live, idle) consumer
    n = producer("fill", 24)
    assert n == capacity // 32
    producer.start("interruptible", "send", b"interrupted")
    producer.wait_ready()
    time.sleep(0.25)
    t_signal = time.monotonic()
    os.kill(producer.pid, signal.SIGINT)
    outcome, t_raised = producer.reply()
    assert outcome == "interrupted"
    latency = t_raised - t_signal
    assert latency < 0.1, f"KeyboardInterrupt came {latency * 1000:.0f} ms after SIGINT"
    for i in range(n):
        assert ch.recv(timeout=5) == make_msg(i, 24)
    assert ch.try_recv() is None  # the interrupted message did not get in
    producer("send", b"after", timeout=5)
    assert ch.recv(timeout=5) == b"after"


# ==========================================================================
# 8. Corruption by a hostile peer
# ==========================================================================


def _corrupt_tail_far_ahead(ch: Channel, h: Hostile) -> None:
    h.tail = h.head + 2 * h.capacity


def _corrupt_tail_behind_head(ch: Channel, h: Hostile) -> None:
    h.tail = h.head - 8


def _corrupt_tail_misaligned(ch: Channel, h: Hostile) -> None:
    h.tail = h.head + 12


def _corrupt_tail_off_by_3(ch: Channel, h: Hostile) -> None:
    h.tail = h.head + 3


def _corrupt_len_larger_than_ring(ch: Channel, h: Hostile) -> None:
    ch.send(b"victim record")
    length, tag = h.record(h.head)
    assert (length, tag) == (13, REC_DATA)
    h.put_record(h.head, 4 * h.capacity, REC_DATA)


def _corrupt_len_max_u32(ch: Channel, h: Hostile) -> None:
    ch.send(b"victim record")
    h.put_record(h.head, 0xFFFFFFFF, REC_DATA)


def _corrupt_len_beyond_tail(ch: Channel, h: Hostile) -> None:
    ch.send(b"victim record")  # 24-byte record; the ring has room for more
    h.put_record(h.head, 100, REC_DATA)


def _corrupt_unknown_tag(ch: Channel, h: Hostile) -> None:
    ch.send(b"victim record")
    h.put_record(h.head, 13, 0x41)


def _corrupt_zero_tag(ch: Channel, h: Hostile) -> None:
    ch.send(b"victim record")
    h.put_record(h.head, 13, 0)


def _corrupt_pad_wrong_len(ch: Channel, h: Hostile) -> None:
    room = h.capacity - h.head % h.capacity
    h.put_record(h.head, 8, REC_PAD)  # should be room - 8
    h.tail = h.head + room


def _corrupt_pad_too_long(ch: Channel, h: Hostile) -> None:
    room = h.capacity - h.head % h.capacity
    h.put_record(h.head, room, REC_PAD)  # 8 bytes past the end of the ring
    h.tail = h.head + room


def _corrupt_pad_beyond_tail(ch: Channel, h: Hostile) -> None:
    room = h.capacity - h.head % h.capacity
    h.put_record(h.head, room - 8, REC_PAD)  # right length, but not all published
    h.tail = h.head + 24


READER_CORRUPTIONS: dict[str, Callable[[Channel, Hostile], None]] = {
    "tail-far-beyond-head+capacity": _corrupt_tail_far_ahead,
    "tail-behind-head": _corrupt_tail_behind_head,
    "tail-misaligned": _corrupt_tail_misaligned,
    "tail-off-by-3": _corrupt_tail_off_by_3,
    "record-len-larger-than-ring": _corrupt_len_larger_than_ring,
    "record-len-0xffffffff": _corrupt_len_max_u32,
    "record-len-beyond-tail": _corrupt_len_beyond_tail,
    "unknown-tag": _corrupt_unknown_tag,
    "zero-tag": _corrupt_zero_tag,
    "padding-wrong-len": _corrupt_pad_wrong_len,
    "padding-past-ring-end": _corrupt_pad_too_long,
    "padding-beyond-tail": _corrupt_pad_beyond_tail,
}


def _assert_corrupted(call: Callable[[], Any], name: str) -> None:
    with pytest.raises(shmring.CorruptedError, match="corrupted ring") as ei:
        call()
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, shmring.Error)
    assert name in str(ei.value)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(READER_CORRUPTIONS))
def test_corrupted_ring_reader(case: str, channel: Callable[..., Channel], kids: Kids,
                               raw: Callable[[str], Hostile]) -> None:
    """Garbage in the counters or record headers: every read in the victim
    process raises CorruptedError (a ValueError) and the process survives."""
    ch = channel(256, "block")
    victim = Agent(kids, FORK, ch.name, "block")
    ch.send(b"warm-up")
    assert victim("recv", timeout=5) == b"warm-up"
    assert victim("try_recv") is None  # head published: head == tail
    h = raw(ch.name)
    assert h.head == h.tail == record_size(7)
    READER_CORRUPTIONS[case](ch, h)
    t0 = time.monotonic()
    _assert_corrupted(lambda: victim("recv", timeout=1.0), ch.name)
    assert time.monotonic() - t0 < 1.0, "corruption must be reported at once, not after the timeout"
    _assert_corrupted(lambda: victim("recv"), ch.name)  # no timeout: must not block
    _assert_corrupted(lambda: victim("try_recv"), ch.name)
    _assert_corrupted(lambda: victim("recv_many", 10, timeout=1.0), ch.name)
    _assert_corrupted(lambda: victim("peek", timeout=1.0), ch.name)
    _assert_corrupted(lambda: victim("recv_into", bytearray(256), timeout=1.0), ch.name)
    assert isinstance(victim("stats"), dict)
    assert victim.stop() == 0, "the victim did not exit cleanly"


def _corrupt_head_ahead_of_tail(h: Hostile) -> None:
    h.head = h.tail + 8


def _corrupt_head_misaligned(h: Hostile) -> None:
    h.head = h.tail - h.capacity + 4


def _corrupt_head_far_behind(h: Hostile) -> None:
    h.head = h.tail - 2 * h.capacity


WRITER_CORRUPTIONS: dict[str, Callable[[Hostile], None]] = {
    "head-ahead-of-tail": _corrupt_head_ahead_of_tail,
    "head-misaligned": _corrupt_head_misaligned,
    "head-far-behind": _corrupt_head_far_behind,
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(WRITER_CORRUPTIONS))
def test_corrupted_ring_writer(case: str, channel: Callable[..., Channel], kids: Kids,
                               raw: Callable[[str], Hostile]) -> None:
    """A garbage head seen by a producer waiting for room: CorruptedError."""
    ch = channel(256, "block")
    victim = Agent(kids, FORK, ch.name, "block")
    assert ch.try_recv() is None  # this process is the consumer
    assert victim("fill", 8) == 256 // 16
    h = raw(ch.name)
    assert h.tail - h.head == 256
    WRITER_CORRUPTIONS[case](h)
    _assert_corrupted(lambda: victim("send", b"y", timeout=1.0), ch.name)
    _assert_corrupted(lambda: victim("send", b"y"), ch.name)
    _assert_corrupted(lambda: victim("try_send", b"y"), ch.name)
    _assert_corrupted(lambda: victim("send_many", [b"y"], timeout=1.0), ch.name)
    assert victim.stop() == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("role", ["consumer", "producer"])
def test_corrupted_counters_refused_at_claim(role: str, channel: Callable[..., Channel], kids: Kids,
                                             raw: Callable[[str], Hostile]) -> None:
    """Impossible counters when an end is claimed: CorruptedError, and the
    failed claim is given back (once repaired, the same process can claim)."""
    ch = channel(256, "block")
    victim = Agent(kids, FORK, ch.name, "block")
    h = raw(ch.name)
    if role == "consumer":
        h.tail = 4
        _assert_corrupted(lambda: victim("recv", timeout=0.1), ch.name)
        assert ch.stats()["consumer_pid"] == 0
        h.tail = 0
        with pytest.raises(shmring.Timeout):
            victim("recv", timeout=0.1)
        ch.send(b"repaired")
        assert victim("recv", timeout=5) == b"repaired"
    else:
        h.head = 12
        _assert_corrupted(lambda: victim("send", b"x", timeout=0.1), ch.name)
        assert ch.stats()["producer_pid"] == 0
        h.head = 0
        victim("send", b"repaired", timeout=1)
        assert ch.recv(timeout=5) == b"repaired"
    assert victim.stop() == 0


CONFIG_GARBAGE = [
    ("capacity", 0),
    ("capacity", 1),
    ("capacity", 63),
    ("capacity", 100),
    ("capacity", 255),
    ("capacity", 512),  # a power of two larger than the segment holds
    ("capacity", 1 << 33),
    ("capacity", (1 << 64) - 1),
    ("data_offset", 0),
    ("data_offset", 8),
    ("data_offset", 648),
    ("data_offset", 1 << 63),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("field", "value"), CONFIG_GARBAGE)
def test_open_refuses_garbage_config(field: str, value: int, channel: Callable[..., Channel], kids: Kids,
                                     raw: Callable[[str], Hostile]) -> None:
    ch = channel(256, "block")
    h = raw(ch.name)
    h.put_u64(CTRL[field], value)
    victim = Agent(kids, FORK, None)
    with pytest.raises(shmring.CorruptedError) as ei:
        victim("open", ch.name)
    assert isinstance(ei.value, ValueError)
    assert victim.stop() == 0


@pytest.mark.timeout(30)
def test_config_is_read_once(channel: Callable[..., Channel], kids: Kids, raw: Callable[[str], Hostile]) -> None:
    """After attaching, garbage written into the configuration changes
    nothing (each side keeps its own checked copy); garbage in the default
    strategy or spin window is replaced by sane values at open."""
    ch = channel(256, "block")
    victim = Agent(kids, FORK, ch.name)
    producer = Agent(kids, FORK, ch.name)
    producer("send", b"one", timeout=5)
    assert victim("recv", timeout=5) == b"one"
    h = raw(ch.name)
    h.put_u64(CTRL["capacity"], 3)
    h.put_u64(CTRL["data_offset"], 1 << 40)
    with pytest.raises(shmring.CorruptedError):
        Channel.open(ch.name)  # a new opener is refused...
    sizes = size_mix("mixed", 256)
    producer.start("send_seq", "send", 0, 2000, sizes)
    assert victim("recv_seq", "recv", 0, 2000, sizes) == 2000  # ...but those attached carry on
    assert producer.reply() == 2000
    assert victim.stop() == 0
    # Garbage strategy / spin window: opened with the defaults instead.
    other = channel(256, "spin")
    h2 = raw(other.name)
    h2.put_u32(CTRL["wait"], 99)
    h2.put_u32(CTRL["spin_ns"], 0xFFFFFFFF)
    probe = Agent(kids, FORK, None)
    probe("open", other.name)
    assert probe("timed", "recv", timeout=0.05)[0] == "raised"
    assert probe.stop() == 0
    reopened = Channel.open(other.name)
    try:
        assert reopened.wait == "adaptive"
        assert reopened.spin_ns == shmring._core.CHANNEL_DEFAULT_SPIN_NS
    finally:
        reopened.close()


@pytest.mark.timeout(30)
def test_forged_valid_records_are_accepted(channel: Callable[..., Channel], kids: Kids,
                                           raw: Callable[[str], Hostile]) -> None:
    """Positive control for the offsets above: records forged by hand at the
    documented offsets (a message, a padding record to the end of the ring,
    a message at offset 0) are read like the producer's own."""
    capacity = 256
    ch = channel(capacity, "block")
    h = raw(ch.name)
    h.put_record(0, 5, REC_DATA, b"hello")
    h.tail = 16
    victim = Agent(kids, FORK, ch.name)
    assert victim("recv", timeout=5) == b"hello"
    assert victim("try_recv") is None
    assert h.head == 16
    h.put_record(16, capacity - 16 - 8, REC_PAD)
    h.put_record(capacity, 5, REC_DATA, b"world")
    h.tail = capacity + 16  # the ring is exactly full: 240 bytes of padding + 16
    assert victim("recv", timeout=5) == b"world"
    assert victim("try_recv") is None
    assert h.head == capacity + 16
    assert victim.stop() == 0


# -- fuzz ---------------------------------------------------------------------

FUZZ_CAPACITY = 256

_fuzz_write = st.one_of(
    st.tuples(st.just("data"), st.integers(0, FUZZ_CAPACITY - 1), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("ctrl"), st.integers(0, DATA - 1), st.binary(min_size=1, max_size=8)),
    st.tuples(
        st.sampled_from(["tail", "head"]),
        st.one_of(st.integers(-3 * FUZZ_CAPACITY, 3 * FUZZ_CAPACITY), st.integers(0, (1 << 64) - 1)),
        st.booleans(),  # relative to the current value, or absolute
    ),
    st.tuples(
        st.just("record"),
        st.integers(0, FUZZ_CAPACITY // 8 - 1),
        st.one_of(st.integers(0, 2 * FUZZ_CAPACITY), st.integers(0, (1 << 32) - 1)),
        st.sampled_from([REC_DATA, REC_PAD, 0, 0x41, 0xFFFFFFFF]),
    ),
)
_fuzz_action = st.one_of(
    st.sampled_from([("try_recv", None), ("recv", None), ("peek", None), ("recv_into", None), ("stats", None)]),
    st.tuples(st.just("recv_many"), st.integers(1, 40)),
    st.tuples(st.sampled_from(["try_send", "send"]), st.binary(max_size=56)),
)


@pytest.mark.timeout(120)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(0, 56), max_size=12),
    writes=st.lists(_fuzz_write, min_size=1, max_size=8),
    reopen_stream=st.booleans(),
    actions=st.lists(_fuzz_action, min_size=1, max_size=25),
)
def test_fuzz_garbage_never_crashes(sizes: list[int], writes: list[Any], reopen_stream: bool,
                                    actions: list[tuple[str, Any]], new_name: Callable[[], str],
                                    kids: Kids) -> None:
    """Random bytes at random offsets of the ring and control block, random
    counters and record headers; then reads and writes in a victim process:
    each returns or raises a shmring.Error, and the victim never dies.  One
    long-lived victim process runs every example (a new one after a crash)."""
    victim = next((a for a in reversed(kids.items) if isinstance(a, Agent) and a.proc.is_alive()), None)
    if victim is None:
        victim = Agent(kids, FORK, None)
    name = new_name()
    ch = Channel.create(name, FUZZ_CAPACITY, "block")
    h = None
    try:
        for i, n in enumerate(sizes):
            if not ch.try_send(make_msg(i, n)):
                break
        h = Hostile(name)  # attached first: the channel outlives its creator's close
        ch.close()  # gives the producer end back (and ends the stream...)
        if reopen_stream:
            h.put_u32(CTRL["writer_closed"], 0)  # ...unless the fuzz reopens it
        for w in writes:
            if w[0] == "data":
                _, off, data = w
                h.write(DATA + off, data[: FUZZ_CAPACITY - off])
            elif w[0] == "ctrl":
                _, off, data = w
                h.write(off, data[: DATA - off])
            elif w[0] in ("tail", "head"):
                field, value, relative = w
                h.put_u64(CTRL[field], (h.u64(CTRL[field]) + value) if relative else value)
            else:
                _, slot, length, tag = w
                h.put_record(slot * 8, length, tag)
        results = victim("fuzz", name, actions, _timeout=30)
        bad = [r for r in results if r[1].startswith("BAD")]
        assert not bad, bad
    finally:
        if h is not None:
            h.close()
        ch.close()  # the last handle out removes it


# ==========================================================================
# 9. A blocked adaptive/block waiter burns no CPU
# ==========================================================================


@pytest.mark.timeout(30)
@pytest.mark.parametrize("side", ["reader", "writer"])
@pytest.mark.parametrize("wait", ["adaptive", "block"])
def test_blocked_wait_uses_almost_no_cpu(wait: str, side: str, channel: Callable[..., Channel], kids: Kids) -> None:
    """Regression guard (the benchmark measures the real figure): waiting
    ~1 s with a live peer costs under 5% of a core."""
    ch = channel(4096, wait)
    agent = Agent(kids, FORK, ch.name, wait)
    if side == "reader":
        ch.send(b"claim")
        assert agent("recv", timeout=5) == b"claim"
        assert agent("try_recv") is None
        outcome, cpu, wall = agent("cpu_of", "recv", timeout=1.0)
    else:
        assert ch.try_recv() is None
        assert agent("fill", 56) == 4096 // 64
        outcome, cpu, wall = agent("cpu_of", "send", b"x", timeout=1.0)
    assert outcome == "timeout"
    assert 0.95 <= wall < 2.0, wall
    assert cpu < 0.05 * wall, f"{wait} {side} used {cpu / wall:.1%} of a core while blocked"


def _send_then_die(ch: Channel, n: int) -> None:
    for i in range(n):
        ch.send(i.to_bytes(8, "little"))
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.timeout(30)
def test_try_recv_reports_a_dead_producer(channel: Callable[..., Channel]) -> None:
    """try_recv never waits, but it does not return None forever either: once
    the dead producer's messages are drained it raises PeerGone."""
    ch = channel(4096, "block")
    proc = FORK.Process(target=_send_then_die, args=(ch, 5))
    proc.start()
    proc.join(10)
    got = []
    deadline = time.monotonic() + 5
    with pytest.raises(shmring.PeerGone):
        while time.monotonic() < deadline:
            msg = ch.try_recv()
            if msg is not None:
                got.append(msg)
            time.sleep(0.001)
    assert got == [i.to_bytes(8, "little") for i in range(5)]


def _claim_consumer_then_die(ch: Channel) -> None:
    assert ch.try_recv() is None
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.timeout(30)
def test_try_send_reports_a_dead_consumer(channel: Callable[..., Channel]) -> None:
    ch = channel(256, "block")
    proc = FORK.Process(target=_claim_consumer_then_die, args=(ch,))
    proc.start()
    proc.join(10)
    deadline = time.monotonic() + 5
    with pytest.raises(shmring.PeerGone):
        while time.monotonic() < deadline:
            ch.try_send(b"x" * 24)
            time.sleep(0.001)


def test_semaphore_wait_needs_a_semaphore_channel(channel: Callable[..., Channel]) -> None:
    ch = channel(256, "adaptive")
    with pytest.raises(ValueError, match="semaphore"):
        Channel.open(ch.name, "semaphore")


def _echo_upper(inbox: Channel, outbox: Channel, n: int) -> None:
    with inbox, outbox:
        for _ in range(n):
            outbox.send(inbox.recv(timeout=10).upper())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_channels_as_process_arguments(method: str, channel: Callable[..., Channel]) -> None:
    """Channel objects are plain Process arguments under every start method:
    they pickle by name and the child re-attaches; its with-block does not
    unlink the creator's segments."""
    inbox, outbox = channel(4096, "adaptive"), channel(4096, "adaptive")
    proc = mp.get_context(method).Process(target=_echo_upper, args=(inbox, outbox, 100))
    proc.start()
    try:
        for i in range(100):
            inbox.send(b"msg %d" % i)
            assert outbox.recv(timeout=10) == b"MSG %d" % i
        proc.join(20)
        assert proc.exitcode == 0
        assert Path("/dev/shm", inbox.name).exists() and Path("/dev/shm", outbox.name).exists()
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
