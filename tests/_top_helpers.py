"""Helpers of the tests of ``shmring top`` and ``inspect --watch``
(tests/test_cli_top.py): objects under a known load in child processes,
the bytes of their segments, and ``top`` in a pseudo-terminal.

Every child names itself (``/proc/PID/comm``) after its role, so a test can
check that ``top`` shows the right command beside the right pid, and paces
its work on an absolute schedule, so the rate ``top`` shows is known.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import multiprocessing as mp
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shmring

SHM = Path("/dev/shm")
# Spawned, not forked: a forked child would inherit (and so be listed on)
# every object the test process has open.
SPAWN = mp.get_context("spawn")
PR_SET_NAME = 15
PAYLOAD = 100  # bytes of each message the load sends


def name_process(command: str) -> None:
    """Set this process's command name (what ``top`` shows beside its pid)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, command.encode()[:15], 0, 0, 0)


def paced(rate: float, action: Callable[[int], None]) -> None:
    """Call ``action(i)`` ``rate`` times a second, on an absolute schedule, forever."""
    start = time.monotonic()
    i = 0
    while True:
        action(i)
        i += 1
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def message(i: int) -> bytes:
    return i.to_bytes(8, "little") * (PAYLOAD // 8) + b"\0" * (PAYLOAD % 8)


def channel_producer(name: str, rate: float, ready: Any) -> None:
    name_process("tt-chan-prod")
    ch = shmring.Channel.open(name)
    ready.set()
    paced(rate, lambda i: ch.send(message(i)))


def channel_consumer(name: str, ready: Any) -> None:
    name_process("tt-chan-cons")
    ch = shmring.Channel.open(name)
    ready.set()
    i = 0
    while True:
        got = ch.recv()
        assert got == message(i), f"message {i} wrong"
        i += 1


def queue_producer(name: str, rate: float, ready: Any) -> None:
    name_process("tt-queue-prod")
    q: shmring.Queue[bytes] = shmring.Queue.open(name)
    ready.set()
    paced(rate, lambda i: q.put(message(i)))


def queue_consumer(name: str, ready: Any) -> None:
    name_process("tt-queue-cons")
    q: shmring.Queue[bytes] = shmring.Queue.open(name)
    ready.set()
    while True:
        q.get()


def topic_publisher(name: str, rate: float, ready: Any) -> None:
    name_process("tt-publisher")
    pub = shmring.Topic.open(name).publisher()
    ready.set()
    paced(rate, lambda i: pub.send(message(i)))


def topic_reader(name: str, ready: Any) -> None:
    name_process("tt-reader")
    sub = shmring.Topic.open(name).subscribe()
    ready.set()
    while True:
        try:
            sub.recv()
        except shmring.Lagged:
            continue


def topic_stalled(name: str, ready: Any) -> None:
    name_process("tt-stalled")
    sub = shmring.Topic.open(name).subscribe()
    ready.set()
    while sub is not None:  # subscribed, and never reads
        time.sleep(3600)


def mutex_holder(name: str, ready: Any) -> None:
    name_process("tt-holder")
    lock = shmring.Mutex.open(name)
    lock.acquire()
    ready.set()
    time.sleep(3600)  # killed holding it


@dataclass
class Load:
    """Objects and the children working on them; ``close`` stops the
    children (SIGKILL), closes the objects and removes them."""

    objects: dict[str, Any] = field(default_factory=dict)  # label -> handle
    names: dict[str, str] = field(default_factory=dict)  # label -> segment name
    children: dict[str, Any] = field(default_factory=dict)  # command name -> process

    ready: dict[str, Any] = field(default_factory=dict)  # command name -> its "I am working" event

    def start(self, command: str, target: Callable[..., None], *args: Any) -> None:
        self.ready[command] = SPAWN.Event()
        proc = SPAWN.Process(target=target, args=(*args, self.ready[command]), daemon=True)
        proc.start()
        self.children[command] = proc

    def wait_ready(self) -> None:
        for command, event in self.ready.items():
            assert event.wait(30), f"{command} did not start"

    def kill(self, command: str) -> None:
        proc = self.children[command]
        proc.kill()
        proc.join(10)

    def close(self) -> None:
        for proc in self.children.values():
            if proc.is_alive():
                proc.kill()
            proc.join(10)
        for label, handle in self.objects.items():
            handle.close()
            (SHM / self.names[label]).unlink(missing_ok=True)


def make_objects(load: Load, base: str) -> None:
    """A channel, a queue, a topic (overwrite) and a named mutex, created by this process."""
    load.names = {label: f"{base}-{label}" for label in ("chan", "queue", "topic", "lock")}
    load.objects["chan"] = shmring.Channel.create(load.names["chan"], 1 << 16, "block")
    load.objects["queue"] = shmring.Queue(name=load.names["queue"])
    load.objects["topic"] = shmring.Topic.create(load.names["topic"], capacity=1 << 16, policy="overwrite")
    load.objects["lock"] = shmring.Mutex.create(load.names["lock"])


def start_load(load: Load, rates: dict[str, float]) -> None:
    """Children streaming at ``rates`` (messages/s of chan, queue, topic),
    a topic subscriber that reads and one that never does, and a mutex holder
    killed while it holds the lock."""
    n = load.names
    load.start("tt-chan-cons", channel_consumer, n["chan"])
    load.start("tt-chan-prod", channel_producer, n["chan"], rates["chan"])
    load.start("tt-queue-cons", queue_consumer, n["queue"])
    load.start("tt-queue-prod", queue_producer, n["queue"], rates["queue"])
    load.start("tt-reader", topic_reader, n["topic"])
    load.start("tt-stalled", topic_stalled, n["topic"])
    load.start("tt-publisher", topic_publisher, n["topic"], rates["topic"])
    load.start("tt-holder", mutex_holder, n["lock"])
    load.wait_ready()
    load.kill("tt-holder")


def checksums(names: list[str]) -> dict[str, str]:
    """The SHA-256 of each segment's bytes, read from its /dev/shm file."""
    return {name: hashlib.sha256((SHM / name).read_bytes()).hexdigest() for name in names}


def our_segments(prefix: str) -> set[str]:
    return {p.name for p in SHM.iterdir() if p.name.startswith(prefix)}


# -- a pseudo-terminal ------------------------------------------------------------------

# Runs inside the pseudo-terminal, which it makes its controlling terminal:
# the command, then whether the terminal's settings came back as they were,
# and the command's exit status.  A Ctrl-C typed there interrupts the command
# alone (the wrapper's handler does nothing, and the command starts with the
# default one: caught signals are reset by exec).
WRAPPER = """\
import fcntl, signal, subprocess, sys, termios
signal.signal(signal.SIGINT, lambda *_: None)
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
before = termios.tcgetattr(0)
rc = subprocess.call(sys.argv[1:])
print("\\nRESTORED", termios.tcgetattr(0) == before, "RC", rc, flush=True)
"""


class PtySession:
    """A command run in a pseudo-terminal of ``rows`` x ``cols`` (its
    controlling terminal), with the keys we send and all it writes.  Started
    with subprocess, not a fork of this process, so that it inherits no
    attachment of the test's objects."""

    def __init__(self, argv: list[str], rows: int = 50, cols: int = 200) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        self.fd, terminal = os.openpty()
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen([sys.executable, "-c", WRAPPER, *argv], stdin=terminal, stdout=terminal,
                                     stderr=terminal, env=env, start_new_session=True)
        os.close(terminal)
        self.output = ""

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def read_until(self, predicate: Callable[[str], bool], timeout: float) -> bool:
        """Read what the command writes until ``predicate(all of it)`` or the timeout."""
        deadline = time.monotonic() + timeout
        while not predicate(self.output):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if ready:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:  # EIO: the other side is closed
                    return predicate(self.output)
                if not data:
                    return predicate(self.output)
                self.output += data.decode("utf-8", errors="replace")
        return True

    def frames(self) -> list[str]:
        """The full screens drawn so far (a live view redraws from the top left corner)."""
        return self.output.split("\x1b[H")

    def command_pid(self) -> int:
        """The pid of the command (the wrapper's child)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    def ending(self, timeout: float = 10.0) -> str:
        """The wrapper's last line, "RESTORED <settings as before?> RC <exit status>", once it is written."""
        def written(out: str) -> bool:
            return re.search(r"RESTORED \w+ RC -?\d+\r?\n", out) is not None

        assert self.read_until(written, timeout), f"the command did not end:\n{self.output[-3000:]}"
        found = re.search(r"RESTORED \w+ RC -?\d+", self.output)
        assert found is not None
        return found.group()

    def close(self) -> int | None:
        """Wait for the command (killing it if it is still there); its exit status."""
        try:
            return self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            os.close(self.fd)


def frame_with(session: PtySession, marker: str, timeout: float = 10.0) -> str:
    """The latest full screen that shows ``marker`` (waiting for one), or a
    failure showing what the command wrote."""
    def seen(out: str) -> bool:
        return any(marker in frame for frame in out.split("\x1b[H"))

    assert session.read_until(seen, timeout), f"never showed {marker!r}:\n{session.output[-3000:]}"
    return [frame for frame in session.frames() if marker in frame][-1]
