"""Two simulated hosts on one machine: network namespaces joined by a veth
pair, each with a private mount namespace and its own /dev/shm (a tmpfs),
so that the programs of one cannot share memory with the other's.

Shared by the bridge tests (conftest.py) and the bridge benchmark
(benchmarks/bench_bridge.py); nothing here needs pytest.  Needs root and
iproute2: ``two_hosts`` raises ``NamespaceError`` saying what is missing;
``Host.packet_loss`` also needs nftables (the ``nft`` command)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

PORT = 7447
ADDRESSES = ("10.77.0.1", "10.77.0.2")
# The nftables table that holds a host's injected packet loss (one per namespace).
LOSS_TABLE = "shmring_loss"
# The kernel's default for a link's segments per packet (what packet_loss restores).
GSO_MAX_SEGS = 65535


class NamespaceError(Exception):
    """The namespaces cannot be made here: the message says what is missing."""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Host:
    """One simulated machine: a network namespace with address ``address``
    on interface ``link``, and a process holding its private /dev/shm;
    every program of the host joins both."""

    def __init__(self, netns: str, link: str, address: str, tmp: Path) -> None:
        self.netns, self.link, self.address, self.tmp = netns, link, address, tmp
        holder = subprocess.Popen(
            ["ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private", "sh", "-c",
             "mount -t tmpfs -o size=512m tmpfs /dev/shm && echo $$ && exec sleep 100000"],
            stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None
        self.holder, self.holder_pid = holder, int(holder.stdout.readline())
        self.procs: list[subprocess.Popen[str]] = []

    def popen(self, args: list[str], log: str | None = None) -> subprocess.Popen[str]:
        """``args`` run on this host; stdout piped, stderr into ``tmp/log``."""
        err: IO[Any] | int = open(self.tmp / log, "a") if log else subprocess.DEVNULL
        proc = subprocess.Popen(["nsenter", f"--target={self.holder_pid}", "--mount", "--net", "--", *args],
                                stdout=subprocess.PIPE, stderr=err, text=True)
        self.procs.append(proc)
        return proc

    def bridge(self, *args: str, log: str) -> subprocess.Popen[str]:
        """``shmring bridge ARGS`` on this host."""
        return self.popen([sys.executable, "-m", "shmring", "bridge", *args], log)

    def python(self, script: Path, *args: str, log: str | None = None) -> subprocess.Popen[str]:
        """``python SCRIPT ARGS`` on this host."""
        return self.popen([sys.executable, str(script), *args], log)

    def endpoint(self) -> str:
        return f"tcp/{self.address}:{PORT}"

    def set_link(self, up: bool) -> None:
        _ip("-n", self.netns, "link", "set", self.link, "up" if up else "down")

    @contextlib.contextmanager
    def packet_loss(self, percent: int) -> Iterator[None]:
        """Drop ``percent`` % of the packets that arrive on this host's link,
        at random, while the block runs; the rule is removed on leaving it,
        whatever happened.  Loss on arrival is loss on the wire: a drop on
        the way out would be seen by the sending TCP stack as a failed send
        (EPERM), not as a packet lost, so both ways take one call per host.
        Meanwhile this host sends one TCP segment per packet, as over a real
        link (a veth otherwise carries up to 64 KiB of segments as one
        packet, and a drop would hit dozens of them at once, rarely)."""
        if shutil.which("nft") is None:
            raise NamespaceError("the nft command (nftables)")
        rules = (f"table inet {LOSS_TABLE} {{\n"
                 f"  chain input {{ type filter hook input priority 0; policy accept;\n"
                 f"    iifname \"{self.link}\" numgen random mod 100 < {int(percent)} counter drop\n  }}\n}}\n")
        subprocess.run(["ip", "netns", "exec", self.netns, "nft", "-f", "-"], input=rules, check=True,
                       capture_output=True, text=True, timeout=30)
        try:
            _ip("-n", self.netns, "link", "set", self.link, "gso_max_segs", "1")
            yield
        finally:
            _ip("-n", self.netns, "link", "set", self.link, "gso_max_segs", str(GSO_MAX_SEGS))
            subprocess.run(["ip", "netns", "exec", self.netns, "nft", "delete", "table", "inet", LOSS_TABLE],
                           check=True, capture_output=True, text=True, timeout=30)

    def dropped(self) -> int:
        """Packets the loss rule has dropped so far (call it inside ``packet_loss``)."""
        listing = subprocess.run(["ip", "netns", "exec", self.netns, "nft", "list", "table", "inet", LOSS_TABLE],
                                 check=True, capture_output=True, text=True, timeout=30).stdout
        found = re.search(r"counter packets (\d+)", listing)
        assert found is not None, listing
        return int(found.group(1))

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.holder.kill()
        self.holder.wait()


def check_can_make() -> None:
    """Raise ``NamespaceError`` unless this process can make the hosts."""
    if os.geteuid() != 0:
        raise NamespaceError("root (network namespaces)")
    for tool in ("ip", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            raise NamespaceError(f"the {tool} command")
    try:
        import zenoh  # noqa: F401
    except ImportError:
        raise NamespaceError("Zenoh: pip install shmring[zenoh]") from None


@contextlib.contextmanager
def two_hosts(tmp: Path, host_class: type[Host] = Host) -> Iterator[tuple[Host, Host]]:
    """Host A (10.77.0.1) and host B (10.77.0.2), joined by a veth pair;
    their programs' logs go to ``tmp``.  Everything is removed on exit."""
    check_can_make()
    tag = f"{os.getpid() % 100000}"
    a, b = f"shmring-{tag}-a", f"shmring-{tag}-b"
    made: list[str] = []
    try:
        for ns in (a, b):
            _ip("netns", "add", ns)
            made.append(ns)
        _ip("link", "add", f"sr{tag}a", "type", "veth", "peer", "name", f"sr{tag}b")
        for ns, link, address in ((a, f"sr{tag}a", ADDRESSES[0]), (b, f"sr{tag}b", ADDRESSES[1])):
            _ip("link", "set", link, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", link)
            _ip("-n", ns, "link", "set", link, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as e:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        raise NamespaceError(f"network namespaces ({' '.join(e.cmd)}: {e.stderr.strip()})") from None
    host_a = host_class(a, f"sr{tag}a", ADDRESSES[0], tmp)
    host_b = host_class(b, f"sr{tag}b", ADDRESSES[1], tmp)
    try:
        yield host_a, host_b
    finally:
        host_a.close()
        host_b.close()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
