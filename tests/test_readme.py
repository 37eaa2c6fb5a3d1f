"""Every Python code block of the README and of docs/ runs as printed, in a
process of its own, and leaves nothing behind in /dev/shm (the README's C
block is compiled as printed by tests/test_c_interop.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SHM = Path("/dev/shm")


def python_blocks(doc: Path) -> list[tuple[str, str]]:
    """(the heading above it, the code) of every ```python block of ``doc``."""
    text = doc.read_text()
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        heading = re.findall(r"^## (.+)$", text[: match.start()], flags=re.M)[-1]
        blocks.append((heading, match.group(1)))
    return blocks


def run_example(code: str, tmp_path: Path, names: set[str]) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``code`` as a script; also returns what it left in /dev/shm: the
    segments it names, and those named after its process (``name=None``).
    (Other processes' segments may come and go meanwhile.)"""
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    out, err = proc.communicate(timeout=50)
    ours = {p.name for p in SHM.iterdir() if p.name in names or p.name.startswith(f"shmring-{proc.pid}-")}
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), ours


BLOCKS = python_blocks(README)
DOC_BLOCKS = [(f"{doc.name}: {h}", code) for doc in sorted((ROOT / "docs").glob("*.md")) for h, code in python_blocks(doc)]


def test_the_readme_has_its_examples() -> None:
    assert [h for h, _ in BLOCKS] == [
        "Channel", "Arrays (numpy)", "Arrays (numpy)", "Queue: a drop-in for `multiprocessing.Queue`",
        "Queue: a drop-in for `multiprocessing.Queue`", "Topic: broadcast", "asyncio", "Atomics, semaphores, locks, events", "Segments",
    ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("heading", "code"), BLOCKS, ids=[h.split(":")[0] for h, _ in BLOCKS])
def test_readme_block_runs_as_printed(heading: str, code: str, tmp_path: Path) -> None:
    names = set(re.findall(r'"([A-Za-z][\w.-]*)"', code)) & {"prices", "state", "frames"}
    assert not any((SHM / n).exists() for n in names), "a segment of the example exists already"
    result, left = run_example(code, tmp_path, names)
    assert result.returncode == 0, f"{heading}:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert not left, f"{heading}: left {sorted(left)} in /dev/shm"
    if heading.startswith("Queue"):  # the drop-in's sum; the frame that came back out of band, its own
        want = "(1080, 1920, 3) True 0" if "frame" in code else str(2 * sum(range(10_000)))
        assert result.stdout.strip() == want
    if heading.startswith("Arrays"):  # the consumer checked every frame (in place: and kept the last)
        assert result.stdout.strip() == ("0 99" if "peek_array" in code else "0")
    if heading == "asyncio":
        assert result.stdout.strip() == "nothing left: Empty"
    if heading == "Segments":
        assert result.stdout.strip() == "b'hello'"


def test_the_docs_have_their_examples() -> None:
    assert [h for h, _ in DOC_BLOCKS] == ["BRIDGE.md: Wire format (Topic)", "OBSERVE.md: From Python",
                                          "SYNC.md: 6. When the holder dies"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("heading", "code"), DOC_BLOCKS, ids=[h for h, _ in DOC_BLOCKS])
def test_docs_block_runs_as_printed(heading: str, code: str, tmp_path: Path) -> None:
    result, left = run_example(code, tmp_path, set())
    assert result.returncode == 0, f"{heading}:\n{result.stderr}"
    assert not left, f"{heading}: left {sorted(left)} in /dev/shm"
    if heading.startswith("SYNC.md"):
        assert result.stdout.strip() == "2"
