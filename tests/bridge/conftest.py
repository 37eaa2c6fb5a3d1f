"""Two hosts on one machine for the bridge tests (netns.py: network
namespaces joined by a veth pair, a private /dev/shm each).  Needs root and
iproute2; elsewhere the tests skip, and under CI (CI set) they fail."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import netns

HERE = Path(__file__).parent
PROGRAMS = HERE / "_programs.py"


class Host(netns.Host):
    """A simulated host that also runs the tests' programs (_programs.py)."""

    def program(self, *args: str, log: str | None = None) -> subprocess.Popen[str]:
        return self.python(PROGRAMS, *args, log=log)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[Host, Host]]:
    """Host A (10.77.0.1) and host B (10.77.0.2), joined by a veth pair."""
    try:
        with netns.two_hosts(tmp_path, Host) as (a, b):
            assert isinstance(a, Host) and isinstance(b, Host)
            yield a, b
    except netns.NamespaceError as e:
        if os.environ.get("CI"):
            pytest.fail(f"bridge tests cannot run here: {e}")
        pytest.skip(f"bridge tests need {e}")


def wait_line(proc: subprocess.Popen[str], want: str, timeout: float = 30) -> None:
    """Read ``proc``'s stdout until the line ``want``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == want:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"program ended ({proc.returncode}) before saying {want!r}")
    raise AssertionError(f"no {want!r} within {timeout} s")


def stop(proc: subprocess.Popen[str]) -> None:
    """Stop a bridge as a user would (SIGTERM): it logs its final status."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)


def kill(proc: subprocess.Popen[str]) -> None:
    """Kill a bridge or program as a crash would (SIGKILL: no clean-up)."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def logged_status(log: Path) -> dict[str, Any]:
    """The status document a bridge logged on stopping (its last one)."""
    found = re.findall(r"stopped; status (.*)$", log.read_text(), re.MULTILINE)
    assert found, f"{log.name}: no final status"
    status: dict[str, Any] = json.loads(found[-1])
    return status
