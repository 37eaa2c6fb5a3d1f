"""The C header's locks and Python's on the same memory: include/shmring.h
compiled into tests/c/sync_peer.c (gcc, -Wall -Wextra -Werror) shares a
mutex, spin lock or semaphore with Python processes, and a C holder killed
while holding gives OwnerDied in Python.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from shmring import AtomicInt32, OwnerDied, Segment, Semaphore

from _sync_helpers import COUNTER, FLAG, INCLUDE, LOCK, _increment_under, make_lock, read_counter, write_counter
from conftest import FORK, Kids

C_DIR = Path(__file__).resolve().parent / "c"

CC = shutil.which("gcc")


@pytest.fixture(scope="module")
def sync_peer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if CC is None:  # pragma: no cover
        pytest.skip("gcc is not installed")
    exe = tmp_path_factory.mktemp("sync-peer") / "sync_peer"
    result = subprocess.run([CC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-I", INCLUDE,
                             str(C_DIR / "sync_peer.c"), "-o", str(exe), "-lrt"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"sync_peer.c does not compile:\n{result.stderr}"
    assert result.stderr == "", f"sync_peer.c compiles with diagnostics:\n{result.stderr}"
    return exe


@pytest.mark.timeout(40)
@pytest.mark.parametrize("kind", ["mutex", "spin", "semaphore"])
def test_c_and_python_share_a_lock(kind: str, segment: Segment, kids: Kids, sync_peer: Path) -> None:
    m, m_c = 20000, 1000000  # C runs its loop much faster: give it more, so that the loops overlap
    lock = make_lock(kind, segment)
    go = AtomicInt32(segment, FLAG)
    mode = {"mutex": "mutex", "spin": "spin", "semaphore": "sem"}[kind]
    py = [kids.start(FORK, _increment_under, lock, segment, go, m) for _ in range(2)]
    c = [kids.popen([str(sync_peer), "/" + segment.name, mode, str(LOCK), str(COUNTER), str(m_c), str(FLAG)])
         for _ in range(2)]
    go.store(1)
    for p in c:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, f"sync_peer exited {p.returncode}: {err}"
        assert out.strip() == f"done {m_c}"
    assert [k.result(30) for k in py] == [m, m]
    assert read_counter(segment) == 2 * m + 2 * m_c
    if isinstance(lock, Semaphore):
        assert lock.value == 1
    else:
        assert lock.holder() is None


@pytest.mark.parametrize("kind", ["mutex", "spin"])
def test_c_holder_killed_gives_owner_died_in_python(kind: str, segment: Segment, kids: Kids,
                                                    sync_peer: Path) -> None:
    lock = make_lock(kind, segment)
    p = kids.popen([str(sync_peer), "/" + segment.name, f"hold-{kind}", str(LOCK), str(COUNTER), "0"])
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "held"
    assert lock.holder() == (p.pid, True), "the C process's token must name its pid"
    assert lock.acquire(timeout=0.1) is False
    p.kill()
    p.wait(10)
    with pytest.raises(OwnerDied):
        lock.acquire(timeout=5)
    assert read_counter(segment) == 0xDEADBEEF
    write_counter(segment, 0)
    if kind == "mutex":
        lock.mark_consistent()  # type: ignore[union-attr]
    lock.release()
    assert lock.acquire(blocking=False) is True
    lock.release()
