"""The hand-written stub of the C extension matches it, and the package type-checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_stub_matches_extension() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "shmring._core",
         "--allowlist", str(ROOT / "tests" / "stubtest-allowlist.txt")],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(120)
def test_package_type_checks_strictly() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
