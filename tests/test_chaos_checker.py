"""The kill storms' checker (reliability/chaos): it accepts clean logs,
explains what a killed consumer lost and nothing else, and flags losses,
duplicates, corruption, phantoms, reordering, stale topic messages, torn
log lines; then a very short real storm of each kind, with planted faults."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reliability.chaos.checker import FAILURES, check, explain  # noqa: E402
from reliability.chaos.logformat import line  # noqa: E402


class Storm:
    """A hand-made storm log: one producer, two consumers (a topic: two subscribers)."""

    def __init__(self, path: Path, kind: str = "queue") -> None:
        self.path, self.kind = path, kind
        self.group = "t" if kind == "topic" else "q"
        self.files: dict[str, list[str]] = {}
        self.started: dict[str, int] = {}

    def log(self, slot: str, kind: str, *fields: object) -> Storm:
        self.files.setdefault(slot, []).append(line(kind, *fields))
        return self

    def start(self, slot: str, inc: int, t: int) -> Storm:
        return self.log(slot, "S", inc, 1000 + inc, t)

    def put(self, n: int, t_begin: int, t_return: int, crc: int | None = None, outcome: str = "R") -> Storm:
        """Item n of q.p0#1 (its crc is n unless told), put between the two times."""
        self.log(f"{self.group}.p0", "B", 1, n, 10, n if crc is None else crc, t_begin)
        return self.log(f"{self.group}.p0", outcome, 1, n, 1, t_return) if outcome else self

    def get(self, slot: str, inc: int, ns: list[int], t_wait: int, t_got: int, crc: int | None = None) -> Storm:
        self.log(slot, "W", inc, max(len(ns), 1), t_wait)
        for n in ns:
            self.log(slot, "G", inc, f"{self.group}.p0", 1, n, 10, n if crc is None else crc, len(ns), t_got)
        return self

    def kill(self, slot: str, inc: int, t: int) -> Storm:
        return self.log("supervisor", "K", 0, slot, inc, 2000 + inc, t)

    def check(self) -> dict[str, Any]:
        self.path.mkdir(exist_ok=True)
        consumers = [f"{self.group}.c0", f"{self.group}.c1"]
        scenario = {"kind": self.kind, "groups": {self.group: {"producers": [f"{self.group}.p0"],
                                                               "consumers": consumers}}}
        (self.path / "scenario.json").write_text(json.dumps(scenario))
        for slot, lines in self.files.items():
            (self.path / f"{slot}.log").write_text("\n" + "".join(lines))
        return check(str(self.path))[self.group]


def failures(counts: dict[str, Any]) -> dict[str, int]:
    return {k: counts[k] for k in FAILURES if counts[k]}


@pytest.fixture
def storm(tmp_path: Path) -> Storm:
    """Three items put one after the other; q.c0 takes 0, then 1 and 2 together."""
    s = Storm(tmp_path).start("q.p0", 1, 0).start("q.c0", 1, 0)
    s.put(0, 10, 20).put(1, 30, 40).put(2, 50, 60)
    return s


def test_a_clean_log_passes(storm: Storm) -> None:
    counts = storm.get("q.c0", 1, [0], 5, 25).get("q.c0", 1, [1, 2], 45, 65).check()
    assert failures(counts) == {}
    assert (counts["committed"], counts["delivered"], counts["lost"]) == (3, 3, 0)


def test_a_committed_item_never_delivered_is_lost(storm: Storm) -> None:
    counts = storm.get("q.c0", 1, [0], 5, 25).get("q.c0", 1, [2], 45, 65).check()
    assert failures(counts) == {"lost_unexplained": 1}
    assert "('q.p0', 1, 1)" in counts["examples"][0]


def test_a_consumer_killed_in_its_get_explains_one_loss(storm: Storm) -> None:
    # q.c1 began a get at 42, while item 1 was the oldest, and died at 48 before logging it.
    storm.get("q.c0", 1, [0], 5, 25).get("q.c0", 1, [2], 55, 65)
    counts = storm.start("q.c1", 1, 0).log("q.c1", "W", 1, 1, 42).kill("q.c1", 1, 48).check()
    assert failures(counts) == {}
    assert (counts["lost"], counts["lost_explained"], counts["killed_in_get"]) == (1, 1, 1)


def test_a_killed_get_explains_no_loss_outside_its_window(storm: Storm) -> None:
    # Item 2, put after item 1, was delivered at 52: a get begun at 53 came too late for item 1.
    storm.get("q.c0", 1, [0], 5, 25).get("q.c0", 1, [2], 45, 52)
    counts = storm.start("q.c1", 1, 0).log("q.c1", "W", 1, 1, 53).kill("q.c1", 1, 70).check()
    assert failures(counts) == {"lost_unexplained": 1}
    # Nor a get that ended before item 1's put began.
    storm.files["q.c1"] = []
    storm.files["supervisor"] = []
    counts = storm.start("q.c1", 1, 0).log("q.c1", "W", 1, 1, 2).kill("q.c1", 1, 28).check()
    assert failures(counts) == {"lost_unexplained": 1}


def test_one_killed_get_explains_only_as_many_items_as_it_asked_for(storm: Storm) -> None:
    storm.get("q.c0", 1, [0], 5, 25)
    storm.start("q.c1", 1, 0).log("q.c1", "W", 1, 1, 42).kill("q.c1", 1, 70)
    assert failures(storm.check()) == {"lost_unexplained": 1}  # items 1 and 2 lost, one get of one item


def test_a_torn_line_is_not_logged(storm: Storm) -> None:
    # q.c1 died while writing the line of item 1: the line has no ";", the get stays open.
    storm.get("q.c0", 1, [0], 5, 25).get("q.c0", 1, [2], 55, 65).start("q.c1", 1, 0)
    storm.log("q.c1", "W", 1, 1, 42).kill("q.c1", 1, 48)
    storm.files["q.c1"].append("G 1 q.p0 1 1 10 1 1 4")
    counts = storm.check()
    assert failures(counts) == {}
    assert counts["lost_explained"] == 1


def test_a_duplicate_is_flagged(storm: Storm) -> None:
    storm.get("q.c0", 1, [0], 5, 25).get("q.c0", 1, [1, 2], 45, 65)
    counts = storm.start("q.c1", 1, 0).get("q.c1", 1, [1], 44, 66).check()
    assert failures(counts) == {"duplicated": 1}


def test_a_corrupted_payload_is_flagged(storm: Storm) -> None:
    storm.get("q.c0", 1, [0], 5, 25).get("q.c0", 1, [1], 45, 65)
    counts = storm.get("q.c0", 1, [2], 66, 67, crc=12345).check()
    assert failures(counts) == {"corrupted": 1}
    storm.files["q.c0"].append(line("C", 1, 68, "deadbeef"))  # bytes that are not an item at all
    assert failures(storm.check()) == {"corrupted": 2}


def test_an_item_whose_put_failed_must_not_arrive(storm: Storm) -> None:
    storm.put(3, 70, 80, outcome="X")
    storm.get("q.c0", 1, [0], 5, 25).get("q.c0", 1, [1, 2], 45, 65)
    assert failures(storm.get("q.c0", 1, [3], 85, 90).check()) == {"phantom": 1}


def test_an_item_in_flight_may_arrive_or_not(storm: Storm) -> None:
    storm.put(3, 70, 0, outcome="").put(4, 71, 0, outcome="").kill("q.p0", 1, 75)
    storm.get("q.c0", 1, [0], 5, 25).get("q.c0", 1, [1, 2], 45, 65)
    counts = storm.get("q.c0", 1, [3], 85, 90).check()
    assert failures(counts) == {}
    assert (counts["in_flight"], counts["in_flight_delivered"], counts["killed_in_put"]) == (2, 1, 1)


def test_fifo_order_is_checked_across_consumers(storm: Storm) -> None:
    # Item 2 (put after item 0 returned) was delivered at 62, before the get of item 0 began (63).
    storm.get("q.c0", 1, [1, 2], 45, 62).start("q.c1", 1, 0)
    assert failures(storm.get("q.c1", 1, [0], 63, 64).check()) == {"reordered": 1}


def test_supervisor_events_are_failures(storm: Storm) -> None:
    storm.get("q.c0", 1, [0], 5, 25).get("q.c0", 1, [1, 2], 45, 65)
    storm.log("supervisor", "Z", 0, "q.c0", 1, 1001, 256, 70).log("supervisor", "H", 0, "q", 80, "stuck")
    storm.log("supervisor", "L", 0, "q", 90, "shmring-1-abc.q3").log("q.c0", "E", 1, 66, "ValueError")
    assert failures(storm.check()) == {"errors": 2, "wedges": 1, "leaked": 1}


def test_losses_are_matched_to_killed_gets_at_best() -> None:
    # Lost items (put began, first later delivery); killed gets (began, killed, items asked for).
    # Item 0 fits either get, item 1 only the first: matched greedily, item 0 would take it.
    lost = [(10, 100, "item 0"), (10, 45, "item 1")]
    assert explain(lost, [(40, 50, 1), (60, 70, 1)]) == {0, 1}
    assert explain(lost, [(40, 50, 1)]) == {0}
    assert explain(lost, [(40, 50, 2)]) == {0, 1}
    assert explain(lost, [(40, 50, 1), (110, 120, 1), (1, 9, 1)]) == {0}  # began too late; died too early


@pytest.mark.parametrize(("stats", "expected"), [
    ({"items": 0, "bytes": 0, "puts": 3, "gets": 3}, {}),
    ({"items": 1, "bytes": 10, "puts": 4, "gets": 3}, {"miscounted": 4}),  # 4 puts: only 3 were begun
    ({"items": 0, "bytes": 0, "puts": 2, "gets": 2}, {"miscounted": 1}),  # a committed item never counted
])
def test_an_emptied_queue_counts_what_the_logs_say(storm: Storm, stats: dict[str, int],
                                                   expected: dict[str, int]) -> None:
    storm.get("q.c0", 1, [0], 5, 25).get("q.c0", 1, [1, 2], 45, 65)
    storm.path.mkdir(exist_ok=True)
    (storm.path / "final-stats.json").write_text(json.dumps({"q": stats}))
    assert failures(storm.check()) == expected


@pytest.fixture
def topic(tmp_path: Path) -> Storm:
    """Five messages, published at 10, 20, ... 50; t.c0 subscribed at 5 and saw them all."""
    s = Storm(tmp_path, "topic").start("t.p0", 1, 0)
    for n in range(5):
        s.put(n, 10 * n + 10, 10 * n + 12)
    s.start("t.c0", 1, 0).log("t.c0", "U", 1, 4, 5)
    for n in range(5):
        s.get("t.c0", 1, [n], 10 * n + 9, 10 * n + 14)
    return s.log("t.c0", "Q", 1, 100)


def test_a_topic_subscriber_sees_everything_from_its_subscription_on(topic: Storm) -> None:
    # t.c1 subscribed at 25..27 and was killed after two messages: what came before and after is not owed.
    topic.start("t.c1", 1, 20).log("t.c1", "U", 1, 25, 27).get("t.c1", 1, [2, 3], 28, 42).kill("t.c1", 1, 45)
    counts = topic.check()
    assert failures(counts) == {}
    assert (counts["committed"], counts["delivered"]) == (5, 7)


@pytest.mark.parametrize(("seen", "quit", "expected"), [
    ([2, 4], False, {"lost_unexplained": 1}),  # a gap: message 3
    ([3, 4], False, {"lost_unexplained": 1}),  # message 2 was published (30) after subscribe() returned (27)
    ([2, 3], True, {"lost_unexplained": 1}),  # it lived to the end: message 4 is owed
    ([1, 2], False, {"stale": 1}),  # message 1 was published (22) before subscribe() was called (25)
    ([2, 3, 3], False, {"duplicated": 1}),
    ([3, 2], False, {"reordered": 1, "lost_unexplained": 1}),
])
def test_topic_failures(topic: Storm, seen: list[int], quit: bool, expected: dict[str, int]) -> None:
    topic.start("t.c1", 1, 20).log("t.c1", "U", 1, 25, 27)
    for n in seen:
        topic.get("t.c1", 1, [n], 28 + n, 29 + n)
    if quit:
        topic.log("t.c1", "Q", 1, 100)
    else:
        topic.kill("t.c1", 1, 99)
    assert failures(topic.check()) == expected


@pytest.mark.timeout(240)
def test_a_short_real_storm_of_each_kind_passes_and_planted_faults_are_caught(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    only = ["--only", "queue-unbounded", "--only", "channel", "--only", "topic-1x3"]
    proc = subprocess.run([sys.executable, "-m", "reliability.chaos", "run", "--kills", "40", "--plant-fault",
                           "--out", str(tmp_path / "logs"), "--json", str(summary), "--wedge-s", "20", *only],
                          cwd=ROOT, capture_output=True, text=True, timeout=230)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(summary.read_text())
    assert [s["name"] for s in report["scenarios"]] == ["queue-unbounded-2x2", "channel-3x(1x1)", "topic-1x3"]
    for scenario in report["scenarios"]:
        assert scenario["ok"], scenario
        assert scenario["counts"]["kills"] >= 10
        assert scenario["counts"]["delivered"] > 0
        assert all(r["plant"]["ok"] for r in scenario["rounds"]), scenario
