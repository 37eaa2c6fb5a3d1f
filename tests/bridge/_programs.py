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
items with a bad checksum."""

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


def message(number: int) -> bytes:
    head = number.to_bytes(8, "little") + FILLER
    return head + zlib.crc32(head).to_bytes(4, "little")


def open_or_create(name: str) -> shmring.Topic:
    deadline = time.monotonic() + 30
    while True:
        try:
            return shmring.Topic.open(name)
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def publish(name: str, count: int, rate: float) -> None:
    topic = open_or_create(name)
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
    lagged = 0
    print("ready", flush=True)
    received = 0
    expected = 0
    bad: list[int] = []
    backwards: list[int] = []
    missing = 0
    first = last = None
    while received < count and (last is None or last < count - 1):
        try:
            batch = sub.recv_many(1024, timeout=idle)
        except shmring.Timeout:
            break
        except shmring.Lagged as e:  # overwrite: this subscriber itself fell behind
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
                      "backwards": backwards[:20], "n_backwards": len(backwards), "bad": bad[:20]}), flush=True)
    sub.close()
    topic.close()


def open_queue(name: str) -> shmring.Queue[bytes]:
    deadline = time.monotonic() + 30
    while True:
        try:
            return shmring.Queue.open(name)
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def produce(name: str, count: int, rate: float) -> None:
    queue = open_queue(name)
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
    queue = open_queue(name)
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


if __name__ == "__main__":
    command, topic_name = sys.argv[1], sys.argv[2]
    if command == "produce":
        produce(topic_name, int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
    elif command == "consume":
        consume(topic_name, float(sys.argv[3]))
    elif command == "publish":
        n = int(sys.argv[3])
        publish(topic_name, n, float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
    else:
        collect(topic_name, int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else "block")
