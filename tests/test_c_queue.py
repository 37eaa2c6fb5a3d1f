"""Plain C peers of a shmring.Queue (examples/c_queue_peer.c, built with
warnings as errors as C and as C++): C producers with Python consumers and
the other way round, on a small bounded ring (many wrap-arounds)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import shmring

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exe = tmp_path_factory.mktemp("cq") / "c_queue_peer"
    proc = subprocess.run(
        ["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I", shmring.get_include(),
         str(ROOT / "examples" / "c_queue_peer.c"), "-o", str(exe)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return exe


def test_builds_as_cpp(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["g++", "-x", "c++", "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-I", shmring.get_include(),
         str(ROOT / "examples" / "c_queue_peer.c"), "-o", str(tmp_path / "cxx_peer")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def expected(seq: int, ident: int) -> bytes:
    n = seq % 300
    return ident.to_bytes(8, "little") + seq.to_bytes(8, "little") + bytes([seq % 251]) * n


@pytest.mark.timeout(60)
def test_c_producers_python_consumer(peer: Path, name: str) -> None:
    count = 20_000
    with shmring.Queue(max_size_bytes=4096, name=name) as q:
        producers = [subprocess.Popen([str(peer), "put", name, str(count), str(i)]) for i in range(2)]
        try:
            nxt = [0, 0]
            for _ in range(2 * count):
                msg = q.get(timeout=20)  # a C 'B' record comes back as bytes
                ident = int.from_bytes(msg[:8], "little")
                seq = int.from_bytes(msg[8:16], "little")
                assert seq == nxt[ident] and msg == expected(seq, ident)  # per-producer order
                nxt[ident] += 1
            assert [p.wait(timeout=20) for p in producers] == [0, 0]
        finally:
            for p in producers:
                p.kill()
        assert nxt == [count, count] and q.empty() and q.stats()["puts"] == 2 * count


@pytest.mark.timeout(60)
def test_python_producer_c_consumers(peer: Path, name: str) -> None:
    count = 10_000
    with shmring.Queue(max_size_bytes=4096, name=name) as q:
        consumers = [
            subprocess.Popen([str(peer), "get", name, str(count)], stdout=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        try:
            for seq in range(2 * count):
                q.put_bytes(expected(seq, 0), timeout=20)
            outs = [c.communicate(timeout=20)[0].split() for c in consumers]
        finally:
            for c in consumers:
                c.kill()
        assert [c.returncode for c in consumers] == [0, 0]
        assert all(o[:2] == ["got", str(count)] for o in outs)
        assert sum(int(o[2]) for o in outs) == sum(range(2 * count))  # each exactly once
        assert q.empty()


# -- the C API on an empty ring (tests/c/queue_ops.c) ---------------------------

SMALL = 256


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exe = tmp_path_factory.mktemp("cq") / "queue_ops"
    proc = subprocess.run(
        ["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I", shmring.get_include(),
         str(ROOT / "tests" / "c" / "queue_ops.c"), "-o", str(exe)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return exe


def run_ops(exe: Path, name: str, ops: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), name, *ops], capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(60)
def test_c_put_places_a_record_that_fits_an_empty_ring(ops: Path, name: str) -> None:
    """Regression (issue 9, item 4) through shmring_queue_put: the 4112-byte
    record after a 4072-byte one timed out on an empty 8 KiB ring."""
    with shmring.Queue(max_size_bytes=8192, name=name) as q:
        run = run_ops(ops, name, ["p4072", "g4072", "p4112"])
        assert run.returncode == 0 and run.stdout == "ok\n", run.stdout + run.stderr
        assert q.get(timeout=5) == bytes([4112 % 251]) * 4112


@pytest.mark.timeout(60)
def test_a_c_peer_reads_an_out_of_band_item_as_its_pieces(ops: Path, name: str) -> None:
    """A bytearray item of 20,000 bytes travels out of band (docs/PROTOCOL.md
    5.2): the C peer takes the record with its tag and reads its one buffer
    with shmring/oob.h, 64-byte aligned in the peer's aligned copy."""
    with shmring.Queue(max_size_bytes=1 << 16, name=name) as q:
        q.put(bytearray([20000 % 251]) * 20000)
        run = run_ops(ops, name, ["o20000"])
        assert run.returncode == 0 and run.stdout == "ok\n", run.stdout + run.stderr
        assert q.qsize() == 0


def _record(need: int) -> int:
    """Payload bytes of a record of `need` ring bytes."""
    return need - 8


@pytest.mark.timeout(60)
def test_c_put_at_every_offset_of_an_empty_ring(ops: Path, name: str) -> None:
    """The C peer parks the tail of an empty 256-byte ring at every offset and
    puts records of 8 bytes, one position short of the end, an exact fit, one
    position past the end, and the whole ring; each is placed at once and
    taken back intact; a record behind another one that has no room times
    out instead."""
    script: list[str] = []
    at = 0
    for pos in range(0, SMALL, 8):
        contig = SMALL - pos
        for need in sorted({n for n in (8, contig - 8, contig, contig + 8, SMALL) if 8 <= n <= SMALL}):
            if pos < at:  # to the end first (an exact fit), then to pos
                script += [f"p{_record(SMALL - at)}", f"g{_record(SMALL - at)}"]
                at = 0
            if pos > at:
                script += [f"p{_record(pos - at)}", f"g{_record(pos - at)}"]
            script += [f"p{_record(need)}", f"g{_record(need)}"]
            at = (pos + need) % SMALL if need <= contig else need % SMALL
    script += ["p8", f"f{_record(SMALL - 8)}", "g8"]  # not empty: waits (and times out)
    with shmring.Queue(max_size_bytes=SMALL, name=name) as q:
        run = run_ops(ops, name, script)
        assert run.returncode == 0 and run.stdout == "ok\n", run.stdout + run.stderr
        assert q.empty() and q.stats()["used_bytes"] == 0
