"""Shared fixtures: unique segment names, and a check that no test leaks one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import shmring

SHM = Path("/dev/shm")
# Every name a test makes starts with one of these, so leaks can be told
# apart from whatever else the machine keeps in /dev/shm.
TEST_PREFIX = f"t{os.getpid()}-"
UNIQUE_PREFIX = f"shmring-{os.getpid()}-"  # Segment.create(None, ...) names


def _ours() -> set[str]:
    return {p.name for p in SHM.iterdir() if p.name.startswith((TEST_PREFIX, UNIQUE_PREFIX))}


@pytest.fixture(autouse=True)
def no_leaked_segments() -> Iterator[None]:
    """Fail a test that leaves one of its segments behind in /dev/shm."""
    before = _ours()
    yield
    leaked = _ours() - before
    for name in leaked:
        (SHM / name).unlink(missing_ok=True)
    assert not leaked, f"test leaked segments: {sorted(leaked)}"


@pytest.fixture
def new_name() -> Callable[[], str]:
    """Factory of fresh segment names owned by this test run."""

    def make() -> str:
        return f"{TEST_PREFIX}{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture
def name(new_name: Callable[[], str]) -> str:
    return new_name()


@pytest.fixture
def segment(name: str) -> Iterator[shmring.Segment]:
    with shmring.Segment.create(name, 4096) as seg:
        yield seg
