"""C and C++ peers of the Python package: include/shmring.h is the protocol.

(a) The header compiles cleanly, warnings as errors, as C and as C++, and a
    program that calls every function in it runs correctly.
(b) tests/c/open_segment.c attaches to a segment made by Python, reads the
    message and writes a reply that Python sees; it reports the protocol's
    distinct error codes for every way a segment can be unusable.
(c) tests/c/create_segment.c makes a segment from C and exits without
    unlinking it; Python opens it and sees the C process as its dead creator.

Every segment name is unique to the test and removed afterwards, so /dev/shm
is left as it was found.
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import shmring

from conftest import names_removed_after_the_test

SHM_DIR = Path("/dev/shm")
C_DIR = Path(__file__).resolve().parent / "c"
INCLUDE = shmring.get_include()
HEADERS = sorted(Path(INCLUDE).rglob("*.h"))  # shmring.h, the umbrella, and shmring/*.h

# enum shmring_result of include/shmring/base.h.
ERR_SYS = 1
ERR_FOREIGN = 2
ERR_NOT_READY = 3
ERR_TRUNCATED = 4
ERR_VERSION = 5
ERR_ABI = 6
ERR_CHECKSUM = 7
ERR_CORRUPT = 8
ERR_OWNER = 9
ERR_ARG = 10
ERR_BUSY = 11

# Exit statuses of the programs in tests/c (besides the error codes).
EXIT_MISMATCH = 20

HEADER_SIZE = 4096
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3

C_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
RUN_TIMEOUT = 30
COMPILE_TIMEOUT = 120

CC = shutil.which("gcc")
if CC is None:  # pragma: no cover - the project cannot build without a C compiler
    raise RuntimeError("gcc is required to build shmring and to run these tests")


def _fnv1a64(data: bytes) -> int:
    h = FNV_OFFSET
    for b in data:
        h ^= b
        h = (h * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def _shm_path(name: str) -> Path:
    return SHM_DIR / name


def _compile(compiler: str, args: list[str], timeout: int = COMPILE_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([compiler, *args], capture_output=True, text=True, timeout=timeout)


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------


@pytest.fixture
def shm_name() -> Iterator[Callable[[], str]]:
    """Factory of fresh segment names (no leading '/'); every name handed out
    is removed from /dev/shm when the test ends, whatever made it."""
    yield from names_removed_after_the_test("t-cint-")


@pytest.fixture
def segments() -> Iterator[list[shmring.Segment]]:
    """Segments opened or created by the test; closed (and, if they are the
    creating handle, unlinked) at teardown."""
    segs: list[shmring.Segment] = []
    yield segs
    for seg in segs:
        try:
            seg.close()
        finally:
            if seg.owner:
                try:
                    seg.unlink()
                except FileNotFoundError:
                    pass


@pytest.fixture(scope="module")
def c_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tests/c/*.c compiled with gcc, warnings as errors, against get_include()."""
    out = tmp_path_factory.mktemp("c-programs")
    programs = {}
    for stem in ("open_segment", "create_segment"):
        exe = out / stem
        result = _compile(CC, [*C_FLAGS, "-O2", "-I", INCLUDE, str(C_DIR / f"{stem}.c"), "-o", str(exe), "-lrt"])
        assert result.returncode == 0, f"{stem}.c does not compile:\n{result.stderr}"
        assert result.stderr == "", f"{stem}.c compiles with diagnostics:\n{result.stderr}"
        programs[stem] = exe
    return programs


# ---------------------------------------------------------------------------
# (a) the header compiles as C and C++ and works
# ---------------------------------------------------------------------------

# Calls every function of shmring.h and checks what each returns; valid C99
# and C++ alike.  argv[1] is a fresh segment name with its leading '/'.
EXERCISE_SOURCE = r"""
#include "shmring.h"

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "check failed, line %d: %s\n", __LINE__, #cond); return 1; } } while (0)

int main(int argc, char **argv)
{
    shmring_segment seg, seg2;
    const shmring_segment_header *h;
    uint64_t start = 0, t0, t1;
    char state = '?';
    struct timespec ts;
    uint32_t word = 0;
    const char *name;
    unsigned char *payload;

    CHECK(argc == 2);
    name = argv[1];

    /* error strings */
    CHECK(strcmp(shmring_strerror(SHMRING_OK), "success") == 0);
    CHECK(strcmp(shmring_strerror(SHMRING_ERR_FOREIGN), "not a shmring segment (bad magic)") == 0);
    CHECK(strcmp(shmring_strerror(12345), "unknown shmring error") == 0);

    /* names */
    CHECK(shmring_name_check(name) == 0);
    CHECK(shmring_name_check("no-slash") == SHMRING_ERR_ARG);
    CHECK(shmring_name_check("/") == SHMRING_ERR_ARG);
    CHECK(shmring_name_check("/.hidden") == SHMRING_ERR_ARG);
    CHECK(shmring_name_check("/a/b") == SHMRING_ERR_ARG);

    /* checksum and magic */
    CHECK(shmring_fnv1a64("", 0) == UINT64_C(0xcbf29ce484222325));
    CHECK(shmring_fnv1a64("a", 1) == UINT64_C(0xaf63dc4c8601ec8c));

    /* process identity */
    CHECK(shmring_proc_stat((int64_t)getpid(), &start, &state) == 0);
    CHECK(start > 0);
    CHECK(state == 'R');
    CHECK(shmring_process_alive((int64_t)getpid(), start));
    CHECK(!shmring_process_alive((int64_t)getpid(), start + 1));
    CHECK(!shmring_process_alive(0, 0));
    CHECK(shmring_proc_stat(-1, NULL, NULL) == -1);

    /* create */
    CHECK(shmring_segment_create(name, 0, SHMRING_KIND_RAW, 0600, &seg) == SHMRING_ERR_ARG);
    CHECK(shmring_segment_create(name, 1000, 0, 0600, &seg) == SHMRING_ERR_ARG);
    CHECK(shmring_segment_create(name, 1000, SHMRING_KIND_MAX + 1, 0600, &seg) == SHMRING_ERR_ARG);
    CHECK(shmring_segment_create(name, 1000, SHMRING_KIND_RAW, 01777, &seg) == SHMRING_ERR_ARG);
    CHECK(shmring_segment_create(name, 1000, SHMRING_KIND_RAW, 0600, &seg) == SHMRING_OK);
    CHECK(seg.base != NULL && seg.writable);
    CHECK(seg.map_size == 1000 + SHMRING_HEADER_SIZE);
    CHECK(shmring_segment_payload_size(&seg) == 1000);
    payload = shmring_segment_payload(&seg);
    CHECK(payload == seg.base + SHMRING_HEADER_SIZE);

    /* the published header */
    h = (const shmring_segment_header *)seg.base;
    CHECK(h->magic == shmring_magic());
    CHECK(memcmp(seg.base, "SHMRING\1", 8) == 0);
    CHECK(h->version == SHMRING_LAYOUT_VERSION);
    CHECK(h->abi == SHMRING_ABI_WORD);
    CHECK(h->kind == SHMRING_KIND_RAW);
    CHECK(h->header_size == SHMRING_HEADER_SIZE);
    CHECK(h->total_size == 1000 + SHMRING_HEADER_SIZE);
    CHECK(h->creator_pid == (int64_t)getpid());
    CHECK(h->creator_start == start);
    CHECK(h->creator_uid == (uint32_t)geteuid());
    CHECK(h->flags == 0);
    CHECK(h->checksum == shmring_header_checksum(h));
    CHECK(shmring_header_check(h, h->total_size) == SHMRING_OK);
    CHECK(shmring_header_check(h, h->total_size + 4096) == SHMRING_OK);
    CHECK(shmring_header_check(h, 0) == SHMRING_ERR_NOT_READY);
    CHECK(shmring_header_check(h, 100) == SHMRING_ERR_TRUNCATED);
    CHECK(shmring_header_check(h, h->total_size - 1) == SHMRING_ERR_TRUNCATED);

    /* an existing name is refused and left alone */
    CHECK(shmring_segment_create(name, 1000, SHMRING_KIND_RAW, 0600, &seg2) == SHMRING_ERR_SYS);
    CHECK(errno == EEXIST);

    /* a second mapping sees the first one's writes */
    memcpy(payload, "hello", 5);
    CHECK(shmring_segment_open(name, SHMRING_OPEN_READONLY, &seg2) == SHMRING_OK);
    CHECK(!seg2.writable);
    CHECK(shmring_segment_payload_size(&seg2) == 1000);
    CHECK(memcmp(shmring_segment_payload(&seg2), "hello", 5) == 0);
    CHECK(shmring_segment_close(&seg2) == SHMRING_OK);
    CHECK(seg2.base == NULL);
    CHECK(shmring_segment_close(&seg2) == SHMRING_OK); /* closing twice is harmless */

    /* the roster lists every attachment; the lease says someone is attached */
    CHECK(shmring_segment_open(name, 0, &seg2) == SHMRING_OK);
    CHECK(seg.roster_slot == 0 && seg2.roster_slot == 1 && seg2.lease_fd >= 0);
    CHECK(shmring_segment_roster(seg.base)[1].token == shmring_token_self());
    CHECK(shmring_segment_in_use(name) == 1);
    CHECK(shmring_segment_remove_unused(name, 0) == SHMRING_AGAIN);
    CHECK(shmring_segment_close(&seg2) == SHMRING_OK);
    CHECK(shmring_segment_roster(seg.base)[1].token == 0);

    /* the last one to leave removes it */
    CHECK(shmring_segment_close(&seg) == SHMRING_OK);
    CHECK(shmring_segment_open(name, 0, &seg) == SHMRING_ERR_SYS && errno == ENOENT);

    /* unlink: the name goes now, attachments keep the memory */
    CHECK(shmring_segment_create(name, 1000, SHMRING_KIND_RAW, 0600, &seg) == SHMRING_OK);
    CHECK(shmring_segment_unlink("bad") == SHMRING_ERR_ARG);
    CHECK(shmring_segment_unlink(name) == SHMRING_OK);
    CHECK(shmring_segment_unlink(name) == SHMRING_ERR_SYS && errno == ENOENT);
    CHECK(shmring_segment_open(name, 0, &seg2) == SHMRING_ERR_SYS && errno == ENOENT);
    CHECK(shmring_segment_reopen(&seg, 0, &seg2) == SHMRING_OK); /* by descriptor, not by name */
    memcpy(shmring_segment_payload(&seg), "still", 5);
    CHECK(memcmp(shmring_segment_payload(&seg2), "still", 5) == 0);
    CHECK(shmring_segment_close(&seg2) == SHMRING_OK);
    CHECK(shmring_segment_close(&seg) == SHMRING_OK);
    CHECK(shmring_segment_open("bad", 0, &seg) == SHMRING_ERR_ARG);

    /* persistent: the last one to leave keeps it; remove_unused removes it */
    CHECK(shmring_segment_create(name, 1000, SHMRING_KIND_RAW, 0600, &seg) == SHMRING_OK);
    shmring_segment_set_persistent(&seg, 1);
    CHECK(shmring_segment_close(&seg) == SHMRING_OK);
    CHECK(shmring_segment_in_use(name) == 0);
    CHECK(shmring_segment_remove_unused(name, 0) == SHMRING_AGAIN);
    CHECK(shmring_segment_remove_unused(name, 1) == SHMRING_OK);
    CHECK(shmring_segment_open(name, 0, &seg) == SHMRING_ERR_SYS && errno == ENOENT);

    /* futex: a changed value returns at once, an unchanged one times out */
    ts.tv_sec = 0;
    ts.tv_nsec = 1000000; /* 1 ms */
    CHECK(shmring_futex_wait(&word, 1, &ts) == SHMRING_OK);
    CHECK(shmring_futex_wait(&word, 0, &ts) == SHMRING_ERR_SYS && errno == ETIMEDOUT);
    CHECK(shmring_futex_wake(&word, 1) == 0);

    /* monotonic clock */
    t0 = shmring_now_ns();
    t1 = shmring_now_ns();
    CHECK(t0 > 0 && t1 >= t0);

    printf("ALL OK\n");
    return 0;
}
"""

def _compilers() -> list[tuple[str, str, list[str]]]:
    """(id, compiler, flags): gcc and g++ always, clang and clang++ if installed."""
    found = [
        ("gcc-c99", "gcc", ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]),
        ("g++-c++17", "g++", ["-std=c++17", "-Wall", "-Wextra", "-Werror"]),
        ("clang-c99", "clang", ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]),
        ("clang++-c++17", "clang++", ["-std=c++17", "-Wall", "-Wextra", "-Werror"]),
    ]
    return found


def _compiler_params() -> list[object]:
    params = []
    for ident, compiler, flags in _compilers():
        # clang is checked where it is installed; gcc and g++ always are.
        if compiler.startswith("clang") and shutil.which(compiler) is None:
            continue
        params.append(pytest.param(compiler, flags, id=ident))
    return params


@pytest.mark.timeout(60)
@pytest.mark.parametrize("opt", ["-O0", "-O2"])
@pytest.mark.parametrize(("compiler", "flags"), _compiler_params())
def test_header_compiles_cleanly_and_works(
    compiler: str, flags: list[str], opt: str, tmp_path: Path, shm_name: Callable[[], str]
) -> None:
    """The header compiles with no diagnostic at all under strict warnings,
    and a program calling every function in it gets the documented results."""
    assert shutil.which(compiler) is not None, f"{compiler} not found"
    src = tmp_path / ("exercise.cpp" if compiler.endswith("++") else "exercise.c")
    src.write_text(EXERCISE_SOURCE)
    exe = tmp_path / "exercise"
    result = _compile(compiler, [*flags, opt, "-I", INCLUDE, str(src), "-o", str(exe), "-lrt"])
    assert result.returncode == 0, f"{compiler} {' '.join(flags)} {opt} failed:\n{result.stderr}"
    assert result.stderr == "", f"diagnostics from {compiler}:\n{result.stderr}"

    name = shm_name()
    run = _run([str(exe), "/" + name])
    assert run.returncode == 0, f"exercise program failed ({run.returncode}):\n{run.stderr}"
    assert run.stdout == "ALL OK\n"
    assert not _shm_path(name).exists(), "the exercise program unlinks its segment"


@pytest.mark.timeout(60)
def test_header_exercise_is_clean_under_sanitizers(tmp_path: Path, shm_name: Callable[[], str]) -> None:
    """The same program under AddressSanitizer and UBSan: no invalid access,
    no undefined behaviour in the header's code paths."""
    src = tmp_path / "exercise.c"
    src.write_text(EXERCISE_SOURCE)
    exe = tmp_path / "exercise-san"
    result = _compile(
        CC,
        [*C_FLAGS, "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-I", INCLUDE, str(src), "-o", str(exe), "-lrt"],
    )
    if result.returncode != 0 and "sanitize" in result.stderr and "cannot find" in result.stderr:
        pytest.skip(f"sanitizer runtime not installed: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    name = shm_name()
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="print_stacktrace=1")
    run = subprocess.run([str(exe), "/" + name], capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "ALL OK\n"
    assert "runtime error" not in run.stderr and "Sanitizer" not in run.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "std",
    [
        "c99",
        "c11",
        "c17",
        "c++11",
        "c++14",
        "c++20",
    ],
)
def test_header_compiles_under_every_claimed_standard(std: str, tmp_path: Path) -> None:
    """The header promises 'C99 or C++11 and later': each standard, pedantic,
    warnings as errors (gcc / g++)."""
    cxx = std.startswith("c++")
    src = tmp_path / ("tu.cpp" if cxx else "tu.c")
    src.write_text('#include "shmring.h"\nint main(void) { return shmring_name_check("/ok"); }\n')
    result = _compile(
        "g++" if cxx else "gcc",
        [f"-std={std}", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I", INCLUDE, "-c", str(src),
         "-o", str(tmp_path / "tu.o")],
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_header_layout_constants_match_python() -> None:
    """The numbers the extension exports come from the same header."""
    from shmring import _core

    text = "".join(p.read_text() for p in HEADERS)
    assert _core.HEADER_SIZE == HEADER_SIZE
    assert "#define SHMRING_HEADER_SIZE 4096u" in text
    assert f"#define SHMRING_LAYOUT_VERSION {_core.LAYOUT_VERSION}u" in text
    assert (_core.KIND_RAW, _core.KIND_CHANNEL, _core.KIND_SYNC, _core.KIND_QUEUE, _core.KIND_TOPIC) == (1, 2, 3, 4, 5)
    for code, cls in shmring._errors.ERROR_BY_CODE.items():
        assert issubclass(cls, shmring.SegmentError), (code, cls)
    assert "SHMRING_ERR_FOREIGN = 2" in text


# ---------------------------------------------------------------------------
# (b) C opens what Python created
# ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_c_reads_python_segment_and_replies(c_programs: dict[str, Path], segment: shmring.Segment) -> None:
    message = b"hello from Python"
    segment.buf[: len(message)] = message
    assert bytes(segment.buf[64:70]) == bytes(6)

    run = _run([str(c_programs["open_segment"]), "/" + segment.name, message.decode()])

    assert run.returncode == 0, run.stderr
    assert run.stdout == "payload_size=4096 kind=1\n"
    assert run.stderr == ""
    assert bytes(segment.buf[64:70]) == b"from C"
    assert bytes(segment.buf[: len(message)]) == message, "the C peer must not touch the message"
    assert bytes(segment.buf[70:128]) == bytes(58), "the reply is exactly 'from C', no terminator"
    # The segment is still intact for Python openers after the C peer left.
    with shmring.Segment.open(segment.name) as again:
        assert bytes(again.buf[64:70]) == b"from C"
        assert again.info().creator_pid == os.getpid()


@pytest.mark.timeout(60)
def test_c_reports_payload_mismatch(c_programs: dict[str, Path], segment: shmring.Segment) -> None:
    segment.buf[:5] = b"apple"

    run = _run([str(c_programs["open_segment"]), "/" + segment.name, "banana"])

    assert run.returncode == EXIT_MISMATCH
    assert "does not start with" in run.stderr
    assert bytes(segment.buf[64:70]) == bytes(6), "no reply on a mismatch"


def _make_foreign(name: str) -> None:
    fd = os.open(_shm_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.write(fd, b"this is somebody else's shared memory, not a shmring segment\n" * 8)
    finally:
        os.close(fd)


def _make_empty(name: str) -> None:
    os.close(os.open(_shm_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))


def _make_segment_then(name: str, damage: Callable[[int], None]) -> None:
    """A real segment, closed (persistent: it outlives its last user), then
    damaged through a plain file descriptor."""
    seg = shmring.Segment.create(name, 4096, persistent=True)
    seg.close()
    fd = os.open(_shm_path(name), os.O_RDWR)
    try:
        damage(fd)
    finally:
        os.close(fd)


def _truncate(fd: int) -> None:
    os.ftruncate(fd, 1024)


def _bad_version(fd: int) -> None:
    os.pwrite(fd, struct.pack("<I", 99), 8)


def _bad_abi(fd: int) -> None:
    os.pwrite(fd, struct.pack("<I", 0xA5000000 | (4 << 16) | ord("L")), 12)


def _bad_checksum(fd: int) -> None:
    os.pwrite(fd, struct.pack("<I", 2), 16)  # kind, inside the checksummed bytes [8, 64)


def _inconsistent(fd: int) -> None:
    # header_size 64 with a checksum that matches it: the fields disagree.
    header = bytearray(os.pread(fd, HEADER_SIZE, 0))
    header[20:24] = struct.pack("<I", 64)
    header[64:72] = struct.pack("<Q", _fnv1a64(bytes(header[8:64])))
    os.pwrite(fd, bytes(header), 0)


def _other_owner(name: str) -> None:
    _make_segment_then(name, lambda fd: os.fchown(fd, 54321, 54321))


DAMAGES = [
    pytest.param(_make_foreign, ERR_FOREIGN, "not a shmring segment", id="foreign"),
    pytest.param(_make_empty, ERR_NOT_READY, "not yet initialised", id="empty"),
    pytest.param(lambda n: _make_segment_then(n, _truncate), ERR_TRUNCATED, "truncated", id="truncated"),
    pytest.param(lambda n: _make_segment_then(n, _bad_version), ERR_VERSION, "version", id="version"),
    pytest.param(lambda n: _make_segment_then(n, _bad_abi), ERR_ABI, "ABI", id="abi"),
    pytest.param(lambda n: _make_segment_then(n, _bad_checksum), ERR_CHECKSUM, "checksum", id="checksum"),
    pytest.param(lambda n: _make_segment_then(n, _inconsistent), ERR_CORRUPT, "inconsistent", id="corrupt"),
    pytest.param(
        _other_owner,
        ERR_OWNER,
        "another user",
        id="other-owner",
        marks=pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a segment to another uid"),
    ),
]


@pytest.mark.timeout(60)
def test_c_reports_missing_name_as_sys_enoent(c_programs: dict[str, Path], shm_name: Callable[[], str]) -> None:
    name = shm_name()
    run = _run([str(c_programs["open_segment"]), "/" + name, "x"])
    assert run.returncode == ERR_SYS
    assert "system call failed" in run.stderr
    assert f"(errno {errno.ENOENT})" in run.stderr
    assert os.strerror(errno.ENOENT) in run.stderr
    assert run.stdout == ""
    assert not _shm_path(name).exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("make", "code", "words"), DAMAGES)
def test_c_reports_distinct_error_codes(
    c_programs: dict[str, Path], shm_name: Callable[[], str], make: Callable[[str], None], code: int, words: str
) -> None:
    """Each kind of unusable object gets its own SHMRING_ERR_* code and
    message from C, and C leaves the object exactly as it found it."""
    name = shm_name()
    make(name)
    before = _shm_path(name).read_bytes()

    run = _run([str(c_programs["open_segment"]), "/" + name, "x"])

    assert run.returncode == code, (run.returncode, run.stderr)
    assert words in run.stderr
    assert run.stdout == ""
    assert _shm_path(name).read_bytes() == before, "a failed open must not write"


@pytest.mark.timeout(60)
def test_python_raises_matching_exceptions_for_c_error_codes(shm_name: Callable[[], str]) -> None:
    """The codes C reports above map to the documented Python exceptions."""
    foreign, checksum = shm_name(), shm_name()
    _make_foreign(foreign)
    _make_segment_then(checksum, _bad_checksum)
    with pytest.raises(shmring.ForeignSegmentError):
        shmring.Segment.open(foreign)
    with pytest.raises(shmring.CorruptedError, match="checksum"):
        shmring.Segment.open(checksum)
    with pytest.raises(FileNotFoundError):
        shmring.Segment.open(shm_name())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", ["no-leading-slash", "/", "/.hidden", "/a/b"])
def test_c_rejects_invalid_names(c_programs: dict[str, Path], bad: str) -> None:
    run = _run([str(c_programs["open_segment"]), bad, "x"])
    assert run.returncode == ERR_ARG
    assert "invalid argument" in run.stderr


# ---------------------------------------------------------------------------
# (c) Python opens what C created
# ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_python_opens_segment_left_by_c(
    c_programs: dict[str, Path], shm_name: Callable[[], str], segments: list[shmring.Segment]
) -> None:
    name = shm_name()
    text = "made in C, read in Python"

    proc = subprocess.Popen(
        [str(c_programs["create_segment"]), "/" + name, text],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, stderr
    assert stdout == f"pid={proc.pid}\n"

    # The creator has exited and been reaped; its segment stays.
    path = _shm_path(name)
    assert path.exists()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert path.stat().st_size == HEADER_SIZE + 4096

    seg = shmring.Segment.open(name)
    segments.append(seg)
    assert not seg.owner
    assert seg.size == 4096
    assert bytes(seg.buf[: len(text) + 1]) == text.encode() + b"\0"
    info = seg.info()
    assert info.creator_pid == proc.pid
    assert info.alive is False
    assert info.kind == "segment"
    assert info.version == shmring._core.LAYOUT_VERSION
    assert info.persistent
    assert info.size == 4096
    assert info.total_size == HEADER_SIZE + 4096
    assert info.creator_uid == os.geteuid()

    seg.close()
    assert path.exists()  # persistent: the last user out keeps it
    seg.unlink()
    assert not path.exists()


@pytest.mark.timeout(60)
def test_c_creator_is_alive_while_running(
    c_programs: dict[str, Path], shm_name: Callable[[], str], tmp_path: Path
) -> None:
    """While the C creator still runs, Python sees it alive; once it is gone,
    dead.  (Uses a tiny C program that creates, then waits on stdin.)"""
    src = tmp_path / "create_and_wait.c"
    src.write_text(
        '#include "shmring.h"\n'
        "int main(int argc, char **argv) {\n"
        "    shmring_segment seg; char c;\n"
        "    int rc;\n"
        "    if (argc != 2) return 64;\n"
        "    rc = shmring_segment_create(argv[1], 64, SHMRING_KIND_RAW, 0600, &seg);\n"
        "    if (rc != SHMRING_OK) { fprintf(stderr, \"%s\\n\", shmring_strerror(rc)); return rc; }\n"
        '    printf("ready\\n"); fflush(stdout);\n'
        "    if (read(0, &c, 1) < 0) return 1;\n"
        "    return shmring_segment_close(&seg);\n"
        "}\n"
    )
    exe = tmp_path / "create_and_wait"
    result = _compile(CC, [*C_FLAGS, "-I", INCLUDE, str(src), "-o", str(exe), "-lrt"])
    assert result.returncode == 0, result.stderr

    name = shm_name()
    proc = subprocess.Popen([str(exe), "/" + name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    seg = None
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        seg = shmring.Segment.open(name)
        info = seg.info()
        assert info.creator_pid == proc.pid
        assert info.alive is True
        assert info.size == 64
        assert sorted(u.pid for u in info.users) == sorted([proc.pid, os.getpid()])
    finally:
        proc.communicate(input="x", timeout=RUN_TIMEOUT)
    assert proc.returncode == 0 and seg is not None
    info = seg.info()
    assert info.alive is False
    assert [u.pid for u in info.users] == [os.getpid()]  # the C process left the roster as it closed
    seg.close()  # the last user out removes it
    assert not _shm_path(name).exists()


@pytest.mark.timeout(60)
def test_c_create_refuses_existing_name(c_programs: dict[str, Path], segment: shmring.Segment) -> None:
    """O_EXCL: C fails with SHMRING_ERR_SYS/EEXIST and leaves Python's segment alone."""
    segment.buf[:4] = b"mine"

    run = _run([str(c_programs["create_segment"]), "/" + segment.name, "theirs"])

    assert run.returncode == ERR_SYS
    assert os.strerror(errno.EEXIST) in run.stderr
    assert bytes(segment.buf[:4]) == b"mine"
    assert segment.info().creator_pid == os.getpid()
    assert _shm_path(segment.name).exists(), "a refused create must not unlink the existing segment"


# ---------------------------------------------------------------------------
# (d) the header as the README shows it
# ---------------------------------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"

ISO_C_HEADERS = ["assert.h", "ctype.h", "errno.h", "float.h", "inttypes.h", "limits.h", "locale.h", "math.h",
                 "setjmp.h", "signal.h", "stdarg.h", "stddef.h", "stdint.h", "stdio.h", "stdlib.h", "string.h",
                 "time.h", "wchar.h"]

STANDARDS = ["c99", "c11", "c17", "c++11", "c++14", "c++17", "c++20"]


def _readme_c_snippet() -> str:
    """The first ```c block of the README's "## From C and C++" section, as printed."""
    text = README.read_text()
    section = text.split("\n## From C and C++\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```c\n", 1)[1].split("```", 1)[0]


def _standard_params() -> list[object]:
    params = []
    for std in STANDARDS:
        cxx = std.startswith("c++")
        for compiler in (["g++", "clang++"] if cxx else ["gcc", "clang"]):
            if compiler.startswith("clang") and shutil.which(compiler) is None:
                continue  # clang is checked where it is installed; gcc and g++ always are
            params.append(pytest.param(compiler, std, id=f"{compiler}-{std}"))
    return params


def _as_program(snippet: str) -> str:
    """The snippet as a translation unit: `#include <stdio.h>` first, its own
    #include lines, then the rest of it as the body of main()."""
    lines = snippet.splitlines()
    includes = [line for line in lines if line.startswith("#include")]
    body = [line for line in lines if not line.startswith("#include")]
    return "\n".join(["#include <stdio.h>", *includes, "int main(void)", "{", *body, "    return rc;", "}", ""])


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("compiler", "std"), _standard_params())
def test_readme_c_snippet_compiles_as_printed_after_stdio(compiler: str, std: str, tmp_path: Path) -> None:
    """The README's C example, untouched, after <stdio.h> (the order a C
    program naturally has): no diagnostic under -Wall -Wextra -Werror, and it
    links.  Regression: shmring.h set _DEFAULT_SOURCE after glibc had read
    the feature macros, so O_CLOEXEC, CLOCK_MONOTONIC and ftruncate were
    undeclared under -std=c99/c11/c17."""
    snippet = _readme_c_snippet()
    assert '#include "shmring.h"' in snippet and "shmring_channel_send(" in snippet
    src = tmp_path / ("readme.cpp" if std.startswith("c++") else "readme.c")
    src.write_text(_as_program(snippet))
    exe = tmp_path / "readme"
    result = _compile(compiler, [f"-std={std}", "-Wall", "-Wextra", "-Werror", "-I", INCLUDE, str(src), "-o",
                                 str(exe)])
    assert result.returncode == 0, f"{compiler} -std={std}:\n{result.stderr}"
    assert result.stderr == ""
    run = _run([str(exe)])  # no "/frames" segment here: it reports the error and says so
    assert run.returncode == ERR_SYS and "system call failed" in run.stderr, run


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("compiler", "std"), _standard_params())
def test_header_compiles_after_every_iso_c_header(compiler: str, std: str, tmp_path: Path) -> None:
    """Every ISO C header before shmring.h (<time.h> and <limits.h> hide the
    POSIX clock and NAME_MAX under a strict -std=): still clean, and the
    clock it reads works."""
    cxx = std.startswith("c++")
    src = tmp_path / ("tu.cpp" if cxx else "tu.c")
    first = [f"#include <{h}>" for h in ISO_C_HEADERS]
    src.write_text("\n".join([*first, '#include "shmring.h"',
                              "int main(void) { return shmring_now_ns() > 0 && shmring_name_check(\"/ok\") == 0 ? 0 : 1; }",
                              ""]))
    exe = tmp_path / "tu"
    result = _compile(compiler, [f"-std={std}", "-Wall", "-Wextra", "-Werror", "-I", INCLUDE, str(src), "-o",
                                 str(exe)])
    assert result.returncode == 0, f"{compiler} -std={std}:\n{result.stderr}"
    assert result.stderr == ""
    assert _run([str(exe)]).returncode == 0


def test_header_reports_posix_header_included_first_without_feature_macro(tmp_path: Path) -> None:
    """The one order it cannot repair says how to fix it, instead of a list
    of undeclared names."""
    src = tmp_path / "tu.c"
    src.write_text('#include <fcntl.h>\n#include "shmring.h"\nint main(void) { return 0; }\n')
    result = _compile("gcc", ["-std=c99", "-I", INCLUDE, "-c", str(src), "-o", str(tmp_path / "tu.o")])
    assert result.returncode != 0
    assert "-D_DEFAULT_SOURCE" in result.stderr
    ok = _compile("gcc", ["-std=c99", "-D_DEFAULT_SOURCE", "-Wall", "-Wextra", "-Werror", "-I", INCLUDE, "-c",
                          str(src), "-o", str(tmp_path / "tu.o")])
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr
