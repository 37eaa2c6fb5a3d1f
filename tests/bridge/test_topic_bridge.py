"""A topic carried from host A to host B by two bridges over Zenoh (in
network namespaces, each with its own /dev/shm: conftest.py): every
message arrives, checked, in order, once; and what a fault loses is reported
by the importer with its exact count."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import Host, kill, logged_status, stop, wait_line

# Messages of the integrity test (64 bytes each; docs/BRIDGE.md gives the rate).
INTEGRITY_MESSAGES = 1_000_000
# The same test with one Zenoh sample per message (--no-batch): slower.
UNBATCHED_MESSAGES = 200_000


def verdict(collector: subprocess.Popen[str], timeout: float) -> dict[str, object]:
    out, _ = collector.communicate(timeout=timeout)
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def start_pair(a: Host, b: Host, name: str, count: int, idle: float, *exporter_options: str,
               policy: str = "block") -> subprocess.Popen[str]:
    """B's collector, B's importer (listening), A's exporter (connecting):
    the two-host example of the README, with the collector already subscribed."""
    collector = b.program("collect", name, str(count), str(idle), policy, log="collect.log")
    wait_line(collector, "ready")
    b.bridge("--import", f"topic:{name}", "--listen", b.endpoint(), log="bridge-b.log")
    a.bridge("--export", f"topic:{name}", "--connect", b.endpoint(), *exporter_options, log="bridge-a.log")
    return collector


def final_status(proc: subprocess.Popen[str], log: Path) -> dict[str, object]:
    """Stop bridge ``proc`` and return the status it logs on stopping."""
    stop(proc)
    return logged_status(log)


def reported_missed(log: Path) -> int:
    """What the importer logged as lost: the sum of its gaps."""
    return sum(int(n) for n in re.findall(r"gap of (\d+) messages", log.read_text()))


@pytest.mark.timeout(300)
def test_a_million_messages_cross_intact_and_in_order(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    check_integrity(hosts, tmp_path, INTEGRITY_MESSAGES, batch=True)


@pytest.mark.timeout(180)
def test_without_batches_messages_cross_intact_one_sample_each(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    check_integrity(hosts, tmp_path, UNBATCHED_MESSAGES, batch=False)


def check_integrity(hosts: tuple[Host, Host], tmp_path: Path, count: int, batch: bool) -> None:
    """``count`` messages published on A reach B's subscriber, each once, in
    order, intact; the exporter sent them batched (fewer samples than
    messages) or one sample each (``--no-batch``)."""
    a, b = hosts
    collector = start_pair(a, b, "ticks", count, 30, *([] if batch else ["--no-batch"]))
    exporter = a.procs[-1]
    started = time.monotonic()
    publisher = a.program("publish", "ticks", str(count), log="publish.log")
    result = verdict(collector, timeout=280)
    elapsed = time.monotonic() - started
    assert publisher.wait(30) == 0
    print(f"\n{count} messages through the bridge ({'batched' if batch else '--no-batch'}) in {elapsed:.1f} s: "
          f"{count / elapsed:,.0f} messages/s")
    assert result == {"received": count, "first": 0, "last": count - 1, "missing": 0,
                      "lagged": 0, "marked": 0, "backwards": [], "n_backwards": 0, "bad": []}
    assert reported_missed(tmp_path / "bridge-b.log") == 0
    exported = final_status(exporter, tmp_path / "bridge-a.log")["topic:ticks"]
    assert isinstance(exported, dict) and exported["sent"] == count and exported["batch"] is batch
    if batch:
        assert exported["samples"] < count, "messages read together go out together"
    else:
        assert exported["samples"] == count


@pytest.mark.timeout(120)
def test_a_killed_exporter_restarted_the_importer_reports_the_gap(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    a, b = hosts
    count = 60_000
    collector = start_pair(a, b, "ticks", count, idle=10)
    exporter = a.procs[-1]
    publisher = a.program("publish", "ticks", str(count), "10000", log="publish.log")  # 6 s of publishing
    time.sleep(2)
    kill(exporter)
    time.sleep(1)  # published meanwhile: read by no one, lost
    a.bridge("--export", "topic:ticks", "--connect", b.endpoint(), log="bridge-a.log")
    assert publisher.wait(60) == 0
    result = verdict(collector, timeout=60)
    stop(b.procs[1])  # the importer: its log is complete
    missed = reported_missed(tmp_path / "bridge-b.log")
    assert result["n_backwards"] == 0 and result["bad"] == []
    assert result["first"] == 0 and result["last"] == count - 1
    assert result["missing"] > 0, "the exporter was down for a second while publishing went on"
    assert missed == result["missing"], "the importer reports exactly what the subscriber lost"
    assert result["marked"] == missed, "and B's subscriber was told it, by Lagged"
    assert result["received"] + result["missing"] == count


@pytest.mark.timeout(120)
def test_a_killed_importer_restarted_reports_what_went_by_meanwhile(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    """The importer's cursor (docs/BRIDGE.md, "Importer restarts"): the new
    importer takes up its predecessor's streams, so what was lost while it
    was down (A's small overwrite ring went round while no importer read
    it) is a gap it reports and marks, not a silent new start."""
    a, b = hosts
    count = 60_000
    collector = start_pair(a, b, "ticks", count, 10, "--policy", "overwrite", "--capacity", "65536")
    publisher = a.program("publish", "ticks", str(count), "10000", log="publish.log")  # 6 s of publishing
    time.sleep(2)
    importer = b.procs[1]
    kill(importer)
    time.sleep(1)
    b.bridge("--import", "topic:ticks", "--listen", b.endpoint(), log="bridge-b.log")
    assert publisher.wait(60) == 0
    result = verdict(collector, timeout=60)
    stop(b.procs[-1])
    log = (tmp_path / "bridge-b.log").read_text()
    missed = reported_missed(tmp_path / "bridge-b.log")
    print(f"\nimporter killed: {result}, the importers reported {missed} missed")
    assert re.search(r"resumed at seq \d+ \(the importer's cursor\)", log)
    assert result["n_backwards"] == 0 and result["bad"] == [] and result["lagged"] == 0
    assert result["last"] == count - 1
    first, missing = result["first"], result["missing"]
    assert isinstance(first, int) and isinstance(missing, int)
    assert missing > 0, "A's ring went round while no importer ran"
    # A's small ring may also go round before the first importer's first
    # message (the stream joined at a high-water mark): reported the same.
    assert missed == missing + first == result["marked"], "reported and raised as Lagged, exactly"
    assert result["received"] + result["marked"] == count


@pytest.mark.timeout(120)
def test_the_link_down_and_up_loses_nothing_silently(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    a, b = hosts
    count = 60_000
    collector = start_pair(a, b, "ticks", count, idle=15)
    publisher = a.program("publish", "ticks", str(count), "10000", log="publish.log")
    time.sleep(2)
    a.set_link(False)
    time.sleep(3)
    a.set_link(True)
    assert publisher.wait(60) == 0
    result = verdict(collector, timeout=60)
    stop(b.procs[1])
    assert result["n_backwards"] == 0 and result["bad"] == []
    assert result["first"] == 0 and result["last"] == count - 1
    assert result["received"] + result["missing"] == count
    assert reported_missed(tmp_path / "bridge-b.log") == result["missing"] == result["marked"]


@pytest.mark.timeout(120)
def test_an_overwrite_topic_accounts_for_every_message(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    """A small overwrite ring on A, a publisher that never waits: whatever
    is lost is reported, by the importer (the exporter lagged, Zenoh or the
    importer's ring dropped) or by the subscriber's own Lagged on B."""
    a, b = hosts
    count = 200_000
    collector = start_pair(a, b, "ticks", count, 5, "--policy", "overwrite", "--capacity", "8192",
                           policy="overwrite")
    publisher = a.program("publish", "ticks", str(count), log="publish.log")
    assert publisher.wait(60) == 0
    result = verdict(collector, timeout=60)
    stop(b.procs[1])
    log = (tmp_path / "bridge-b.log").read_text()
    joined = re.search(r"joined at seq (\d+)", log)  # at the first message, or the exporter's first mark
    first, last = result["first"], result["last"]
    assert isinstance(first, int) and isinstance(last, int) and isinstance(result["missing"], int)
    assert joined is not None and int(joined.group(1)) <= first
    assert result["n_backwards"] == 0 and result["bad"] == []
    # Every number from the join to the last message: received, or raised by
    # Lagged (a gap the importer marked, or B's subscriber lapped).
    before_first = first - int(joined.group(1))
    assert result["missing"] + before_first == result["marked"] + result["lagged"]
    reported = reported_missed(tmp_path / "bridge-b.log")
    assert reported >= result["marked"]  # a marker B's subscriber was lapped over counts in its lagged
    if result["lagged"] == 0:
        assert reported == result["marked"] == result["missing"] + before_first
    assert result["received"] + result["missing"] == last - first + 1
    print(f"\noverwrite: {result['received']} of {count} delivered, first {result['first']}, "
          f"{result['missing']} reported missing")
