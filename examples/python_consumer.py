"""Receive, in Python, what examples/cpp_producer.cpp sends.

    python examples/python_consumer.py 100000

creates a channel, compiles and starts the C++ producer on it, and checks
every message it receives (sequence number and contents).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import shmring

HERE = Path(__file__).resolve().parent


def main(count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp, shmring.Channel.create(None, 1 << 16) as ch:
        exe = Path(tmp) / "cpp_producer"
        subprocess.run(
            ["g++", "-std=c++17", "-O2", "-I", shmring.get_include(), str(HERE / "cpp_producer.cpp"), "-o", str(exe)],
            check=True,
        )
        producer = subprocess.Popen([str(exe), ch.name, str(count)])
        received = 0
        for msg in ch:  # ends when the producer closes the stream
            seq = int.from_bytes(msg[:8], "little")
            body = bytes([seq % 251]) * (seq % 200)
            if seq != received or msg[8:] != body:
                print(f"message {received} is wrong", file=sys.stderr)
                return 1
            received += 1
        producer.wait(timeout=30)
        print(f"received {received} messages from C++, all checked")
        return 0 if received == count and producer.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
