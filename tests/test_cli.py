"""The ``shmring`` console script, run as a real subprocess.

Most tests run ``python -m shmring``; a few run the ``shmring`` entry point
that pip installed beside the interpreter.  Every segment name is unique to
the test (``t-cli-<pid>-<hex>``) and is removed when the test ends, so
/dev/shm is left as it was found.

Rich renders to 80 columns when its output is not a terminal, unless
``COLUMNS`` says otherwise; the helper below removes ``COLUMNS``/``LINES``
from the child's environment so that every run sees the same width.  Tests
that parse the ``ls`` table widen it explicitly, because other processes'
segments (with names of any length) can share /dev/shm with ours.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

import shmring

SHM_DIR = Path("/dev/shm")
ENTRY_POINT = Path(sys.executable).parent / "shmring"
CLI_TIMEOUT = 30
WIDE = {"COLUMNS": "400"}


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def cli(*args: str, entry_point: bool = False, env: dict[str, str] | None = None,
        timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process and return its result (never raises on
    a non-zero exit)."""
    child_env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    child_env.update(env or {})
    cmd = [str(ENTRY_POINT)] if entry_point else [sys.executable, "-m", "shmring"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, env=child_env)


def ls_json(**kw: Any) -> list[dict[str, Any]]:
    result = cli("ls", "--json", **kw)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, list)
    return data


def entry_for(data: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    matches = [item for item in data if item["name"] == name]
    assert len(matches) <= 1, f"{name} listed {len(matches)} times"
    return matches[0] if matches else None


def words(text: str) -> str:
    """Whitespace-normalised text: Rich may wrap a long message."""
    return " ".join(text.split())


def assert_clean_failure(result: subprocess.CompletedProcess[str], *, exit_code: int = 1) -> None:
    """A failure the CLI expects: the documented status, a message on stderr
    starting with 'shmring:', nothing on stdout, and no traceback."""
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert result.stdout == ""
    assert result.stderr.startswith("shmring: "), result.stderr


def shm_path(name: str) -> Path:
    return SHM_DIR / name


def make_foreign(name: str, data: bytes = b"#!/not/a/shmring/segment\n" * 20) -> Path:
    """A plain file in /dev/shm that is not a shmring segment."""
    path = shm_path(name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


ORPHAN_SCRIPT = """
import os, signal, sys, shmring
seg = shmring.Segment.create(sys.argv[1], 4096)
os.kill(os.getpid(), signal.SIGKILL)  # a crash: nobody leaves, nobody removes
"""


def make_dead(name: str) -> int:
    """A segment whose only user, its creator (a child Python process),
    crashed (SIGKILL) while attached: an orphan for `shmring gc`.  Returns
    the creator's pid."""
    proc = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _, stderr = proc.communicate(timeout=CLI_TIMEOUT)  # also reaps it: no zombie left
    assert proc.returncode == -9, stderr
    assert shm_path(name).exists(), "the crashed child's segment must outlive it"
    assert not shmring._core.in_use(name)
    info = read_header(name)
    assert info.creator_pid == proc.pid and [u.pid for u in info.users] == [proc.pid]
    return proc.pid


def read_header(name: str) -> shmring.SegmentInfo:
    """A segment's header and roster, looked at without attaching."""
    mapping = shmring._core.open(name, True, True, False)
    try:
        return shmring.SegmentInfo.from_mapping(mapping)
    finally:
        mapping.close()


def make_kept(name: str, size: int = 4096) -> None:
    """A persistent segment nobody is attached to (it outlives its last user)."""
    shmring.Segment.create(name, size, persistent=True).close()


def corrupt_kind_byte(name: str) -> None:
    """Flip the kind field (offset 16, inside the checksummed bytes [8, 64))."""
    fd = os.open(shm_path(name), os.O_RDWR)
    try:
        old = os.pread(fd, 1, 16)
        os.pwrite(fd, bytes([old[0] ^ 0x06]), 16)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------


@pytest.fixture
def fresh_name() -> Iterator[Callable[[], str]]:
    """Factory of fresh names; each one is removed from /dev/shm (whatever is
    behind it) when the test ends, and the test fails if that did not work."""
    names: list[str] = []

    def make() -> str:
        name = f"t-cli-{os.getpid()}-{uuid4().hex[:8]}"
        names.append(name)
        return name

    yield make
    for name in names:
        try:
            shm_path(name).unlink()
        except FileNotFoundError:
            pass
    leftovers = [n for n in names if shm_path(n).exists()]
    assert not leftovers, f"left behind in /dev/shm: {leftovers}"


@pytest.fixture
def live_segment(fresh_name: Callable[[], str]) -> Iterator[shmring.Segment]:
    """A 4096-byte segment created (and so kept alive) by this test process."""
    seg = shmring.Segment.create(fresh_name(), 4096)
    try:
        yield seg
    finally:
        seg.close()
        try:
            seg.unlink()
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------
# help and version
# ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_entry_point_help() -> None:
    assert ENTRY_POINT.is_file() and os.access(ENTRY_POINT, os.X_OK), ENTRY_POINT
    result = cli("--help", entry_point=True)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    for command in ("ls", "inspect", "rm", "gc", "demo"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M), f"{command} missing from --help"
    assert result.stderr == ""


@pytest.mark.timeout(60)
def test_short_help_option_and_subcommand_help() -> None:
    result = cli("-h")
    assert result.returncode == 0
    assert "Usage:" in result.stdout
    result = cli("rm", "--help")
    assert result.returncode == 0
    assert "--force" in result.stdout


@pytest.mark.timeout(60)
@pytest.mark.parametrize("entry_point", [False, True], ids=["python-m", "entry-point"])
def test_version(entry_point: bool) -> None:
    result = cli("--version", entry_point=entry_point)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"version {shmring.__version__}")
    assert shmring.__version__ == "0.1.0"


@pytest.mark.timeout(60)
def test_unknown_command_and_missing_argument_are_usage_errors() -> None:
    for args in (("frobnicate",), ("rm",), ("inspect",)):
        result = cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Usage:" in result.stderr
        assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------
# ls
# ---------------------------------------------------------------------------


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
    assert item["version"] == 2
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
        "users", "unlisted_users", "live_users",
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


# ---------------------------------------------------------------------------
# gc
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# inspect
# ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_inspect_table(live_segment: shmring.Segment) -> None:
    result = cli("inspect", live_segment.name, env=WIDE)
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    fields = {k: v.strip() for k, v in fields.items()}
    assert fields["name"] == live_segment.name
    assert fields["version"] == "2"
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
    assert data["version"] == 2
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


# ---------------------------------------------------------------------------
# rm
# ---------------------------------------------------------------------------


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
@pytest.mark.parametrize("command", ["inspect", "rm"])
@pytest.mark.parametrize(
    "bad",
    ["a/b", "", ".hidden", "/.hidden", "x" * 255, "with space", "../etc", "semi;colon", "caf\u00e9"],
    ids=["slash", "empty", "hidden", "slash-hidden", "too-long", "space", "dotdot", "semicolon", "non-ascii"],
)
def test_invalid_names_fail_cleanly(command: str, bad: str) -> None:
    result = cli(command, bad)
    assert_clean_failure(result)
    assert "invalid segment name" in words(result.stderr)


@pytest.mark.timeout(60)
def test_rm_force_does_not_bypass_name_check(tmp_path: Path) -> None:
    """--force removes non-shmring objects, never paths outside /dev/shm."""
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    result = cli("rm", "--force", f"../../{victim}")
    assert_clean_failure(result)
    assert victim.read_text() == "keep me"


# ---------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_demo_small_run() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shmring", "demo", "--messages", "3000", "--size", "100", "--rounds", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=50)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr
    assert "every message checked: OK" in stdout
    assert "shmring.Channel" in stdout and "multiprocessing.Queue" in stdout
    assert "round trip p50" in stdout
    assert "Traceback" not in stderr
    # The demo's segment is named after its process and unlinked on exit.
    leftovers = [p.name for p in SHM_DIR.iterdir() if p.name.startswith(f"shmring-{proc.pid}-")]
    assert leftovers == []


# ---------------------------------------------------------------------------
# regressions: output stays parseable, unidentifiable objects stay put
# ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_long_error_messages_stay_on_one_line() -> None:
    result = cli("inspect", "a/b")
    assert_clean_failure(result)
    assert len(result.stderr.splitlines()) == 1, result.stderr


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


@pytest.mark.timeout(60)
@pytest.mark.parametrize("content", [b"", bytes(4096)], ids=["empty", "zero-filled"])
def test_rm_refuses_unidentifiable_object_without_force(fresh_name: Callable[[], str], content: bytes) -> None:
    name = fresh_name()
    path = make_foreign(name, content)
    result = cli("rm", name)
    assert path.exists(), "removed an object that is not provably a shmring segment without --force"
    assert result.returncode == 1


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
def test_rm_leaves_a_queue_merely_named_like_a_chunk(fresh_name: Callable[[], str]) -> None:
    """Reproduction (issue 9, item 5): `rm NAME` unlinked every NAME.q<digits>,
    including a separate Queue called NAME.q1.  A chunk carries its queue's
    id, so rm removes NAME's own chunks only."""
    name = fresh_name()
    neighbour_name = name + ".q1"
    q = shmring.Queue(name=name)
    neighbour = shmring.Queue(name=neighbour_name)
    try:
        q.put_bytes(b"a" * (3 << 20))  # larger than the 1 MiB ring: a chunk of its own, NAME.q0
        own_chunks = [
            p.name for p in SHM_DIR.iterdir()
            if shmring._core.chunk_index(p.name, name) is not None and shmring._core.chunk_stamp(p.name)
        ]
        assert own_chunks == [name + ".q0"]
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


@pytest.mark.timeout(60)
def test_inspect_names_every_wait_strategy(fresh_name: Callable[[], str]) -> None:
    for wait in ("spin", "yield", "block", "adaptive", "semaphore"):
        name = fresh_name()
        with shmring.Channel.create(name, 1024, wait):  # type: ignore[arg-type]
            result = cli("inspect", name, "--json")
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["channel"]["wait"] == wait


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
        chunk = name + ".q0"
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
