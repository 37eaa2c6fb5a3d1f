"""``shmring bridge`` without a network: its wire header byte for byte, the
gap bookkeeping, and its one-line errors (bad objects, Zenoh missing).  The
bridge between hosts is tested in tests/bridge/ (make test-bridge)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shmring.bridge.wire import KIND_PICKLE, Header, Streams, WireError, topic_key

from _bridge_helpers import FakeSample, close_importer, drain
from _cli_helpers import cli


def test_the_header_is_24_little_endian_bytes_as_documented() -> None:
    raw = Header(KIND_PICKLE, 0x0102030405060708, 0x1112131415161718).pack()
    assert raw == (b"SR" + bytes([1, 1]) + bytes(4) + bytes(range(8, 0, -1))
                   + bytes([0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11]))
    assert Header.unpack(raw) == Header(KIND_PICKLE, 0x0102030405060708, 0x1112131415161718)
    assert topic_key("prices") == "shmring/topic/prices"


@pytest.mark.parametrize("raw", [None, b"", b"SR" + bytes(21), b"XX" + bytes([1, 0]) + bytes(20),
                                 b"SR" + bytes([2, 0]) + bytes(20), b"SR" + bytes([1, 7]) + bytes(20)])
def test_a_header_that_is_not_ours_is_refused(raw: bytes | None) -> None:
    with pytest.raises(WireError):
        Header.unpack(raw)


def test_streams_report_gaps_and_drop_what_came_before() -> None:
    streams = Streams()
    first = streams.judge(7, 100)
    assert (first.deliver, first.missed, first.new_stream) == (True, 0, True)
    assert streams.judge(7, 101).missed == 0
    gap = streams.judge(7, 105)
    assert (gap.deliver, gap.missed) == (True, 3)
    assert streams.judge(7, 104).deliver is False  # stale: never delivered twice
    assert streams.judge(7, 105).deliver is False  # a duplicate
    assert streams.judge(9, 0).new_stream and len(streams) == 2


@pytest.mark.parametrize(("args", "message"), [
    ((), "nothing to bridge"),
    (("--export", "pipe:jobs"), "expected KIND:NAME with KIND one of topic, channel, queue"),
    (("--export", "prices"), "expected KIND:NAME"),
    (("--import", "topic:no/slash"), "invalid segment name"),
    (("--export", "topic:a", "--import", "topic:a"), "both exported and imported"),
    (("--import", "topic:a", "--config", "/nonexistent/bridge.json"), "config /nonexistent/bridge.json"),
])
def test_bad_options_fail_in_one_line(args: tuple[str, ...], message: str) -> None:
    result = cli("bridge", *args)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_without_zenoh_it_names_the_extra(tmp_path: Path) -> None:
    hidden = tmp_path / "zenoh"
    hidden.mkdir()
    (hidden / "__init__.py").write_text("raise ImportError('no zenoh here')\n")
    result = cli("bridge", "--import", "topic:a", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.strip() == "shmring: the bridge needs Zenoh: pip install shmring[zenoh]"


def test_the_package_and_the_cli_load_without_zenoh() -> None:
    code = "import sys, shmring, shmring.cli, shmring.bridge; print('zenoh' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "False", result.stderr


class _Session:
    """A Zenoh session that is not one: the importer only declares a subscriber."""

    def declare_subscriber(self, *_: object) -> object:
        return object()


def test_the_importer_delivers_in_order_once_and_counts_the_rest(name: str) -> None:
    """The importer's samples taken in one batch, in-order runs and the
    careful way mixed: what reaches the local topic, and what is counted."""
    pytest.importorskip("zenoh", reason="the importer's handler comes from the zenoh extra")
    from shmring.bridge.topic import ObjectSpec, TopicImporter

    def sample(producer: int, seq: int, attachment: bytes | None = b"header") -> FakeSample:
        header = Header(0, producer, seq).pack() if attachment == b"header" else attachment
        return FakeSample(b"%d/%d" % (producer, seq), header)

    last = (1 << 64) - 1  # the last seq of a stream: none follows it in order
    importer = TopicImporter(_Session(), ObjectSpec("topic", name))  # type: ignore[arg-type]
    subscription = importer.topic.subscribe()
    try:
        importer._take_many([sample(7, 4, b""), sample(7, 5), sample(7, 6), sample(7, 7), sample(7, 9), sample(7, 8),
                             sample(7, 10, b""), sample(7, 10), sample(7, 11, None), sample(7, 11),
                             sample(8, 0), sample(7, 12), sample(7, 12)])
        importer._take_many([sample(9, last - 1), sample(9, last), sample(9, last)])
        delivered, missed = drain(subscription)
        status = importer.status()
    finally:
        subscription.close()
        close_importer(importer)
    assert delivered == [b"7/5", b"7/6", b"7/7", b"7/9", b"7/10", b"7/11", b"8/0", b"7/12",
                         b"9/%d" % (last - 1), b"9/%d" % last]
    assert {k: status[k] for k in ("delivered", "missed", "gaps", "duplicates", "rejected")} == {
        "delivered": 10, "missed": 1, "gaps": 1, "duplicates": 3, "rejected": 3}
    assert missed == [1]  # marked in the local topic: its subscriber raised Lagged(1)
    assert status["streams"] == {f"{7:016x}": 12, f"{8:016x}": 0, f"{9:016x}": last}


class _PublishingSession:
    """A Zenoh session that is not one: the exporter only declares a publisher."""

    def declare_publisher(self, *_: object, **__: object) -> object:
        return object()


@pytest.mark.parametrize("spin_us", [None, 0, 300])
def test_the_exporter_reads_with_the_spin_asked_for(name: str, spin_us: int | None) -> None:
    """--spin-us sets how long the exporter's subscription polls before it
    sleeps; without it, the topic's own setting holds."""
    pytest.importorskip("zenoh", reason="the exporter's congestion control comes from the zenoh extra")
    from shmring import Topic
    from shmring.bridge import Bridge
    from shmring.bridge.topic import ObjectSpec

    topic = Topic.create(name, 4096, spin_ns=1234)
    try:
        bridge = Bridge(export=[ObjectSpec("topic", name)], spin_us=spin_us, publish_status=False)
        exporter = bridge._exporter(_PublishingSession(), ObjectSpec("topic", name))  # type: ignore[arg-type]
        try:
            assert exporter._sub.spin_ns == (1234 if spin_us is None else spin_us * 1000)
        finally:
            exporter._sub.close()
            exporter.topic.close()
    finally:
        topic.close()


def test_a_spin_out_of_range_fails_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bridge.json"
    config.write_text('{"import": ["topic:a"], "spin_us": 60000}')
    result = cli("bridge", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.strip() == "shmring: an exporter's spin must be between 0 and 50000 µs, not 60000"
    result = cli("bridge", "--import", "topic:a", "--spin-us", "-1")
    assert result.returncode != 0 and "--spin-us" in result.stderr and "Traceback" not in result.stderr
