"""Segment: create/open, validation of untrusted headers, lifetime, pickling."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmring
from shmring import _core

SHM = Path("/dev/shm")
HEADER = _core.HEADER_SIZE  # header fields, then the roster: the payload starts on a page
FIELDS = 128  # the header fields

# Offsets of the header fields (include/shmring.h, docs/PROTOCOL.md).
OFF_VERSION, OFF_ABI, OFF_KIND, OFF_HEADER_SIZE, OFF_TOTAL = 8, 12, 16, 20, 24
OFF_PID, OFF_CHECKSUM = 32, 64


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def poke(name: str, offset: int, data: bytes, fix_checksum: bool = False) -> None:
    """Write raw bytes into a segment's file, as a hostile peer could."""
    fd = os.open(SHM / name, os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
        if fix_checksum:
            header = os.pread(fd, HEADER, 0)
            os.pwrite(fd, struct.pack("<Q", fnv1a64(header[8:64])), OFF_CHECKSUM)
    finally:
        os.close(fd)


@contextmanager
def raw_file(name: str, data: bytes) -> Iterator[None]:
    """A file ``name`` in /dev/shm holding ``data``, made without shmring
    (as another program could); removed at the end of the block."""
    fd = os.open(SHM / name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    try:
        yield
    finally:
        (SHM / name).unlink()


# -- creating and opening ---------------------------------------------------


def test_round_trip_between_handles(name: str) -> None:
    with shmring.Segment.create(name, 1000) as seg:
        assert seg.name == name and seg.size == 1000 and seg.owner
        assert len(seg.buf) == 1000 and not seg.buf.readonly
        seg.buf[:5] = b"hello"
        with shmring.Segment.open("/" + name) as other:  # a leading '/' is accepted
            assert other.name == name and not other.owner
            assert bytes(other.buf[:5]) == b"hello"
            other.buf[995:] = b"world"
        assert bytes(seg.buf[995:]) == b"world"
        assert (SHM / name).exists()  # a non-owner's with-block does not unlink
    assert not (SHM / name).exists()  # the owner's does


def test_header_records_creator(name: str) -> None:
    before = time.time_ns()
    with shmring.Segment.create(name, 64) as seg:
        info = seg.info()
        assert info.kind == "segment" and info.size == 64 and info.total_size == 64 + HEADER
        assert info.version == _core.LAYOUT_VERSION
        assert info.creator_pid == os.getpid() and info.creator_uid == os.geteuid()
        assert info.creator_start == _core.process_start_time(os.getpid())
        assert info.alive
        assert before - 10**9 <= info.created_ns <= time.time_ns()
        assert os.stat(SHM / name).st_size == 64 + HEADER  # the true size, no page rounding


def test_unique_name_when_none() -> None:
    with shmring.Segment.create(None, 10) as a, shmring.Segment.create(None, 10) as b:
        assert a.name != b.name and a.name.startswith(f"shmring-{os.getpid()}-")
        assert (SHM / a.name).exists()


def test_default_mode_is_0600_whatever_the_umask(new_name: Callable[[], str]) -> None:
    old = os.umask(0o022)
    try:
        with shmring.Segment.create(new_name(), 10) as seg:
            assert os.stat(SHM / seg.name).st_mode & 0o777 == 0o600
        os.umask(0o077)
        with shmring.Segment.create(new_name(), 10, mode=0o644) as seg:
            assert os.stat(SHM / seg.name).st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_create_existing_name_is_file_exists_and_leaves_it_alone(segment: shmring.Segment) -> None:
    segment.buf[:4] = b"keep"
    with pytest.raises(FileExistsError):
        shmring.Segment.create(segment.name, 4096)
    with pytest.raises(FileExistsError):
        shmring.Segment.create(segment.name, 10)
    assert bytes(segment.buf[:4]) == b"keep"
    with shmring.Segment.open(segment.name) as again:
        assert again.size == 4096


def test_open_missing_is_file_not_found(name: str) -> None:
    with pytest.raises(FileNotFoundError) as info:
        shmring.Segment.open(name)
    assert name in str(info.value)


@pytest.mark.parametrize(
    "bad", ["", "/", "a/b", ".hidden", "/.x", "sp ace", "ünï", "x" * 255, "nul\0byte", "-" * 0]
)
def test_invalid_names(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid segment name"):
        shmring.Segment.create(bad, 10)
    with pytest.raises(ValueError, match="invalid segment name"):
        shmring.Segment.open(bad)


def test_longest_valid_name() -> None:
    name = f"t{os.getpid()}-" + "x" * (254 - len(f"t{os.getpid()}-"))
    with shmring.Segment.create(name, 10) as seg:
        assert seg.name == name


@pytest.mark.parametrize("bad_name", [None, 3, b"bytes"])
def test_open_wrong_type(bad_name: object) -> None:
    with pytest.raises(TypeError):
        shmring.Segment.open(bad_name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "exc"), [(0, ValueError), (-1, ValueError), (1.5, TypeError), ("10", TypeError), (True, TypeError)]
)
def test_invalid_sizes(name: str, size: object, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        shmring.Segment.create(name, size)  # type: ignore[arg-type]
    assert not (SHM / name).exists()


@pytest.mark.parametrize("mode", [-1, 0o1000, 0o4755, "0600"])
def test_invalid_modes(name: str, mode: object) -> None:
    with pytest.raises(ValueError):
        shmring.Segment.create(name, 10, mode=mode)  # type: ignore[arg-type]
    assert not (SHM / name).exists()


def test_impossible_size_fails_cleanly(name: str) -> None:
    with pytest.raises((OSError, ValueError)):
        shmring.Segment.create(name, 1 << 62)
    assert not (SHM / name).exists()


def test_constructor_is_not_public() -> None:
    with pytest.raises(TypeError, match="Segment.create"):
        shmring.Segment()


# -- untrusted headers ------------------------------------------------------


def test_foreign_file_is_refused_and_not_unlinked(name: str) -> None:
    with raw_file(name, b"this is somebody else's data" * 10):
        with pytest.raises(shmring.ForeignSegmentError) as info:
            shmring.Segment.open(name)
        assert isinstance(info.value, ValueError) and isinstance(info.value, shmring.SegmentError)
        assert info.value.name == name and name in str(info.value)
        assert (SHM / name).exists()  # a failed attach never removes another's object


def test_tiny_foreign_file(name: str) -> None:
    with raw_file(name, b"x"), pytest.raises(shmring.ForeignSegmentError):
        shmring.Segment.open(name)


def test_empty_object_is_not_ready(name: str) -> None:
    with raw_file(name, b""):
        t0 = time.monotonic()
        with pytest.raises(shmring.SegmentNotReadyError, match="not yet initialised"):
            shmring.Segment.open(name)
        assert time.monotonic() - t0 < 2.0


def test_unpublished_header_is_not_ready(name: str) -> None:
    # sized but magic still zero: creator mid-way
    with raw_file(name, bytes(4096)), pytest.raises(shmring.SegmentNotReadyError):
        shmring.Segment.open(name)


def test_truncated_segment(segment: shmring.Segment) -> None:
    os.truncate(SHM / segment.name, HEADER + 100)
    with pytest.raises(shmring.TruncatedSegmentError, match="truncated"):
        shmring.Segment.open(segment.name)


def test_truncated_inside_header(name: str) -> None:
    with shmring.Segment.create(name, 4096) as seg:
        head = bytes(_core_header(seg))
    with raw_file(name, head[:40]), pytest.raises(shmring.TruncatedSegmentError):
        shmring.Segment.open(name)


def _core_header(seg: shmring.Segment) -> bytes:
    with open(SHM / seg.name, "rb") as f:
        return f.read(HEADER)


def test_wrong_version(segment: shmring.Segment) -> None:
    poke(segment.name, OFF_VERSION, struct.pack("<I", _core.LAYOUT_VERSION + 1))
    with pytest.raises(shmring.IncompatibleSegmentError, match="version"):
        shmring.Segment.open(segment.name)


def test_wrong_abi(segment: shmring.Segment) -> None:
    poke(segment.name, OFF_ABI, struct.pack(">I", _abi_word()))  # the other byte order
    with pytest.raises(shmring.IncompatibleSegmentError, match="ABI"):
        shmring.Segment.open(segment.name)


def _abi_word() -> int:
    return 0xA5000000 | (8 << 16) | ord("L")


def test_abi_word_matches_this_machine(segment: shmring.Segment) -> None:
    assert struct.unpack_from("<I", _core_header(segment), OFF_ABI)[0] == _abi_word()


@pytest.mark.parametrize(("offset", "data"), [(OFF_KIND, b"\x02"), (OFF_PID, b"\x01\x02"), (60, b"\x01")])
def test_checksum_catches_stray_writes(segment: shmring.Segment, offset: int, data: bytes) -> None:
    poke(segment.name, offset, data)
    with pytest.raises(shmring.CorruptedError, match="checksum"):
        shmring.Segment.open(segment.name)


@pytest.mark.parametrize(
    ("offset", "data"),
    [
        (OFF_HEADER_SIZE, struct.pack("<I", 64)),
        (OFF_TOTAL, struct.pack("<Q", 100)),
        (OFF_KIND, struct.pack("<I", 0)),
        (OFF_KIND, struct.pack("<I", 99)),
        (60, struct.pack("<I", 1)),  # unknown flag
    ],
)
def test_inconsistent_header_with_valid_checksum(segment: shmring.Segment, offset: int, data: bytes) -> None:
    poke(segment.name, offset, data, fix_checksum=True)
    with pytest.raises(shmring.CorruptedError, match="inconsistent"):
        shmring.Segment.open(segment.name)


def test_header_claims_more_than_exists(segment: shmring.Segment) -> None:
    poke(segment.name, OFF_TOTAL, struct.pack("<Q", 1 << 40), fix_checksum=True)
    with pytest.raises(shmring.TruncatedSegmentError):
        shmring.Segment.open(segment.name)


@pytest.mark.parametrize("state", [2, 0xE0D40C5E, 0xFFFFFFFF])
def test_a_state_word_no_remover_writes_is_corruption_not_removal(segment: shmring.Segment, state: int) -> None:
    """Regression (issue 14, live mutation finding F2): a `state` word other
    than LIVE (0) or REMOVED (1) made every attach fail with
    FileNotFoundError, as if the live segment had been removed; it is a
    damaged header, reported as such."""
    poke(segment.name, 72, state.to_bytes(4, "little"))
    with pytest.raises(shmring.CorruptedError):
        shmring.Segment.open(segment.name)
    poke(segment.name, 72, bytes(4))
    with shmring.Segment.open(segment.name) as seg:  # repaired: usable again
        assert seg.size == 4096


def test_other_owner_is_refused_unless_allowed(segment: shmring.Segment) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test chowns a file: run the suite as root (CI does)")
    os.chown(SHM / segment.name, 12345, 12345)
    with pytest.raises(shmring.ForeignOwnerError) as info:
        shmring.Segment.open(segment.name)
    assert isinstance(info.value, PermissionError) and "another user" in str(info.value)
    with shmring.Segment.open(segment.name, allow_other_owner=True) as seg:
        assert seg.size == 4096


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(0, HEADER - 1), value=st.integers(1, 255))
def test_any_single_byte_change_is_caught_or_harmless(segment: shmring.Segment, offset: int, value: int) -> None:
    original = _core_header(segment)
    poke(segment.name, offset, bytes([original[offset] ^ value]))
    try:
        if 72 <= offset < 76:  # `state`: 1 reads as "removed by its last user", any other value is damage
            state = int.from_bytes(_core_header(segment)[72:76], "little")
            with pytest.raises(FileNotFoundError if state == 1 else shmring.CorruptedError):
                shmring.Segment.open(segment.name)
        elif offset >= 76:  # persistent, roster count, reserved, the roster: the segment stays usable
            with shmring.Segment.open(segment.name) as seg:
                assert seg.size == 4096
        else:
            with pytest.raises(shmring.SegmentError):
                shmring.Segment.open(segment.name)
    finally:
        poke(segment.name, 0, original)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=st.binary(min_size=FIELDS, max_size=FIELDS),
    extra=st.integers(0, 5000),
    ids=st.booleans(),
    fix=st.booleans(),
)
def test_random_headers_never_crash(
    new_name: Callable[[], str], header: bytes, extra: int, ids: bool, fix: bool
) -> None:
    data = bytearray(header) + bytes(HEADER - FIELDS)  # random fields, an empty roster
    data[:8] = b"SHMRING\x01"  # get past the magic so the later checks run
    if ids:  # and past the version and ABI checks
        data[8:16] = struct.pack("<II", _core.LAYOUT_VERSION, _abi_word())
    if fix:
        data[64:72] = struct.pack("<Q", fnv1a64(bytes(data[8:64])))
    name = new_name()
    with raw_file(name, bytes(data) + bytes(extra)):
        try:
            seg = shmring.Segment.open(name, allow_other_owner=True)
        except shmring.SegmentError:
            return
        with seg:  # accepted: then the header must be self-consistent
            assert seg.size == struct.unpack_from("<Q", data, OFF_TOTAL)[0] - HEADER
            assert seg.size <= extra
            seg.buf[-1:] = b"x"  # the whole payload is really mapped


# -- the mapping's lifetime ---------------------------------------------------


def test_close_refuses_while_views_are_alive(segment: shmring.Segment) -> None:
    view = segment.buf[10:20]
    with pytest.raises(shmring.BufferInUseError, match="still"):
        segment.close()
    assert isinstance(shmring.BufferInUseError("x"), BufferError)
    view[:2] = b"ok"  # still mapped and usable
    assert bytes(segment.buf[10:12]) == b"ok"
    view.release()
    segment.close()
    assert segment.closed


def test_close_refuses_while_buffer_exports_are_alive(segment: shmring.Segment) -> None:
    exported = memoryview(segment.buf)  # a buffer export of our own view (as numpy takes)
    with pytest.raises(shmring.BufferInUseError):
        segment.close()
    exported.release()
    segment.close()


def test_closed_segment(segment: shmring.Segment) -> None:
    segment.close()
    segment.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        segment.buf
    with pytest.raises(ValueError, match="closed"):
        pickle.dumps(segment)
    assert "closed" in repr(segment)


def test_readonly_open(segment: shmring.Segment) -> None:
    segment.buf[:3] = b"abc"
    with shmring.Segment.open(segment.name, readonly=True) as ro:
        assert ro.buf.readonly and bytes(ro.buf[:3]) == b"abc"
        with pytest.raises(TypeError):
            ro.buf[:1] = b"z"


def test_unlink_keeps_existing_mappings(name: str) -> None:
    seg = shmring.Segment.create(name, 100)
    other = shmring.Segment.open(name)
    seg.unlink()
    assert not (SHM / name).exists()
    seg.buf[:2] = b"hi"
    assert bytes(other.buf[:2]) == b"hi"
    with pytest.raises(FileNotFoundError):
        shmring.Segment.open(name)
    seg.close()
    other.close()


# -- other processes ----------------------------------------------------------


def _child_writes(seg: shmring.Segment, payload: bytes) -> None:
    with seg:
        assert not seg.owner
        seg.buf[: len(payload)] = payload


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_handle_reattaches_in_child(segment: shmring.Segment, method: str) -> None:
    ctx = mp.get_context(method)
    payload = f"from a {method} child".encode()
    proc = ctx.Process(target=_child_writes, args=(segment, payload))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    assert bytes(segment.buf[: len(payload)]) == payload
    assert (SHM / segment.name).exists()  # the child's with-block did not unlink


def test_pickle_round_trip_in_process(segment: shmring.Segment) -> None:
    clone = pickle.loads(pickle.dumps(segment))
    try:
        assert clone.name == segment.name and not clone.owner
        clone.buf[:3] = b"xyz"
        assert bytes(segment.buf[:3]) == b"xyz"
    finally:
        clone.close()


RESOURCE_TRACKER_SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp, sys, shmring

    def child(name):
        seg = shmring.Segment.open(name)
        seg.buf[:2] = b"ok"
        seg.close()

    if __name__ == "__main__":
        ctx = mp.get_context("spawn")
        seg = shmring.Segment.create(sys.argv[1], 4096)
        for _ in range(2):
            p = ctx.Process(target=child, args=(sys.argv[1],))
            p.start(); p.join()
            assert p.exitcode == 0
        import os
        assert os.path.exists("/dev/shm/" + sys.argv[1])  # no tracker unlinked it when the children exited
        seg2 = shmring.Segment.open(sys.argv[1])
        assert bytes(seg2.buf[:2]) == b"ok"
        seg2.close()
        assert os.path.exists("/dev/shm/" + sys.argv[1])  # seg is still attached
        seg.close()   # the last user leaves: it removes the segment
        assert not os.path.exists("/dev/shm/" + sys.argv[1])
    """
)


@pytest.mark.timeout(60)
def test_resource_tracker_never_unlinks_or_warns(name: str, tmp_path: Path) -> None:
    script = tmp_path / "rt.py"
    script.write_text(RESOURCE_TRACKER_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), name], capture_output=True, text=True, timeout=50)
    try:
        assert proc.returncode == 0, proc.stderr
        assert "leaked" not in proc.stderr and "resource_tracker" not in proc.stderr, proc.stderr
    finally:
        (SHM / name).unlink(missing_ok=True)


FULL_SHM_SCRIPT = textwrap.dedent(
    """
    import resource, signal, sys, shmring
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    try:
        shmring.Segment.create(sys.argv[1], 16 << 20)
    except OSError as exc:
        print("OSError", exc.errno)
    else:
        print("created")
    """
)


@pytest.mark.timeout(30)
def test_no_room_is_a_clean_error_at_creation(name: str) -> None:
    proc = subprocess.run([sys.executable, "-c", FULL_SHM_SCRIPT, name], capture_output=True, text=True, timeout=20)
    assert proc.stdout.startswith("OSError"), proc.stdout + proc.stderr
    assert not (SHM / name).exists()


@pytest.mark.timeout(60)
def test_full_dev_shm_is_enospc_not_sigbus(name: str) -> None:
    """A real small tmpfs on /dev/shm in a private mount namespace: creation
    reserves its pages, so a segment that does not fit fails with ENOSPC."""
    script = textwrap.dedent(
        f"""
        import errno, shmring
        try:
            shmring.Segment.create({name!r}, 8 << 20)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
            print("ENOSPC")
        import os
        print(sorted(os.listdir("/dev/shm")))
        with shmring.Segment.create({name!r}, 1 << 20) as seg:
            seg.buf[-1:] = b"x"
            print("small ok")
        """
    )
    shell = f"mount -t tmpfs -o size=4m tmpfs /dev/shm && exec {sys.executable} -c {_quote(script)}"
    proc = subprocess.run(["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True, timeout=50)
    if proc.returncode != 0 and ("Operation not permitted" in proc.stderr or "unshare failed" in proc.stderr):
        pytest.fail(f"needs root and mount namespaces (CI runs as root): {proc.stderr}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["ENOSPC", "[]", "small ok"]


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"
