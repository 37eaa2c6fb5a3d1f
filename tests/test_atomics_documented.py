"""Every atomic operation of the protocol headers and the extension says why
its memory order is right: a comment on its line or just above it (the
statement it belongs to), or a comment of its function that says the order
holds "throughout" (a monitoring snapshot).  The vocabulary itself
(include/shmring/atomics.h) and the user's Atomic, whose order is the
caller's choice, are the two places where an operation names no pairing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ATOMIC_CALL = re.compile(
    r"\bshmring_(load|store|fetch_add|fetch_sub|exchange|cas(_weak|_strong)?|fence)_"
    r"(relaxed|acquire|release|acq_rel|seq_cst)\w*\s*\(|\b__atomic_\w+\s*\(")
# Where the order is a parameter: the vocabulary, and the user's Atomic.
ORDER_IS_A_PARAMETER = {"atomics.h", "sync_atomic.c"}
LOOK_BACK = 20  # lines of one statement, at most


def sources() -> list[Path]:
    return sorted((ROOT / "include" / "shmring").glob("*.h")) + sorted((ROOT / "src" / "shmring" / "_core").glob("*.[ch]"))


def has_comment(line: str) -> bool:
    s = line.strip()
    return "/*" in s or "*/" in s or s.startswith("*") or "//" in s


def undocumented(path: Path, root: Path = ROOT) -> list[str]:
    lines = path.read_text().splitlines()
    found = []
    function_start = 0
    for i, line in enumerate(lines):
        if line.startswith("{"):
            function_start = i
        code = line.strip()
        if not ATOMIC_CALL.search(line) or code.startswith(("*", "/*", "//", "#define")):
            continue
        ok = has_comment(line)
        j = i - 1
        while not ok and j >= 0 and i - j <= LOOK_BACK and lines[j].strip():
            ok = has_comment(lines[j])
            j -= 1
        if not ok:
            ok = any("throughout" in lines[k] and has_comment(lines[k]) for k in range(function_start, i))
        if not ok:
            found.append(f"{path.relative_to(root)}:{i + 1}: {code}")
    return found


def test_the_scan_sees_the_atomics() -> None:
    """The pattern finds the operations (an empty scan would pass anything)."""
    calls = sum(len(ATOMIC_CALL.findall(p.read_text())) for p in sources())
    assert calls > 300


def test_every_atomic_operation_says_why_its_order_is_right() -> None:
    missing = [m for p in sources() if p.name not in ORDER_IS_A_PARAMETER for m in undocumented(p)]
    assert not missing, "atomic operations without a comment:\n" + "\n".join(missing)


def test_the_check_catches_an_undocumented_atomic(tmp_path: Path) -> None:
    """A planted atomic without a comment is reported."""
    planted = tmp_path / "planted.c"
    planted.write_text("static void f(unsigned *p)\n{\n    int x = 0;\n\n    shmring_store_release(p, 1u);\n}\n")
    assert undocumented(planted, tmp_path) == ["planted.c:5: shmring_store_release(p, 1u);"]
    planted.write_text("static void f(unsigned *p)\n{\n    /* release [X1]: pairs with g's acquire. */\n"
                       "    shmring_store_release(p, 1u);\n}\n")
    assert undocumented(planted, tmp_path) == []
