"""Hostile values in every field of every kind's control block: the main
operations give their normal outcome (the value is unusual but valid),
a CorruptedError naming the object and the field, or a documented outcome
listed below; never another exception type, a crash or a hang.

The fields and operations are in tests/_corruption_matrix.py; each kind's
whole matrix runs in one child process (fresh object per field and value,
timeouts of 20 ms), so a hang or a crash fails the test instead of the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from _corruption_matrix import FIELDS, cases, run_kind
from conftest import FORK, Kids

NORMAL = {"ok", "False", "CorruptedError"}

# A live process's token in an owner word is a live holder, not corruption:
# the lock or end is not had in time.
LIVE_HOLDER = {"Timeout", "RoleTaken", "Full", "Empty", "False"}
OWNER_WORDS = {
    ("channel", "producer"), ("channel", "consumer"), ("queue", "lock.owner"), ("topic", "lock.owner"),
    ("mutex", "owner"), ("spinlock", "owner"),
}

# Other documented outcomes, by (kind, field).
DOCUMENTED = {
    # An owner token no process could have written names a dead holder
    # (PROTOCOL.md 3.1): the lock is taken over and OwnerDied reported.
    ("mutex", "owner"): {"OwnerDied"},
    # A mutex state above 2 (not recoverable) was written by no holder: the
    # lock is not recoverable (PROTOCOL.md 4); a Queue's or a Topic's lock
    # then reports CorruptedError.
    ("mutex", "state"): {"LockNotRecoverable"},
    ("spinlock", "owner"): {"OwnerDied"},
    ("queue", "lock.owner"): set(),  # repaired silently by the queue
    ("topic", "lock.owner"): set(),
    # Any non-zero close flag reads as closed: the end of the stream (recv on
    # an empty ring whose reader closed times out as usual).
    ("channel", "writer_closed"): {"Closed"},
    ("channel", "reader_closed"): {"Closed", "Timeout"},
}


def allowed(kind: str, case: str) -> set[str]:
    field, value = case.split("=")
    ok = NORMAL | DOCUMENTED.get((kind, field), set())
    if value == "live_pid" and (kind, field) in OWNER_WORDS:
        ok |= LIVE_HOLDER
    return ok


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", sorted(FIELDS))
def test_a_damaged_control_block_is_reported_as_corrupted(
    new_name: Callable[[], str], kids: Kids, kind: str
) -> None:
    """Regression (issue 14): hostile values (0, all ones, huge, misaligned,
    a live foreign process's pid or token) in each field of each kind's
    control block give CorruptedError, never OSError, RoleTaken or Timeout
    where the segment is inconsistent (an overflow chain naming chunks that
    do not exist gave OSError)."""
    names = [new_name() for _ in range(cases(kind))]
    kid = kids.start(FORK, run_kind, kind, names, os.getpid())
    report = kid.result(timeout=40)
    assert len(report) == cases(kind)
    wrong = {
        case: {op: got for op, got in outcomes.items() if got not in allowed(kind, case)}
        for case, outcomes in report.items()
    }
    wrong = {case: ops for case, ops in wrong.items() if ops}
    assert not wrong, f"{kind}: outcomes other than CorruptedError or a documented one: {wrong}"
