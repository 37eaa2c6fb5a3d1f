"""The programs the bridge tests run on each simulated host (inside its
network namespace, with its own /dev/shm).

``publish NAME COUNT``: publishes COUNT numbered, checksummed 64-byte
messages into topic NAME once something subscribes to it (the exporter).
``collect NAME COUNT IDLE``: subscribes to topic NAME, prints ``ready``, then
checks every message until the last one (COUNT - 1) arrived or none came for
IDLE seconds, and prints a JSON verdict: received, first and last number,
how many numbers are missing, the messages duplicated, out of order or with
a bad checksum, and (``overwrite`` topics, a POLICY after IDLE) how many it
lost itself by lagging.

``produce NAME COUNT [RATE]``: puts COUNT numbered, checksummed 64-byte items into
queue NAME (made by the exporter).  ``consume NAME IDLE``: takes items from
queue NAME (made by the importer) until none came for IDLE seconds, and
prints a JSON verdict: the numbers it took, in the order taken, and the
items with a bad checksum.

``send NAME COUNT [RATE]``: sends COUNT numbered, checksummed 64-byte messages
into channel NAME (made by the exporter), then closes it; prints how many
went (fewer if a send raised Closed: the bridge closed the stream).
``receive NAME IDLE``: reads channel NAME (made by the importer) until
Closed (or nothing for IDLE seconds) and prints a JSON verdict: received,
the first and last number, the numbers missing, duplicated or out of
order, the bad checksums, and how the stream ended."""

from __future__ import annotations

import json
import queue as queue_module
import struct
import sys
import time
import zlib

import shmring

MESSAGE = struct.Struct("<Q52sI")  # number, filler, crc32 of the first 60 bytes
FILLER = bytes(range(52))
OPEN_TIMEOUT = 30  # seconds for the bridge to make the object on this host


def message(number: int) -> bytes:
    head = number.to_bytes(8, "little") + FILLER
    return head + zlib.crc32(head).to_bytes(4, "little")


def publish(name: str, count: int, rate: float) -> None:
    topic = shmring.Topic.open(name, timeout=OPEN_TIMEOUT)
    while topic.stats()["subscribers"] < 1:
        time.sleep(0.02)
    batch = 64
    with topic.publisher() as pub:
        start = time.monotonic()
        for first in range(0, count, batch):
            pub.send_many([message(n) for n in range(first, min(first + batch, count))])
            if rate:  # paced: the fault tests publish while they break the link
                ahead = (first + batch) / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
    print(json.dumps({"published": count}), flush=True)
    topic.close()


def collect(name: str, count: int, idle: float, policy: str) -> None:
    topic = shmring.Topic.create(name, capacity=1 << 22, policy=policy)  # type: ignore[arg-type]
    sub = topic.subscribe()
    lagged = 0  # what this subscriber itself fell behind by
    marked = 0  # the losses upstream that the importer marked in the topic
    print("ready", flush=True)
    received = 0
    expected = 0
    bad: list[int] = []
    backwards: list[int] = []
    missing = 0
    first = last = None
    while received + marked + lagged < count and (last is None or last < count - 1):
        try:
            batch = sub.recv_many(1024, timeout=idle)
        except shmring.Timeout:
            break
        except shmring.Lagged as e:  # a gap marker, or (overwrite) this subscriber itself fell behind
            if e.upstream:
                marked += e.missed
            else:
                lagged += e.missed
            continue
        for data in batch:
            number, filler, crc = MESSAGE.unpack(data)
            if zlib.crc32(data[:60]) != crc or filler != FILLER:
                bad.append(number)
                continue
            if first is None:
                first = expected = number
            if number < expected:
                backwards.append(number)
                continue
            missing += number - expected
            expected = number + 1
            last = number
            received += 1
    print(json.dumps({"received": received, "first": first, "last": last, "missing": missing, "lagged": lagged,
                      "marked": marked,
                      "backwards": backwards[:20], "n_backwards": len(backwards), "bad": bad[:20]}), flush=True)
    sub.close()
    topic.close()


def produce(name: str, count: int, rate: float) -> None:
    queue = shmring.Queue.open(name, timeout=OPEN_TIMEOUT)
    batch = 64
    start = time.monotonic()
    for first in range(0, count, batch):
        queue.put_many([message(n) for n in range(first, min(first + batch, count))])
        if rate:  # paced: the fault tests produce while they break things
            ahead = (first + batch) / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    print(json.dumps({"produced": count}), flush=True)
    queue.close()


def consume(name: str, idle: float) -> None:
    queue = shmring.Queue.open(name, timeout=OPEN_TIMEOUT)
    print("ready", flush=True)
    numbers: list[int] = []
    bad = 0
    while True:
        try:
            batch = queue.get_many(timeout=idle, max_messages_to_get=64)
        except queue_module.Empty:
            break
        for data in batch:
            number, filler, crc = MESSAGE.unpack(data)
            if zlib.crc32(data[:60]) != crc or filler != FILLER:
                bad += 1
            else:
                numbers.append(number)
    print(json.dumps({"numbers": numbers, "bad": bad}), flush=True)
    queue.close()


def send(name: str, count: int, rate: float) -> None:
    channel = shmring.Channel.open(name, timeout=OPEN_TIMEOUT)
    batch, sent, peer_gone = 64, 0, 0
    start = time.monotonic()
    try:
        for first in range(0, count, batch):
            while True:  # the exporter (this channel's consumer) may die and come back: wait for it
                try:
                    sent += channel.send_many([message(n) for n in range(first, min(first + batch, count))])
                    break
                except shmring.PeerGone:
                    peer_gone += 1
                    time.sleep(0.05)
            if rate:  # paced: the fault tests send while they break things
                ahead = (first + batch) / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        end = "sent"
    except shmring.Closed:
        end = "closed"
    print(json.dumps({"sent": sent, "end": end, "peer_gone": peer_gone}), flush=True)
    channel.close()


def receive(name: str, idle: float, patient: bool = False) -> None:
    """B's reader; ``patient``: its producer (the importing bridge) may die
    and come back, so PeerGone is counted and waited out, like a reader
    that knows its producer is restarted."""
    channel = shmring.Channel.open(name, timeout=OPEN_TIMEOUT)
    print("ready", flush=True)
    expected = received = missing = duplicates = bad = peer_gone = 0
    first = last = None
    end = "idle"
    started = time.monotonic()
    while True:
        try:
            batch = channel.recv_many(1024, timeout=idle)
        except shmring.Timeout:
            break
        except shmring.PeerGone as e:
            if patient:
                peer_gone += 1
                time.sleep(0.05)
                continue
            end = type(e).__name__
            break
        except shmring.Closed as e:
            end = type(e).__name__
            break
        if first is None:
            started = time.monotonic()
        for data in batch:
            number, filler, crc = MESSAGE.unpack(data)
            if zlib.crc32(data[:60]) != crc or filler != FILLER:
                bad += 1
                continue
            if first is None:
                first = number
            if number < expected:
                duplicates += 1
                continue
            missing += number - expected
            expected = number + 1
            last = number
            received += 1
    print(json.dumps({"received": received, "first": first, "last": last, "missing": missing,
                      "duplicates": duplicates, "bad": bad, "end": end, "peer_gone": peer_gone,
                      "seconds": time.monotonic() - started}), flush=True)
    channel.close()


def arrived(name: str, count: int) -> None:
    """Wait until `count` items have been put into this host's queue (by
    the importing bridge), then say so."""
    queue = shmring.Queue.open(name, timeout=OPEN_TIMEOUT)
    deadline = time.monotonic() + 60
    while queue.stats()["puts"] < count:
        if time.monotonic() > deadline:
            sys.exit(f"fewer than {count} items arrived in 60 s")
        time.sleep(0.005)
    print("arrived", flush=True)
    queue.close()


if __name__ == "__main__":
    command, topic_name = sys.argv[1], sys.argv[2]
    if command == "send":
        send(topic_name, int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
    elif command == "receive":
        receive(topic_name, float(sys.argv[3]), len(sys.argv) > 4 and sys.argv[4] == "patient")
    elif command == "produce":
        produce(topic_name, int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
    elif command == "consume":
        consume(topic_name, float(sys.argv[3]))
    elif command == "arrived":
        arrived(topic_name, int(sys.argv[3]))
    elif command == "publish":
        n = int(sys.argv[3])
        publish(topic_name, n, float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
    else:
        collect(topic_name, int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else "block")
