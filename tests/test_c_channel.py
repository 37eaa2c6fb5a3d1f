"""Cross-language channels: a C++ producer with a Python consumer, a Python
producer with a C consumer, both built from examples/ with warnings as errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import shmring

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def build(tmp_path: Path, source: str, compiler: list[str]) -> Path:
    exe = tmp_path / Path(source).stem
    proc = subprocess.run(
        [*compiler, "-O2", "-Wall", "-Wextra", "-Werror", "-I", shmring.get_include(), str(EXAMPLES / source),
         "-o", str(exe)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return exe


@pytest.mark.timeout(60)
def test_cpp_producer_python_consumer(tmp_path: Path, name: str) -> None:
    exe = build(tmp_path, "cpp_producer.cpp", ["g++", "-std=c++17"])
    count = 50_000
    with shmring.Channel.create(name, 1 << 12) as ch:  # small: many wrap-arounds
        producer = subprocess.Popen([str(exe), name, str(count)], stdout=subprocess.PIPE, text=True)
        try:
            received = 0
            for msg in ch:  # until the C++ side closes the stream
                seq = int.from_bytes(msg[:8], "little")
                assert seq == received and msg[8:] == bytes([seq % 251]) * (seq % 200)
                received += 1
            out, _ = producer.communicate(timeout=30)
        finally:
            producer.kill()
        assert received == count and producer.returncode == 0 and out.strip() == f"sent {count}"
        stats = ch.stats()
        assert stats["writer_closed"] and stats["received_messages"] == count


@pytest.mark.timeout(60)
def test_python_producer_c_consumer(tmp_path: Path, name: str) -> None:
    exe = build(tmp_path, "c_consumer.c", ["gcc", "-std=c99", "-pedantic"])
    count = 50_000
    with shmring.Channel.create(name, 1 << 12) as ch:
        consumer = subprocess.Popen([str(exe), name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            total = 0
            for seq in range(count):
                msg = seq.to_bytes(8, "little") + bytes(seq % 300)
                ch.send(msg, timeout=10)
                total += len(msg)
            ch.close()  # end of stream for the C side
            out, err = consumer.communicate(timeout=30)
        finally:
            consumer.kill()
        assert consumer.returncode == 0, err
        assert out.strip() == f"received {count} messages, {total} bytes"


@pytest.mark.timeout(60)
def test_python_consumer_example_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "python_consumer.py"), "20000"], capture_output=True, text=True, timeout=50
    )
    assert proc.returncode == 0, proc.stderr
    assert "received 20000 messages from C++, all checked" in proc.stdout


@pytest.mark.timeout(60)
def test_c_consumer_sees_a_dead_python_producer(tmp_path: Path, name: str) -> None:
    exe = build(tmp_path, "c_consumer.c", ["gcc", "-std=c99"])
    script = (
        "import os, signal, sys, shmring\n"
        "ch = shmring.Channel.open(sys.argv[1])\n"
        "for i in range(100): ch.send(i.to_bytes(8, 'little'))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    with shmring.Channel.create(name, 1 << 12):
        consumer = subprocess.Popen([str(exe), name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            producer = subprocess.run([sys.executable, "-c", script, name], timeout=30)
            assert producer.returncode == -9
            out, err = consumer.communicate(timeout=30)
        finally:
            consumer.kill()
        assert consumer.returncode == 1
        assert "recv after 100 messages: the process at the other end died" in err
