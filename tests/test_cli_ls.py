"""``shmring ls``: the table and --json, live and dead creators, damaged
segments listed with their problem, foreign and empty files ignored, and
columns kept when piped.

Runs the ``shmring`` console script as a real subprocess (tests/_cli_helpers.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

import shmring

from _cli_helpers import (
    WIDE, assert_clean_failure, cli, corrupt_kind_byte, entry_for, ls_json, make_dead, make_foreign, make_kept,
    shm_path, words,
)


@pytest.mark.timeout(60)
def test_ls_table_shows_live_segment(live_segment: shmring.Segment) -> None:
    result = cli("ls", env=WIDE)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if live_segment.name in line]
    assert len(rows) == 1, result.stdout
    cells = rows[0].split()
    assert cells[0] == live_segment.name
    assert cells[1] == "segment"
    assert " ".join(cells[2:4]) == "4.0 KiB"
    assert " ".join(cells[4:6]) == f"1 ({os.getpid()})"  # USERS: this process
    assert cells[6] == str(os.getpid())
    assert cells[7] == "alive"
    assert cells[-1] == "0o600"
    header = result.stdout.splitlines()[0].split()
    assert header == ["NAME", "KIND", "SIZE", "USERS", "PID", "CREATOR", "AGE", "MODE"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("entry_point", [False, True], ids=["python-m", "entry-point"])
def test_ls_json_fields(live_segment: shmring.Segment, entry_point: bool) -> None:
    item = entry_for(ls_json(entry_point=entry_point), live_segment.name)
    assert item is not None
    assert item["name"] == live_segment.name
    assert item["kind"] == "segment"
    assert item["size"] == 4096
    assert item["total_size"] == 4096 + 4096
    assert item["version"] == shmring._core.LAYOUT_VERSION
    assert item["creator_pid"] == os.getpid()
    assert item["creator_uid"] == os.geteuid()
    assert item["uid"] == os.geteuid()
    assert item["mode"] == "0o600"
    assert item["alive"] is True
    assert item["problem"] is None
    assert item["in_use"] is True and item["persistent"] is False
    assert item["live_users"] == [os.getpid()] and item["unlisted_users"] == 0
    assert [u["pid"] for u in item["users"]] == [os.getpid()] and item["users"][0]["alive"] is True
    assert isinstance(item["created_ns"], int) and item["created_ns"] > 0
    assert isinstance(item["creator_start"], int)
    assert set(item) == {
        "name", "uid", "mode", "kind", "size", "total_size", "version", "creator_pid",
        "creator_start", "creator_uid", "created_ns", "alive", "problem", "in_use", "persistent",
        "users", "unlisted_users", "live_users", "bridge",
    }


@pytest.mark.timeout(60)
def test_ls_marks_segment_of_exited_creator_dead(fresh_name: Callable[[], str]) -> None:
    name = fresh_name()
    creator = make_dead(name)
    assert creator != os.getpid()

    item = entry_for(ls_json(), name)
    assert item is not None
    assert item["creator_pid"] == creator
    assert item["alive"] is False
    assert item["problem"] is None

    table = cli("ls", env=WIDE)
    assert table.returncode == 0
    row = next(line for line in table.stdout.splitlines() if name in line)
    assert "dead" in row.split() and "alive" not in row.split()

    inspected = cli("inspect", name, "--json")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["alive"] is False


@pytest.mark.timeout(60)
def test_ls_ignores_foreign_and_empty_files(fresh_name: Callable[[], str], live_segment: shmring.Segment) -> None:
    foreign, empty = fresh_name(), fresh_name()
    make_foreign(foreign)
    make_foreign(empty, b"")

    data = ls_json()
    names = {item["name"] for item in data}
    assert foreign not in names
    assert empty not in names
    assert live_segment.name in names, "a real segment next to them is still listed"

    table = cli("ls", env=WIDE)
    assert table.returncode == 0
    assert foreign not in table.stdout and empty not in table.stdout
    # ls only looks: the files are untouched.
    assert shm_path(foreign).read_bytes().startswith(b"#!/not/a/shmring")
    assert shm_path(empty).stat().st_size == 0


@pytest.mark.timeout(60)
def test_damaged_segment_is_listed_with_problem_and_removable(fresh_name: Callable[[], str]) -> None:
    name = fresh_name()
    make_kept(name)
    corrupt_kind_byte(name)

    item = entry_for(ls_json(), name)
    assert item is not None, "a damaged segment must still be listed"
    assert item["problem"] is not None
    assert "checksum" in item["problem"]
    assert "kind" not in item and "alive" not in item, "no header fields for a damaged segment"
    assert item["mode"] == "0o600"

    table = cli("ls", env=WIDE)
    row = next(line for line in table.stdout.splitlines() if name in line)
    assert "damaged" in row and "checksum" in row

    inspected = cli("inspect", name)
    assert_clean_failure(inspected)
    assert "checksum" in words(inspected.stderr)

    removed = cli("rm", name)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == f"removed {name}"
    assert not shm_path(name).exists()


@pytest.mark.timeout(60)
def test_ls_table_piped_keeps_columns_with_a_long_name(
    fresh_name: Callable[[], str], live_segment: shmring.Segment
) -> None:
    long_name = fresh_name() + "-" + "L" * 80
    seg = shmring.Segment.create(long_name, 64)
    try:
        result = cli("ls")  # default width: output is a pipe
        assert result.returncode == 0
        row = next(line for line in result.stdout.splitlines() if live_segment.name in line)
        assert "segment" in row.split() and str(os.getpid()) in row.split(), result.stdout
        assert long_name in result.stdout, result.stdout
    finally:
        seg.close()
