"""A channel from a producer on host A to a consumer on host B through two
bridges over Zenoh (network namespaces, each with its own /dev/shm:
conftest.py): every message once and in order, then the producer's close;
a link outage is filled from the exporter's replay buffer; an exporter
killed is a loss that is reported and ends the stream visibly
(docs/BRIDGE.md, "Channels")."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import Host, kill, logged_status, stop, wait_line

MESSAGES = 1_000_000


def start(a: Host, b: Host, idle: float, *reader_options: str) -> subprocess.Popen[str]:
    """B's importer (listening), A's exporter (connecting), B's reader; returns the reader, ready."""
    b.bridge("--import", "channel:pipe", "--listen", b.endpoint(), log="bridge-b.log")
    a.bridge("--export", "channel:pipe", "--connect", b.endpoint(), log="bridge-a.log")
    reader = b.program("receive", "pipe", str(idle), *reader_options, log="receive.log")
    wait_line(reader, "ready")
    return reader


def verdict(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def final_status(log: Path) -> dict[str, Any]:
    """The channel's counters in the bridge's last status line."""
    status: dict[str, Any] = logged_status(log)["channel:pipe"]
    return status


@pytest.mark.timeout(180)
def test_every_message_once_in_order_then_the_close(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    a, b = hosts
    reader = start(a, b, idle=60)
    sender = a.program("send", "pipe", str(MESSAGES), log="send.log")
    got = verdict(reader, timeout=150)
    assert verdict(sender, timeout=30) == {"sent": MESSAGES, "end": "sent", "peer_gone": 0}
    print(f"\n{MESSAGES} messages through the channel bridge in {got['seconds']:.1f} s: "
          f"{MESSAGES / got['seconds']:,.0f} messages/s")
    assert got["end"] == "Closed", "the producer's close arrives after the last message"
    assert (got["received"], got["first"], got["last"]) == (MESSAGES, 0, MESSAGES - 1)
    assert got["missing"] == got["duplicates"] == got["bad"] == 0
    stop(b.procs[0])
    importer = final_status(tmp_path / "bridge-b.log")
    assert importer["delivered"] == MESSAGES and importer["lost"] == 0 and importer["state"] == "ended"
    assert importer["end"] == "closed"


@pytest.mark.timeout(180)
def test_the_link_down_and_up_loses_and_duplicates_nothing(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    a, b = hosts
    reader = start(a, b, idle=60)
    count = 100_000
    sender = a.program("send", "pipe", str(count), "20000", log="send.log")  # 5 s of sending
    time.sleep(1.5)
    a.set_link(False)
    time.sleep(3)
    a.set_link(True)
    got = verdict(reader, timeout=150)
    assert verdict(sender, timeout=30) == {"sent": count, "end": "sent", "peer_gone": 0}
    assert got["end"] == "Closed"
    assert (got["received"], got["first"], got["last"]) == (count, 0, count - 1)
    assert got["missing"] == got["duplicates"] == got["bad"] == 0
    stop(a.procs[0])
    stop(b.procs[0])
    exporter, importer = final_status(tmp_path / "bridge-a.log"), final_status(tmp_path / "bridge-b.log")
    print(f"\nlink down 3 s: exporter {exporter}, importer {importer}")
    assert importer["delivered"] == count and importer["lost"] == 0


@pytest.mark.timeout(180)
def test_a_killed_exporter_is_a_reported_loss_never_a_silent_one(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    """The killed exporter's unacknowledged messages are gone: the importer
    says how many and from which number, closes B's channel (B's reader
    drains, then gets Closed), and the new exporter closes A's (the
    producer's send raises Closed).  If nothing was unacknowledged at the
    kill, the stream goes on whole."""
    a, b = hosts
    reader = start(a, b, idle=60)
    count = 2_000_000
    sender = a.program("send", "pipe", str(count), log="send.log")  # as fast as it goes: messages in flight
    time.sleep(1.0)
    kill(a.procs[0])
    time.sleep(0.5)
    a.bridge("--export", "channel:pipe", "--connect", b.endpoint(), log="bridge-a.log")
    got = verdict(reader, timeout=150)
    sent = verdict(sender, timeout=30)
    stop(b.procs[0])
    importer = final_status(tmp_path / "bridge-b.log")
    log = (tmp_path / "bridge-b.log").read_text()
    print(f"\nexporter killed: reader {got}, sender {sent}, importer {importer}")
    assert got["missing"] == got["duplicates"] == got["bad"] == 0, "in order and once, up to the end"
    assert got["end"] == "Closed"
    if importer["lost"]:
        assert importer["state"] == "broken" and importer["lost_from"] == got["received"]
        assert re.search(rf"{importer['lost']} messages lost \(seq {got['received']} to ", log)
        assert got["received"] + importer["lost"] <= sent["sent"]
        assert sent["end"] == "closed", "the producer learns that the stream broke"
    else:
        assert got["received"] == count and sent["sent"] == count and sent["end"] == "sent"


@pytest.mark.timeout(180)
def test_a_killed_importer_restarted_writes_every_message_once(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    """The importer's cursor (docs/BRIDGE.md, "Importer restarts"): the new
    importer resumes right after the last message that is in B's channel,
    so B's reader gets every message once and in order across the kill."""
    a, b = hosts
    reader = start(a, b, 60, "patient")  # B's reader waits out its producer's death (PeerGone)
    count = 1_000_000
    sender = a.program("send", "pipe", str(count), log="send.log")  # as fast as it goes: writes under way
    time.sleep(1.0)
    kill(b.procs[0])
    time.sleep(0.5)
    b.bridge("--import", "channel:pipe", "--listen", b.endpoint(), log="bridge-b.log")
    got = verdict(reader, timeout=150)
    sent = verdict(sender, timeout=30)
    stop(b.procs[-1])
    importer = final_status(tmp_path / "bridge-b.log")
    resumed = re.findall(r"resumed at seq (\d+)", (tmp_path / "bridge-b.log").read_text())
    print(f"\nimporter killed: reader {got}, resumed at {resumed}, importer {importer}")
    assert len(resumed) == 1 and 0 < int(resumed[0]) < count, "the new importer took up its predecessor's cursor"
    assert sent == {"sent": count, "end": "sent", "peer_gone": 0}
    assert got["end"] == "Closed"
    assert (got["received"], got["first"], got["last"]) == (count, 0, count - 1)
    assert got["missing"] == got["duplicates"] == got["bad"] == 0, "every message once, in order"
    assert importer["lost"] == 0 and importer["delivered"] == count - int(resumed[0])
