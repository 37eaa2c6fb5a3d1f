"""``shmring rm``: refuses a segment in use (--force removes the name, the
mappings survive), removes dead ones and several names at once, needs
--force for foreign or unidentifiable objects, never leaves /dev/shm, and
removes a queue's own chunks only.

Runs the ``shmring`` console script as a real subprocess (tests/_cli_helpers.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import shmring

from _cli_helpers import (
    SHM_DIR, assert_clean_failure, cli, entry_for, ls_json, make_dead, make_foreign, make_kept, shm_path, words,
)


@pytest.mark.timeout(60)
def test_rm_refuses_a_segment_in_use(live_segment: shmring.Segment) -> None:
    result = cli("rm", live_segment.name)
    assert_clean_failure(result)
    assert f"in use by process(es) {os.getpid()}" in words(result.stderr)
    assert "--force" in result.stderr
    assert shm_path(live_segment.name).exists()


@pytest.mark.timeout(60)
def test_rm_force_removes_the_name_and_mappings_survive(live_segment: shmring.Segment) -> None:
    name = live_segment.name
    live_segment.buf[:4] = b"kept"

    result = cli("rm", "--force", name)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"removed {name}"
    assert not shm_path(name).exists()
    assert entry_for(ls_json(), name) is None
    # "processes that have them mapped keep them"
    assert bytes(live_segment.buf[:4]) == b"kept"
    with pytest.raises(FileNotFoundError):
        shmring.Segment.open(name)


@pytest.mark.timeout(60)
def test_rm_dead_segment_with_entry_point(fresh_name: Callable[[], str]) -> None:
    name = fresh_name()
    make_dead(name)
    result = cli("rm", name, entry_point=True)
    assert result.returncode == 0, result.stderr
    assert f"removed {name}" in result.stdout
    assert not shm_path(name).exists()


@pytest.mark.timeout(60)
def test_rm_missing_name(fresh_name: Callable[[], str]) -> None:
    name = fresh_name()
    result = cli("rm", name)
    assert_clean_failure(result)
    assert result.stderr == f"shmring: no such segment: {name!r}\n"
    assert not shm_path(name).exists()


@pytest.mark.timeout(60)
def test_rm_several_names_removes_what_exists_and_fails(fresh_name: Callable[[], str]) -> None:
    first, missing, last = fresh_name(), fresh_name(), fresh_name()
    for name in (first, last):
        make_kept(name, 64)

    result = cli("rm", first, missing, last)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert f"no such segment: {missing!r}" in result.stderr
    assert result.stdout.splitlines() == [f"removed {first}", f"removed {last}"]
    assert not shm_path(first).exists() and not shm_path(last).exists()


@pytest.mark.timeout(60)
def test_rm_foreign_file_needs_force(fresh_name: Callable[[], str]) -> None:
    name = fresh_name()
    path = make_foreign(name)
    before = path.read_bytes()

    refused = cli("rm", name)

    assert_clean_failure(refused)
    assert "not a shmring segment" in words(refused.stderr)
    assert "--force" in words(refused.stderr)
    assert path.exists() and path.read_bytes() == before

    forced = cli("rm", "--force", name)

    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.strip() == f"removed {name}"
    assert not path.exists()


@pytest.mark.timeout(60)
def test_rm_force_does_not_bypass_name_check(tmp_path: Path) -> None:
    """--force removes non-shmring objects, never paths outside /dev/shm."""
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    result = cli("rm", "--force", f"../../{victim}")
    assert_clean_failure(result)
    assert victim.read_text() == "keep me"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("content", [b"", bytes(4096)], ids=["empty", "zero-filled"])
def test_rm_refuses_unidentifiable_object_without_force(fresh_name: Callable[[], str], content: bytes) -> None:
    name = fresh_name()
    path = make_foreign(name, content)
    result = cli("rm", name)
    assert path.exists(), "removed an object that is not provably a shmring segment without --force"
    assert result.returncode == 1


@pytest.mark.timeout(60)
def test_rm_leaves_a_queue_merely_named_like_a_chunk(fresh_name: Callable[[], str]) -> None:
    """Reproduction (issue 9, item 5): `rm NAME` unlinked every NAME.q<digits>,
    including a separate Queue called NAME.q1.  A chunk carries its queue's
    id, so rm removes NAME's own chunks only."""
    name = fresh_name()
    neighbour_name = name + ".q1"
    q = shmring.Queue(name=name)
    neighbour = shmring.Queue(name=neighbour_name)
    try:
        q.put_bytes(b"a" * (3 << 20))  # larger than the 1 MiB ring: a chunk of its own, NAME.q0.<tag>
        own_chunks = [
            p.name for p in SHM_DIR.iterdir()
            if shmring._core.chunk_index(p.name, name) is not None and shmring._core.chunk_stamp(p.name)
        ]
        assert [shmring._core.chunk_index(c, name) for c in own_chunks] == [0]
        neighbour.put("mine")
        q.persistent = True
        q.close()  # nobody is attached now: rm may remove it
        result = cli("rm", name)
        assert result.returncode == 0, result.stderr
        assert not shm_path(name).exists()
        assert not any(shm_path(c).exists() for c in own_chunks)
        assert shm_path(neighbour_name).exists()
        assert neighbour.get(timeout=1) == "mine"
    finally:
        neighbour.close()  # its last user: it goes too
