"""What `shmring ls` and `shmring inspect` show of a running bridge, read
on each host from the bridge's status segment (docs/BRIDGE.md "Status"):
the exported topic on host A, the imported one on host B, with their
direction, link and counters that move while messages cross."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import Host
from .test_topic_bridge import start_pair, verdict

MESSAGES = 4000
RATE = 400.0  # messages per second: ten seconds of traffic to watch


def run_cli(host: Host, *args: str) -> str:
    proc = host.popen([sys.executable, "-m", "shmring", *args], log="cli.log")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, (host.tmp / "cli.log").read_text()
    return out


def bridge_entry(host: Host, name: str) -> dict[str, Any] | None:
    """The status a bridge of ``host`` publishes for topic ``name``, per `shmring ls --json`."""
    for item in json.loads(run_cli(host, "ls", "--json")):
        if item["name"] == name and item["bridge"]:
            (entry,) = item["bridge"]
            assert isinstance(entry, dict)
            return entry
    return None


def wait_for(host: Host, name: str, counter: str, above: int, timeout: float = 30) -> dict[str, Any]:
    """``host``'s bridge entry for ``name`` once ``counter`` is above ``above``."""
    deadline = time.monotonic() + timeout
    entry = None
    while time.monotonic() < deadline:
        entry = bridge_entry(host, name)
        if entry is not None and entry["counters"].get(counter, 0) > above:
            return entry
        time.sleep(0.2)
    raise AssertionError(f"{name}: {counter} not above {above} within {timeout} s (last: {entry})")


@pytest.mark.timeout(120)
def test_ls_and_inspect_show_each_side_of_a_bridged_topic(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    a, b = hosts
    collector = start_pair(a, b, "watched", MESSAGES, 30)
    a.program("publish", "watched", str(MESSAGES), str(RATE), log="publish.log")

    first = wait_for(a, "watched", "sent", 0)
    assert first["direction"] == "export" and first["problem"] is None
    assert first["connect"] == [b.endpoint()] and first["link"] == "up" and first["link_by"] == "zenoh matching"
    later = wait_for(a, "watched", "sent", first["counters"]["sent"])
    assert later["pid"] == first["pid"]

    imported = wait_for(b, "watched", "delivered", 0)
    assert imported["direction"] == "import" and imported["listen"] == [b.endpoint()]
    assert wait_for(b, "watched", "delivered", imported["counters"]["delivered"])["counters"]["gaps"] == 0

    shown = run_cli(a, "inspect", "watched")
    assert "bridge.0.link" in shown and "export" in shown and "sent " in shown
    listing = next(line for line in run_cli(a, "ls").splitlines() if line.split()[:1] == ["watched"])
    assert "bridged out" in listing

    result = verdict(collector, timeout=60)
    assert result["received"] == MESSAGES and result["missing"] == 0, result
