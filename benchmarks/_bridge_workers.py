"""The programs bench_bridge.py runs on each simulated host (inside its
network namespace, with its own /dev/shm), one measurement each; every one
prints a JSON line and exits.

Every message is checked: message ``i`` of a run is ``payloads[i % 256]``
(256 distinct payloads of the size, each starting with the run's tag and
its index), compared whole by the receiver; a mismatch or a missing message
ends the program with status 1 and the reason on stderr.

shmring through the bridge (topics carried by two ``shmring bridge``):
  topic-source NAME N SIZE TAG      publish N messages (send_many, 64 at a time)
  topic-sink NAME N SIZE TAG        subscribe, say "ready", receive and check N
  topic-ping PING PONG N SIZE       N round trips (warm-up first), latencies in ns
  topic-pong PING PONG N SIZE       echo N (+ warm-up) messages back
plain Zenoh (one put per message, a subscriber with a FIFO handler):
  zenoh-source KEY N SIZE TAG CONNECT, zenoh-sink KEY N SIZE TAG LISTEN,
  zenoh-ping PING PONG N SIZE CONNECT, zenoh-pong PING PONG N SIZE LISTEN
"""

from __future__ import annotations

import json
import struct
import sys
import time
from typing import Any

import shmring
from shmring.bridge import zenoh_config

DISTINCT = 256
WARMUP = 200
BATCH = 64
# Samples the plain Zenoh subscriber's FIFO holds: as many as the bridge's importer.
FIFO_DEPTH = 4096
IDLE_S = 30.0


def payloads(size: int, tag: int) -> list[bytes]:
    head = struct.Struct("<IQ")
    filler = (bytes(range(256)) * (size // 256 + 1))[:size]
    return [(head.pack(tag, k) + filler)[:size] if size >= head.size else filler for k in range(DISTINCT)]


def fail(reason: str) -> None:
    print(f"{sys.argv[1]}: {reason}", file=sys.stderr, flush=True)
    sys.exit(1)


def check(data: bytes, i: int, expected: list[bytes]) -> None:
    if data != expected[i % DISTINCT]:
        fail(f"message {i}: {len(data)} bytes, not the ones sent")


def open_topic(name: str) -> shmring.Topic:
    """The topic the bridge made (or is about to make) on this host."""
    return shmring.Topic.open(name, timeout=30)


def topic_source(name: str, n: int, size: int, tag: int) -> None:
    topic = open_topic(name)
    expected = payloads(size, tag)
    cpu = time.process_time()
    with topic.publisher() as pub:
        for first in range(0, n, BATCH):
            pub.send_many([expected[i % DISTINCT] for i in range(first, min(first + BATCH, n))])
    cpu = time.process_time() - cpu
    topic.close()
    print(json.dumps({"sent": n, "cpu_s": cpu}), flush=True)


def topic_sink(name: str, n: int, size: int, tag: int) -> None:
    topic = open_topic(name)
    sub = topic.subscribe()
    expected = payloads(size, tag)
    print("ready", flush=True)
    cpu = time.process_time()
    i = 0
    first_ns = 0
    while i < n:
        try:
            batch = sub.recv_many(1024, timeout=IDLE_S)
        except shmring.Timeout:
            fail(f"{n - i} of {n} messages missing")
        if not first_ns:
            first_ns = time.perf_counter_ns()
        for data in batch:
            check(data, i, expected)
            i += 1
    elapsed = time.perf_counter_ns() - first_ns
    cpu = time.process_time() - cpu
    sub.close()
    topic.close()
    print(json.dumps({"received": n, "elapsed_ns": elapsed, "cpu_s": cpu}), flush=True)


def topic_ping(ping: str, pong: str, n: int, size: int) -> None:
    out, back = open_topic(ping), open_topic(pong)
    sub = back.subscribe()
    pub = out.publisher()
    expected = payloads(size, 1)
    while out.stats()["subscribers"] < 1:  # the exporter
        time.sleep(0.02)
    print("ready", flush=True)
    rtts: list[int] = []
    for i in range(WARMUP + n):
        t0 = time.perf_counter_ns()
        pub.send(expected[i % DISTINCT])
        try:
            data = sub.recv_bytes(timeout=IDLE_S)
        except shmring.Timeout:
            fail(f"no answer to message {i}")
        rtts.append(time.perf_counter_ns() - t0)
        check(data, i, expected)
    sub.close()
    pub.close()
    print(json.dumps({"rtt_ns": sorted(rtts[WARMUP:])}), flush=True)


def topic_pong(ping: str, pong: str, n: int, size: int) -> None:
    into, back = open_topic(ping), open_topic(pong)
    sub = into.subscribe()
    pub = back.publisher()
    expected = payloads(size, 1)
    print("ready", flush=True)
    for i in range(WARMUP + n):
        try:
            data = sub.recv_bytes(timeout=IDLE_S)
        except shmring.Timeout:
            fail(f"message {i} never came")
        check(data, i, expected)
        pub.send(data)
    sub.close()
    pub.close()
    print(json.dumps({"echoed": WARMUP + n}), flush=True)


def session(listen: str = "", connect: str = "") -> Any:
    import zenoh

    return zenoh.open(zenoh_config([listen] if listen else [], [connect] if connect else []))


def zenoh_publisher(sess: Any, key: str) -> Any:
    """A reliable, blocking publisher, as the bridge's exporter of a block
    topic."""
    import zenoh

    return sess.declare_publisher(key, congestion_control=zenoh.CongestionControl.BLOCK,
                                  reliability=zenoh.Reliability.RELIABLE)


def wait_matching(pub: Any, key: str) -> Any:
    """``pub`` once a subscriber matches it."""
    deadline = time.monotonic() + 30
    while not pub.matching_status.matching:
        if time.monotonic() > deadline:
            fail(f"no subscriber of {key}")
        time.sleep(0.02)
    return pub


def zenoh_source(key: str, n: int, size: int, tag: int, connect: str) -> None:
    sess = session(connect=connect)
    pub = wait_matching(zenoh_publisher(sess, key), key)
    expected = payloads(size, tag)
    cpu = time.process_time()
    put = pub.put
    for i in range(n):
        put(expected[i % DISTINCT])
    cpu = time.process_time() - cpu
    pub.undeclare()
    sess.close()
    print(json.dumps({"sent": n, "cpu_s": cpu}), flush=True)


def zenoh_sink(key: str, n: int, size: int, tag: int, listen: str) -> None:
    import zenoh

    sess = session(listen=listen)
    sub = sess.declare_subscriber(key, zenoh.handlers.FifoChannel(FIFO_DEPTH))
    expected = payloads(size, tag)
    print("ready", flush=True)
    cpu = time.process_time()
    first_ns = 0
    for i in range(n):
        sample = sub.recv()
        if not first_ns:
            first_ns = time.perf_counter_ns()
        check(sample.payload.to_bytes(), i, expected)
    elapsed = time.perf_counter_ns() - first_ns
    cpu = time.process_time() - cpu
    sess.close()
    print(json.dumps({"received": n, "elapsed_ns": elapsed, "cpu_s": cpu}), flush=True)


def zenoh_ping(ping: str, pong: str, n: int, size: int, connect: str) -> None:
    import zenoh

    sess = session(connect=connect)
    sub = sess.declare_subscriber(pong, zenoh.handlers.FifoChannel(FIFO_DEPTH))
    pub = wait_matching(zenoh_publisher(sess, ping), ping)
    expected = payloads(size, 1)
    rtts: list[int] = []
    for i in range(WARMUP + n):
        t0 = time.perf_counter_ns()
        pub.put(expected[i % DISTINCT])
        data = sub.recv().payload.to_bytes()
        rtts.append(time.perf_counter_ns() - t0)
        check(data, i, expected)
    sess.close()
    print(json.dumps({"rtt_ns": sorted(rtts[WARMUP:])}), flush=True)


def zenoh_pong(ping: str, pong: str, n: int, size: int, listen: str) -> None:
    import zenoh

    sess = session(listen=listen)
    sub = sess.declare_subscriber(ping, zenoh.handlers.FifoChannel(FIFO_DEPTH))
    pub = zenoh_publisher(sess, pong)
    expected = payloads(size, 1)
    print("ready", flush=True)
    wait_matching(pub, pong)
    for i in range(WARMUP + n):
        data = sub.recv().payload.to_bytes()
        check(data, i, expected)
        pub.put(data)
    time.sleep(0.5)  # the last answer leaves before the session closes
    sess.close()
    print(json.dumps({"echoed": WARMUP + n}), flush=True)


COMMANDS: dict[str, Any] = {
    "topic-source": topic_source, "topic-sink": topic_sink, "topic-ping": topic_ping, "topic-pong": topic_pong,
    "zenoh-source": zenoh_source, "zenoh-sink": zenoh_sink, "zenoh-ping": zenoh_ping, "zenoh-pong": zenoh_pong,
}

if __name__ == "__main__":
    args: list[Any] = [int(a) if a.isdigit() else a for a in sys.argv[2:]]
    COMMANDS[sys.argv[1]](*args)
