"""``shmring top`` and ``shmring inspect NAME --watch``: rows and rates from
two snapshots, the keys, the live view in a pseudo-terminal and in tmux
against objects under a known load in real processes (rates, attached
processes and their command names, a stalled subscriber, a lock whose
holder died), and that watching changes not a byte of what it watches.

The load and the pseudo-terminal are in tests/_top_helpers.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import shmring
from shmring import observe, top

from _top_helpers import (
    SHM, Load, PtySession, checksums, frame_with, make_objects, mutex_holder, our_segments, start_load,
)

RATES = {"chan": 200.0, "queue": 100.0, "topic": 100.0}  # messages/s the load sends
PAYLOAD = 100


@pytest.fixture
def base() -> Iterator[str]:
    """A prefix for this test's object names; whatever has it is removed at the end."""
    prefix = f"t-top-{os.getpid()}-{time.monotonic_ns() % 100_000}"
    yield prefix
    left = our_segments(prefix)
    for name in left:
        (SHM / name).unlink(missing_ok=True)
    assert not left, f"left behind in /dev/shm: {sorted(left)}"


@pytest.fixture
def load(base: str) -> Iterator[Load]:
    objects = Load()
    try:
        make_objects(objects, base)
        yield objects
    finally:
        objects.close()


# -- rows and keys, without a terminal ---------------------------------------------------


@pytest.mark.timeout(30)
def test_rows_have_the_rates_of_the_counters_deltas(base: str) -> None:
    with shmring.Channel.create(f"{base}-a", 1 << 16, "block") as a, \
            shmring.Channel.create(f"{base}-b", 1 << 16, "block") as b:
        before = observe.snapshot([a.name, b.name])
        a.send_many([b"x" * 100] * 50)
        for _ in range(20):
            a.recv()
        after = observe.snapshot([a.name, b.name])
        rows = {r.view.name: r for r in top.build_rows(before, after)}
        elapsed = after.time - before.time
        assert rows[a.name].rates["messages_in"] == pytest.approx(50 / elapsed)
        assert rows[a.name].rates["messages_out"] == pytest.approx(20 / elapsed)
        assert rows[a.name].rates["bytes_in"] == pytest.approx(5000 / elapsed)
        assert rows[b.name].rates["messages_in"] == 0
        assert all(not r.rates for r in top.build_rows(None, after))  # first look: no rates yet
        chosen = top.select_rows(list(rows.values()), name_filter=base, sort="msgs_in", reverse=True)
        assert [r.view.name for r in chosen] == [a.name, b.name]
        assert [r.view.name for r in top.select_rows(list(rows.values()), name_filter="-b")] == [b.name]
        assert top.select_rows(list(rows.values()), kind="queue") == []


def test_keys_change_the_view() -> None:
    state = top.ViewState()
    for key in top.parse_keys("srk/ab\x7fc\r\x1b[Ap"):
        state.press(key)
    assert (state.sort, state.reverse, state.kind, state.name_filter) == ("kind", True, "channel", "ac")
    assert not state.show_processes and state.editing is None and not state.done
    state.press("/")
    for key in top.parse_keys("zz\x1b"):  # Esc: the filter typed so far is dropped
        state.press(key)
    assert state.name_filter == "ac" and state.editing is None
    assert "sort: kind (reversed)" in state.footer().plain
    state.press("q")
    assert state.done


# -- the live view in a pseudo-terminal (always runs) ------------------------------------


def _rows_of(frame: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", frame)


@pytest.mark.timeout(60)
def test_top_in_a_pseudo_terminal(base: str) -> None:
    with shmring.Channel.create(f"{base}-alpha", 4096, "block") as alpha, \
            shmring.Queue(name=f"{base}-beta") as beta:
        alpha.send(b"x" * 3000)  # a record of 3008 bytes: 73% full
        beta.put("item")
        session = PtySession([sys.executable, "-m", "shmring", "top", "--interval", "0.3", "--filter", base])
        try:
            first = _rows_of(frame_with(session, "filter: " + base, timeout=20))
            assert alpha.name in first and beta.name in first
            assert f"pid {os.getpid()}" in first and "73%" in first
            session.send("/" + "-beta\r")
            only_beta = _rows_of(frame_with(session, "filter: -beta "))
            assert beta.name in only_beta and alpha.name not in only_beta
            session.send("/" + base + "\rk")
            channels = _rows_of(frame_with(session, "kind: channel"))
            assert alpha.name in channels and beta.name not in channels
            session.send("q")
            assert session.ending() == "RESTORED True RC 0"  # q ended it, and the terminal is as it was
            assert "\x1b[?1049l" in session.output  # back from the alternate screen
        finally:
            assert session.close() == 0
        for stop in ("Ctrl-C", "SIGTERM"):
            interrupted = PtySession([sys.executable, "-m", "shmring", "top", "--interval", "0.3", "--filter", base])
            try:
                frame_with(interrupted, "filter: " + base, timeout=20)
                if stop == "Ctrl-C":
                    interrupted.send("\x03")
                else:
                    os.kill(interrupted.command_pid(), signal.SIGTERM)
                assert interrupted.ending() == "RESTORED True RC 0", stop
                assert "Traceback" not in interrupted.output and "\x1b[?1049l" in interrupted.output
            finally:
                assert interrupted.close() == 0


@pytest.mark.timeout(30)
def test_inspect_watch_in_a_pseudo_terminal(base: str) -> None:
    with shmring.Topic.create(f"{base}-news", capacity=1 << 16, policy="overwrite") as news:
        sub = news.subscribe()
        news.publisher().send(b"headline")
        session = PtySession([sys.executable, "-m", "shmring", "inspect", news.name, "--watch", "--interval", "0.2"])
        try:
            assert session.read_until(lambda out: out.count("shmring inspect ") >= 3, 20), session.output[-3000:]
            shown = _rows_of(session.output)
            assert f"sub 0 pid {os.getpid()}" in shown and "lag 1 msgs" in shown
            assert re.search(rf"created by +pid {os.getpid()}", shown)  # the details below the row
            session.send("q")
            assert session.ending() == "RESTORED True RC 0"
        finally:
            assert session.close() == 0
            sub.close()


@pytest.mark.timeout(30)
def test_top_needs_a_terminal_or_once(base: str) -> None:
    with shmring.Channel.create(f"{base}-once", 4096, "block") as ch:
        ch.send(b"hello")
        result = subprocess.run([sys.executable, "-m", "shmring", "top"], capture_output=True, text=True, timeout=20)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.startswith("shmring: top needs a terminal") and len(result.stderr.splitlines()) == 1
        once = subprocess.run([sys.executable, "-m", "shmring", "top", "--once", "--interval", "0.1", "--filter", base],
                              capture_output=True, text=True, timeout=20)
        assert once.returncode == 0, once.stderr
        assert ch.name in once.stdout and f"pid {os.getpid()}" in once.stdout


# -- tmux, against objects under load ---------------------------------------------------


class Tmux:
    """A tmux server of our own (its own socket) with one 200x50 window running bash."""

    def __init__(self, exe: str, workdir: Path) -> None:
        self.exe, self.socket = exe, f"shmring-test-{os.getpid()}"
        self("new-session", "-d", "-x", "200", "-y", "50", "-s", "top", "-c", str(workdir),
             "env PS1='$ ' bash --norc --noprofile")

    def __call__(self, *args: str) -> str:
        result = subprocess.run([self.exe, "-L", self.socket, "-f", "/dev/null", *args], capture_output=True,
                                text=True, timeout=10)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def type(self, text: str, enter: bool = False) -> None:
        self("send-keys", "-t", "top", "-l", text)
        if enter:
            self("send-keys", "-t", "top", "Enter")

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "top")

    def wait_for(self, check: Callable[[str], bool], timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if check(screen):
                return screen
            assert time.monotonic() < deadline, f"tmux never showed what was expected:\n{screen}"
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run([self.exe, "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


def _tmux() -> str:
    exe = shutil.which("tmux")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is not installed: CI must install it (.ci/run, apt-get install tmux)")
        pytest.skip("tmux is not installed (test_top_in_a_pseudo_terminal drives top without it)")
    return exe


@dataclass
class Shown:
    """An object's row of a ``top`` screen (cells by column title) and its sub-rows'."""

    cells: dict[str, str]
    subs: list[dict[str, str]] = field(default_factory=list)

    def __getitem__(self, column: str) -> str:
        return self.cells[column]


def parse_screen(screen: str) -> dict[str, Shown]:
    """The objects of a ``top`` screen, by name, in the order shown."""
    lines = screen.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("NAME "))
    starts = [lines[header].index(title) for title in top.COLUMNS] + [10_000]
    objects: dict[str, Shown] = {}
    for line in lines[header + 1:]:
        if not line.strip() or line.startswith("q quit"):
            break
        cells = {t: line[starts[i]:starts[i + 1]].strip() for i, t in enumerate(top.COLUMNS)}
        if line.startswith("  "):
            list(objects.values())[-1].subs.append(cells)
        else:
            objects[cells["NAME"]] = Shown(cells)
    return objects


def _number(value: str) -> float:
    scale = {"k": 1e3, "M": 1e6, "G": 1e9, "KiB": 1024, "MiB": 1 << 20, "B": 1}
    for suffix, factor in scale.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def _check_rates(objects: dict[str, Shown], names: dict[str, str]) -> None:
    for label in ("chan", "queue", "topic"):
        row, want = objects[names[label]], RATES[label]
        for column in ("IN msg/s", "OUT msg/s"):
            assert want / 3 <= _number(row[column]) <= want * 3, (label, column, row)
    chan = objects[names["chan"]]
    assert _number(chan["IN B/s"]) == pytest.approx(_number(chan["IN msg/s"]) * PAYLOAD, rel=0.1)


def _check_processes(objects: dict[str, Shown], load: Load) -> None:
    owners = {"chan": ["tt-chan-prod", "tt-chan-cons"], "queue": ["tt-queue-prod", "tt-queue-cons"],
              "topic": ["tt-publisher", "tt-reader", "tt-stalled"]}
    for label, commands in owners.items():
        shown = {(s["NAME"], s["KIND"], s["STATE"]) for s in objects[load.names[label]].subs}
        for command in commands:
            assert (f"pid {load.children[command].pid}", command, "alive") in shown, (label, command, shown)
        assert (f"pid {os.getpid()}", Path(f"/proc/{os.getpid()}/comm").read_text().strip(), "alive") in shown
    lock = objects[load.names["lock"]]
    holder = load.children["tt-holder"].pid
    assert lock["STATE"] == f"OWNER DIED (holder {holder} dead)" and lock["PROCS"] == "2 (1 dead)"
    assert (f"pid {holder}", "?", "DEAD") in {(s["NAME"], s["KIND"], s["STATE"]) for s in lock.subs}
    topic_subs = {s["KIND"]: s for s in objects[load.names["topic"]].subs if s["NAME"].startswith("sub ")}
    assert topic_subs["tt-stalled"]["STATE"].endswith("(stalled)") and topic_subs["tt-stalled"]["OUT msg/s"] == "0"
    assert RATES["topic"] / 3 <= _number(topic_subs["tt-reader"]["OUT msg/s"]) <= RATES["topic"] * 3


def _object_order(screen: str) -> list[str]:
    return list(parse_screen(screen))


@pytest.mark.timeout(60)
def test_top_in_tmux_under_load(load: Load, base: str, tmp_path: Path) -> None:
    tmux = Tmux(_tmux(), tmp_path)
    try:
        start_load(load, RATES)
        tmux.type(f"stty -g > before; {sys.executable} -m shmring top --interval 0.5 --filter {base}; "
                  "echo TOP-EXIT=$?; stty -g > after; cmp -s before after && echo TTY-SAME", enter=True)

        def steady(screen: str) -> bool:  # every object shown, with rates over a full interval
            if "q quit" not in screen:
                return False
            objects = parse_screen(screen)
            return all(n in objects and objects[n]["IN msg/s"] for n in (load.names["chan"], load.names["topic"]))

        tmux.wait_for(steady)
        time.sleep(1.2)  # two more refreshes: the rates of whole intervals of steady work
        screen = tmux.wait_for(steady)
        capture = os.environ.get("SHMRING_TOP_CAPTURE")
        if capture:
            Path(capture).write_text(screen.rstrip() + "\n")  # the pane without its empty lines below
        objects = parse_screen(screen)
        _check_rates(objects, load.names)
        _check_processes(objects, load)

        names = sorted(load.names.values())
        assert _object_order(screen) == names
        tmux.type("r")
        assert _object_order(tmux.wait_for(lambda s: "sort: name (reversed)" in s)) == names[::-1]
        tmux.type("rs")  # by kind: channel, queue, sync (the Mutex), topic
        by_kind = tmux.wait_for(lambda s: "sort: kind " in s)
        assert _object_order(by_kind) == [load.names[k] for k in ("chan", "queue", "lock", "topic")]
        tmux.type("k")
        assert _object_order(tmux.wait_for(lambda s: "kind: channel" in s)) == [load.names["chan"]]
        tmux.type("k" * (len(top.KIND_FILTERS) - 1) + "/-topic")
        tmux.type("", enter=True)
        only_topic = tmux.wait_for(lambda s: "filter: -topic " in s and "kind: all" in s)
        assert _object_order(only_topic) == [load.names["topic"]]
        tmux.type("p")
        assert "pid " not in tmux.wait_for(lambda s: "sub 0" not in s)
        tmux.type("q")
        after = tmux.wait_for(lambda s: re.search(r"^TOP-EXIT=\d+$", s, re.M) is not None and s.rstrip().endswith("$"))
        assert "TOP-EXIT=0" in after and "TTY-SAME" in after, after
    finally:
        tmux.close()


# -- watching changes nothing ------------------------------------------------------------


def _quiesce(load: Load) -> None:
    """Objects with data in them and nobody working on them: a channel and a
    queue holding messages, a topic with a subscriber behind, a mutex whose
    holder was killed holding it."""
    load.objects["chan"].send_many([b"m" * 100] * 10)
    load.objects["chan"].recv()
    for i in range(5):
        load.objects["queue"].put(i)
    topic = load.objects["topic"]
    load.objects["sub"] = topic.subscribe()
    load.names["sub"] = load.names["topic"]  # closed with the others; its name is the topic's
    publisher = load.objects["pub"] = topic.publisher()
    load.names["pub"] = load.names["topic"]
    for i in range(7):
        publisher.send(b"p%d" % i)
    load.objects["sub"].recv()
    load.start("tt-holder", mutex_holder, load.names["lock"])
    load.wait_ready()
    load.kill("tt-holder")


def _watch_json_lines(name: str, count: int) -> list[dict[str, Any]]:
    proc = subprocess.Popen([sys.executable, "-m", "shmring", "inspect", name, "--watch", "--json", "--interval", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(count)]
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    return lines


@pytest.mark.timeout(60)
def test_watching_changes_nothing(load: Load, base: str) -> None:
    _quiesce(load)
    names = sorted(set(load.names.values()))
    before = checksums(names)
    rosters = {n: observe.look(n).processes for n in names}
    segments = our_segments(base)

    session = PtySession([sys.executable, "-m", "shmring", "top", "--interval", "0.2", "--filter", base])
    try:
        frame_with(session, "filter: " + base, timeout=20)
        session.read_until(lambda out: out.count("shmring top ") >= 6, 10)  # several refreshes
        assert "OWNER DIED" in _rows_of(session.frames()[-2])
        session.send("q")
        assert session.ending() == "RESTORED True RC 0"
    finally:
        assert session.close() == 0
    for name in names:
        lines = _watch_json_lines(name, 3)
        assert [line["name"] for line in lines] == [name] * 3
        assert all(set(line["rates"].values()) <= {0.0} for line in lines)  # nobody works on them
    text = subprocess.run(["timeout", "-s", "INT", "3", sys.executable, "-m", "shmring", "inspect", load.names["lock"],
                           "--watch", "--interval", "0.2"], capture_output=True, text=True, timeout=20)
    assert text.stdout.count("OWNER DIED") >= 2, text.stdout + text.stderr

    assert checksums(names) == before  # not a byte changed
    assert {n: observe.look(n).processes for n in names} == rosters  # nobody attached
    assert our_segments(base) == segments


@pytest.mark.timeout(30)
def test_watch_json_has_the_rates_and_stops_cleanly(base: str, tmp_path: Path) -> None:
    with shmring.Channel.create(f"{base}-w", 1 << 16, "block") as ch:
        proc = subprocess.Popen([sys.executable, "-m", "shmring", "inspect", ch.name, "--watch", "--json",
                                 "--interval", "0.3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        ch.send_many([b"z" * 10] * 300)
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert first["kind"] == "channel" and first["counters"]["messages_in"] == 0
        assert sum(line["rates"]["messages_in"] for line in lines) > 0
        assert lines[-1]["counters"]["messages_in"] == 300
    # the object is gone: the watch says so and ends
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 1 and err == f"shmring: {ch.name!r} was removed\n"
    missing = subprocess.run([sys.executable, "-m", "shmring", "inspect", f"{base}-none", "--watch"],
                             capture_output=True, text=True, timeout=20)
    assert missing.returncode == 1 and missing.stderr == f"shmring: no such segment: '{base}-none'\n"
