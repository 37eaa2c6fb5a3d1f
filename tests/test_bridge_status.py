"""The bridge's status segment (shmring.bridge.status, docs/BRIDGE.md
"Status"), without a network: the document written and read back, a read
that meets a rewrite tried again, a damaged or stale segment reported as
such by the reader and by `shmring ls` / `shmring inspect`."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

import jsonschema
import pytest

import shmring
from shmring import observe, top
from shmring.bridge import status as bs

from _cli_helpers import WIDE, cli

EXPORTED = {"direction": "export", "matched": True, "sent": 7, "samples": 3, "lagged": 0, "producer": "00ab"}

DEAD_BRIDGE = """
import os, sys
from shmring.bridge.status import StatusPublisher
p = StatusPublisher(lambda: {"topic:" + sys.argv[1]: {"direction": "import", "delivered": 1}},
                    {"pid": os.getpid(), "listen": [], "connect": []}, 1)
p.start()
print(p.writer.name, flush=True)
os._exit(0)  # no close: the segment stays, its creator gone
"""


def publisher(status: dict[str, Any], name: str = "prices") -> bs.StatusPublisher:
    header = {"pid": os.getpid(), "listen": ["tcp/127.0.0.1:7447"], "connect": []}
    return bs.StatusPublisher(lambda: {f"topic:{name}": dict(status)}, header, 1)


@pytest.fixture
def running() -> Iterator[bs.StatusPublisher]:
    p = publisher(EXPORTED)
    p.start()
    yield p
    p.close()


@pytest.mark.timeout(30)
def test_the_document_is_written_and_read_back(running: bs.StatusPublisher) -> None:
    found = [s for s in bs.bridges(os.listdir("/dev/shm")) if s.segment == running.writer.name]
    assert len(found) == 1 and found[0].problem is None and found[0].pid == os.getpid()
    (entry,) = bs.bridged(found)[("topic", "prices")]
    assert entry["direction"] == "export" and entry["link"] == "up" and entry["link_by"] == "zenoh matching"
    assert entry["counters"] == {"sent": 7, "samples": 3, "lagged": 0}
    assert entry["detail"] == {"producer": "00ab"} and entry["listen"] == ["tcp/127.0.0.1:7447"]
    assert bs.marker([entry]) == "bridged out"


@pytest.mark.timeout(30)
def test_the_segment_goes_with_the_bridge() -> None:
    p = publisher(EXPORTED)
    p.start()
    name = p.writer.name
    assert name.startswith(bs.PREFIX) and os.path.exists(f"/dev/shm/{name}")
    p.close()
    assert not os.path.exists(f"/dev/shm/{name}")


@pytest.mark.timeout(30)
def test_a_read_during_a_rewrite_is_tried_again(running: bs.StatusPublisher) -> None:
    writer = running.writer
    writer._seq.store(writer._count + 1)  # as the writer leaves it in the middle of a rewrite
    pauses: list[float] = []

    def finish_the_rewrite(seconds: float) -> None:
        pauses.append(seconds)
        writer.write({"objects": [], "updated": 1.0, "finished": True})

    document, problem = bs.parse_status(writer.segment.buf, finish_the_rewrite)
    assert problem is None and document is not None and document["finished"] is True
    assert len(pauses) == 1


@pytest.mark.timeout(30)
def test_a_torn_copy_is_tried_again_then_called_damaged(running: bs.StatusPublisher) -> None:
    buf = running.writer.segment.buf
    buf[bs.DOC_OFFSET] ^= 0xFF  # the CRC no longer matches, the counter is even: a torn copy
    repaired: list[float] = []

    def rewrite(seconds: float) -> None:
        repaired.append(seconds)
        running.publish()

    document, problem = bs.parse_status(buf, rewrite)
    assert problem is None and document is not None and repaired
    buf[bs.DOC_OFFSET] ^= 0xFF
    document, problem = bs.parse_status(buf, lambda s: None)
    assert document is None and problem == "damaged: the document's CRC-32 does not match"


@pytest.mark.timeout(30)
def test_a_rewrite_that_never_ends_is_reported_busy(running: bs.StatusPublisher) -> None:
    running.writer._seq.store(running.writer._count + 1)
    document, problem = bs.parse_status(running.writer.segment.buf, lambda s: None)
    assert document is None and problem == "busy: being rewritten"
    running.writer._count += 2  # leave it consistent for close


@pytest.mark.timeout(30)
def test_last_warning_per_object_and_link_changes_are_kept(caplog: pytest.LogCaptureFixture) -> None:
    state = dict(EXPORTED)
    p = bs.StatusPublisher(lambda: {"topic:prices": dict(state)}, {"pid": os.getpid()}, 1)
    p.start()
    try:
        with caplog.at_level(logging.INFO, logger="shmring.bridge"):
            logging.getLogger("shmring.bridge").warning("topic prices: gap of %d messages", 5)
            state["matched"] = False
            document = p.document()
        (obj,) = document["objects"]
        assert obj["last_error"]["message"] == "gap of 5 messages" and obj["last_error"]["level"] == "warning"
        assert obj["link"] == "down" and obj["link_changes"] == 1
        assert "topic prices: link down (was up; 1 changes)" in caplog.text
    finally:
        p.close()


def test_link_state_of_an_importer_comes_from_its_traffic() -> None:
    assert bs.link_state({"delivered": 0}, None) == ("unknown", "no traffic yet")
    assert bs.link_state({"delivered": 3}, 1.0)[0] == "up"
    assert bs.link_state({"delivered": 3}, bs.STALE_AFTER_S + 1)[0] == "idle"
    assert bs.link_state({"connected": False}, 0.0) == ("down", "replies")


@pytest.mark.timeout(60)
def test_ls_and_inspect_show_the_bridged_object(new_name: Callable[[], str]) -> None:
    topic = shmring.Topic.create("prices-" + new_name()[-8:], 4096)
    p = publisher(EXPORTED, topic.name)
    p.start()
    try:
        listing = json.loads(cli("ls", "--json").stdout)
        (item,) = [i for i in listing if i["name"] == topic.name]
        assert [(e["direction"], e["counters"]["sent"], e["pid"]) for e in item["bridge"]] == [("export", 7, os.getpid())]
        table = cli("ls", env=WIDE).stdout
        assert "topic (bridged out)" in next(line for line in table.splitlines() if topic.name in line)
        shown = cli("inspect", topic.name)
        assert shown.returncode == 0 and "bridge.0.link" in shown.stdout and "sent 7" in shown.stdout
        assert json.loads(cli("inspect", "--json", topic.name).stdout)["bridge"][0]["link"] == "up"
    finally:
        p.close()
        topic.close()


@pytest.mark.timeout(60)
def test_a_damaged_status_segment_is_shown_as_such(running: bs.StatusPublisher) -> None:
    running._stop.set()  # no rewrite from now on
    running.writer.segment.buf[bs.DOC_OFFSET] ^= 0xFF
    result = cli("ls", env=WIDE)
    assert result.returncode == 0 and result.stderr == ""
    line = next(line for line in result.stdout.splitlines() if running.writer.name in line)
    assert "bridge status, damaged: the document's CRC-32 does not match" in line
    shown = json.loads(cli("inspect", "--json", running.writer.name).stdout)
    assert shown["bridge_status"]["document"] is None and shown["bridge_status"]["problem"].startswith("damaged")


@pytest.mark.timeout(60)
def test_a_killed_bridge_is_shown_stale_until_gc() -> None:
    child = subprocess.run([sys.executable, "-c", DEAD_BRIDGE, "prices"], capture_output=True, text=True, timeout=30)
    name = child.stdout.strip()
    assert child.returncode == 0 and name.startswith(bs.PREFIX), child.stderr
    try:
        (found,) = bs.bridges([name])
        assert not found.alive and found.problem == f"stale: bridge process {found.pid} is gone"
        assert bs.marker(bs.bridged([found])[("topic", "prices")]) == "bridged in, stale"
        assert f"would remove {name}" in cli("gc", "--dry-run").stdout
    finally:
        if os.path.exists(f"/dev/shm/{name}"):
            os.unlink(f"/dev/shm/{name}")


@pytest.mark.timeout(60)
def test_top_shows_a_bridged_object_in_its_state(new_name: Callable[[], str]) -> None:
    topic = shmring.Topic.create("prices-" + new_name()[-8:], 4096)
    p = publisher(dict(EXPORTED, matched=False), topic.name)
    p.start()
    try:
        snap = observe.snapshot()
        (view,) = [v for v in snap.objects if v.name == topic.name]
        assert view.bridge is not None and view.bridge[0]["direction"] == "export"
        assert top.state_text(view).plain == "bridged out, link down"
        (alone,) = observe.snapshot([topic.name]).objects
        assert alone.bridge == view.bridge
        schema = json.loads(resources.files("shmring").joinpath("top.schema.json").read_text())
        jsonschema.validate(json.loads(json.dumps(observe.report(snap, snap))), schema)
    finally:
        p.close()
        topic.close()


@pytest.mark.timeout(60)
def test_a_bridge_publishes_its_status_while_it_runs(new_name: Callable[[], str]) -> None:
    pytest.importorskip("zenoh", reason="the zenoh extra (pip install shmring[zenoh]) is in the dev extra")
    from shmring.bridge import Bridge, parse_object

    name = new_name()
    with Bridge(export=[parse_object(f"topic:{name}")]) as bridge:
        segment = bridge.status_segment
        assert segment is not None
        (found,) = bs.bridges([segment])
        assert found.problem is None and found.document is not None and found.document["listen"] == []
        (entry,) = bs.bridged([found])[("topic", name)]
        assert (entry["direction"], entry["link"], entry["counters"]["sent"]) == ("export", "down", 0)
    assert not os.path.exists(f"/dev/shm/{segment}")
