"""The hand-written stub of the C extension matches it, the package
type-checks, and every public method has a signature (the C ones through
their __text_signature__)."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import shmring
from shmring import _core

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_stub_matches_extension() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "shmring._core",
         "--allowlist", str(ROOT / "tests" / "stubtest-allowlist.txt")],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(120)
def test_package_type_checks_strictly() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- signatures: inspect.signature, help() and IDEs see every method --------------

NATIVE_TYPES = [_core.Mapping, _core.Loan, _core.Channel, _core.Queue, _core.TopicEnd, _core.Atomic,
                _core.Semaphore, _core.SpinLock, _core.Mutex, _core.Event, _core.Condition]
PUBLIC_CLASSES = [c for c in (getattr(shmring, n) for n in shmring.__all__)
                  if isinstance(c, type) and not issubclass(c, BaseException)] + NATIVE_TYPES


def public_methods(cls: type) -> list[str]:
    """The callables of ``cls`` (inherited ones too) that shmring defines and
    whose names do not start with an underscore (properties left out)."""
    names = []
    for name in dir(cls):
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if name.startswith("_") or owner is None or not owner.__module__.startswith("shmring"):
            continue
        raw = inspect.getattr_static(owner, name)
        if isinstance(raw, property) or inspect.isgetsetdescriptor(raw) or inspect.ismemberdescriptor(raw):
            continue
        if callable(getattr(cls, name, None)):  # None: the other role's (topic.py's _OtherRole)
            names.append(name)
    return names


@pytest.mark.parametrize("cls", PUBLIC_CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_public_method_has_a_signature(cls: type) -> None:
    names = public_methods(cls)
    assert names, f"{cls.__name__} has no public method to check"
    missing = []
    for name in names:
        try:
            inspect.signature(getattr(cls, name))
        except ValueError:  # "no signature found for builtin ..."
            missing.append(name)
    assert missing == [], f"{cls.__name__}: no signature for {missing}"


def test_c_methods_show_their_parameters() -> None:
    """The C methods' signatures (their __text_signature__) name the
    parameters as the stub does, the instance-bound lock methods of the
    sync classes included."""
    assert str(inspect.signature(shmring.Queue.put)) == "(self, /, obj, block=True, timeout=None)"
    assert str(inspect.signature(shmring.Channel.recv_many)) == "(self, /, max_messages, timeout=None)"
    assert str(inspect.signature(shmring.Subscription.recv)) == "(self, /, timeout=None)"
    assert str(inspect.signature(_core.Loan.commit)) == "(self, k, /)"
    assert str(inspect.signature(_core.Mapping.duplicate)) == "(self, readonly=None, /)"
    assert inspect.signature(shmring.Queue.get_many).parameters["max_messages_to_get"].default == sys.maxsize
    mutex = shmring.Mutex.create()
    try:
        assert str(inspect.signature(mutex.acquire)) == "(blocking=True, timeout=None)"
        assert "Take the lock" in (mutex.acquire.__doc__ or "")
    finally:
        mutex.close()


# -- user code: Queue[int] and the roles of a topic, as mypy sees them --------------

USER_CODE = '''\
import shmring

q: shmring.Queue[int] = shmring.Queue()
q.put(1)
ok: int = q.get()
batch: list[int] = q.get_many(timeout=1)
jq: shmring.JoinableQueue[str] = shmring.JoinableQueue()
plain = shmring.Queue()  # no annotation needed: a Queue[Any]
plain.put("anything")
q.put("text")
wrong: str = q.get()
t = shmring.Topic.create()
pub = t.publisher()
pub.recv()
sub = t.subscribe()
sub.send(b"x")
prices: shmring.Topic[float] = shmring.Topic.create()
quote: float = prices.subscribe().recv()
prices.publisher().send_obj("not a price")
import shmring.aio
aq: shmring.aio.Queue[int] = shmring.aio.Queue(q)
async def consume() -> str:
    return await aq.get()
'''


@pytest.mark.timeout(120)
def test_user_code_is_checked_against_the_item_type_and_the_role(tmp_path: Path) -> None:
    (tmp_path / "user.py").write_text(USER_CODE)
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "user.py"],
                          cwd=tmp_path, capture_output=True, text=True)
    errors = sorted(line.split(": error: ")[0] + ": " + line.rsplit("[", 1)[-1].rstrip("]")
                    for line in proc.stdout.splitlines() if ": error: " in line)
    assert errors == ["user.py:10: arg-type", "user.py:11: assignment", "user.py:14: misc", "user.py:16: misc",
                      "user.py:19: arg-type", "user.py:23: return-value"], \
        proc.stdout + proc.stderr
