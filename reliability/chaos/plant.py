"""Planting faults in a storm's logs, to show that the checker catches them.

On a copy of the logs of a clean storm: delete the ``G`` lines of a few
deliveries that no killed get can account for (so that the items are lost,
unexplained), repeat one ``G`` line (a duplicate) and change the checksum
of another (a corruption).  The checker must then report exactly those.
"""

from __future__ import annotations

import shutil
from typing import Any

from .checker import (COMMITTED, ConsumerRun, Delivery, FifoOrder, check, explain, group_of, killed_gets,
                      read_logs)
from .logformat import slot_path

LOSSES = 3


def _candidates(directory: str) -> tuple[str, list[tuple[ConsumerRun, Delivery]]]:
    """A group, and deliveries of it whose removal would be an unexplained loss."""
    logs = read_logs(directory)
    best: tuple[str, list[tuple[ConsumerRun, Delivery]]] = ("", [])
    for name, group in logs.groups.items():
        consumers = [r for r in logs.consumers if group_of(r.slot) == name]
        eligible = []
        if logs.kind == "topic":  # a message inside a subscription's run of messages
            for run in consumers:
                eligible += [(run, d) for d in run.deliveries[1:-1]]
        else:
            first, seen = [], set()
            for run in consumers:
                for d in run.deliveries:
                    producer = logs.producers.get(d.key[:2])
                    if producer is not None and d.key not in seen:
                        seen.add(d.key)
                        first.append((producer.t_begin[d.key[2]], d.t_got))
            order, credits = FifoOrder(first), killed_gets(consumers)
            for run in consumers:
                for d in run.deliveries:
                    producer = logs.producers.get(d.key[:2])
                    n = d.key[2]
                    if producer is None or producer.state[n] != COMMITTED:
                        continue
                    if run.killed is not None and d.t_wait == run.deliveries[-1].t_wait:
                        continue  # without its line, this killed get would be open: a credit
                    window = (producer.t_begin[n], order.first_later_delivery(producer.t_return[n]), d.key)
                    if not explain([window], credits):
                        eligible.append((run, d))
        if len(eligible) > len(best[1]):
            best = (name, eligible)
    return best


def _g_line_matches(fields: list[str], run: ConsumerRun, d: Delivery) -> bool:
    return (fields[:5] == ["G", str(run.incarnation), d.key[0], str(d.key[1]), str(d.key[2])]
            and fields[-2] == str(d.t_got))


def _edit(directory: str, run: ConsumerRun, d: Delivery, how: str) -> None:
    path = slot_path(directory, run.slot)
    with open(path) as f:
        lines = f.readlines()
    for i, text in enumerate(lines):
        fields = text.split()
        if fields and _g_line_matches(fields, run, d):
            if how == "delete":
                del lines[i]
            elif how == "duplicate":
                lines.insert(i, text)
            else:  # corrupt: the payload's checksum as received
                fields[6] = str(int(fields[6]) ^ 0x1)
                lines[i] = " ".join(fields) + "\n"
            break
    with open(path, "w") as f:
        f.writelines(lines)


def plant_and_check(directory: str, copy: str) -> dict[str, Any]:
    """Plant the faults in a copy of ``directory``; what was planted, what
    the checker found, and whether it found exactly that."""
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(directory, copy)
    before = check(copy)
    group, eligible = _candidates(copy)
    if len(eligible) < LOSSES + 2:
        return {"ok": False, "why": "too few deliveries to plant faults in"}
    eligible.sort(key=lambda pick: pick[1].t_got)
    step = len(eligible) // (LOSSES + 2)  # far apart, so that no planted loss widens another's window
    picks = [eligible[step * i + step // 2] for i in range(LOSSES + 2)]
    for run, d in picks[:LOSSES]:
        _edit(copy, run, d, "delete")
    _edit(copy, *picks[LOSSES], "duplicate")
    _edit(copy, *picks[LOSSES + 1], "corrupt")
    after = check(copy)[group]
    found = {k: after[k] - before[group][k] for k in ("lost_unexplained", "duplicated", "corrupted")}
    planted = {"lost_unexplained": LOSSES, "duplicated": 1, "corrupted": 1}
    shutil.rmtree(copy, ignore_errors=True)
    return {"ok": found == planted, "group": group, "planted": planted, "found": found}
