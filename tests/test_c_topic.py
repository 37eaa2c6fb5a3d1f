"""A plain C publisher (examples/c_topic_publisher.c, built with warnings as
errors as C and as C++) and Python subscribers on a small "block" topic: every
subscriber gets every message, in order, across many wrap-arounds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import shmring

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "examples" / "c_topic_publisher.c"


@pytest.mark.parametrize("compiler", [["cc", "-std=c99"], ["g++", "-x", "c++", "-std=c++17"]])
def test_builds_warning_free(tmp_path: Path, compiler: list[str]) -> None:
    proc = subprocess.run(
        [*compiler, "-O2", "-Wall", "-Wextra", "-Werror", "-I", shmring.get_include(), str(SOURCE),
         "-o", str(tmp_path / "pub")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.timeout(60)
def test_c_publisher_python_subscribers(tmp_path: Path, name: str) -> None:
    exe = tmp_path / "c_topic_publisher"
    build = subprocess.run(
        ["cc", "-std=c99", "-O2", "-I", shmring.get_include(), str(SOURCE), "-o", str(exe)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr
    count = 20_000
    with shmring.Topic.create(name, 4096, "block") as topic:  # small: the publisher waits for us
        subs = [topic.subscribe() for _ in range(2)]
        publisher = subprocess.Popen([str(exe), name, str(count)], stdout=subprocess.PIPE, text=True)
        try:
            for seq in range(count):
                for sub in subs:
                    msg = sub.recv(timeout=20)
                    assert msg == seq.to_bytes(8, "little") + bytes([seq % 251]) * (seq % 200)
            out, _ = publisher.communicate(timeout=20)
        finally:
            publisher.kill()
        assert publisher.returncode == 0 and out.strip() == f"published {count}"
        assert topic.stats()["published"] == count
        for sub in subs:
            sub.close()
