"""The sources of the API reference site (docs/site/, built by `make docs`) cover
the public API and every markdown document.

The build itself (Sphinx, warnings as errors) is CI's check; these read the
page sources only, so a new public name or a new document without a page
fails here in a second, without Sphinx installed.
"""

from __future__ import annotations

import re
from pathlib import Path

import shmring

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "docs" / "site"
AUTODOC = re.compile(r"^\.\. (auto(?:class|exception|function|data|module)|currentmodule):: (\S+)", re.MULTILINE)


def documented_names() -> set[str]:
    """The fully qualified names the API pages document, one by one or as
    a module with its members."""
    names: set[str] = set()
    for page in sorted((SITE / "api").glob("*.rst")):
        module = ""
        for directive, target in AUTODOC.findall(page.read_text()):
            if directive == "currentmodule":
                module = target
            elif directive == "automodule":
                names.add(f"{target}.*")
            else:
                names.add(target if "." in target else f"{module}.{target}")
    return names


def test_every_public_name_has_an_entry_in_the_api_pages() -> None:
    documented = documented_names()
    missing = [name for name in shmring.__all__ if f"shmring.{name}" not in documented]
    assert missing == [], f"no autodoc entry in docs/site/api/ for shmring.{missing}"


def test_the_public_submodules_are_documented_with_their_members() -> None:
    pages = "\n".join(p.read_text() for p in (SITE / "api").glob("*.rst"))
    for module in ("shmring.aio", "shmring.arrays"):
        entry = re.search(rf"^\.\. automodule:: {re.escape(module)}\n((?:   :.*\n)*)", pages, re.MULTILINE)
        assert entry is not None, f"{module} has no page"
        assert "   :members:" in entry.group(1), f"{module}'s page lists no members"


def test_every_markdown_document_has_a_page_that_includes_it() -> None:
    """README.md and each docs/*.md: a page at the same path under docs/site/
    (so the document's relative links resolve on the site) that includes the
    real file, listed in the home page's table of contents."""
    index = (SITE / "index.md").read_text()
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        relative = doc.relative_to(ROOT)
        page = SITE / relative
        assert page.is_file(), f"{relative} has no page: add docs/site/{relative}"
        include = re.search(r"^```\{include\} (\S+)$", page.read_text(), re.MULTILINE)
        assert include is not None, f"docs/site/{relative} does not include {relative}"
        assert (page.parent / include.group(1)).resolve() == doc, f"docs/site/{relative} includes {include.group(1)}"
        assert re.search(rf"^{re.escape(str(relative.with_suffix('')))}$", index, re.MULTILINE), (
            f"docs/site/index.md lists no {relative.with_suffix('')}"
        )
