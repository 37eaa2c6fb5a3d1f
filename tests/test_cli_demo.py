"""``shmring demo``: a small run checks every message, compares with
multiprocessing.Queue, and leaves nothing in /dev/shm.

Runs the ``shmring`` console script as a real subprocess (tests/_cli_helpers.py).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from _cli_helpers import SHM_DIR


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
