"""``shmring inspect``: a segment's header, roster and kind-specific state
(a channel's fill counters, ends and wait strategy) as a table and as JSON;
missing names, foreign files and directories fail cleanly.

Runs the ``shmring`` console script as a real subprocess (tests/_cli_helpers.py).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable

import pytest

import shmring

from _cli_helpers import WIDE, assert_clean_failure, cli, entry_for, ls_json, make_foreign, shm_path


@pytest.mark.timeout(60)
def test_inspect_table(live_segment: shmring.Segment) -> None:
    result = cli("inspect", live_segment.name, env=WIDE)
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    fields = {k: v.strip() for k, v in fields.items()}
    assert fields["name"] == live_segment.name
    assert fields["version"] == str(shmring._core.LAYOUT_VERSION)
    assert fields["kind"] == "segment"
    assert fields["size"] == "4096"
    assert fields["total_size"] == "8192"
    assert fields["in_use"] == "True" and fields["persistent"] == "False"
    assert fields["users.0"].startswith(f"pid {os.getpid()} (alive), attached ")
    assert fields["creator_pid"] == str(os.getpid())
    assert fields["alive"] == "True"
    assert fields["mode"] == "0o600"
    assert fields["uid"] == str(os.geteuid())


@pytest.mark.timeout(60)
def test_inspect_json(live_segment: shmring.Segment) -> None:
    result = cli("inspect", live_segment.name, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    info = live_segment.info()
    assert data["name"] == live_segment.name
    assert data["version"] == shmring._core.LAYOUT_VERSION
    assert data["kind"] == "segment"
    assert data["size"] == 4096
    assert data["total_size"] == 8192
    assert data["in_use"] is True and data["live_users"] == [os.getpid()]
    assert [(u["pid"], u["alive"]) for u in data["users"]] == [(os.getpid(), True)]
    assert data["creator_pid"] == os.getpid()
    assert data["creator_start"] == info.creator_start
    assert data["created_ns"] == info.created_ns
    assert data["creator_uid"] == os.geteuid()
    assert data["alive"] is True
    assert data["mode"] == "0o600"
    assert data["uid"] == os.geteuid()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", data["created"])
    assert re.fullmatch(r"\d+[smhd]", data["age"])


@pytest.mark.timeout(60)
def test_inspect_accepts_leading_slash(live_segment: shmring.Segment) -> None:
    result = cli("inspect", "/" + live_segment.name, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == live_segment.name


@pytest.mark.timeout(60)
def test_inspect_missing_name(fresh_name: Callable[[], str]) -> None:
    name = fresh_name()
    for args in (("inspect", name), ("inspect", name, "--json")):
        result = cli(*args)
        assert_clean_failure(result)
        assert result.stderr == f"shmring: no such segment: {name!r}\n"


@pytest.mark.timeout(60)
def test_inspect_foreign_file(fresh_name: Callable[[], str]) -> None:
    name = fresh_name()
    path = make_foreign(name)
    before = path.read_bytes()
    for args in (("inspect", name), ("inspect", name, "--json")):
        result = cli(*args)
        assert_clean_failure(result)
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert "not a shmring segment" in result.stderr
        assert name in result.stderr
    assert path.read_bytes() == before


@pytest.mark.timeout(60)
def test_directory_in_dev_shm_fails_cleanly(fresh_name: Callable[[], str]) -> None:
    """Not a regular file: ls skips it, inspect and rm (even --force) fail
    with one message, and it stays."""
    name = fresh_name()
    path = shm_path(name)
    path.mkdir()
    try:
        assert entry_for(ls_json(), name) is None
        for args in (("inspect", name), ("rm", name), ("rm", "--force", name)):
            result = cli(*args)
            assert_clean_failure(result)
            assert name in result.stderr
        assert path.is_dir()
    finally:
        path.rmdir()


@pytest.mark.timeout(60)
def test_inspect_channel_shows_fill_counters_and_ends(fresh_name: Callable[[], str]) -> None:
    name = fresh_name()
    with shmring.Channel.create(name, 4096, "block") as ch:
        ch.send_many([b"x" * 100] * 5)
        assert ch.recv() == b"x" * 100
        result = cli("inspect", name, "--json")
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert data["kind"] == "channel"
        chan = data["channel"]
        assert chan["capacity"] == 4096 and chan["wait"] == "block"
        assert chan["sent_messages"] == 5 and chan["received_messages"] == 1
        assert chan["fill_bytes"] == 4 * 112 and chan["fill_percent"] == round(100 * 448 / 4096, 1)
        assert chan["producer_pid"] == chan["consumer_pid"] == os.getpid()
        assert chan["producer_alive"] and chan["consumer_alive"]
        assert not chan["writer_closed"]
        table = cli("inspect", name)
        assert "channel.fill_bytes" in table.stdout and "448" in table.stdout


@pytest.mark.timeout(60)
def test_inspect_names_every_wait_strategy(fresh_name: Callable[[], str]) -> None:
    for wait in ("spin", "yield", "block", "adaptive", "semaphore"):
        name = fresh_name()
        with shmring.Channel.create(name, 1024, wait):  # type: ignore[arg-type]
            result = cli("inspect", name, "--json")
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["channel"]["wait"] == wait
