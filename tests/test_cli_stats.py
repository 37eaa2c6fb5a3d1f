"""``shmring stats``: every object's counters in the OpenMetrics text format
(parsed here by prometheus-client's own parser), served over HTTP with
``--serve``, or as JSON; ``shmring inspect`` of a named primitive; and the
JSON of ``top --once --json`` and ``inspect --watch --json`` against the
documented schema.

Runs the ``shmring`` console script as a real subprocess (tests/_cli_helpers.py).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from contextlib import closing
from importlib import resources
from typing import Any

import jsonschema
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import shmring

from _cli_helpers import assert_clean_failure, cli


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an OpenMetrics exposition: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def of(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, **labels: str) -> float:
    return found[(metric, tuple(sorted(labels.items())))]


def test_stats_exposition_parses_and_carries_the_counters(new_name: Callable[[], str]) -> None:
    with shmring.Queue(name=new_name()) as q, shmring.Channel.create(new_name(), 4096) as ch, \
            closing(shmring.Semaphore.create(new_name(), 5)) as sem, \
            shmring.Topic.create(new_name(), capacity=4096) as topic, topic.subscribe(), topic.publisher() as pub:
        for i in range(7):
            q.put(i)
        q.get()
        ch.send(b"0123456789")
        sem.acquire()
        pub.send(b"abc")
        pub.send(b"abc")
        result = cli("stats", "--prometheus")
        assert result.returncode == 0, result.stderr
        assert result.stdout.rstrip().endswith("# EOF")
        found = samples(result.stdout)
        qlabels = {"name": q.name, "kind": "queue"}
        assert of(found, "shmring_messages_in_total", **qlabels) == 7
        assert of(found, "shmring_messages_out_total", **qlabels) == 1
        assert of(found, "shmring_queue_items", name=q.name) == 6
        assert of(found, "shmring_attached_processes", **qlabels) == 1
        assert of(found, "shmring_lock_held", **qlabels) == 0
        clabels = {"name": ch.name, "kind": "channel"}
        assert of(found, "shmring_bytes_in_total", **clabels) == 10
        assert 0 < of(found, "shmring_fill_ratio", **clabels) < 1
        assert of(found, "shmring_waiting", side="consumers", **clabels) == 0
        assert of(found, "shmring_primitive_value", name=sem.name, kind="sync", primitive="Semaphore") == 4
        assert of(found, "shmring_messages_in_total", name=topic.name, kind="topic") == 2
        behind = [v for (n, labels), v in found.items()
                  if n == "shmring_topic_subscriber_behind_messages" and ("name", topic.name) in labels]
        assert behind == [2]


def test_stats_json_lists_every_object(name: str) -> None:
    with shmring.Channel.create(name, 4096) as ch:
        ch.send(b"x")
        result = cli("stats", "--json")
    assert result.returncode == 0, result.stderr
    entries = [e for e in json.loads(result.stdout) if e["name"] == name]
    assert len(entries) == 1 and entries[0]["counters"]["messages_in"] == 1


def test_stats_serves_metrics_over_http(name: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    with shmring.Queue(name=name) as q:
        q.put("item")
        proc = subprocess.Popen([sys.executable, "-m", "shmring", "stats", "--serve", "0"], stderr=subprocess.PIPE,
                                text=True, env=env)
        try:
            assert proc.stderr is not None
            ready, _, _ = select.select([proc.stderr], [], [], 20)
            assert ready, "stats --serve said nothing within 20 s"
            line = proc.stderr.readline()
            assert "/metrics" in line, line
            url = line.split()[4]
            accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
            with urllib.request.urlopen(urllib.request.Request(url, headers=accept), timeout=10) as reply:
                body = reply.read().decode()
            assert of(samples(body), "shmring_queue_items", name=name) == 1
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_stats_serve_on_a_taken_port_fails_cleanly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = cli("stats", "--serve", str(taken.getsockname()[1]))
    assert_clean_failure(result)
    assert "cannot serve on 127.0.0.1" in result.stderr


def test_stats_without_prometheus_client_names_the_extra() -> None:
    code = ("import sys; sys.modules['prometheus_client'] = None; sys.argv = ['shmring', 'stats']; "
            "from shmring.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert_clean_failure(result)
    assert "pip install 'shmring[metrics]'" in result.stderr


@pytest.mark.parametrize("args", [["--serve", "70000"], ["--serve", "http"], ["--bogus"]])
def test_stats_bad_options_fail_cleanly(args: list[str]) -> None:
    result = cli("stats", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Error:" in result.stderr


def _inspect_json(name: str) -> dict[str, Any]:
    result = cli("inspect", name, "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_inspect_shows_which_primitive_and_its_state(new_name: Callable[[], str]) -> None:
    mutex = shmring.Mutex.create(new_name())
    with closing(mutex), closing(shmring.Semaphore.create(new_name(), 3)) as sem:
        mutex.acquire()
        try:
            assert _inspect_json(mutex.name)["sync"] == {
                "primitive": "Mutex", "state": "consistent", "owner_died_pending": False, "sleepers": False,
                "holder_pid": os.getpid(), "holder_alive": True,
            }
        finally:
            mutex.release()
        assert _inspect_json(sem.name)["sync"] == {"primitive": "Semaphore", "value": 3, "waiters": 0}
        table = cli("inspect", sem.name).stdout
        assert "sync.primitive" in table and "Semaphore" in table


def test_inspect_lists_a_topics_subscribers(name: str) -> None:
    with shmring.Topic.create(name, capacity=4096) as topic, topic.subscribe(), topic.publisher() as pub:
        pub.send(b"1")
        subs = _inspect_json(name)["topic"]["subscriber_list"]
        assert [(s["pid"], s["behind_messages"]) for s in subs] == [(os.getpid(), 1)]
        assert f"pid {os.getpid()} (alive), behind 1 messages" in cli("inspect", name, env={"COLUMNS": "200"}).stdout


def _schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(resources.files("shmring").joinpath("top.schema.json").read_text())
    return data


def test_top_once_json_matches_the_schema(name: str) -> None:
    with shmring.Channel.create(name, 4096) as ch:
        ch.send(b"x" * 10)
        result = cli("top", "--once", "--json", "--interval", "0.2", "--filter", name)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, _schema())
    assert [o["name"] for o in doc["objects"]] == [name]
    (obj,) = doc["objects"]
    assert obj["counters"]["bytes_in"] == 10 and obj["rates"] == {
        "messages_in": 0.0, "messages_out": 0.0, "bytes_in": 0.0, "bytes_out": 0.0}
    assert 0.2 <= doc["interval"] < 5


def test_inspect_watch_json_lines_match_the_schema(name: str) -> None:
    schema = _schema()
    one_object = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": "#/$defs/object"}
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    with shmring.Queue(name=name) as q:
        proc = subprocess.Popen([sys.executable, "-m", "shmring", "inspect", name, "--watch", "--json",
                                 "--interval", "0.1"], stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert proc.stdout is not None
            for i in range(3):
                q.put(i)
                ready, _, _ = select.select([proc.stdout], [], [], 20)
                assert ready, "no line within 20 s"
                line = json.loads(proc.stdout.readline())
                jsonschema.validate(line, one_object)
                assert line["name"] == name and line["kind"] == "queue"
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0


def test_top_json_needs_once() -> None:
    result = cli("top", "--json")
    assert result.returncode == 2 and "--json goes with --once" in result.stderr
