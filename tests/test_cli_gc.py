"""``shmring gc``: removes what no live process is attached to (dead and
never-finished segments, with their chunks), keeps live, persistent,
foreign and damaged objects, and never what a live process uses (an unlinked
queue's chunks included).  --dry-run only says what it would remove.

Runs the ``shmring`` console script as a real subprocess (tests/_cli_helpers.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

import shmring

from _cli_helpers import (
    CLI_TIMEOUT, SHM_DIR, WIDE, cli, corrupt_kind_byte, entry_for, ls_json, make_dead, make_foreign, make_kept,
    shm_path, words,
)


@pytest.mark.timeout(60)
def test_gc_dry_run_lists_dead_and_removes_nothing(
    fresh_name: Callable[[], str], live_segment: shmring.Segment
) -> None:
    dead = fresh_name()
    creator = make_dead(dead)

    result = cli("gc", "--dry-run")

    assert result.returncode == 0, result.stderr
    text = words(result.stdout)
    assert creator != os.getpid()
    assert f"would remove {dead} (no process is attached to it)" in text
    assert live_segment.name not in text
    assert shm_path(dead).exists()
    assert shm_path(live_segment.name).exists()
    assert entry_for(ls_json(), dead) is not None


@pytest.mark.timeout(60)
def test_gc_removes_dead_and_keeps_live(fresh_name: Callable[[], str], live_segment: shmring.Segment) -> None:
    dead = fresh_name()
    make_dead(dead)
    live_segment.buf[:5] = b"still"

    result = cli("gc")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"removed {dead} (no process is attached to it)" in lines
    assert live_segment.name not in result.stdout
    assert not shm_path(dead).exists()
    assert shm_path(live_segment.name).exists()
    with shmring.Segment.open(live_segment.name) as again:
        assert bytes(again.buf[:5]) == b"still"

    # Nothing of ours is left for a second run.
    second = cli("gc", "--dry-run")
    assert second.returncode == 0
    assert dead not in second.stdout and live_segment.name not in second.stdout


@pytest.mark.timeout(60)
def test_gc_keeps_persistent_segments(fresh_name: Callable[[], str]) -> None:
    kept = fresh_name()
    make_kept(kept)
    result = cli("gc")
    assert result.returncode == 0, result.stderr
    assert kept not in result.stdout and shm_path(kept).exists()
    assert "(persistent)" in next(line for line in cli("ls", env=WIDE).stdout.splitlines() if kept in line)


GC_CREATOR = """
import os, signal, sys, shmring
q = shmring.Queue(name=sys.argv[1])
for i in range(3):
    q.put_bytes(bytes([i]) * (1 << 20))  # more than the 1 MiB ring: overflow chunks
print("made", flush=True)
sys.stdin.readline()
os.kill(os.getpid(), signal.SIGKILL)
"""

GC_VICTIM_USER = """
import sys, shmring
q = shmring.Queue.open(sys.argv[1])
print("attached", flush=True)
sys.stdin.readline()
items = [q.get_bytes(timeout=5) for _ in range(3)]
print("checked" if items == [bytes([i]) * (1 << 20) for i in range(3)] else "WRONG", flush=True)
"""


@pytest.mark.timeout(60)
def test_gc_never_removes_a_segment_a_live_process_uses(fresh_name: Callable[[], str]) -> None:
    """Reproduction (issue 9, item 6): gc used to remove any segment whose
    creator died, even while live processes were attached and using it."""
    name = fresh_name()
    creator = subprocess.Popen(
        [sys.executable, "-c", GC_CREATOR, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    user = None
    try:
        assert creator.stdout is not None and creator.stdout.readline() == "made\n"
        user = subprocess.Popen([sys.executable, "-c", GC_VICTIM_USER, name],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert user.stdout is not None and user.stdout.readline() == "attached\n"
        creator.communicate("x\n", timeout=CLI_TIMEOUT)  # the creator crashes
        assert creator.returncode == -9
        chunks = [p.name for p in SHM_DIR.iterdir() if p.name.startswith(name + ".q")]
        assert chunks
        result = cli("gc")
        assert result.returncode == 0, result.stderr
        assert name not in result.stdout
        assert shm_path(name).exists() and all(shm_path(c).exists() for c in chunks)
        out, _ = user.communicate("go\n", timeout=CLI_TIMEOUT)
        assert user.returncode == 0
        assert out.strip() == "checked"  # every item, the chunks' included
    finally:
        for proc in (creator, user):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    # the user left normally as the last one: queue and chunks are gone
    assert not [p.name for p in SHM_DIR.iterdir() if p.name.startswith(name)]


@pytest.mark.timeout(60)
def test_gc_leaves_foreign_and_damaged_objects(fresh_name: Callable[[], str]) -> None:
    """gc only removes shmring segments it can read and nobody uses."""
    foreign, damaged = fresh_name(), fresh_name()
    make_foreign(foreign)
    make_dead(damaged)
    corrupt_kind_byte(damaged)

    result = cli("gc")

    assert result.returncode == 0, result.stderr
    assert foreign not in result.stdout and damaged not in result.stdout
    assert shm_path(foreign).exists()
    assert shm_path(damaged).exists()


@pytest.mark.timeout(60)
def test_gc_leaves_other_programs_objects_alone_however_empty(fresh_name: Callable[[], str]) -> None:
    """gc removes a never-published segment only when its header proves it
    is shmring's: an empty object, a zero-filled one, or one whose first
    field is a zero counter belongs to some other program."""
    names = [fresh_name() for _ in range(3)]
    make_foreign(names[0], b"")
    make_foreign(names[1], bytes(8192))
    make_foreign(names[2], bytes(8) + b"ring buffer of another program" + bytes(8000))
    old = time.time() - 3600
    for n in names:
        os.utime(shm_path(n), (old, old))
    result = cli("gc")
    assert result.returncode == 0, result.stderr
    assert all(shm_path(n).exists() for n in names), result.stdout
    assert not any(n in result.stdout for n in names)


@pytest.mark.timeout(60)
def test_gc_removes_a_segment_whose_maker_died_before_publishing_it(fresh_name: Callable[[], str]) -> None:
    name = fresh_name()
    with shmring.Segment.create(name, 4096, persistent=True) as seg:
        header = bytes(seg._mapping)[:4096]
    shmring._core.unlink(name)
    fd = os.open(shm_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.write(fd, bytes(8) + header[8:] + bytes(4096))  # the header fields, the magic still 0
    finally:
        os.close(fd)
    assert shmring._core.unpublished(name)
    young = cli("gc", "--dry-run")
    assert name not in young.stdout  # its maker may still be at work
    old = time.time() - 3600
    os.utime(shm_path(name), (old, old))
    result = cli("gc")
    assert f"removed {name} (never finished: its maker died while creating it)" in result.stdout
    assert not shm_path(name).exists()


UNLINKED_QUEUE_USER = """
import sys, shmring
q = shmring.Queue(name=sys.argv[1])
q.put_bytes(b"z" * (2 << 20))  # larger than the ring: an overflow chunk
q.unlink()                      # no name any more; this process keeps using it
print("ready", flush=True)
sys.stdin.readline()
print(q.get_bytes(timeout=5) == b"z" * (2 << 20), flush=True)
"""


@pytest.mark.timeout(60)
def test_gc_keeps_the_chunks_of_an_unlinked_queue_still_in_use(fresh_name: Callable[[], str]) -> None:
    name = fresh_name()
    user = subprocess.Popen([sys.executable, "-c", UNLINKED_QUEUE_USER, name],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert user.stdout is not None and user.stdout.readline() == "ready\n"
        chunk = next(p.name for p in SHM_DIR.iterdir() if shmring._core.chunk_index(p.name, name) == 0)
        assert shm_path(chunk).exists() and not shm_path(name).exists()
        result = cli("gc")
        assert result.returncode == 0, result.stderr
        assert chunk not in result.stdout and shm_path(chunk).exists()
        out, _ = user.communicate("go\n", timeout=CLI_TIMEOUT)
        assert out.strip() == "True"
        assert not shm_path(chunk).exists()  # its last user removed it
    finally:
        if user.poll() is None:
            user.kill()
            user.communicate()
