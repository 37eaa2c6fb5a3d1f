"""``shmring bench``: a short self-benchmark of this machine.

Real producer and consumer processes (multiprocessing's spawn context) move
messages through shmring's objects and through their peers side by side:

- ``channel``: bytes from one process to another: ``Channel`` against
  ``multiprocessing.Pipe`` and ``multiprocessing.Queue``;
- ``queue``: objects ``(seq, payload)`` from one producer to one consumer:
  ``shmring.Queue`` against ``multiprocessing.Queue`` and faster-fifo;
- ``topic``: one publisher, two subscribers that each get every message:
  ``Topic`` against a ``multiprocessing.Pipe`` per subscriber and pyzmq
  PUB/SUB;
- ``latency``: round trips of a 64-byte message: ``Channel`` (one each way)
  against a duplex ``multiprocessing.Pipe``.

Every message is checked by its receivers: the sender sends
``payloads[i % K]`` (K distinct payloads of the size, each starting with its
index, so a lost, repeated or reordered message shows), objects also carry
their sequence number, and each receiver counts what it checked.  A
throughput figure is the median of a few short runs, each sized after a
warm-up run; the parent only coordinates, so that its progress display takes
nothing from the measured processes.

The sizing and payload helpers here are also what the repository's
benchmark scripts use.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import statistics
import struct
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

KiB, MiB = 1024, 1 << 20
DEFAULT_SIZES = (64, KiB, 64 * KiB, MiB)
QUICK_SIZES = (64, 64 * KiB)
LATENCY_SIZE = 64
STUCK_AFTER_S = 60.0  # a worker with no answer after this is stuck: the subject fails
PAYLOAD_BYTES = 8 * MiB  # the distinct payloads of a size take about this much (at most 256 of them)

WORKLOADS: dict[str, tuple[str, ...]] = {
    "channel": ("shmring.Channel", "multiprocessing.Pipe", "multiprocessing.Queue"),
    "queue": ("shmring.Queue", "multiprocessing.Queue", "faster_fifo.Queue"),
    "topic": ("shmring.Topic", "multiprocessing.Pipe x2", "pyzmq PUB/SUB"),
    "latency": ("shmring.Channel", "multiprocessing.Pipe"),
}
# Each workload's ratios are against multiprocessing's subjects.
BASELINES: dict[str, tuple[str, ...]] = {
    "channel": ("multiprocessing.Pipe", "multiprocessing.Queue"),
    "queue": ("multiprocessing.Queue",),
    "topic": ("multiprocessing.Pipe x2",),
    "latency": ("multiprocessing.Pipe",),
}
# The optional peers: the module that must import, and the extra that brings it.
PEERS = {"faster_fifo.Queue": "faster_fifo", "pyzmq PUB/SUB": "zmq"}
TOPIC_SUBSCRIBERS = 2


# -- helpers shared with the repository's benchmark scripts --------------------------------------


def size_label(n: int) -> str:
    """``64 B``, ``1 KiB``, ``1 MiB``."""
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    if n >= KiB and n % KiB == 0:
        return f"{n // KiB} KiB"
    return f"{n} B"


def fmt_rate(x: float) -> str:
    """A rate with an SI suffix, three significant figures or so."""
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.0f}k" if x >= 1e5 else f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def make_payloads(size: int, salt: int = 0, k: int = 256) -> list[bytes]:
    """k distinct payloads of `size` bytes: a 4-byte index (xor salt), then a
    pattern that depends on the index; the same on both sides."""
    out = []
    for i in range(k):
        unit = bytes(((i * 37 + j * 11 + salt * 101) & 0xFF) for j in range(251))
        head = struct.pack("<I", i ^ (salt << 16))
        if size <= 4096:
            out.append((head + unit * (size // 251 + 1))[:size])
        else:
            body = unit * (size // 251 + 1)
            out.append(head + body[: size - 4])
    return out


def percentiles(sorted_ns: list[int]) -> dict[str, float]:
    """p50/p99/p99.9, mean, min and max in µs of latencies in ns, sorted."""
    n = len(sorted_ns)

    def pct(p: float) -> float:
        return sorted_ns[min(n - 1, max(0, int(round(p * (n - 1)))))] / 1000

    return {
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "mean_us": sum(sorted_ns) / n / 1000,
        "min_us": sorted_ns[0] / 1000,
        "max_us": sorted_ns[-1] / 1000,
    }


def distinct_payloads(size: int) -> int:
    """How many distinct payloads a size gets: a power of two (the loops mask
    the index), 256 for small messages, fewer for large ones (memory)."""
    k = 256
    while k > 4 and k * size > PAYLOAD_BYTES:
        k //= 2
    return k


def ring_bytes(largest: int) -> int:
    """The ring of every bounded subject: a power of two holding 8 of the
    largest messages, at least 1 MiB."""
    need = max(MiB, 8 * (largest + 64))
    return 1 << (need - 1).bit_length()


# -- settings and results ------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How much a run measures."""

    sizes: tuple[int, ...]
    runs: int  # measured runs per figure (the median is shown)
    target_s: float  # each measured run is sized to last about this long
    rounds: int  # latency: round trips timed
    warmup_rounds: int  # latency: round trips before those

    @classmethod
    def pick(cls, quick: bool) -> Settings:
        if quick:
            return cls(sizes=QUICK_SIZES, runs=1, target_s=0.03, rounds=1000, warmup_rounds=100)
        return cls(sizes=DEFAULT_SIZES, runs=3, target_s=0.25, rounds=10_000, warmup_rounds=1000)


@dataclass
class Throughput:
    """One subject at one size: messages/s of each measured run."""

    workload: str
    subject: str
    size: int
    rates: list[float]
    messages: int  # sent in the measured runs
    checked: int  # checked by the receivers, all of them together
    receivers: int

    @property
    def rate(self) -> float:
        return float(statistics.median(self.rates))

    @property
    def all_checked(self) -> bool:
        return self.checked == self.messages * self.receivers

    def to_json(self) -> dict[str, Any]:
        return {"workload": self.workload, "subject": self.subject, "size": self.size,
                "messages_per_s": self.rate, "mb_per_s": self.rate * self.size / 1e6, "runs": self.rates,
                "messages": self.messages, "receivers": self.receivers, "checked": self.checked,
                "all_checked": self.all_checked}


@dataclass
class Latency:
    """Round trips of one subject: every sample, in ns, sorted."""

    subject: str
    size: int
    samples_ns: list[int]
    checked: int  # replies checked by the timing process, messages by the echoing one

    @property
    def all_checked(self) -> bool:
        return self.checked == 2 * len(self.samples_ns)

    def to_json(self) -> dict[str, Any]:
        total_s = sum(self.samples_ns) / 1e9
        return {"workload": "latency", "subject": self.subject, "size": self.size,
                "round_trips": len(self.samples_ns), "round_trips_per_s": len(self.samples_ns) / total_s,
                **percentiles(self.samples_ns), "checked": self.checked, "all_checked": self.all_checked}


@dataclass
class Results:
    settings: Settings
    throughput: list[Throughput] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # subject: why
    failures: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def all_checked(self) -> bool:
        """Every message of every measurement was checked by its receiver(s)."""
        return all(t.all_checked for t in self.throughput) and all(lat.all_checked for lat in self.latency)

    def rate(self, workload: str, subject: str, size: int) -> float | None:
        for t in self.throughput:
            if (t.workload, t.subject, t.size) == (workload, subject, size):
                return t.rate
        return None

    def to_json(self) -> dict[str, Any]:
        s = self.settings
        return {"settings": {"sizes": list(s.sizes), "runs": s.runs, "target_s": s.target_s,
                             "round_trips": s.rounds, "warmup_round_trips": s.warmup_rounds},
                "cpus": usable_cpus(), "duration_s": self.duration_s,
                "throughput": [t.to_json() for t in self.throughput],
                "latency": [lat.to_json() for lat in self.latency],
                "skipped": self.skipped, "failures": self.failures}


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which cgroups and
    taskset narrow), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class BenchFailure(Exception):
    """A subject's measurement failed: a check, a worker's error, a hang."""


# -- the worker processes' side -------------------------------------------------------------------


@dataclass
class _End:
    """What a worker's loop calls: ``send`` and/or ``recv``, and its closers."""

    send: Callable[[Any], Any] | None = None
    recv: Callable[[], Any] | None = None
    closers: list[Callable[[], Any]] = field(default_factory=list)

    def close(self) -> None:
        while self.closers:
            try:
                self.closers.pop()()
            except Exception:
                pass


def _fan_out(ends: list[Any]) -> Callable[[bytes], None]:
    sends = [e.send_bytes for e in ends]

    def send(data: bytes) -> None:
        for s in sends:
            s(data)

    return send


def _open_zmq(handle: tuple[str, int], role: str) -> _End:
    zmq = importlib.import_module("zmq")  # an optional peer (the bench extra)

    address, subscribers = handle
    ctx = zmq.Context()
    if role == "tx":
        # XPUB passes each subscription up: once the publisher has read one
        # per subscriber, every subscriber gets every message sent after.
        sock = ctx.socket(zmq.XPUB)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        sock.setsockopt(zmq.SNDHWM, 0)  # no limit: PUB drops messages at its high-water mark
        sock.bind(address)
        sock.setsockopt(zmq.RCVTIMEO, int(STUCK_AFTER_S * 1000))
        for _ in range(subscribers):
            sock.recv()
        end = _End(send=sock.send)
    else:
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.connect(address)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        end = _End(recv=sock.recv)
    end.closers += [ctx.term, lambda: sock.close(linger=0)]
    return end


def _open_end(subject: str, role: str, handle: Any) -> _End:
    """A worker's end of ``subject`` for ``role`` (tx, rx; a, b for latency)."""
    if subject in ("shmring.Channel", "multiprocessing.Pipe") and role in ("a", "b"):
        if subject == "multiprocessing.Pipe":
            return _End(send=handle.send_bytes, recv=handle.recv_bytes)
        ping, pong = handle
        mine, theirs = (ping, pong) if role == "a" else (pong, ping)
        return _End(send=mine.send, recv=theirs.recv, closers=[ping.close, pong.close])
    if subject == "shmring.Topic":
        if role == "tx":
            publisher = handle.publisher()
            return _End(send=publisher.send, closers=[handle.close, publisher.close])
        subscription = handle.subscribe()  # before "ready": it gets every message of every run
        return _End(recv=subscription.recv, closers=[handle.close, subscription.close])
    if subject == "multiprocessing.Pipe x2":
        return _End(send=_fan_out(handle)) if role == "tx" else _End(recv=handle.recv_bytes)
    if subject == "pyzmq PUB/SUB":
        return _open_zmq(handle, role)
    if subject == "multiprocessing.Pipe":
        return _End(send=handle.send_bytes) if role == "tx" else _End(recv=handle.recv_bytes)
    if subject == "shmring.Channel":
        return _End(send=handle.send, closers=[handle.close]) if role == "tx" else \
            _End(recv=handle.recv, closers=[handle.close])
    # The queues: shmring.Queue, multiprocessing.Queue, faster_fifo.Queue.
    closers = [handle.close] if subject == "shmring.Queue" else []
    return _End(send=handle.put, closers=closers) if role == "tx" else _End(recv=handle.get, closers=closers)


def _mismatch(what: str, i: int, got: Any, want: Any) -> BenchFailure:
    head = bytes(got[:12]) if isinstance(got, (bytes, bytearray, memoryview)) else repr(got)[:40]
    return BenchFailure(f"{what} {i}: got {head!r}..., expected {bytes(want[:12])!r}...")


def _send_loop(send: Callable[[Any], Any], count: int, payloads: list[bytes], objects: bool) -> None:
    mask = len(payloads) - 1
    if objects:
        for i in range(count):
            send((i, payloads[i & mask]))
    else:
        for i in range(count):
            send(payloads[i & mask])


def _receive_loop(recv: Callable[[], Any], count: int, payloads: list[bytes], objects: bool) -> int:
    """Receive and check ``count`` messages; returns how many were checked."""
    mask = len(payloads) - 1
    if objects:
        for i in range(count):
            seq, body = recv()
            if seq != i or body != payloads[i & mask]:
                raise _mismatch("object", i, (seq, body), payloads[i & mask])
    else:
        for i in range(count):
            message = recv()
            if message != payloads[i & mask]:
                raise _mismatch("message", i, message, payloads[i & mask])
    return count


def _ping(end: _End, rounds: int, warmup: int, pings: list[bytes], pongs: list[bytes]) -> list[int]:
    """Time ``rounds`` round trips after ``warmup`` ones; every reply checked."""
    assert end.send is not None and end.recv is not None
    send, recv, clock = end.send, end.recv, time.perf_counter_ns
    mask = len(pings) - 1
    samples = [0] * rounds
    for i in range(warmup + rounds):
        t0 = clock()
        send(pings[i & mask])
        reply = recv()
        t1 = clock()
        if reply != pongs[i & mask]:
            raise _mismatch("reply", i, reply, pongs[i & mask])
        if i >= warmup:
            samples[i - warmup] = t1 - t0
    return samples


def _echo(end: _End, total: int, pings: list[bytes], pongs: list[bytes]) -> int:
    assert end.send is not None and end.recv is not None
    send, recv = end.send, end.recv
    mask = len(pings) - 1
    for i in range(total):
        message = recv()
        if message != pings[i & mask]:
            raise _mismatch("ping", i, message, pings[i & mask])
        send(pongs[i & mask])
    return total


def _work(end: _End, role: str, objects: bool, order: tuple[Any, ...], conn: Any) -> dict[str, Any]:
    """One run of a worker: ``order`` is ("run", size, count[, warmup])."""
    size, count = order[1], order[2]
    k = distinct_payloads(size)
    payloads = make_payloads(size, salt=1, k=k)
    if role in ("rx", "b"):
        conn.send(("armed",))
    t0 = time.perf_counter()
    if role == "tx":
        assert end.send is not None
        _send_loop(end.send, count, payloads, objects)
        return {"t0": t0, "t1": time.perf_counter()}
    if role == "rx":
        assert end.recv is not None
        checked = _receive_loop(end.recv, count, payloads, objects)
        return {"t0": t0, "t1": time.perf_counter(), "checked": checked}
    pongs = make_payloads(size, salt=2, k=k)
    if role == "a":
        samples = _ping(end, count, order[3], payloads, pongs)
        return {"samples": samples, "checked": count}
    return {"checked": _echo(end, count + order[3], payloads, pongs) - order[3]}


def worker_main(subject: str, role: str, handle: Any, objects: bool, conn: Any) -> None:
    """A worker process: opens its end, says "ready", then runs each
    ("run", ...) order until ("stop",); a failure is its last message."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C is the parent's: it stops us
    end = _End()
    try:
        end = _open_end(subject, role, handle)
        conn.send(("ready",))
        while (order := conn.recv())[0] == "run":
            conn.send(("done", _work(end, role, objects, order, conn)))
    except BaseException as exc:
        text = str(exc) if isinstance(exc, BenchFailure) else traceback.format_exc().strip().splitlines()[-1]
        try:
            conn.send(("error", f"{subject} ({role}): {text}"))
        except Exception:
            pass
    finally:
        end.close()


# -- the parent's side --------------------------------------------------------------------------------


class _Workers:
    """The worker processes of one subject: roles[i] runs with handles[i]."""

    def __init__(self, ctx: Any, subject: str, roles: list[str], handles: list[Any], objects: bool) -> None:
        self.subject, self.roles = subject, roles
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        try:
            for role, handle in zip(roles, handles):
                mine, theirs = ctx.Pipe()
                self.conns.append(mine)
                proc = ctx.Process(target=worker_main, args=(subject, role, handle, objects, theirs), daemon=True)
                proc.start()
                theirs.close()  # a dead worker reads as EOF
                self.procs.append(proc)
            self._gather(range(len(roles)), "ready")
        except BaseException:
            self.close()  # those already started must not outlive a failed start
            raise

    def _gather(self, which: Any, tag: str) -> list[dict[str, Any]]:
        """The ``tag`` message of each worker in ``which``; an error from any
        worker, an exit, or no answer within STUCK_AFTER_S raises BenchFailure."""
        from multiprocessing.connection import wait

        waiting = {self.conns[i]: i for i in which}
        got: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + STUCK_AFTER_S
        watched = list(self.conns)
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                stuck = ", ".join(self.roles[i] for i in waiting.values())
                raise BenchFailure(f"{self.subject}: no answer from {stuck} within {STUCK_AFTER_S:.0f} s")
            ready: list[Any] = wait(watched, timeout=min(left, 1.0))
            for conn in ready:
                i = self.conns.index(conn)
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    self.procs[i].join(1.0)
                    raise BenchFailure(f"{self.subject} ({self.roles[i]}) exited with status "
                                       f"{self.procs[i].exitcode}") from None
                if message[0] == "error":
                    raise BenchFailure(message[1])
                if message[0] != tag or conn not in waiting:
                    raise BenchFailure(f"{self.subject} ({self.roles[i]}): unexpected {message[0]!r}")
                got[waiting.pop(conn)] = message[1] if len(message) > 1 else {}
        return [got[i] for i in sorted(got)]

    def run(self, *order: Any) -> list[dict[str, Any]]:
        """One run: the receivers (and the echo) are armed first, then the
        senders start; every worker's result, in the order of the roles."""
        passive = [i for i, r in enumerate(self.roles) if r in ("rx", "b")]
        active = [i for i, r in enumerate(self.roles) if r not in ("rx", "b")]
        for i in passive:
            self.conns[i].send(("run", *order))
        self._gather(passive, "armed")
        for i in active:
            self.conns[i].send(("run", *order))
        return self._gather(range(len(self.roles)), "done")

    def close(self) -> None:
        """Stop the workers: ("stop",), then join, SIGTERM, SIGKILL."""
        for conn in self.conns:
            try:
                conn.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + 5.0
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(2.0)
            if proc.is_alive():
                proc.kill()
                proc.join(2.0)
        for conn in self.conns:
            conn.close()


def _links(stack: ExitStack, ctx: Any, workload: str, subject: str, capacity: int,
           tmpdir: str) -> tuple[list[str], list[Any]]:
    """The roles of ``subject``'s workers in ``workload`` and what each gets;
    ``stack`` releases the parent's handles at the end."""
    from .channel import Channel
    from .queue import Queue
    from .topic import Topic

    subs = TOPIC_SUBSCRIBERS
    if workload == "latency":
        if subject == "shmring.Channel":
            pair = tuple(stack.enter_context(Channel.create(None, 1 << 16)) for _ in range(2))
            return ["a", "b"], [pair, pair]
        a_end, b_end = ctx.Pipe(duplex=True)
        stack.callback(a_end.close)
        stack.callback(b_end.close)
        return ["a", "b"], [a_end, b_end]
    if workload == "topic":
        roles = ["tx"] + ["rx"] * subs
        if subject == "shmring.Topic":
            topic = Topic.create(None, capacity)
            stack.callback(topic.close)
            return roles, [topic] * (subs + 1)
        if subject == "pyzmq PUB/SUB":
            address = f"ipc://{tmpdir}/topic"
            return roles, [(address, subs)] * (subs + 1)
        pipes = [ctx.Pipe(duplex=False) for _ in range(subs)]
        for r, w in pipes:
            stack.callback(r.close)
            stack.callback(w.close)
        return roles, [[w for _, w in pipes]] + [r for r, _ in pipes]
    if subject == "shmring.Channel":
        channel = stack.enter_context(Channel.create(None, capacity))
        return ["tx", "rx"], [channel, channel]
    if subject == "multiprocessing.Pipe":
        r, w = ctx.Pipe(duplex=False)
        stack.callback(r.close)
        stack.callback(w.close)
        return ["tx", "rx"], [w, r]
    if subject == "shmring.Queue":
        q: Any = Queue(max_size_bytes=capacity)
    elif subject == "faster_fifo.Queue":
        q = importlib.import_module("faster_fifo").Queue(max_size_bytes=capacity)
    else:
        q = ctx.Queue()
    stack.callback(q.close)
    return ["tx", "rx"], [q, q]


def _warmup_count(size: int) -> int:
    return max(16, min(2000, 4 * MiB // size))


def _timed(workers: _Workers, size: int, count: int) -> tuple[float, int]:
    """One run of ``count`` messages: (messages/s, messages checked)."""
    results = workers.run(size, count)
    start = results[0]["t0"]
    end = max(r["t1"] for r in results[1:])
    return count / max(end - start, 1e-9), sum(r.get("checked", 0) for r in results[1:])


def _measure_sizes(workers: _Workers, workload: str, subject: str, settings: Settings,
                   step: Callable[[str], None]) -> Iterator[Throughput]:
    receivers = len(workers.roles) - 1
    for size in settings.sizes:
        step(f"{workload}: {subject}, {size_label(size)}")
        rate, _ = _timed(workers, size, _warmup_count(size))  # warms up, and sizes the runs
        count = max(16, min(2_000_000, int(rate * settings.target_s)))
        rates, checked = [], 0
        for _ in range(settings.runs):
            rate, n = _timed(workers, size, count)
            rates.append(rate)
            checked += n
        yield Throughput(workload, subject, size, rates, count * settings.runs, checked, receivers)


def _measure_latency(workers: _Workers, subject: str, settings: Settings) -> Latency:
    a, b = workers.run(LATENCY_SIZE, settings.rounds, settings.warmup_rounds)
    return Latency(subject, LATENCY_SIZE, sorted(a["samples"]), a["checked"] + b["checked"])


def available(subject: str) -> str | None:
    """None when ``subject`` can be measured here, else why not."""
    module = PEERS.get(subject)
    if module is None:
        return None
    try:
        importlib.import_module(module)
    except ImportError:
        return "not installed (pip install shmring[bench])"
    except Exception as exc:  # a broken build
        return f"import {module} failed: {type(exc).__name__}: {exc}"
    return None


def iceoryx2_note() -> str:
    """Why iceoryx2 has no figures here."""
    try:
        importlib.import_module("iceoryx2")
    except Exception:
        return "not installed (pip install shmring[bench]); not measured by this short run anyway"
    return ("installed, but not measured by this short run: its Python receive polls a full core and its "
            "set-up does not fit a one-minute run; the repository's benchmarks/bench_channel.py measures it")


def plan(settings: Settings) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The (workload, subject) pairs to measure, and the subjects skipped with why."""
    pairs, skipped = [], {}
    for workload, subjects in WORKLOADS.items():
        for subject in subjects:
            why = available(subject)
            if why is None:
                pairs.append((workload, subject))
            else:
                skipped[subject] = why
    skipped["iceoryx2"] = iceoryx2_note()
    return pairs, skipped


def steps(settings: Settings, pairs: list[tuple[str, str]]) -> int:
    """How many progress steps a run of ``pairs`` takes."""
    return sum(1 if workload == "latency" else len(settings.sizes) for workload, _ in pairs)


@contextmanager
def _scratch() -> Iterator[str]:
    """A private folder for the run's sockets, removed at the end."""
    path = tempfile.mkdtemp(prefix="shmring-bench-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_bench(settings: Settings, step: Callable[[str], None] = lambda _: None) -> Results:
    """Measure every available subject; ``step(text)`` is called as each
    progress step begins.  A subject that fails is reported in
    ``failures`` and the others go on."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    pairs, skipped = plan(settings)
    results = Results(settings, skipped=skipped)
    capacity = ring_bytes(max(settings.sizes))
    t0 = time.monotonic()
    with _scratch() as tmpdir:
        for workload, subject in pairs:
            with ExitStack() as stack:
                try:
                    roles, handles = _links(stack, ctx, workload, subject, capacity, tmpdir)
                    if workload == "latency":
                        step(f"latency: {subject}, {size_label(LATENCY_SIZE)} round trips")
                    workers = _Workers(ctx, subject, roles, handles, objects=workload == "queue")
                    stack.callback(workers.close)
                    if workload == "latency":
                        results.latency.append(_measure_latency(workers, subject, settings))
                    else:
                        results.throughput.extend(_measure_sizes(workers, workload, subject, settings, step))
                except BenchFailure as exc:
                    results.failures.append(f"{workload}: {exc}")
    results.duration_s = time.monotonic() - t0
    return results
