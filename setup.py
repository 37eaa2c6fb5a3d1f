"""Builds the C extension shmring._core; everything else is in pyproject.toml.

setuptools (rather than meson-python) because the native part is one
extension module, built from the files of src/shmring/_core/ (one .c per
Python type family, sharing the private header core.h) over the
header-only protocol in include/ (include/shmring.h and the headers of
include/shmring/): setuptools needs no extra build tool, and
`pip install -e .` rebuilds the extension in place.
"""

import os
import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent

# SHMRING_SANITIZE=1 builds the extension with AddressSanitizer and
# UndefinedBehaviorSanitizer (`make sanitize` runs the tests against it).
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]
sanitize = os.environ.get("SHMRING_SANITIZE") == "1"


# SHMRING_WERROR=1 (set by .ci/run) makes every compiler warning an error, so
# that CI fails on a new one; a user's `pip install` stays tolerant of other
# compilers' warnings.
WERROR = ["-Werror"] if os.environ.get("SHMRING_WERROR") == "1" else []

# The C headers: include/shmring.h, the umbrella, and the headers it includes.
HEADERS = ["include/shmring.h", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "include" / "shmring").glob("*.h"))]

# The extension's sources and its private header.
CORE = ROOT / "src" / "shmring" / "_core"
SOURCES = sorted(str(p.relative_to(ROOT)) for p in CORE.glob("*.c"))
PRIVATE_HEADERS = sorted(str(p.relative_to(ROOT)) for p in CORE.glob("*.h"))


class build_py_with_header(build_py):
    """Ship the headers inside the package (include/shmring.h and
    include/shmring/), for shmring.get_include()."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / "shmring" / "include"
            for header in HEADERS:
                dest = target / Path(header).relative_to("include")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / header, dest)


setup(
    cmdclass={"build_py": build_py_with_header},
    ext_modules=[
        Extension(
            "shmring._core",
            sources=SOURCES,
            include_dirs=["include"],
            depends=[*HEADERS, *PRIVATE_HEADERS],
            # Hidden visibility: the files share internal symbols; only
            # PyInit__core is exported.
            extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                                "-fvisibility=hidden"]
            + WERROR + (SANITIZE if sanitize else []),
            extra_link_args=SANITIZE if sanitize else [],
        )
    ],
)
