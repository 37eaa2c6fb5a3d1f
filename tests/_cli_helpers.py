"""Helpers of the tests of the ``shmring`` console script (tests/test_cli_*.py),
which run it as a real subprocess.

Most tests run ``python -m shmring``; a few run the ``shmring`` entry point
that pip installed beside the interpreter.  Every segment name is unique to
the test (``t-cli-<pid>-<hex>``, the ``fresh_name`` fixture) and is removed
when the test ends, so /dev/shm is left as it was found.

Rich renders to 80 columns when its output is not a terminal, unless
``COLUMNS`` says otherwise; ``cli`` removes ``COLUMNS``/``LINES`` from the
child's environment so that every run sees the same width.  Tests that parse
the ``ls`` table widen it explicitly (``WIDE``), because other processes'
segments (with names of any length) can share /dev/shm with ours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import shmring

SHM_DIR = Path("/dev/shm")
ENTRY_POINT = Path(sys.executable).parent / "shmring"
CLI_TIMEOUT = 30
WIDE = {"COLUMNS": "400"}


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
