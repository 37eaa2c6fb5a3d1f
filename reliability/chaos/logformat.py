"""The log of a kill storm: one file per participant slot, one line per event.

Every participant appends to ``<slot>.log`` with one write(2) per event (a
batch's lines go in one write): what write(2) returned is in the file even
if the process is SIGKILLed the next instant, and the supervisor starts a
slot's next incarnation only after the previous one is dead, so a slot's
lines are in the order they happened.  A write cut short by the kill
leaves a line without its final ``;``: the reader ignores it (the event
was not logged), and the next incarnation's first write starts with a
newline, so that the torn line never runs into its ``S`` line.

Every line is ``TYPE INCARNATION FIELDS... ;``; times are CLOCK_MONOTONIC
nanoseconds (one clock for every process of the machine).

Producers and publishers:
  ``S inc pid t``                 an incarnation starts
  ``B inc n len crc t``           about to put item n (one line per item of a batch)
  ``R inc n count t``             the put of items n .. n+count-1 returned: committed
  ``X inc n count t``             the put of items n .. n+count-1 failed and put nothing
  ``Q inc t``                     clean exit (the storm is over)
Consumers and subscribers:
  ``U inc t0 t1``                 subscribed (a topic): subscribe() called at t0, returned at t1
  ``W inc k t``                   about to take up to k items
  ``G inc slot pinc n len crc m t``  took item n of producer slot's incarnation pinc, its payload
                                  as received (len, crc); m: items the call returned
  ``N inc t why``                 the call returned nothing (empty, timeout, peer gone)
  ``C inc t hex``                 took something that is not an item
  ``E inc t text``                an unexpected exception
The supervisor, in ``supervisor.log``:
  ``K 0 slot inc pid t``          killed: SIGKILLed, and dead at t
  ``Z 0 slot inc pid status t``   an incarnation ended by itself, not by a clean exit
  ``H 0 group t text``            a wedge: no progress for too long
  ``L 0 group t name``            left in /dev/shm after the last user left
"""

from __future__ import annotations

import os
from collections.abc import Iterator

END = ";"
SUPERVISOR = "supervisor"
FINAL_STATS = "final-stats.json"  # each object's stats() once the final drain emptied it


def line(kind: str, *fields: object) -> str:
    return f"{kind} {' '.join(str(f) for f in fields)} {END}\n"


def text_field(text: str) -> str:
    """Free text as one field (no spaces, no line breaks)."""
    return "_".join(text.split())[:300] or "-"


class LogFile:
    """An append-only log: each :meth:`write` is one write(2), not buffered."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, text: str) -> None:
        data = text.encode()
        while data:  # a regular file takes it all at once; a short write goes on
            data = data[os.write(self.fd, data) :]

    def close(self) -> None:
        os.close(self.fd)


def slot_path(directory: str, slot: str) -> str:
    return os.path.join(directory, f"{slot}.log")


def read_lines(path: str) -> Iterator[list[str]]:
    """The complete lines of a log, split into fields (without the ``;``);
    torn lines (a write cut by SIGKILL) are skipped."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            fields = raw.split()
            if len(fields) >= 3 and fields[-1] == END:
                yield fields[:-1]
