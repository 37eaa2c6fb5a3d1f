"""The C headers unit-tested in C: one program per component
(tests/c/test_*.c, sharing tests/c/helpers.c), each built with
-std=c99 -pedantic -Wall -Wextra -Werror, plainly and with
AddressSanitizer + UndefinedBehaviorSanitizer, and run; every check in it
must pass.  The rings are laid out on plain memory (no segment, no other
process): wrap-around, padding, exact fit, full and empty rings, corrupt
counters and records.

Also: every header of include/shmring/ compiles on its own, as C and C++,
and the umbrella include/shmring.h includes each of them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import shmring

C_DIR = Path(__file__).resolve().parent / "c"
INCLUDE = Path(shmring.get_include())
UNITS = sorted(p.stem for p in C_DIR.glob("test_*.c"))
HEADERS = sorted(p.stem for p in (INCLUDE / "shmring").glob("*.h"))
FLAGS = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-g"]
BUILDS = {
    "plain": ["-O2"],
    "asan-ubsan": ["-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"],
}


def test_there_is_a_unit_test_program_per_component() -> None:
    assert {"test_channel_ring", "test_queue_ring", "test_topic_ring", "test_segment_header", "test_record",
            "test_wait", "test_sync_primitives", "test_array", "test_value", "test_oob"} <= set(UNITS)


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("c-units")
    built = {}
    for unit in UNITS:
        for build, flags in BUILDS.items():
            exe = out / f"{unit}-{build}"
            proc = subprocess.run(
                ["gcc", *FLAGS, *flags, "-I", str(INCLUDE), "-I", str(C_DIR), str(C_DIR / f"{unit}.c"),
                 str(C_DIR / "helpers.c"), "-o", str(exe)],
                capture_output=True, text=True, timeout=120,
            )
            assert proc.returncode == 0, f"{unit} ({build}) does not compile:\n{proc.stderr}"
            assert proc.stderr == "", f"{unit} ({build}) compiles with diagnostics:\n{proc.stderr}"
            built[f"{unit}-{build}"] = exe
    return built


@pytest.mark.timeout(120)
@pytest.mark.parametrize("build", list(BUILDS))
@pytest.mark.parametrize("unit", UNITS)
def test_unit_program_passes_every_check(programs: dict[str, Path], unit: str, build: str) -> None:
    proc = subprocess.run([str(programs[f"{unit}-{build}"])], capture_output=True, text=True, timeout=100,
                          env={"ASAN_OPTIONS": "detect_leaks=1", "PATH": "/usr/bin:/bin"})
    summary = re.search(r"^(\d+) tests, (\d+) checks, (\d+) failed$", proc.stdout, re.M)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert summary is not None, proc.stdout[-2000:]
    tests, checks, failed = (int(g) for g in summary.groups())
    assert failed == 0 and tests > 0 and checks >= tests
    assert "FAIL" not in proc.stdout
    assert proc.stdout.count("\nok ") + proc.stdout.startswith("ok ") == tests
    assert "runtime error" not in proc.stderr and "AddressSanitizer" not in proc.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("lang", ["c99", "c++11"])
@pytest.mark.parametrize("header", HEADERS)
def test_each_header_compiles_on_its_own(header: str, lang: str, tmp_path: Path) -> None:
    cxx = lang.startswith("c++")
    src = tmp_path / ("tu.cpp" if cxx else "tu.c")
    src.write_text(f'#include "shmring/{header}.h"\nint main(void) {{ return 0; }}\n')
    proc = subprocess.run(
        ["g++" if cxx else "gcc", f"-std={lang}", "-pedantic", "-Wall", "-Wextra", "-Werror", "-I", str(INCLUDE),
         "-c", str(src), "-o", str(tmp_path / "tu.o")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_the_umbrella_header_includes_every_header() -> None:
    umbrella = (INCLUDE / "shmring.h").read_text()
    included = re.findall(r'^#include "shmring/(\w+)\.h"$', umbrella, re.M)
    assert sorted(included) == HEADERS
    assert included[0] == "base"  # the feature macros come before any system header
