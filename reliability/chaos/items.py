"""The items of a kill storm: who made it, its number, a checksummed payload.

An item is a 22-byte header, ``MAGIC``, the producer's index (in the
scenario's list of producer slots), the producer's incarnation, the item's
number within that incarnation, the payload's length and its CRC-32, then
the payload: a 16-byte pattern made of the same numbers, repeated, so that
an item copied into another's place also fails its checksum.
"""

from __future__ import annotations

import pickle
import struct
import zlib
from typing import Any, NamedTuple

MAGIC = b"CHI1"
HEADER = struct.Struct("<4sHIIII")
CUSTOM_PREFIX = b"Z"  # what the scenarios' own serializer puts before an item


class Received(NamedTuple):
    """What a consumer found in an item: whose, which, and the length and
    CRC-32 of the payload as received (compared with the producer's log)."""

    producer: int
    incarnation: int
    number: int
    length: int
    crc: int


def make_item(producer: int, incarnation: int, number: int, length: int) -> tuple[bytes, int]:
    """The item's bytes and its payload's CRC-32."""
    pattern = struct.pack("<IIII", producer, incarnation, number, 0x9E3779B9)
    payload = (pattern * (length // len(pattern) + 1))[:length]
    crc = zlib.crc32(payload)
    return HEADER.pack(MAGIC, producer, incarnation, number, length, crc) + payload, crc


def unwrap(obj: Any) -> Any:
    """The item's bytes from what a get/recv returned: the bytes themselves,
    or a pickle of them (``get_bytes`` of a pickled record, a topic's
    ``recv_bytes``/``peek`` of a ``send_obj``), or the scenarios' own
    serializer's output (``get_bytes`` from a queue with ``dumps=``)."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj)
        if data[:1] == b"\x80":
            return unwrap(pickle.loads(data))
        if data[:1] == CUSTOM_PREFIX:
            return data[1:]
        return data
    return obj


def parse_item(obj: Any) -> Received | None:
    """The item in ``obj``, or None when it is not one (a corrupted header,
    or an object of the wrong type)."""
    try:
        data = unwrap(obj)
    except Exception:
        return None
    if not isinstance(data, bytes) or len(data) < HEADER.size:
        return None
    magic, producer, incarnation, number, _length, _crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        return None
    payload = memoryview(data)[HEADER.size :]
    return Received(producer, incarnation, number, len(payload), zlib.crc32(payload))


def custom_dumps(obj: bytes) -> bytes:
    """The serializer of the scenarios that exercise ``dumps=``/``loads=``."""
    return CUSTOM_PREFIX + bytes(obj)


def custom_loads(data: bytes) -> bytes:
    if data[:1] != CUSTOM_PREFIX:
        raise ValueError("not made by custom_dumps")
    return data[1:]
